//! The node's supervision tree (DESIGN.md "Supervision tree"), built from the config:
//!
//! ```text
//! root (rest_for_one)
//! ├── store               database pool + cache client
//! ├── queue (one_for_one)
//! │   ├── completer       batched writes of job results
//! │   ├── worker:1..N     one job at a time each
//! │   ├── dispatcher      batched claims, LISTEN/NOTIFY + polling
//! │   └── reaper          rescue, stuck jobs, pruning, dead-letter analysis
//! ├── fleet (dynamic one_for_one)
//! │   ├── inventory       keeps one vps actor per row of vps_servers
//! │   └── vps:<id>        SSH session + circuit breaker of one server (added at run time)
//! ├── monitors (one_for_one)
//! │   ├── health          periodic checks, cached for /health, remediation
//! │   ├── memory          RSS / cgroup / host memory; recycle workers, then exit 75
//! │   └── watchdog        sd_notify WATCHDOG=1 while the tree answers
//! └── edge (one_for_one)
//!     ├── http            /health, /metrics
//!     └── admin           the admin socket
//! ```
//!
//! rest_for_one at the root: a restarted store means rebuilt pools, and everything started
//! after it is restarted too, so no actor keeps using what the old store owned.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::backends::{StoreActor, StoreArgs};
use chom_actors::context::NodeContext;
use chom_actors::fleet::Fleet;
use chom_actors::fleet::inventory::{InventoryActor, InventoryArgs};
use chom_actors::metrics::Metrics;
use chom_actors::monitors::health_actor::{HealthActor, HealthArgs};
use chom_actors::monitors::memory::{MemoryActor, MemoryArgs};
use chom_actors::monitors::watchdog::{WatchdogActor, WatchdogArgs};
use chom_actors::queue::QueueShared;
use chom_actors::queue::completer::{CompleterActor, CompleterArgs};
use chom_actors::queue::dispatcher::{DispatcherActor, DispatcherArgs};
use chom_actors::queue::reaper::{ReaperActor, ReaperArgs};
use chom_actors::queue::worker::{WorkerActor, WorkerArgs};
use chom_core::config::SupervisionConfig;
use chom_supervisors::{
    Backoff, ChildSpec, Intensity, Observer, Shutdown, StartCtx, Strategy, SupervisorArgs,
    SupervisorSpec,
};
use ractor::{Actor, SpawnErr};
use tracing::{error, info, warn};

use crate::edge::admin::{AdminActor, AdminArgs};
use crate::edge::http::{HttpActor, HttpArgs};

/// Listeners bound before the tree starts.
#[derive(Clone)]
pub struct Listeners {
    /// The HTTP listener.
    pub http: Arc<std::net::TcpListener>,
    /// The admin socket.
    pub admin: Arc<std::os::unix::net::UnixListener>,
}

/// Maps supervision events to metrics and logs, and remembers whether the root gave up.
pub struct NodeObserver {
    metrics: Metrics,
    /// Why the root gave up: the chain of failures, innermost last.
    root_gave_up: std::sync::Mutex<Option<String>>,
}

