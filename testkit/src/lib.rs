//! Test support (dev-dependency only): a real OpenSSH `sshd` on a loopback port with its own
//! host key, user keys (Ed25519 and RSA) and a fake `vpsmanager` script that records its argv
//! and can be told to sleep, print or fail. Faults are real: `kill` SIGKILLs the listener and
//! every session process, `freeze` SIGSTOPs them, `rotate_host_key` restarts with a new key.
//! Also Debian's `prometheus` and `prometheus-alertmanager` on loopback ports (daemon.rs).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process};

mod daemon;
mod loki;
mod redis;
pub use daemon::{Alertmanager, Daemon, Prometheus};
pub use loki::LokiReceiver;
pub use redis::PrivateRedis;

/// A running sshd and its files. Dropping it kills every sshd process it started.
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    user: String,
    child: Mutex<Option<Child>>,
    fake: FakeVpsManager,
}

/// How long sshd may take to answer after it was started.
const READY_LIMIT: Duration = Duration::from_secs(20);

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

/// A port nobody listens on right now. Another process may take it before sshd binds it;
/// [`Sshd::start`] then tries another one.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory no other `Sshd` or daemon of this or another test process uses.
fn fresh_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "chom-{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Poll `f` every 20 ms until it returns `Some`; panic naming `what` after `limit`. The one
/// way tests wait for a condition (never a bare sleep).
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` every 20 ms until it is true; panic naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(limit, what, || f().then_some(()));
}

/// [`wait_until`] for async tests: polls without blocking the runtime.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(state, ppid)` of a process from `/proc/PID/stat` (the command name may hold spaces
/// and parentheses, so fields are counted after the last `)`).
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (zombies are dead: only their exit status is left).
fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// Processes whose parent chain leads to `root` (not including it).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((_, ppid)) = proc_stat(pid) {
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

/// SIGSTOP `root` and its descendants, scanning again until no new process shows up: a
/// process forked while we walked /proc is caught by the next scan, and once all are
/// stopped none can fork. Returns every process stopped.
fn stop_tree(root: u32) -> Vec<u32> {
    let mut stopped: Vec<u32> = Vec::new();
    loop {
        let mut all = vec![root];
        all.extend(descendants(root));
        let new: Vec<u32> = all.into_iter().filter(|p| !stopped.contains(p)).collect();
        if new.is_empty() {
            return stopped;
        }
        for pid in new {
            signal(pid, Signal::STOP);
            stopped.push(pid);
        }
    }
}

/// Write `sshd_config` for `port` in `dir`.
///
/// `SetEnv SHLVL=1`: Debian's bash sources `~/.bashrc` for commands run by sshd only when it
/// is a top-level shell (SHLVL below 2 after its own increment). The test user is whoever runs
/// the tests, and their `~/.bashrc` is not ours: a `pyenv init` in it waits up to a minute on
/// a lock left by a command killed mid-rehash (as the kill scenarios do), which made every
/// command time out. Sessions of this sshd therefore run the command without rc files.
fn write_config(dir: &Path, port: u16) {
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\nMaxSessions 64\nMaxStartups 100\n\
             UseDNS no\nSubsystem sftp internal-sftp\nSetEnv SHLVL=1\n",
            dir = dir.display()
        ),
    )
    .unwrap();
}

/// Why sshd did not come up.
enum SpawnError {
    /// Another process took the port first.
    PortTaken,
    /// Anything else (with sshd's log).
    Failed(String),
}

