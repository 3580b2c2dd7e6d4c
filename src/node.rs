//! `chom node`: the node process (what systemd starts).
//!
//! Order of start-up: claim the data dir (lock file) and the admin socket, so two nodes can
//! never share either; bind HTTP; start the supervision tree; send READY=1 once migrations ran
//! and the tree started. Then wait for SIGTERM/SIGINT, an admin `shutdown`, or the root giving
//! up. Exit statuses: 0 after a graceful stop, 70 when the root supervisor gave up (systemd's
//! `Restart=always` takes over), 75 when the memory actor asked for a fresh process, 1 when
//! start-up failed for a reason a restart will not fix.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chom_actors::context::NodeContext;
use chom_actors::handles::{EXIT_RESTART, NodeInfo};
use chom_actors::identity::{self, IdentityError, Instance, NodeLock};
use chom_actors::notify::notify;
use chom_actors::observability::loki::LokiQueue;
use chom_core::config::Config;
use chom_supervisors::{Supervisor, SupervisorArgs, SupervisorMsg};
use ractor::{Actor, ActorRef};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::wiring::{self, Assembly, Listeners, NodeObserver};

/// Exit status when the root supervisor gave up (EX_SOFTWARE): systemd restarts the node.
pub const EXIT_ROOT_GAVE_UP: u8 = 70;

/// What tells the node to stop: a stream of stop requests, each named (`"SIGTERM"`). The
/// first starts a graceful shutdown; a second one during it exits at once. `chom node` feeds
/// it from SIGTERM and SIGINT ([`Signals::unix`]); a test can feed it from a channel.
pub struct Signals(futures::stream::BoxStream<'static, &'static str>);

impl Signals {
    /// SIGTERM and SIGINT of this process.
    pub fn unix() -> anyhow::Result<Self> {
        use futures::StreamExt as _;
        let term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        let term = tokio_stream_from(term).map(|()| "SIGTERM");
        let int = tokio_stream_from(int).map(|()| "SIGINT");
        Ok(Signals::from_stream(
            futures::stream::select(term, int).boxed(),
        ))
    }

    /// Stop requests from any stream (tests, embedding).
    pub fn from_stream(stream: futures::stream::BoxStream<'static, &'static str>) -> Self {
        Signals(stream)
    }

