//! The small handles the node's parts share, each owning one concern. They are built once by
//! the binary's wiring (`src/wiring.rs`) and cloned into exactly the actors that use them: an
//! actor's `Args` lists its handles, so what it can touch is visible in its type.
//!
//! Handles of one part of the tree live with that part: the published backends with the
//! store actor ([`crate::backends`]), the cached health report with the checks
//! ([`crate::monitors::health::HealthCache`]), the memory sample with the memory monitor
//! ([`crate::monitors::memory::MemoryStatus`]). None of them knows the edges' aggregate
//! ([`crate::context::NodeContext`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use chom_supervisors::SupervisorMsg;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// This process among the nodes sharing its database: its instance id (what it holds leases
/// and trial calls under in the cache) and how many nodes heartbeat there now (the reaper
/// counts them at each tick; 0 before the first). Cloning shares the count.
#[derive(Debug, Clone)]
pub struct Peers {
    instance: Arc<str>,
    live: Arc<AtomicU64>,
}

impl Peers {
    /// This process, known as `instance`, with no count yet.
    pub fn new(instance: &str) -> Peers {
        Peers {
            instance: instance.into(),
            live: Arc::default(),
        }
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Nodes that heartbeat recently, this one included (0 before the first count).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Set by the reaper after each heartbeat.
    pub fn set_live(&self, nodes: u64) {
        self.live.store(nodes, Ordering::Relaxed);
    }
}

impl Default for Peers {
    /// A process alone, with a random instance id (tests, tools).
    fn default() -> Peers {
        Peers::new(&format!("{:016x}", rand::random::<u64>()))
    }
}

/// Who this node is: fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `node.name`, or the host name when that is empty.
    pub node_name: String,
    /// The node's version (the binary's package version).
    pub version: &'static str,
    /// When the node process started (monotonic, for uptime).
    pub started_at: Instant,
    /// When the node process started (wall clock, for display).
    pub started_wall: SystemTime,
    /// Whether the fault-injection RPCs and job kinds (`debug.*`) exist (`CHOM_DEBUG_HOOKS=1`).
    pub debug_hooks: bool,
    /// This process's instance id (random per start; `chom cluster` shows it).
    pub instance_id: String,
}

impl NodeInfo {
    /// A node starting now.
    pub fn new(
        node_name: String,
        version: &'static str,
        debug_hooks: bool,
        instance_id: String,
    ) -> Self {
        NodeInfo {
            node_name,
            version,
            started_at: Instant::now(),
            started_wall: SystemTime::now(),
            debug_hooks,
            instance_id,
        }
    }
}

/// Readiness: migrations applied (the store actor), the node name held (`chom node`'s name
/// keeper) and the tree started (`chom node`). Cloning shares the same state.
#[derive(Clone)]
pub struct Readiness(Arc<ReadinessInner>);

struct ReadinessInner {
    migrated: watch::Sender<bool>,
    identity: watch::Sender<bool>,
    tree_started: watch::Sender<bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(ReadinessInner {
            migrated: watch::Sender::new(false),
            identity: watch::Sender::new(false),
            tree_started: watch::Sender::new(false),
        }))
    }
}

impl Readiness {
    /// Whether migrations have been applied by this process.
    pub fn migrated(&self) -> bool {
        *self.0.migrated.borrow()
    }

    /// Record that migrations ran.
    pub fn set_migrated(&self) {
        self.0.migrated.send_replace(true);
    }

    /// Wait until migrations ran.
    pub async fn wait_migrated(&self) {
        let mut migrated = self.0.migrated.subscribe();
        let _ = migrated.wait_for(|m| *m).await;
    }

    /// Whether this process holds its node name on the database (`identity`): until then
    /// it neither claims jobs nor releases jobs reserved under its name, which would belong to
    /// another live node if the name were taken.
    pub fn identity_held(&self) -> bool {
        *self.0.identity.borrow()
    }

    /// Record that the node name is held (set once by `chom node`).
    pub fn set_identity_held(&self) {
        self.0.identity.send_replace(true);
    }

    /// Wait until the node name is held.
    pub async fn wait_identity(&self) {
        let mut held = self.0.identity.subscribe();
        // `wait_for` returns Err only when the sender is dropped, which `self` prevents.
        let _ = held.wait_for(|h| *h).await;
    }

    /// Record that the supervision tree started.
    pub fn set_tree_started(&self) {
        self.0.tree_started.send_replace(true);
    }

    /// Ready = migrations ran, the tree started and the node name is held (what
    /// `/health/ready` and READY=1 mean).
    pub fn ready(&self) -> bool {
        self.migrated() && *self.0.tree_started.borrow() && self.identity_held()
    }

    /// Wait until [`Readiness::ready`] holds.
    pub async fn wait_ready(&self) {
        let mut migrated = self.0.migrated.subscribe();
        let mut started = self.0.tree_started.subscribe();
        let _ = migrated.wait_for(|m| *m).await;
        let _ = started.wait_for(|s| *s).await;
        self.wait_identity().await;
    }
}

