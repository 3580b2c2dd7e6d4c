//! Small readings of the operating system: memory, disk, host name.

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
    let run = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) if out.status.success() => ShellOutcome::Success,
        Ok(Ok(out)) => ShellOutcome::Failed {
            code: out.status.code(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        let rss = rss_bytes().expect("linux has /proc/self/statm");
        assert!(rss > 1024 * 1024, "rss {rss}");
        let disk = disk_usage(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&disk.used_percent));
        assert!(disk.used_bytes > 0);
        assert!(!hostname().is_empty());
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