    /// The next stop request; pending forever once the stream ended.
    async fn next(&mut self) -> &'static str {
        use futures::StreamExt as _;
        match self.0.next().await {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

/// A Unix signal as a stream of `()`.
fn tokio_stream_from(
    mut sig: tokio::signal::unix::Signal,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::poll_fn(move |cx| sig.poll_recv(cx))
}

/// Run the node until `signals` or an admin `shutdown` tell it to stop or its root gives up;
/// returns the exit status. `logs`: the events queued for Loki by the log layer, if any.
pub async fn run(config: Config, signals: Signals, logs: Option<LokiQueue>) -> anyhow::Result<u8> {
    run_with(config, signals, logs, None).await
}

/// [`run`], handing the node's context to `ready` once the node is ready, so that an
/// in-process caller (`chom bench ssh`) can drive the node's own call paths.
pub async fn run_with(
    config: Config,
    mut signals: Signals,
    logs: Option<LokiQueue>,
    ready: Option<oneshot::Sender<Arc<NodeContext>>>,
) -> anyhow::Result<u8> {
    let config = Arc::new(config);
    let bound = bind(&config)?;
    let (info, instance) = identify(&config);
    // Decided now when the database answers (a second live node of this name is refused before
    // anything starts); otherwise in the background, with claims held back until then.
    let first_try = claim_name(&config, &instance).await?;
    if info.debug_hooks {
        warn!("debug hooks enabled (CHOM_DEBUG_HOOKS=1): fault-injection RPCs are served");
    }
    let Assembly {
        node,
        observer,
        root,
    } = wiring::assemble(config.clone(), info, bound.listeners.clone(), logs);
    let (name_lost_tx, mut name_lost) = oneshot::channel();
    let keeper = NameKeeper::start(node.clone(), instance, first_try, name_lost_tx);
    let Some((root, mut root_done)) = start_tree(&node, root).await else {
        return Ok(EXIT_ROOT_GAVE_UP);
    };
    let ready = tokio::spawn(announce_ready(node.clone(), ready));

    let stopped = tokio::select! {
        lost = &mut name_lost => Stopped::NameLost(lost),
        name = signals.next() => Stopped::Requested(name),
        _ = node.shutdown_requested() => Stopped::Requested("admin shutdown"),
        _ = &mut root_done => Stopped::RootExited,
    };
    ready.abort();
    match stopped {
        Stopped::NameLost(lost) => Err(name_taken(&node, &root, lost).await),
        Stopped::RootExited => Ok(root_gave_up(&node, &observer)),
        Stopped::Requested(reason) => Ok(shut_down(&node, &root, keeper, signals, reason).await),
    }
}

/// What `chom node` holds for its whole life: the data dir's lock, the admin socket (removed
/// at exit) and the listeners the edge actors serve.
struct Bound {
    _lock: File,
    _socket_cleanup: RemoveOnDrop,
    listeners: Listeners,
}

/// Claim the data dir and the admin socket, so two nodes can never share either, and bind
/// HTTP and the tenant API: once, before the tree, so restarting an edge actor never gives up an address.
fn bind(config: &Config) -> anyhow::Result<Bound> {
    crate::edge::raise_fd_limit(config);
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let lock = lock_data_dir(data_dir)?;
    let (admin, socket_cleanup) = bind_admin_socket(&config.admin.socket)?;
    let http = std::net::TcpListener::bind(config.http.listen)
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
    let api = std::net::TcpListener::bind(config.api.listen)
        .with_context(|| format!("cannot listen on {} (api.listen)", config.api.listen))?;
    let ui = std::net::TcpListener::bind(config.ui.listen)
        .with_context(|| format!("cannot listen on {} (ui.listen)", config.ui.listen))?;
    Ok(Bound {
        _lock: lock,
        _socket_cleanup: socket_cleanup,
        listeners: Listeners {
            http: Arc::new(http),
            admin: Arc::new(admin),
            api: Arc::new(api),
            ui: Arc::new(ui),
        },
    })
}

/// Who this node is, and this process's claim on its name.
fn identify(config: &Config) -> (NodeInfo, Instance) {
    let node_name = if config.node.name.is_empty() {
        chom_actors::sys::hostname()
    } else {
        config.node.name.clone()
    };
    let instance = Instance::current(&node_name);
    let debug_hooks = std::env::var("CHOM_DEBUG_HOOKS").is_ok_and(|v| v == "1");
    (
        NodeInfo::new(node_name, crate::VERSION, debug_hooks, instance.id.clone()),
        instance,
    )
}

/// Spawn the root supervisor; `None` when the tree failed to start.
async fn start_tree(
    node: &NodeContext,
    args: SupervisorArgs,
) -> Option<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>)> {
    let (root, root_done) = match Actor::spawn(None, Supervisor, args).await {
        Ok(started) => started,
        Err(error) => {
            error!(%error, "supervision tree failed to start");
            return None;
        }
    };
    node.tree_root.set(root.clone());
    node.readiness.set_tree_started();
    // Restart and escalation counters of every actor at zero from the start, so that rules
    // over increase() see them before the first failure.
    match chom_actors::tree::fetch(&root, std::time::Duration::from_secs(5)).await {
        Ok(report) => node
            .metrics
            .zero_supervision(&chom_actors::tree::paths(&report)),
        Err(error) => warn!(%error, "could not list the tree's actors for the metrics"),
    }
    let config = &node.config;
    info!(node = %node.info.node_name, version = crate::VERSION, http = %config.http.listen,
          api = %config.api.listen, admin = %config.admin.socket.display(), "node started; waiting for migrations");
    Some((root, root_done))
}

/// READY=1 once migrations ran, the tree started and the name is held; then the context to
/// `hook`, if any.
async fn announce_ready(node: Arc<NodeContext>, hook: Option<oneshot::Sender<Arc<NodeContext>>>) {
    node.readiness.wait_ready().await;
    info!("node ready");
    notify(&[NotifyState::Ready, NotifyState::Status("ready")]);
    if let Some(hook) = hook {
        let _ = hook.send(node);
    }
}

/// Why the node stops.
enum Stopped {
    /// Another live node holds the name (or the keeper stopped).
    NameLost(Result<IdentityError, oneshot::error::RecvError>),
    /// A signal or the admin `shutdown`: drain and exit.
    Requested(&'static str),
    /// The root supervisor exited (gave up).
    RootExited,
}

/// The name is taken: stop the tree and refuse to run (exit 1).
async fn name_taken(
    node: &NodeContext,
    root: &ActorRef<SupervisorMsg>,
    lost: Result<IdentityError, oneshot::error::RecvError>,
) -> anyhow::Error {
    let why = lost.map_or_else(
        |_| "node name keeper stopped".to_owned(),
        |e: IdentityError| e.to_string(),
    );
    error!(exit = 1, error = %why, "refusing to run: this node's name is held by another live node");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("node name taken"),
    ]);
    // Nothing was claimed under the name (claims wait for it), so nothing is released.
    let timeout = Some(node.config.node.shutdown_timeout);
    if root
        .stop_and_wait(Some("node name taken".into()), timeout)
        .await
        .is_err()
    {
        root.kill();
    }
    node.metrics.shutdown();
    anyhow::anyhow!(why)
}