/// The root supervisor, once spawned (`chom node` sets it; the health and watchdog monitors
/// and the admin RPC reach the tree through it).
#[derive(Clone, Default)]
pub struct TreeRoot(Arc<OnceLock<ActorRef<SupervisorMsg>>>);

impl TreeRoot {
    /// Remember the root supervisor (set once, right after it is spawned).
    pub fn set(&self, root: ActorRef<SupervisorMsg>) {
        let _ = self.0.set(root);
    }

    /// The root supervisor, once started.
    pub fn get(&self) -> Option<&ActorRef<SupervisorMsg>> {
        self.0.get()
    }
}

/// Start failures injected with `debug.fault`, by actor path: how many more starts must fail.
/// Kept outside the supervisors, so a fault survives the restart of its subtree (a child that
/// "fails forever").
#[derive(Clone, Default)]
pub struct StartFaults(Arc<Mutex<HashMap<String, u32>>>);

impl StartFaults {
    /// Make the next `starts` starts of the actor at `path` fail (`u32::MAX`: forever).
    pub fn inject(&self, path: &str, starts: u32) {
        self.0
            .lock()
            .expect("faults lock")
            .insert(path.to_owned(), starts);
    }

    /// Consume one injected start failure for `path`, if any is armed.
    pub fn take(&self, path: &str) -> bool {
        let mut faults = self.0.lock().expect("faults lock");
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
}

/// Exit status asking for a restart (EX_TEMPFAIL): systemd's `Restart=always` starts a fresh
/// process, and operators can tell it from a crash (70) or a clean stop (0).
pub const EXIT_RESTART: u8 = 75;

/// The node's way out: a graceful shutdown asked for (admin `shutdown`, the memory monitor),
/// whether a fresh process should follow, and the operators' commands the process waits for
/// before it exits. Cloning shares the same state.
#[derive(Clone, Default)]
pub struct Lifecycle(Arc<LifecycleInner>);

#[derive(Default)]
struct LifecycleInner {
    shutdown: CancellationToken,
    restart_requested: AtomicBool,
    /// Operators' commands run in the background (`memory.action`): the node waits for them
    /// before it exits, so a service restart is not cut short by the exit that follows it.
    operator_commands: TaskTracker,
}

impl Lifecycle {
    /// Ask the node to shut down gracefully (admin `shutdown`, same as SIGTERM).
    pub fn request_shutdown(&self) {
        self.0.shutdown.cancel();
    }

    /// Resolves when a graceful shutdown was requested.
    pub fn shutdown_requested(&self) -> WaitForCancellationFuture<'_> {
        self.0.shutdown.cancelled()
    }

    /// Shut down gracefully and exit with [`EXIT_RESTART`] so the service manager starts a
    /// fresh process (the memory monitor, before the kernel's OOM killer would act).
    pub fn request_restart(&self) {
        self.0.restart_requested.store(true, Ordering::SeqCst);
        self.0.shutdown.cancel();
    }

    /// Whether [`Lifecycle::request_restart`] was called.
    pub fn restart_requested(&self) -> bool {
        self.0.restart_requested.load(Ordering::SeqCst)
    }

    /// Run an operator's command in the background; [`Lifecycle::wait_operator_commands`]
    /// waits for it before the process exits.
    pub fn spawn_operator_command(
        &self,
        run: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.0.operator_commands.spawn(run);
    }

    /// Wait up to `limit` for the operators' commands still running (before the process
    /// exits), and log what happened to them.
    pub async fn wait_operator_commands(&self, limit: std::time::Duration) {
        let commands = &self.0.operator_commands;
        let running = commands.len();
        commands.close();
        if running == 0 {
            return;
        }
        if tokio::time::timeout(limit, commands.wait()).await.is_ok() {
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
}

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

    #[test]
    fn an_injected_start_failure_is_used_up_unless_forever() {
        let faults = StartFaults::default();
        faults.inject("queue/reaper", 1);
        faults.inject("store", u32::MAX);
        assert!(faults.take("queue/reaper"));
        assert!(!faults.take("queue/reaper"), "used up");
        assert!((0..3).all(|_| faults.take("store")), "forever");
        assert!(!faults.take("edge/http"), "never armed");
    }

    #[tokio::test]
    async fn ready_needs_migrations_the_name_and_the_tree() {
        let readiness = Readiness::default();
        readiness.set_migrated();
        readiness.set_tree_started();
        assert!(!readiness.ready(), "the name is not held yet");
        let waiter = tokio::spawn({
            let r = readiness.clone();
            async move { r.wait_ready().await }
        });
        readiness.set_identity_held();
        assert!(readiness.ready());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wait_ready returns once ready")
            .unwrap();
    }
}