impl NodeObserver {
    /// An observer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        NodeObserver {
            metrics,
            root_gave_up: std::sync::Mutex::new(None),
        }
    }

    /// When the root supervisor exceeded its restart intensity: why, as the chain of
    /// failures that led there (each supervisor's reason names the failure below it).
    pub fn root_gave_up(&self) -> Option<String> {
        self.root_gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Observer for NodeObserver {
    fn child_restarted(&self, path: &str, reason: &str) {
        info!(actor = path, reason, "actor restarted");
        self.metrics.actor_restarted(path);
    }

    fn child_exited(&self, path: &str, reason: &str, abnormal: bool) {
        if abnormal {
            warn!(actor = path, reason, "actor failed");
        }
    }

    fn escalated(&self, supervisor_path: &str, reason: &str) {
        let supervisor = if supervisor_path.is_empty() {
            "root"
        } else {
            supervisor_path
        };
        error!(
            supervisor,
            reason, "supervisor exceeded its restart intensity; escalating"
        );
        self.metrics.supervisor_escalated(supervisor_path);
        if supervisor_path.is_empty() {
            *self.root_gave_up.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
    }
}

/// The root supervisor's arguments.
pub fn root(
    ctx: Arc<NodeContext>,
    listeners: Listeners,
    observer: Arc<NodeObserver>,
) -> SupervisorArgs {
    let sup = &ctx.config.supervision;
    let shared = QueueShared::new(ctx.clone(), ctx.config.queue.workers as usize);
    let _ = ctx.queue.set(shared.clone());
    let fleet_shared = Fleet::new(ctx.clone());
    let _ = ctx.fleet.set(fleet_shared.clone());
    let children = vec![
        store(ctx.clone()),
        // The fleet before the queue: workers call the fleet (vps.exec), so rest_for_one
        // restarts the queue when the fleet goes, a queue failure leaves the SSH sessions
        // alone, and on the way down the workers finish against a live fleet.
        fleet(fleet_shared, observer.clone(), sup),
        queue(&ctx, shared, observer.clone(), sup),
        monitors(ctx.clone(), observer.clone(), sup),
        edge(ctx.clone(), listeners, observer.clone(), sup),
    ];
    SupervisorArgs {
        path: String::new(),
        spec: spec(Strategy::RestForOne, children, observer, sup),
    }
}

fn spec(
    strategy: Strategy,
    children: Vec<ChildSpec>,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> SupervisorSpec {
    SupervisorSpec {
        strategy,
        intensity: Intensity {
            max_restarts: sup.max_restarts,
            period: sup.period,
        },
        backoff: Backoff {
            min: sup.backoff_min,
            max: sup.backoff_max,
            jitter: sup.backoff_jitter,
            reset_after: sup.backoff_reset,
            immediate: sup.immediate_restarts,
        },
        children,
        max_children: None,
        observer,
    }
}

/// A leaf actor started with fresh arguments on every (re)start. The start honours
/// start failures injected with `debug.fault`, which live in the context so that they survive
/// the restart of the whole subtree (a child that "fails forever").
fn leaf<A, F>(ctx: &Arc<NodeContext>, id: &str, actor: fn() -> A, args: F) -> ChildSpec
where
    A: Actor,
    F: Fn() -> A::Arguments + Send + Sync + 'static,
{
    let ctx = ctx.clone();
    ChildSpec::worker(id, move |start: StartCtx| {
        let injected = ctx.take_start_failure(&start.path);
        let args = args();
        async move {
            if injected {
                return Err(SpawnErr::StartupFailed(
                    "injected start failure (debug.fault)".into(),
                ));
            }
            let (actor, _) = Actor::spawn_linked(None, actor(), args, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    })
}

fn store(ctx: Arc<NodeContext>) -> ChildSpec {
    let args_ctx = ctx.clone();
    leaf(
        &ctx,
        "store",
        || StoreActor,
        move || StoreArgs {
            ctx: args_ctx.clone(),
        },
    )
    // Closing pools waits for connections in use; bounded in the actor itself too.
    .shutdown(Shutdown::Timeout(Duration::from_secs(10)))
}

/// `queue` (one_for_one): completer first and reaper last, so that a shutdown (reverse order)
/// stops maintenance and claims first, lets the workers finish their jobs, and stops the
/// completer only after it wrote their results.
fn queue(
    ctx: &Arc<NodeContext>,
    shared: Arc<QueueShared>,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> ChildSpec {
    let mut children = Vec::new();
    let s = shared.clone();
    children.push(
        leaf(
            ctx,
            "completer",
            || CompleterActor,
            move || CompleterArgs { shared: s.clone() },
        )
        .shutdown(Shutdown::Timeout(Duration::from_secs(10))),
    );
    // A worker finishes its current job when stopped; jobs still running when the node's
    // shutdown timeout expires are released for retry by `node::run`.
    let grace = ctx.config.node.shutdown_timeout;
    for index in 0..shared.workers() {
        let s = shared.clone();
        children.push(
            leaf(
                ctx,
                &format!("worker:{}", index + 1),
                || WorkerActor,
                move || WorkerArgs {
                    shared: s.clone(),
                    index,
                },
            )
            .shutdown(Shutdown::Timeout(grace)),
        );
    }
    let s = shared.clone();
    children.push(leaf(
        ctx,
        "dispatcher",
        || DispatcherActor,
        move || DispatcherArgs { shared: s.clone() },
    ));
    let s = shared;
    children.push(leaf(
        ctx,
        "reaper",
        || ReaperActor,
        move || ReaperArgs { shared: s.clone() },
    ));
    subtree("queue", Strategy::OneForOne, children, observer, sup)
}

/// `fleet` (dynamic one_for_one): `inventory` first, which adds a `vps:<id>` child per server
/// (and removes them) through this supervisor. A restarted fleet starts with `inventory`
/// alone, which adds the servers again.
fn fleet(fleet: Arc<Fleet>, observer: Arc<NodeObserver>, sup: &SupervisionConfig) -> ChildSpec {
    let inventory = ChildSpec::worker("inventory", move |start: StartCtx| {
        let args = InventoryArgs {
            fleet: fleet.clone(),
            supervisor: start.supervisor.clone().into(),
        };
        async move {
            let (actor, _) =
                Actor::spawn_linked(None, InventoryActor, args, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    });
    subtree("fleet", Strategy::OneForOne, vec![inventory], observer, sup)
}

fn monitors(
    ctx: Arc<NodeContext>,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> ChildSpec {
    let health_ctx = ctx.clone();
    let health = leaf(
        &ctx,
        "health",
        || HealthActor,
        move || HealthArgs {
            ctx: health_ctx.clone(),
        },
    );
    let memory_ctx = ctx.clone();
    let memory = leaf(
        &ctx,
        "memory",
        || MemoryActor,
        move || MemoryArgs {
            ctx: memory_ctx.clone(),
        },
    );
    let watchdog_period = sd_notify::watchdog_enabled();
    let args_ctx = ctx.clone();
    let watchdog = leaf(
        &ctx,
        "watchdog",
        || WatchdogActor,
        move || WatchdogArgs {
            ctx: args_ctx.clone(),
            watchdog: watchdog_period,
        },
    );
    subtree(
        "monitors",
        Strategy::OneForOne,
        vec![health, memory, watchdog],
        observer,
        sup,
    )
}

fn edge(
    ctx: Arc<NodeContext>,
    listeners: Listeners,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> ChildSpec {
    let (http_ctx, http_listener) = (ctx.clone(), listeners.http.clone());
    let http = leaf(
        &ctx,
        "http",
        || HttpActor,
        move || HttpArgs {
            ctx: http_ctx.clone(),
            listener: http_listener.clone(),
        },
    );
    let (admin_ctx, admin_listener) = (ctx.clone(), listeners.admin);
    let admin = leaf(
        &ctx,
        "admin",
        || AdminActor,
        move || AdminArgs {
            ctx: admin_ctx.clone(),
            listener: admin_listener.clone(),
        },
    );
    subtree(
        "edge",
        Strategy::OneForOne,
        vec![http, admin],
        observer,
        sup,
    )
}

fn subtree(
    id: &'static str,
    strategy: Strategy,
    children: Vec<ChildSpec>,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> ChildSpec {
    // A restarted subtree starts again from the same (cheaply cloned) spec.
    ChildSpec::subtree(id, spec(strategy, children, observer, sup))
}