/// The root supervisor gave up: exit 70 so systemd restarts the node.
fn root_gave_up(node: &NodeContext, observer: &NodeObserver) -> u8 {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("root supervisor gave up"),
    ]);
    if let Some(chain) = observer.root_gave_up() {
        error!(exit = EXIT_ROOT_GAVE_UP, chain = %chain, "root supervisor gave up; exiting so systemd restarts the node");
    } else {
        error!(
            exit = EXIT_ROOT_GAVE_UP,
            "root supervisor stopped unexpectedly; exiting so systemd restarts the node"
        );
    }
    node.metrics.shutdown();
    EXIT_ROOT_GAVE_UP
}

/// The graceful stop: stop the tree within `node.shutdown_timeout`, release leftover jobs,
/// give the name back, wait for operators' commands; 0, or 75 when a restart was asked for.
async fn shut_down(
    node: &NodeContext,
    root: &ActorRef<SupervisorMsg>,
    keeper: NameKeeper,
    mut signals: Signals,
    reason: &'static str,
) -> u8 {
    let config = &node.config;
    let shutdown_started = std::time::Instant::now();
    info!(reason, timeout = ?config.node.shutdown_timeout, "shutting down");
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);

    // A second signal means "now": the operator does not want to wait for the drain.
    tokio::spawn(async move {
        signals.next().await;
        warn!("second signal: exiting at once");
        std::process::exit(1);
    });

    match root
        .stop_and_wait(Some("shutdown".into()), Some(config.node.shutdown_timeout))
        .await
    {
        Ok(()) => info!("supervision tree stopped"),
        Err(error) => {
            warn!(%error, "supervision tree did not stop within node.shutdown_timeout; killing it");
            root.kill();
        }
    }
    release_leftovers(node).await;
    // The name is given back only after this node's jobs were: until then they are its own.
    keeper.stop().await;
    // An operator's command still running (e.g. a PHP-FPM restart) is not cut short by the exit.
    let left = config
        .node
        .shutdown_timeout
        .saturating_sub(shutdown_started.elapsed());
    node.lifecycle.wait_operator_commands(left).await;
    node.metrics.shutdown();
    if node.lifecycle.restart_requested() {
        warn!(
            exit = EXIT_RESTART,
            "node stopped to be restarted (memory near its limit)"
        );
        return EXIT_RESTART;
    }
    info!("node stopped");
    0
}

