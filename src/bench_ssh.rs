//! `chom bench ssh`: one way of running a trivial command (`true`) on a server, N times from
//! C concurrent callers, timed; one JSON line. `scripts/bench-ssh` runs the modes against one
//! local sshd, alternating, and adds OpenSSH's ControlMaster (a separate program) beside them.
//!
//! - `persistent`: the node itself, started in this process from the given config (the
//!   embedded default plus the server), and its own call path for every command:
//!   [`Fleet::exec`] (retry, breaker permit from the VPS actor, bulkhead, the actor's
//!   persistent session, metrics, breaker observation), exactly as a `vps.exec` job calls it.
//! - `connect`: a new connection per command with the node's SSH client (`chom_ssh`): connect,
//!   host key check, authentication, the command, close.
//! - `bare`: one russh session and nothing around it: a channel opened per command, the exit
//!   status read. The ceiling of the persistent mode.
//!
//! The server is the config's `[[vps]]` entry named by `--vps`; user, key and known_hosts come
//! from `[ssh]`, so all modes reach the same account the same way.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chom_actors::context::NodeContext;
use chom_actors::fleet::ExecRequest;
use chom_core::config::{Config, VpsConfig};
use chom_ssh::{ClientConfig, HostKeyCheck, Session, Target};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, client};
use serde::Serialize;

/// The command every mode runs.
const COMMAND: &str = "true";

/// Commands run before the timed ones (sessions opened, caches warm).
const WARM_UP: usize = 50;

/// How long the in-process node may take to become ready and start the server's actor.
const START_LIMIT: Duration = Duration::from_secs(60);

/// How the commands reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The node's exec path on its persistent session.
    Persistent,
    /// A new `chom_ssh` connection per command.
    Connect,
    /// One bare russh session, a channel per command.
    Bare,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Connect => "connect",
            Mode::Bare => "bare",
        }
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct SshBench {
    /// The mode's name.
    pub mode: &'static str,
    /// Commands timed.
    pub n: usize,
    /// Callers at once.
    pub concurrency: usize,
    /// Wall time of the timed commands, seconds.
    pub seconds: f64,
    /// Commands per second.
    pub cmds_per_s: f64,
    /// CPU time this process spent per timed command (user + system), microseconds: what
    /// the caller takes from the machine the server shares.
    pub cpu_us_per_cmd: f64,
    /// Latency percentiles of one command, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Commands that failed or exited non-zero.
    pub failures: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
}

/// Run `n` commands from `concurrency` callers in `mode` against the config's server `vps`.
pub async fn run(
    config: Config,
    mode: Mode,
    vps: &str,
    n: usize,
    concurrency: usize,
) -> Result<SshBench, String> {
    let server = config
        .vps
        .iter()
        .find(|v| v.id == vps)
        .cloned()
        .ok_or_else(|| format!("no [[vps]] entry `{vps}` in the config"))?;
    let run = match mode {
        Mode::Persistent => persistent(config, vps, n, concurrency).await?,
        Mode::Connect => connect(&config, &server, n, concurrency).await?,
        Mode::Bare => bare(&config, &server, n, concurrency).await?,
    };
    Ok(run.summary(mode, concurrency))
}

// === the modes ===

/// The node, started in this process; every command through `Fleet::exec`.
async fn persistent(
    config: Config,
    vps: &str,
    n: usize,
    concurrency: usize,
) -> Result<Run, String> {
    let (stop, requests) = futures::channel::mpsc::unbounded::<&'static str>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let signals = crate::node::Signals::from_stream(futures::StreamExt::boxed(requests));
    let mut node = tokio::spawn(crate::node::run_with(config, signals, None, Some(ready_tx)));
    let started = tokio::select! {
        ready = tokio::time::timeout(START_LIMIT, ready_rx) => match ready {
            Ok(Ok(ctx)) => actor_started(ctx, vps).await,
            _ => Err("the node did not become ready".to_owned()),
        },
        ended = &mut node => return Err(format!("the node stopped at start: {ended:?}")),
    };
    let measured = match started {
        Ok(ctx) => {
            let fleet = ctx.fleet.clone();
            drop(ctx);
            let vps: Arc<str> = vps.into();
            let call = move || {
                let (fleet, vps) = (fleet.clone(), vps.clone());
                async move {
                    let request = ExecRequest {
                        vps: &vps,
                        command: COMMAND,
                        args: &[],
                    };
                    match fleet.exec(request).await {
                        Ok(output) if output.success() => Ok(()),
                        Ok(output) => Err(format!("exit status {:?}", output.exit_status)),
                        Err(error) => Err(error.to_string()),
                    }
                }
            };
            Ok(warm_then_measure(n, concurrency, call).await)
        }
        Err(why) => Err(why),
    };
    let _ = stop.unbounded_send("bench done");
    match node.await {
        Ok(Ok(0)) => measured,
        ended => Err(format!("the node did not stop cleanly: {ended:?}")),
    }
}

