//! Small readings of the operating system: memory, disk, host name, open-file limit.

use std::path::Path;

/// Resident set size of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Space on the file system holding `path`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskUsage {
    /// Bytes in use, as `df` counts them (blocks minus free blocks).
    pub used_bytes: u64,
    /// Bytes available to an unprivileged process.
    pub available_bytes: u64,
    /// `used / (used + available)` in percent, as `df` reports "Use%".
    pub used_percent: f64,
}

/// Disk usage of the file system that holds `path` (statvfs).
pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize;
    let used = st.f_blocks.saturating_sub(st.f_bfree) * block;
    let available = st.f_bavail * block;
    let denominator = used + available;
    let used_percent = if denominator == 0 {
        0.0
    } else {
        used as f64 * 100.0 / denominator as f64
    };
    Ok(DiskUsage {
        used_bytes: used,
        available_bytes: available,
        used_percent,
    })
}

/// The machine's host name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The open-file limit of this process after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit in force (what `open`/`accept` are held to).
    pub soft: u64,
    /// The hard limit (the ceiling an unprivileged process may raise its soft limit to).
    pub hard: u64,
}

/// Ceiling used when the hard limit is "unlimited": Linux refuses a soft limit above
/// `fs.nr_open`, whose default is 2^20.
const NOFILE_UNLIMITED: u64 = 1 << 20;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and return both.
///
/// The soft limit is often 1024 (the systemd and shell default) while the hard limit is far
/// higher; a process that serves sockets should use what it is allowed to. Raising the soft
/// limit up to the hard one needs no privilege. On failure the limits in force are returned
/// with the error, so the caller can log them.
pub fn raise_nofile_limit() -> Result<NofileLimit, (NofileLimit, std::io::Error)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let hard = current.maximum.unwrap_or(NOFILE_UNLIMITED);
    let soft = current.current.unwrap_or(NOFILE_UNLIMITED);
    let before = NofileLimit { soft, hard };
    if soft >= hard {
        return Ok(before);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: current.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Ok(NofileLimit { soft: hard, hard }),
        Err(error) => Err((before, error.into())),
    }
}

/// How an operator's shell command (check, remediation, memory action) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOutcome {
    /// Exited 0.
    Success,
    /// Exited otherwise: the status and the last line of stderr.
    Failed {
        /// Exit code, when it exited (not killed by a signal).
        code: Option<i32>,
        /// `exit status: N` or the signal, as the OS words it.
        status: String,
        /// The last line of its stderr.
        stderr: String,
    },
    /// Could not be started.
    NotRun(String),
    /// Still running at the limit (it is killed).
    TimedOut,
}

/// Run `command` with `/bin/sh -c`, no stdin, killed if it outlives `limit`.
pub async fn run_shell(command: &str, limit: std::time::Duration) -> ShellOutcome {
    use tokio::io::AsyncReadExt as _;
    // stdout is never looked at: it goes nowhere. Of stderr only the last line is reported,
    // so only its tail is kept: a command printing gigabytes costs no memory.
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return ShellOutcome::NotRun(e.to_string()),
    };
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > SHELL_STDERR_TAIL {
                        tail.drain(..tail.len() - SHELL_STDERR_TAIL);
                    }
                }
            }
        }
        child.wait().await.map(|status| (status, tail))
    };
    match tokio::time::timeout(limit, run).await {
        Ok(Ok((status, _))) if status.success() => ShellOutcome::Success,
        Ok(Ok((status, tail))) => ShellOutcome::Failed {
            code: status.code(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&tail)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .to_owned(),
        },
        Ok(Err(e)) => ShellOutcome::NotRun(e.to_string()),
        Err(_) => ShellOutcome::TimedOut,
    }
}

/// How much of an operator command's stderr is kept (its last line is reported).
const SHELL_STDERR_TAIL: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_flooding_its_output_costs_no_memory_and_its_last_line_is_kept() {
        let before = rss_bytes().unwrap();
        let out = run_shell(
            "head -c 300000000 /dev/zero; head -c 300000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo last words >&2; exit 3",
            std::time::Duration::from_secs(60),
        )
        .await;
        match out {
            ShellOutcome::Failed { code, stderr, .. } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr, "last words");
            }
            other => panic!("{other:?}"),
        }
        let grown = rss_bytes().unwrap().saturating_sub(before);
        assert!(
            grown < 64 << 20,
            "rss grew by {grown} bytes for 600 MB of output"
        );
    }

    #[test]
    fn readings_are_plausible() {
        let rss = rss_bytes().expect("linux has /proc/self/statm");
        assert!(rss > 1024 * 1024, "rss {rss}");
        let disk = disk_usage(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&disk.used_percent));
        assert!(disk.used_bytes > 0);
        assert!(!hostname().is_empty());
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // Lower this test process's soft limit first (always allowed), so the raise is real.
        let start = getrlimit(Resource::Nofile);
        let hard = start.maximum.unwrap_or(NOFILE_UNLIMITED);
        let lowered = Rlimit {
            current: Some((hard / 2).max(256)),
            maximum: start.maximum,
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        let limit = raise_nofile_limit().expect("raising the soft limit needs no privilege");
        assert_eq!(limit.hard, hard);
        assert_eq!(limit.soft, limit.hard);
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current.unwrap_or(NOFILE_UNLIMITED), limit.soft);
    }

    #[tokio::test]
    async fn shell_commands_report_how_they_ended() {
        let limit = std::time::Duration::from_secs(5);
        assert_eq!(run_shell("true", limit).await, ShellOutcome::Success);
        assert_eq!(
            run_shell("echo first >&2; echo oops >&2; exit 3", limit).await,
            ShellOutcome::Failed {
                code: Some(3),
                status: "exit status: 3".into(),
                stderr: "oops".into()
            }
        );
        let started = std::time::Instant::now();
        assert_eq!(
            run_shell("sleep 30", std::time::Duration::from_millis(200)).await,
            ShellOutcome::TimedOut
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