/// Jobs still reserved by this node after the tree stopped (their workers were killed at the
/// shutdown timeout) go back to pending now rather than after a rescue delay.
async fn release_leftovers(ctx: &NodeContext) {
    // Without the name, jobs reserved under it belong to another live node.
    if !ctx.migrated() || !ctx.identity_held() {
        return;
    }
    // Part of the shutdown's budget, shorter than the store's own limit.
    let limit = std::time::Duration::from_secs(5);
    let release = async {
        let store = chom_store::open(&ctx.config.database)?;
        let n = chom_store::with_timeout(limit, store.release_node(&ctx.info.node_name)).await;
        store.close().await;
        n
    };
    match release.await {
        Ok(0) => {}
        Ok(n) => warn!(
            jobs = n,
            "released jobs still running at the shutdown timeout; they will be retried"
        ),
        Err(error) => {
            warn!(%error, "could not release this node's remaining jobs; another node or the next start will")
        }
    }
}

/// Hold an exclusive lock on `DATA_DIR/chom.lock` for the life of the process: a second node
/// on the same data dir is refused with a clear message (the lock dies with the process, so a
/// crashed node never blocks its successor).
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("chom.lock");
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another chom node is already running with data dir {} (pid {}); two nodes must not share a data dir",
                dir.display(),
                holder.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // The pid is only for a second node's message: a full disk must not stop this one.
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// Bind the admin socket with mode 0660. A socket file nobody listens on (a node that died) is
/// replaced; a socket with a live node behind it is refused; anything that is not a socket (a
/// regular file such as the node's own database, a directory, a link) is never removed: the
/// node refuses to start and says why. Returns the listener and the guard that removes the
/// socket at exit, only if it is still the one bound here.
pub fn bind_admin_socket(
    path: &Path,
) -> anyhow::Result<(std::os::unix::net::UnixListener, RemoveOnDrop)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot inspect {} (admin.socket)", path.display()));
        }
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "admin.socket {} exists and is not a socket ({}); refusing to replace it: point admin.socket at a path of its own",
            path.display(),
            file_kind(&meta.file_type())
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another chom node is serving the admin socket {}; refusing to start a second one",
                path.display()
            ),
            Err(_) => {
                info!(socket = %path.display(), "removing stale admin socket left by a node that is gone");
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            }
        },
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind admin socket {} (admin.socket)", path.display()))?;
    // Explicit, because systemd's UMask=0027 (or 0077) would otherwise decide the mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot chmod 0660 {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    Ok((
        listener,
        RemoveOnDrop {
            path: path.to_owned(),
            dev_ino: (meta.dev(), meta.ino()),
        },
    ))
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

