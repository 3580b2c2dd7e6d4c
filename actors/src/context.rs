//! What every actor of one node shares: config, metrics, the published backends, readiness,
//! the root of the tree, and the shutdown signal.
//!
//! The store actor publishes its backends through a `watch` channel instead of handing pools to
//! each consumer: when the store is restarted (pools rebuilt), consumers see the new backends on
//! their next operation without being restarted themselves.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use chom_core::config::Config;
use chom_supervisors::SupervisorMsg;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::metrics::Metrics;
use chom_store::Store;

/// The database and cache handles the store actor owns.
#[derive(Clone)]
pub struct Backends {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// The cache.
    pub cache: Cache,
}

/// State shared by every actor of a node. Created once by `chom node`, before the tree.
pub struct NodeContext {
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// `node.name`, or the host name when that is empty.
    pub node_name: String,
    /// The node's version (the binary's package version).
    pub version: &'static str,
    /// Every metric instrument.
    pub metrics: Metrics,
    /// When the node process started (monotonic, for uptime).
    pub started_at: Instant,
    /// When the node process started (wall clock, for display).
    pub started_wall: SystemTime,
    /// Whether the fault-injection RPCs (`debug.*`) are served (`CHOM_DEBUG_HOOKS=1`).
    pub debug_hooks: bool,
    /// Injected start failures by actor path (`debug.fault`): how many more starts must fail.
    /// Kept here, outside the supervisors, so a fault survives the restart of its subtree.
    faults: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The queue subtree's shared state (admin methods wake the dispatcher through it).
    pub queue: OnceLock<Arc<crate::queue::QueueShared>>,
    /// The fleet's shared state (jobs reach the VPS actors through it).
    pub fleet: OnceLock<Arc<crate::fleet::Fleet>>,
    /// The last report of `monitors/health` and when it was made (served by `/health`).
    health: std::sync::Mutex<Option<(Instant, crate::monitors::health::HealthReport)>>,
    restart_requested: std::sync::atomic::AtomicBool,
    memory: std::sync::Mutex<Option<serde_json::Value>>,
    /// The address the HTTP listener actually bound (`http.listen` may ask for port 0).
    pub http_addr: OnceLock<std::net::SocketAddr>,
    backends: watch::Sender<Option<Backends>>,
    migrated: watch::Sender<bool>,
    identity: watch::Sender<bool>,
    tree_started: watch::Sender<bool>,
    root: OnceLock<ActorRef<SupervisorMsg>>,
    shutdown: CancellationToken,
    /// Operators' commands run in the background (`memory.action`): the node waits for them
    /// before it exits, so a service restart is not cut short by the exit that follows it.
    operator_commands: TaskTracker,
}

impl NodeContext {
    /// A context for a node that has not started its tree yet.
    pub fn new(
        config: Arc<Config>,
        node_name: String,
        version: &'static str,
        debug_hooks: bool,
    ) -> Self {
        NodeContext {
            config,
            node_name,
            version,
            metrics: Metrics::new(version),
            started_at: Instant::now(),
            started_wall: SystemTime::now(),
            debug_hooks,
            http_addr: OnceLock::new(),
            queue: OnceLock::new(),
            fleet: OnceLock::new(),
            health: std::sync::Mutex::new(None),
            restart_requested: Default::default(),
            memory: std::sync::Mutex::new(None),
            faults: Default::default(),
            backends: watch::Sender::new(None),
            migrated: watch::Sender::new(false),
            identity: watch::Sender::new(false),
            tree_started: watch::Sender::new(false),
            root: OnceLock::new(),
            shutdown: CancellationToken::new(),
            operator_commands: TaskTracker::new(),
        }
    }

    /// The backends currently published by the store actor, if it is running.
    /// Keep the health actor's latest report.
    pub fn set_health_report(&self, report: crate::monitors::health::HealthReport) {
        *self.health.lock().expect("health lock") = Some((Instant::now(), report));
    }

    /// The health actor's latest report, if it is younger than `max_age`.
    pub fn cached_health(
        &self,
        max_age: std::time::Duration,
    ) -> Option<crate::monitors::health::HealthReport> {
        self.health
            .lock()
            .expect("health lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, r)| r.clone())
    }

    pub fn backends(&self) -> Option<Backends> {
        self.backends.borrow().clone()
    }

    /// Publish (or withdraw, with `None`) the store actor's backends.
    pub fn publish_backends(&self, backends: Option<Backends>) {
        self.backends.send_replace(backends);
    }

    /// Withdraw `mine` if it is still what is published. A stopping store incarnation must not
    /// withdraw the backends its replacement already published: its stop can finish after the
    /// new one started, and the node would then run without a store, silently (found by the
    /// store-crash fault scenario: no job ran again after one restart in four).
    pub fn withdraw_backends(&self, mine: &Backends) {
        self.backends.send_if_modified(|current| {
            let ours = current
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(&b.store, &mine.store));
            if ours {
                *current = None;
            }
            ours
        });
    }