/// The context, once the inventory started the actor of `vps`.
async fn actor_started(ctx: Arc<NodeContext>, vps: &str) -> Result<Arc<NodeContext>, String> {
    let deadline = Instant::now() + START_LIMIT;
    while ctx.fleet.actor(vps).is_none() {
        if Instant::now() >= deadline {
            return Err(format!("the actor of vps `{vps}` did not start"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(ctx)
}

/// A new `chom_ssh` session per command, closed after it.
async fn connect(
    config: &Config,
    server: &VpsConfig,
    n: usize,
    concurrency: usize,
) -> Result<Run, String> {
    let ssh = &config.ssh;
    let target = Arc::new(Target {
        host: server.host.clone(),
        port: server.port,
        user: server.user.clone().unwrap_or_else(|| ssh.user.clone()),
        host_key: match &server.host_key {
            Some(fingerprint) => HostKeyCheck::Pinned(fingerprint.clone()),
            None => HostKeyCheck::KnownHosts(ssh.known_hosts.clone()),
        },
    });
    let client = Arc::new(ClientConfig {
        key: chom_ssh::load_key(&ssh.private_key).map_err(|e| e.to_string())?,
        connect_timeout: ssh.connect_timeout,
        keepalive_interval: None,
    });
    let (limit, max_output) = (ssh.command_timeout, ssh.max_output as usize);
    let call = move || {
        let (target, client) = (target.clone(), client.clone());
        async move {
            let session = Session::connect(&target, &client)
                .await
                .map_err(|e| e.to_string())?;
            let output = session.exec(COMMAND, limit, max_output).await;
            session.close().await;
            match output {
                Ok(output) if output.success() => Ok(()),
                Ok(output) => Err(format!("exit status {:?}", output.exit_status)),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    Ok(warm_then_measure(n, concurrency, call).await)
}

/// One russh session, opened before the clock starts; a channel per command.
async fn bare(
    config: &Config,
    server: &VpsConfig,
    n: usize,
    concurrency: usize,
) -> Result<Run, String> {
    let handle = Arc::new(bare_session(config, server).await?);
    let call = move || {
        let handle = handle.clone();
        async move { bare_exec(&handle).await }
    };
    Ok(warm_then_measure(n, concurrency, call).await)
}

/// Accepts the host key listed in known_hosts, as the node does.
struct KnownHost {
    host: String,
    port: u16,
    known_hosts: PathBuf,
}

impl client::Handler for KnownHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = chom_ssh::presented_key(key);
        Ok(
            russh::keys::check_known_hosts_path(&self.host, self.port, &key, &self.known_hosts)
                .unwrap_or(false),
        )
    }
}

async fn bare_session(
    config: &Config,
    server: &VpsConfig,
) -> Result<client::Handle<KnownHost>, String> {
    let ssh = &config.ssh;
    let key = chom_ssh::load_key(&ssh.private_key).map_err(|e| e.to_string())?;
    // TCP_NODELAY as the node's client sets it: the ceiling must not be slowed by Nagle.
    let socket = tokio::net::TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let handler = KnownHost {
        host: server.host.clone(),
        port: server.port,
        known_hosts: ssh.known_hosts.clone(),
    };
    let config = Arc::new(client::Config::default());
    let mut handle = client::connect_stream(config, socket, handler)
        .await
        .map_err(|e| e.to_string())?;
    let user = server.user.clone().unwrap_or_else(|| ssh.user.clone());
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| e.to_string())?
        .flatten();
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(|e| e.to_string())?;
    if !auth.success() {
        return Err("authentication refused".to_owned());
    }
    Ok(handle)
}

async fn bare_exec(handle: &client::Handle<KnownHost>) -> Result<(), String> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .exec(true, COMMAND)
        .await
        .map_err(|e| e.to_string())?;
    let mut status = None;
    while let Some(message) = channel.wait().await {
        if let ChannelMsg::ExitStatus { exit_status } = message {
            status = Some(exit_status);
        }
    }
    match status {
        Some(0) => Ok(()),
        other => Err(format!("exit status {other:?}")),
    }
}

// === the driver ===

/// Latencies and failures of the timed commands.
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    latencies: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
}

impl Run {
    fn summary(mut self, mode: Mode, concurrency: usize) -> SshBench {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        SshBench {
            mode: mode.name(),
            n,
            concurrency,
            seconds: self.seconds,
            cmds_per_s: n as f64 / self.seconds.max(f64::EPSILON),
            cpu_us_per_cmd: self.cpu_seconds * 1e6 / n.max(1) as f64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            failures: self.failures,
            first_error: self.first_error,
        }
    }
}

/// [`WARM_UP`] commands untimed, then `n` timed.
async fn warm_then_measure<F, Fut>(n: usize, concurrency: usize, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let warm = drive(WARM_UP.min(n), concurrency, call.clone()).await;
    let mut run = drive(n, concurrency, call).await;
    if run.first_error.is_none() {
        run.first_error = warm.first_error;
    }
    run.failures += warm.failures;
    run
}

/// `n` calls from `concurrency` callers, each taking the next call as soon as its last ended.
async fn drive<F, Fut>(n: usize, concurrency: usize, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let left = Arc::new(AtomicUsize::new(n));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (call, left) = (call.clone(), left.clone());
        callers.spawn(async move {
            let mut mine = Run {
                seconds: 0.0,
                cpu_seconds: 0.0,
                latencies: Vec::new(),
                failures: 0,
                first_error: None,
            };
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| k.checked_sub(1))
                .is_ok()
            {
                let sent = Instant::now();
                let result = call().await;
                mine.latencies.push(sent.elapsed());
                if let Err(error) = result {
                    mine.failures += 1;
                    mine.first_error.get_or_insert(error);
                }
            }
            mine
        });
    }
    let mut all = Run {
        seconds: 0.0,
        cpu_seconds: 0.0,
        latencies: Vec::with_capacity(n),
        failures: 0,
        first_error: None,
    };
    while let Some(done) = callers.join_next().await {
        let mine = done.unwrap_or_else(|e| Run {
            seconds: 0.0,
            cpu_seconds: 0.0,
            latencies: Vec::new(),
            failures: 1,
            first_error: Some(format!("a caller panicked: {e}")),
        });
        all.latencies.extend(mine.latencies);
        all.failures += mine.failures;
        if all.first_error.is_none() {
            all.first_error = mine.first_error;
        }
    }
    all.seconds = started.elapsed().as_secs_f64();
    all.cpu_seconds = cpu_seconds() - cpu_before;
    all
}