/// Removes the admin socket file when the node exits normally, but only the socket this node
/// bound: a file put in its place since (another node's socket, anything else) is left alone.
pub struct RemoveOnDrop {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.dev_ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

// === the node name ===

/// How often the keeper checks that the name's lock session is alive.
const NAME_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Try to claim the node name once. `Ok(Some)`: held; `Ok(None)`: the database did not answer
/// (decided later, in the background); `Err`: another live node has it (exit 1).
async fn claim_name(config: &Config, instance: &Instance) -> anyhow::Result<Option<NodeLock>> {
    match identity::acquire(&config.database, instance, config.database.connect_timeout).await {
        Ok(lock) => Ok(Some(lock)),
        Err(IdentityError::Unreachable(why)) => {
            warn!(error = %why, "database not reachable yet: the node name is claimed once it is; no job is claimed before");
            Ok(None)
        }
        Err(other) => Err(other.into()),
    }
}

/// Holds the node name for the life of the process: claims it (retrying while the database is
/// unreachable), then checks its lock session every few seconds and takes the lock again
/// after a lost connection. Reports a name held by another live node through `lost`.
struct NameKeeper {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl NameKeeper {
    fn start(
        ctx: Arc<NodeContext>,
        instance: Instance,
        lock: Option<NodeLock>,
        lost: oneshot::Sender<IdentityError>,
    ) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            // Cancelling drops the lock: the file lock is released at once, the PostgreSQL
            // session ends with its connection and the server releases the advisory lock.
            token
                .run_until_cancelled(keep_name(&ctx, &instance, lock, lost))
                .await;
        });
        NameKeeper { stop, task }
    }

    /// Stop checking and give the name back.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn keep_name(
    ctx: &NodeContext,
    instance: &Instance,
    mut lock: Option<NodeLock>,
    lost: oneshot::Sender<IdentityError>,
) {
    let timeout = ctx.config.database.connect_timeout;
    let mut pace = chom_core::backoff::Doubling::new(
        std::time::Duration::from_millis(200),
        NAME_CHECK_INTERVAL,
    );
    while lock.is_none() {
        tokio::time::sleep(pace.next_delay()).await;
        match identity::acquire(&ctx.config.database, instance, timeout).await {
            Ok(l) => lock = Some(l),
            Err(IdentityError::Unreachable(_)) => {}
            Err(taken) => {
                let _ = lost.send(taken);
                return;
            }
        }
    }
    info!(node = %instance.name, instance = %instance.id, "node name held on the database");
    ctx.readiness.set_identity_held();
    ctx.queue.wake_for_new_jobs();
    let Some(NodeLock::Postgres(mut pg)) = lock else {
        // A file lock cannot be lost while the process lives: hold it until cancelled.
        let _held = lock;
        std::future::pending::<()>().await;
        return;
    };
    let mut unreachable_logged = false;
    loop {
        tokio::time::sleep(NAME_CHECK_INTERVAL).await;
        match pg.check(timeout).await {
            Ok(identity::Check::Held) => {}
            Ok(identity::Check::Reacquired) => {
                unreachable_logged = false;
                info!(node = %instance.name, "node name held again after the database connection was lost");
            }
            Err(IdentityError::Unreachable(why)) => {
                if !unreachable_logged {
                    warn!(error = %why, "cannot check the node name's lock; retrying");
                    unreachable_logged = true;
                }
            }
            Err(taken) => {
                let _ = lost.send(taken);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The node runs in-process, driven by a channel instead of Unix signals: ready, then the
    /// first stop request makes it drain and return 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_request_from_the_caller_stops_the_node_gracefully() {
        let dir = std::env::temp_dir().join(format!("chom-node-inproc-{}", rand::random::<u64>()));
        let text = format!(
            "[node]\nname = \"inproc\"\ndata_dir = \"{d}\"\nshutdown_timeout = \"10s\"\n\
             [database]\nurl = \"sqlite://{d}/chom.db\"\n[http]\nlisten = \"127.0.0.1:0\"\n[ui]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nsocket = \"{d}/chom.sock\"\n",
            d = dir.display()
        );
        let config = Config::from_toml_str(&text, &[]).expect("valid config");
        let socket = config.admin.socket.clone();
        let (stop, requests) = futures::channel::mpsc::unbounded::<&'static str>();
        let node = tokio::spawn(run(
            config,
            Signals::from_stream(futures::StreamExt::boxed(requests)),
            None,
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = crate::rpc::client::call(
                &socket,
                "status",
                serde_json::json!({}),
                Duration::from_secs(5),
            )
            .await;
            if status.is_ok_and(|s| s["ready"] == true) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.unbounded_send("test").unwrap();
        let code = tokio::time::timeout(Duration::from_secs(30), node)
            .await
            .expect("stopped in time")
            .expect("no panic")
            .expect("no start-up error");
        assert_eq!(code, 0);
        assert!(!socket.exists(), "the socket is removed at exit");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