    /// Whether migrations have been applied by this process.
    pub fn migrated(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Whether this process holds its node name on the database (`identity`): until then
    /// it neither claims jobs nor releases jobs reserved under its name, which would belong to
    /// another live node if the name were taken.
    pub fn identity_held(&self) -> bool {
        *self.identity.borrow()
    }

    /// Record that the node name is held (set once by `chom node`).
    pub fn set_identity_held(&self) {
        self.identity.send_replace(true);
    }

    /// Wait until the node name is held.
    pub async fn wait_identity(&self) {
        let mut held = self.identity.subscribe();
        let _ = held.wait_for(|h| *h).await;
    }

    /// Record that migrations ran.
    pub fn set_migrated(&self) {
        self.migrated.send_replace(true);
    }

    /// Record that the supervision tree started.
    pub fn set_tree_started(&self) {
        self.tree_started.send_replace(true);
    }

    /// Ready = migrations ran, the tree started and the node name is held (what
    /// `/health/ready` and READY=1 mean).
    pub fn ready(&self) -> bool {
        self.migrated() && *self.tree_started.borrow() && self.identity_held()
    }

    /// Wait until [`NodeContext::ready`] holds.
    pub async fn wait_ready(&self) {
        let mut migrated = self.migrated.subscribe();
        let mut started = self.tree_started.subscribe();
        // `wait_for` returns Err only when the sender is dropped, which `self` prevents.
        let _ = migrated.wait_for(|m| *m).await;
        let _ = started.wait_for(|s| *s).await;
        self.wait_identity().await;
    }

    /// Remember the root supervisor (set once, right after it is spawned).
    pub fn set_root(&self, root: ActorRef<SupervisorMsg>) {
        let _ = self.root.set(root);
    }

    /// The root supervisor, once started.
    pub fn root(&self) -> Option<&ActorRef<SupervisorMsg>> {
        self.root.get()
    }

    /// Make the next `starts` starts of the actor at `path` fail (`u32::MAX`: forever).
    pub fn inject_start_failures(&self, path: &str, starts: u32) {
        self.faults
            .lock()
            .expect("faults lock")
            .insert(path.to_owned(), starts);
    }

    /// Consume one injected start failure for `path`, if any is armed.
    pub fn take_start_failure(&self, path: &str) -> bool {
        let mut faults = self.faults.lock().expect("faults lock");
        match faults.get_mut(path) {
            None | Some(0) => false,
            Some(n) => {
                if *n != u32::MAX {
                    *n -= 1;
                }
                true
            }
        }
    }

    /// Shut down gracefully and exit with [`EXIT_RESTART`] so the service manager starts a
    /// fresh process (the memory actor, before the kernel's OOM killer would act).
    pub fn request_restart(&self) {
        self.restart_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shutdown.cancel();
    }

    /// Run an operator's command in the background; [`NodeContext::wait_operator_commands`]
    /// waits for it before the process exits.
    pub fn spawn_operator_command(
        &self,
        run: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.operator_commands.spawn(run);
    }

    /// Wait up to `limit` for the operators' commands still running (before the process
    /// exits), and log what happened to them.
    pub async fn wait_operator_commands(&self, limit: std::time::Duration) {
        let running = self.operator_commands.len();
        self.operator_commands.close();
        if running == 0 {
            return;
        }
        if tokio::time::timeout(limit, self.operator_commands.wait())
            .await
            .is_ok()
        {
            tracing::info!(
                commands = running,
                "waited for operator commands (memory.action) to finish"
            );
        } else {
            tracing::warn!(
                commands = running,
                "operator command (memory.action) still running at node.shutdown_timeout; exiting without it"
            );
        }
    }

    /// Whether [`NodeContext::request_restart`] was called.
    pub fn restart_requested(&self) -> bool {
        self.restart_requested
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The memory actor's last sample (for `chom status`).
    pub fn set_memory_status(&self, status: serde_json::Value) {
        *self.memory.lock().expect("memory lock") = Some(status);
    }

    /// The memory actor's last sample.
    pub fn memory_status(&self) -> Option<serde_json::Value> {
        self.memory.lock().expect("memory lock").clone()
    }

    /// Ask the node to shut down gracefully (admin `shutdown`, same as SIGTERM).
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves when a graceful shutdown was requested.
    pub fn shutdown_requested(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }
}

/// Exit status asking for a restart (EX_TEMPFAIL): systemd's `Restart=always` starts a fresh
/// process, and operators can tell it from a crash (70) or a clean stop (0).
pub const EXIT_RESTART: u8 = 75;

/// Aborts a spawned task when dropped, so a task owned by an actor's state dies with the actor
/// even when the actor is killed (ractor skips `post_stop` then, but still drops the state).
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(dir: &std::path::Path, name: &str) -> Backends {
        let mut config = chom_core::config::Config::default();
        config.database.url = format!("sqlite://{}/{name}.db", dir.display());
        Backends {
            store: chom_store::open(&config.database).unwrap(),
            cache: Cache::open(&config.cache).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_stopping_store_withdraws_only_its_own_backends() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = NodeContext::new(Arc::new(Default::default()), "t".into(), "0", false);
        let (old, new) = (backends(dir.path(), "a"), backends(dir.path(), "b"));
        ctx.publish_backends(Some(old.clone()));
        // The replacement starts before the old incarnation's stop has finished.
        ctx.publish_backends(Some(new.clone()));
        ctx.withdraw_backends(&old);
        let current = ctx.backends().expect("the new backends stay published");
        assert!(Arc::ptr_eq(&current.store, &new.store));
        // Its own stop withdraws them.
        ctx.withdraw_backends(&new);
        assert!(ctx.backends().is_none());
    }
}