/// User + system CPU time of this process so far (`/proc/self/stat`), seconds; 0 if unreadable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / rustix::param::clock_ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sshd: &chom_testkit::Sshd, dir: &std::path::Path) -> Config {
        let text = format!(
            "[node]\nname = \"bench-ssh-test\"\ndata_dir = \"{d}\"\n\
             [database]\nurl = \"sqlite://{d}/chom.db\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n[ui]\nlisten = \"127.0.0.1:0\"\n[admin]\nsocket = \"{d}/chom.sock\"\n\
             [ssh]\nuser = \"{user}\"\nprivate_key = \"{key}\"\nknown_hosts = \"{known}\"\n\
             command_prefix = \"\"\n\
             [[vps]]\nid = \"bench\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            d = dir.display(),
            user = sshd.user(),
            key = sshd.ed25519_key().display(),
            known = sshd.known_hosts().display(),
            port = sshd.port(),
        );
        Config::from_toml_str(&text, &[]).expect("valid config")
    }

    /// Logins the sshd accepted so far.
    fn logins(sshd: &chom_testkit::Sshd) -> usize {
        sshd.log().matches("Accepted publickey").count()
    }

    /// Every mode runs every command, and each reaches the server as it claims to: the node's
    /// path and the bare session on one login each, the per-command mode on one login per
    /// command (warm-up included).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_runs_every_command_on_a_real_sshd() {
        let sshd = chom_testkit::Sshd::start();
        let dir = std::env::temp_dir().join(format!("chom-bench-ssh-{}", rand::random::<u64>()));
        let n = 20;
        for (mode, expected_logins) in [
            (Mode::Persistent, 1),
            (Mode::Connect, 2 * n),
            (Mode::Bare, 1),
        ] {
            let before = logins(&sshd);
            let result = run(config(&sshd, &dir), mode, "bench", n, 3)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(
                (result.n, result.failures, result.first_error),
                (n, 0, None),
                "{mode:?}"
            );
            assert!(result.cmds_per_s > 0.0 && result.p99_ms >= result.p50_ms);
            chom_testkit::eventually(Duration::from_secs(10), "sshd to log the logins", || {
                logins(&sshd) - before >= expected_logins
            })
            .await;
            assert_eq!(logins(&sshd) - before, expected_logins, "{mode:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_server_missing_from_the_config_is_an_error() {
        let config = Config::from_toml_str("", &[]).expect("valid config");
        let refused = run(config, Mode::Bare, "nowhere", 1, 1).await;
        assert_eq!(
            refused.err().as_deref(),
            Some("no [[vps]] entry `nowhere` in the config")
        );
    }
}
