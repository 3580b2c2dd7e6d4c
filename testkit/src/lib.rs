//! Test support (dev-dependency only): a real OpenSSH `sshd` on a loopback port with its own
//! host key, user keys (Ed25519 and RSA) and a fake `vpsmanager` script that records its argv
//! and can be told to sleep, print or fail. Faults are real: `kill` SIGKILLs the listener and
//! every session process, `freeze` SIGSTOPs them, `rotate_host_key` restarts with a new key.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// A running sshd and its files. Dropping it kills every sshd process it started.
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    user: String,
    child: Mutex<Option<Child>>,
    fake: FakeVpsManager,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path, kind: &str, bits: Option<&str>) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "chom-test", "-f"])
        .arg(path);
    if let Some(b) = bits {
        cmd.args(["-b", b]);
    }
    run(&mut cmd);
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Poll `f` every 20 ms until it is true; panic after `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes whose parent chain leads to `root` (not including it).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
            && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid) in &parents {
            if *ppid == p && !out.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}

impl Sshd {
    /// Generate keys and config in a fresh temporary directory and start sshd.
    pub fn start() -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/test does)"
        );
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let dir =
            std::env::temp_dir().join(format!("chom-sshd-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let user = run(Command::new("id").arg("-un")).trim().to_owned();
        keygen(&dir.join("host_ed25519"), "ed25519", None);
        keygen(&dir.join("id_ed25519"), "ed25519", None);
        keygen(&dir.join("id_rsa"), "rsa", Some("3072"));
        let authorized = [
            std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap(),
            std::fs::read_to_string(dir.join("id_rsa.pub")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nUsePAM no\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\nMaxSessions 64\nMaxStartups 100\n\
                 UseDNS no\nSubsystem sftp internal-sftp\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let fake = FakeVpsManager::create(&dir.join("fake"));
        let sshd = Sshd {
            dir,
            port,
            user,
            child: Mutex::new(None),
            fake,
        };
        sshd.spawn();
        sshd.write_known_hosts();
        sshd
    }

    fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        *self.child.lock().unwrap() = Some(child);
        let port = self.port;
        wait_until(
            Duration::from_secs(20),
            "sshd to answer with a banner",
            || {
                self.assert_alive();
                let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
            },
        );
    }

    fn assert_alive(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("sshd exited ({status}); log:\n{}", self.log());
        }
    }

    fn pids(&self) -> Vec<u32> {
        let child = self.child.lock().unwrap();
        match child.as_ref() {
            Some(c) => {
                let mut all = vec![c.id()];
                all.extend(descendants(c.id()));
                all
            }
            None => Vec::new(),
        }
    }

    fn write_known_hosts(&self) {
        let public = std::fs::read_to_string(self.dir.join("host_ed25519.pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {kind} {key}\n", self.port),
        )
        .unwrap();
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user to log in as (the one running the tests).
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// An authorized Ed25519 private key.
    pub fn ed25519_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// An authorized RSA (3072) private key.
    pub fn rsa_key(&self) -> PathBuf {
        self.dir.join("id_rsa")
    }

    /// A known_hosts file with the host key sshd was started with (not updated by
    /// [`Sshd::rotate_host_key`]).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `SHA256:...` of the current host key.
    pub fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.join("host_ed25519.pub")));
        out.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// SIGKILL the listener and every session process; returns once the port refuses.
    pub fn kill(&self) {
        // Parents first: a session process that outlived its command by a moment would report
        // the command killed by a signal instead of the connection dying with the host.
        for pid in self.pids() {
            signal(pid, Signal::KILL);
        }
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.wait();
        }
        let port = self.port;
        wait_until(Duration::from_secs(10), "sshd port to refuse", || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
    }

    /// Start again on the same port with the current host key.
    pub fn restart(&self) {
        if self.child.lock().unwrap().is_some() {
            self.kill();
        }
        self.spawn();
    }

    /// SIGSTOP the listener and every session process (connections hang, nothing refuses).
    pub fn freeze(&self) {
        for pid in self.pids() {
            signal(pid, Signal::STOP);
        }
    }

    /// SIGCONT what [`Sshd::freeze`] stopped.
    pub fn thaw(&self) {
        for pid in self.pids() {
            signal(pid, Signal::CONT);
        }
    }

    /// Restart with a new host key; `known_hosts()` keeps the old one.
    pub fn rotate_host_key(&self) {
        self.kill();
        keygen(&self.dir.join("host_ed25519"), "ed25519", None);
        self.spawn();
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The fake vpsmanager.
    pub fn fake(&self) -> &FakeVpsManager {
        &self.fake
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.thaw();
        for pid in self.pids().into_iter().rev() {
            signal(pid, Signal::KILL);
        }
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `/bin/sh` script standing in for vpsmanager: it records each invocation's argv
/// (NUL-separated, exact bytes) and start/end events, and reads its behaviour from control
/// files at every run, so tests change it while sshd runs.
pub struct FakeVpsManager {
    dir: PathBuf,
}

const SCRIPT: &str = r#"#!/bin/sh
D='__DIR__'
now() { date +%s%N; }
id="$(now)-$$"
for a in "$@"; do printf '%s\0' "$a"; done > "$D/calls/$id.tmp" && mv "$D/calls/$id.tmp" "$D/calls/$id"
echo "start $(now) $$" >> "$D/events"
[ -f "$D/ctl/sleep" ] && sleep "$(cat "$D/ctl/sleep")"
[ -f "$D/ctl/stdout" ] && cat "$D/ctl/stdout"
[ -f "$D/ctl/stderr" ] && cat "$D/ctl/stderr" >&2
code=0
[ -f "$D/ctl/exit" ] && code="$(cat "$D/ctl/exit")"
echo "end $(now) $$" >> "$D/events"
exit "$code"
"#;

impl FakeVpsManager {
    fn create(dir: &Path) -> FakeVpsManager {
        std::fs::create_dir_all(dir.join("calls")).unwrap();
        std::fs::create_dir_all(dir.join("ctl")).unwrap();
        let path = dir.join("vpsmanager");
        std::fs::write(&path, SCRIPT.replace("__DIR__", &dir.display().to_string())).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeVpsManager {
            dir: dir.to_path_buf(),
        }
    }

    /// The script (use as `ssh.command_prefix`).
    pub fn path(&self) -> PathBuf {
        self.dir.join("vpsmanager")
    }

    /// The argv (without `$0`) of every invocation, in start order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("calls"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let bytes = std::fs::read(self.dir.join("calls").join(n)).unwrap();
                bytes
                    .split(|b| *b == 0)
                    .filter(|_| !bytes.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            })
            .map(|mut args| {
                // printf '%s\0' ends every argument with NUL: drop the empty tail.
                if args.last().is_some_and(String::is_empty) {
                    args.pop();
                }
                args
            })
            .collect()
    }

    fn events(&self) -> Vec<(bool, u128)> {
        let text = std::fs::read_to_string(self.dir.join("events")).unwrap_or_default();
        let mut events: Vec<(bool, u128)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let kind = f.next()?;
                let t = f.next()?.parse().ok()?;
                Some((kind == "start", t))
            })
            .collect();
        // Ends before starts at the same instant: touching intervals do not overlap.
        events.sort_by_key(|(start, t)| (*t, *start));
        events
    }

    /// The most invocations that ran at the same time.
    pub fn max_overlap(&self) -> usize {
        let (mut now, mut max) = (0i64, 0i64);
        for (start, _) in self.events() {
            now += if start { 1 } else { -1 };
            max = max.max(now);
        }
        max as usize
    }

    /// Invocations started and not ended.
    pub fn running(&self) -> usize {
        let events = self.events();
        let starts = events.iter().filter(|(s, _)| *s).count();
        starts.saturating_sub(events.len() - starts)
    }

    fn control(&self, name: &str, value: Option<String>) {
        let path = self.dir.join("ctl").join(name);
        match value {
            Some(v) => std::fs::write(path, v).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Sleep this long in every invocation (zero: not at all).
    pub fn set_sleep(&self, d: Duration) {
        self.control(
            "sleep",
            (!d.is_zero()).then(|| format!("{:.3}", d.as_secs_f64())),
        );
    }

    /// Exit with `code`.
    pub fn set_exit(&self, code: i32) {
        self.control("exit", (code != 0).then(|| code.to_string()));
    }

    /// Print this on stdout.
    pub fn set_stdout(&self, s: &str) {
        self.control("stdout", (!s.is_empty()).then(|| s.to_owned()));
    }

    /// Print this on stderr.
    pub fn set_stderr(&self, s: &str) {
        self.control("stderr", (!s.is_empty()).then(|| s.to_owned()));
    }

    /// Back to defaults, records cleared.
    pub fn clear(&self) {
        for name in ["sleep", "exit", "stdout", "stderr"] {
            self.control(name, None);
        }
        let _ = std::fs::remove_dir_all(self.dir.join("calls"));
        std::fs::create_dir_all(self.dir.join("calls")).unwrap();
        let _ = std::fs::remove_file(self.dir.join("events"));
    }
}