/// Run `sshd -D` from `dir` and wait until `port` answers with an SSH banner.
fn spawn_sshd(dir: &Path, port: u16) -> Result<Child, SpawnError> {
    let log_path = dir.join("sshd.log");
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sshd");
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            return Err(if log.contains("Address already in use") {
                SpawnError::PortTaken
            } else {
                SpawnError::Failed(format!("sshd exited ({status}); log:\n{log}"))
            });
        }
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return Ok(child);
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Failed(format!(
                "sshd did not answer on port {port} within {READY_LIMIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Sshd {
    /// Generate keys and config in a fresh temporary directory and start sshd on a free
    /// loopback port; returns once it answers with an SSH banner.
    pub fn start() -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/test does)"
        );
        if !Path::new("/run/sshd").exists() {
            // sshd run as root insists on its privilege separation directory.
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            let _ = std::fs::DirBuilder::new().mode(0o755).create("/run/sshd");
            let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
        }
        let dir = fresh_dir("sshd");
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
        let fake = FakeVpsManager::create(&dir.join("fake"));
        let mut attempts = 0;
        let (port, child) = loop {
            attempts += 1;
            let port = free_port();
            write_config(&dir, port);
            match spawn_sshd(&dir, port) {
                Ok(child) => break (port, child),
                Err(SpawnError::PortTaken) if attempts < 5 => continue,
                Err(SpawnError::PortTaken) => {
                    panic!("no free port for sshd after {attempts} tries")
                }
                Err(SpawnError::Failed(why)) => panic!("{why}"),
            }
        };
        let sshd = Sshd {
            dir,
            port,
            user,
            child: Mutex::new(Some(child)),
            fake,
        };
        sshd.write_known_hosts();
        sshd
    }

    /// Start sshd again from the existing config (same port, current host key).
    fn respawn(&self) {
        match spawn_sshd(&self.dir, self.port) {
            Ok(child) => *self.child.lock().unwrap() = Some(child),
            Err(SpawnError::PortTaken) => {
                panic!("port {} was taken while sshd was down", self.port)
            }
            Err(SpawnError::Failed(why)) => panic!("{why}"),
        }
    }

    /// The listener's pid, when it runs.
    fn listener(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
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

    /// A known_hosts file with one `[127.0.0.1]:PORT ssh-ed25519 ...` line for the host key
    /// sshd was started with; [`Sshd::rotate_host_key`] does not update it, so clients
    /// then see a changed key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `SHA256:...` of the current host key, as `ssh-keygen -lf` prints it.
    pub fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.join("host_ed25519.pub")));
        out.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// SIGKILL the listener and every process under it (sessions and the commands they run),
    /// so existing connections die too; returns once the port refuses connections.
    pub fn kill(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        // Stop the whole tree first, then kill it: killed one by one while running, a
        // session process could see its command die first and report an exit signal
        // instead of the connection dying with the host.
        let pids = stop_tree(child.id());
        for &pid in &pids {
            signal(pid, Signal::KILL);
        }
        let _ = child.wait();
        // SIGKILL is delivered asynchronously: wait until every process is gone, so callers
        // (and `FakeVpsManager::running`) see the host down as soon as this returns.
        wait_until(Duration::from_secs(10), "sshd processes to die", || {
            pids.iter().all(|&pid| !alive(pid))
        });
        let port = self.port;
        wait_until(Duration::from_secs(10), "sshd port to refuse", || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
    }

    /// Start again on the same port with the current host key (killing the running sshd
    /// first, if any); returns once it answers.
    pub fn restart(&self) {
        self.kill();
        self.respawn();
    }

    /// SIGSTOP the listener and every process under it: connections hang, nothing refuses.
    pub fn freeze(&self) {
        if let Some(root) = self.listener() {
            stop_tree(root);
        }
    }

    /// SIGCONT what [`Sshd::freeze`] stopped.
    pub fn thaw(&self) {
        if let Some(root) = self.listener() {
            signal(root, Signal::CONT);
            for pid in descendants(root) {
                signal(pid, Signal::CONT);
            }
        }
    }

    /// Restart with a new host key; `known_hosts()` keeps the old one.
    pub fn rotate_host_key(&self) {
        self.kill();
        keygen(&self.dir.join("host_ed25519"), "ed25519", None);
        self.respawn();
    }

    /// sshd's log (all runs).
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
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SIGKILL ends stopped processes too: no need to thaw first.
            for pid in stop_tree(child.id()) {
                signal(pid, Signal::KILL);
            }
            let _ = child.wait();
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

// Each run: record argv (written to a temp name, then renamed, so `calls()` never sees half
// a record), log `start`, claim a failure token if any is left (`rm` of one file succeeds
// for exactly one process, so concurrent runs never take the same token), behave as the
// control files say, log `end`. `date +%s%N` is coarse but monotonic enough for overlaps.
const SCRIPT: &str = r#"#!/bin/sh
D='__DIR__'
now() { date +%s%N; }
id="$(now)-$$"
for a in "$@"; do printf '%s\0' "$a"; done > "$D/calls/$id.tmp" && mv "$D/calls/$id.tmp" "$D/calls/$id"
echo "start $(now) $$" >> "$D/events"
code=0
[ -f "$D/ctl/exit" ] && code="$(cat "$D/ctl/exit")"
for t in "$D"/ctl/fail/*; do
  if rm "$t" 2>/dev/null; then code=1; echo "fake vpsmanager: injected failure" >&2; break; fi
done
[ -f "$D/ctl/sleep" ] && sleep "$(cat "$D/ctl/sleep")"
[ -f "$D/ctl/stdout" ] && cat "$D/ctl/stdout"
[ -f "$D/ctl/stderr" ] && cat "$D/ctl/stderr" >&2
echo "end $(now) $$" >> "$D/events"
exit "$code"
"#;

/// One line of the event log.
struct Event {
    start: bool,
    at: u128,
    pid: u32,
}

impl FakeVpsManager {
    fn create(dir: &Path) -> FakeVpsManager {
        for sub in ["calls", "ctl", "ctl/fail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
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

    /// The argv (without `$0`) of every invocation, in start order (argument bytes that are
    /// not UTF-8 are converted lossily).
    pub fn calls(&self) -> Vec<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("calls"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        // `NANOS-PID`: the same number of digits for centuries, so text order is time order.
        names.sort();
        names
            .iter()
            .map(|n| {
                let bytes = std::fs::read(self.dir.join("calls").join(n)).unwrap();
                // printf '%s\0' ends every argument with a NUL: split and drop the empty tail.
                let mut args: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.pop();
                args
            })
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(self.dir.join("events")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let start = f.next()? == "start";
                let at = f.next()?.parse().ok()?;
                let pid = f.next()?.parse().ok()?;
                Some(Event { start, at, pid })
            })
            .collect()
    }

    /// The most invocations that ran at the same time.
    pub fn max_overlap(&self) -> usize {
        let mut events = self.events();
        // Ends before starts at the same instant: touching intervals do not overlap.
        events.sort_by_key(|e| (e.at, e.start));
        let (mut now, mut max) = (0i64, 0i64);
        for e in events {
            now += if e.start { 1 } else { -1 };
            max = max.max(now);
        }
        max as usize
    }

    /// Invocations started and not ended whose process is still alive (one killed with
    /// its sshd never logs its end, but is not running either).
    pub fn running(&self) -> usize {
        let mut open: HashMap<u32, i64> = HashMap::new();
        for e in self.events() {
            *open.entry(e.pid).or_default() += if e.start { 1 } else { -1 };
        }
        open.into_iter()
            .filter(|&(pid, n)| n > 0 && alive(pid))
            .count()
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

    /// Exit with `code` (0: success, the default).
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

    /// The next `n` invocations (in start order) exit 1 and say so on stderr; later ones
    /// behave normally again. Replaces any tokens left from an earlier call.
    pub fn set_fail_times(&self, n: u32) {
        let fail = self.dir.join("ctl/fail");
        let _ = std::fs::remove_dir_all(&fail);
        std::fs::create_dir_all(&fail).unwrap();
        for i in 0..n {
            std::fs::write(fail.join(i.to_string()), "").unwrap();
        }
    }

    /// Back to defaults, records cleared.
    pub fn clear(&self) {
        for name in ["sleep", "exit", "stdout", "stderr"] {
            self.control(name, None);
        }
        self.set_fail_times(0);
        let _ = std::fs::remove_dir_all(self.dir.join("calls"));
        std::fs::create_dir_all(self.dir.join("calls")).unwrap();
        let _ = std::fs::remove_file(self.dir.join("events"));
    }
}
