//! Debian's real `prometheus` and `prometheus-alertmanager`, each run by a test on its own
//! loopback port and directory. Faults are real: `kill` SIGKILLs the daemon (the port then
//! refuses), `freeze` SIGSTOPs it (connections hang), `restart` brings it back on the same
//! port with the same files.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::{alive, free_port, fresh_dir, signal, wait_until};

/// Which daemon, and how it is started.
#[derive(Clone, Copy)]
enum Kind {
    Prometheus,
    Alertmanager,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Prometheus => "/usr/bin/prometheus",
            Kind::Alertmanager => "/usr/bin/prometheus-alertmanager",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus.yml",
            Kind::Alertmanager => "alertmanager.yml",
        }
    }

    fn args(self, dir: &Path, port: u16) -> Vec<String> {
        let d = dir.display();
        let mut args = vec![
            format!("--config.file={d}/{}", self.config()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        match self {
            Kind::Prometheus => args.extend([
                format!("--storage.tsdb.path={d}/data"),
                "--web.enable-lifecycle".to_owned(),
            ]),
            // No gossip: a test's Alertmanager is alone and must not bind port 9094.
            Kind::Alertmanager => args.extend([
                format!("--storage.path={d}/data"),
                "--cluster.listen-address=".to_owned(),
            ]),
        }
        args
    }
}

/// A running daemon and its directory. Dropping it kills the daemon and removes the files.
pub struct Daemon {
    kind: Kind,
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

/// Prometheus with the given config (and more files, such as rule files, beside it).
pub struct Prometheus(Daemon);

/// Alertmanager with the given config.
pub struct Alertmanager(Daemon);

/// How long a daemon may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(60);

impl Prometheus {
    /// Write `config` (as `prometheus.yml`) and `files` (name, text) into a fresh directory
    /// and start Prometheus on a free loopback port; returns once `/-/ready` answers 200.
    /// `{port}` in the config stands for Prometheus' own port.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        Prometheus(Daemon::start(Kind::Prometheus, config, files))
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        &self.0
    }
}

impl Alertmanager {
    /// Write `config` (as `alertmanager.yml`) and `files` and start Alertmanager on a free
    /// loopback port, clustering off; returns once `/-/ready` answers 200.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Alertmanager {
        Alertmanager(Daemon::start(Kind::Alertmanager, config, files))
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        &self.0
    }
}

impl Alertmanager {
    /// The alerts Alertmanager holds as active named `alertname` (its `/api/v2/alerts`).
    pub fn active(&self, alertname: &str) -> Vec<serde_json::Value> {
        let (code, body) = self.0.get("/api/v2/alerts").expect("alertmanager answers");
        assert_eq!(code, 200, "{body}");
        let alerts: serde_json::Value = serde_json::from_str(&body).expect("JSON alerts");
        alerts
            .as_array()
            .expect("an array of alerts")
            .iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .filter(|a| a["status"]["state"] == "active")
            .cloned()
            .collect()
    }
}

impl Daemon {
    fn start(kind: Kind, config: &str, files: &[(&str, &str)]) -> Daemon {
        assert!(
            Path::new(kind.binary()).exists(),
            "{} is missing: install Debian's prometheus and prometheus-alertmanager (scripts/test does)",
            kind.binary()
        );
        let dir = fresh_dir(kind.config().trim_end_matches(".yml"));
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        for attempt in 1..=5 {
            let port = free_port();
            let text = config.replace("{port}", &port.to_string());
            std::fs::write(dir.join(kind.config()), text).unwrap();
            let daemon = Daemon {
                kind,
                dir: dir.clone(),
                port,
                child: Mutex::new(None),
            };
            match daemon.spawn() {
                Ok(()) => return daemon,
                Err(why) if attempt < 5 && why.contains("address already in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Start the daemon from its directory and wait until it is ready.
    fn spawn(&self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut child = Command::new(self.kind.binary())
            .args(self.kind.args(&self.dir, self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.kind.binary()));
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.log().to_lowercase();
                return Err(format!(
                    "{} exited ({status}); log:\n{log}",
                    self.kind.binary()
                ));
            }
            if self.get("/-/ready").is_some_and(|(code, _)| code == 200) {
                *self.child.lock().unwrap() = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} not ready on port {} within {READY_LIMIT:?}; log:\n{}",
                    self.kind.binary(),
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its config and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// `GET path` over plain HTTP/1.0: the status code and body, or `None` when nothing
    /// answers within 5 seconds.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request(&format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
    }

    /// `POST path` with a JSON body: the status code and body.
    pub fn post_json(&self, path: &str, body: &str) -> Option<(u16, String)> {
        self.request(&format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn request(&self, request: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let code = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((code, body.to_owned()))
    }

    /// SIGKILL the daemon; returns once its port refuses connections.
    pub fn kill(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let pid = child.id();
        signal(pid, Signal::KILL);
        let _ = child.wait();
        wait_until(Duration::from_secs(10), "the daemon to die", || !alive(pid));
        let port = self.port;
        wait_until(Duration::from_secs(10), "its port to refuse", || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
    }

    /// Start again on the same port with the same files (killing it first if it runs).
    pub fn restart(&self) {
        self.kill();
        self.spawn().unwrap_or_else(|why| panic!("{why}"));
    }

    /// SIGSTOP: connections are accepted by the kernel but never answered. Returns once every
    /// thread of the daemon is stopped (a signal is delivered asynchronously: a busy thread
    /// could otherwise answer one more request after this returned).
    pub fn freeze(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            freeze_pid(child.id());
        }
    }

    /// SIGCONT what [`Daemon::freeze`] stopped.
    pub fn thaw(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            signal(child.id(), Signal::CONT);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            signal(child.id(), Signal::KILL);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGSTOP `pid` and return once every thread of it is stopped (a signal is delivered
/// asynchronously: a busy thread could otherwise answer one more request).
pub(crate) fn freeze_pid(pid: u32) {
    signal(pid, Signal::STOP);
    wait_until(Duration::from_secs(10), "the process to stop", || {
        all_threads_stopped(pid)
    });
}

/// Whether every thread of `pid` is in state T (stopped), per /proc/PID/task/*/stat.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}
