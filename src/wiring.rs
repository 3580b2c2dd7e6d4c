//! The node's supervision tree (DESIGN.md "Supervision tree"), built from the config:
//!
//! ```text
//! root (rest_for_one)
//! ├── store               database pool + cache client
//! ├── fleet (dynamic one_for_one)
//! │   ├── inventory       keeps one vps actor per row of vps_servers
//! │   ├── breaker-sync    adopts the breaker changes other nodes publish (Redis)
//! │   └── vps:<id>        SSH session + circuit breaker of one server (added at run time)
//! ├── queue (one_for_one)
//! │   ├── completer       batched writes of job results
//! │   ├── worker:1..N     one job at a time each
//! │   ├── dispatcher      batched claims, LISTEN/NOTIFY + polling
//! │   └── reaper          rescue, stuck jobs, pruning, dead-letter analysis
//! ├── monitors (one_for_one)
//! │   ├── health          periodic checks, cached for /health, remediation
//! │   ├── memory          RSS / cgroup / host memory; recycle workers, then exit 75
//! │   └── watchdog        sd_notify WATCHDOG=1 while the tree answers
//! ├── edge (one_for_one)
//! │   ├── http            /health, /metrics
//! │   ├── admin           the admin socket
//! │   └── api             the tenant API (its rate limiter is built here, once)
//! └── observability       dead-letter alerts to Alertmanager, logs to Loki (in the background)
//! ```
//!
//! rest_for_one at the root: a restarted store means rebuilt pools, and everything started
//! after it is restarted too, so no actor keeps using what the old store owned.
//!
//! [`assemble`] is the one place the node is put together, in dependency order: the handles
//! (`chom_actors::handles`, the published backends, the health and memory cells), the fleet's
//! shared state, the queue's (whose workers call the fleet), the edges' aggregate
//! (`NodeContext`), then the tree's specs. Each actor's `Args` get exactly the handles it
//! uses; only the edges get the aggregate.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chom_actors::backends::{PublishedBackends, StoreActor, StoreArgs};
use chom_actors::context::NodeContext;
use chom_actors::fleet::breaker_sync::BreakerSyncActor;
use chom_actors::fleet::breakers::BreakerBoard;
use chom_actors::fleet::inventory::{InventoryActor, InventoryArgs};
use chom_actors::fleet::{Fleet, FleetContext};
use chom_actors::handles::{NodeInfo, Peers, Readiness, StartFaults};
use chom_actors::metrics::Metrics;
use chom_actors::monitors::health_actor::{HealthActor, HealthArgs};
use chom_actors::monitors::memory::{MemoryActor, MemoryArgs};
use chom_actors::monitors::watchdog::{StatusSources, WatchdogActor, WatchdogArgs};
use chom_actors::observability::actor::{LogShipping, ObservabilityActor, ObservabilityArgs};
use chom_actors::observability::loki::LokiQueue;
use chom_actors::observability::{ObservabilityClient, ObservabilityDeps, SpikeReports};
use chom_actors::queue::completer::{CompleterActor, CompleterArgs};
use chom_actors::queue::dispatcher::{DispatcherActor, DispatcherArgs};
use chom_actors::queue::reaper::{ReaperActor, ReaperArgs};
use chom_actors::queue::worker::{WorkerActor, WorkerArgs};
use chom_actors::queue::{QueueContext, QueueShared};
use chom_actors::ratelimit::RateLimiter;
use chom_core::breaker::BreakerSettings;
use chom_core::config::{Config, SupervisionConfig};
use chom_supervisors::{
    Backoff, ChildSpec, Intensity, Observer, Shutdown, StartCtx, Strategy, SupervisorArgs,
    SupervisorSpec,
};
use ractor::{Actor, SpawnErr};
use tracing::{error, info, warn};

use crate::edge::admin::Admin;
use crate::edge::api::Api;
use crate::edge::http::Http;
use crate::edge::ui::Ui;
use crate::edge::{Door, EdgeActor, EdgeArgs};

/// Listeners bound before the tree starts.
#[derive(Clone)]
pub struct Listeners {
    /// The HTTP listener.
    pub http: Arc<std::net::TcpListener>,
    /// The admin socket.
    pub admin: Arc<std::os::unix::net::UnixListener>,
    /// The tenant API's listener.
    pub api: Arc<std::net::TcpListener>,
    /// The operator console's listener.
    pub ui: Arc<std::net::TcpListener>,
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

/// The node, put together and not started yet.
pub struct Assembly {
    /// Every handle, the fleet and the queue: what the edges and `chom node` hold.
    pub node: Arc<NodeContext>,
    /// Records supervision events; says why the root gave up.
    pub observer: Arc<NodeObserver>,
    /// The root supervisor's arguments: the whole tree's specs.
    pub root: SupervisorArgs,
}

/// Put the node together, in dependency order: the handles (each owning one concern), then
/// the fleet (which needs only handles), then the queue's shared state (whose workers call
/// the fleet), then the tree's specs, each actor given exactly the handles it uses. Nothing
/// is started here.
pub fn assemble(
    config: Arc<Config>,
    info: NodeInfo,
    listeners: Listeners,
    logs: Option<LokiQueue>,
) -> Assembly {
    // The handles.
    let metrics = Metrics::new(info.version);
    let published = PublishedBackends::default();
    let readiness = Readiness::default();
    let breakers = BreakerBoard::default();
    let spikes = SpikeReports::default();
    let peers = Peers::new(&info.instance_id);
    let observability = ObservabilityClient::new(ObservabilityDeps {
        config: config.observability.clone(),
        breaker: BreakerSettings::from(&config.breaker),
        metrics: metrics.clone(),
        breakers: breakers.clone(),
        backends: published.clone(),
    });
    // The fleet.
    let fleet = Fleet::new(FleetContext {
        config: config.clone(),
        metrics: metrics.clone(),
        published: published.clone(),
        readiness: readiness.clone(),
        breakers,
        peers: peers.clone(),
    });
    // The queue's shared state.
    let queue = QueueShared::new(
        QueueContext {
            config: config.clone(),
            metrics: metrics.clone(),
            published: published.clone(),
            readiness: readiness.clone(),
            node_name: info.node_name.clone(),
            debug_hooks: info.debug_hooks,
            spikes: spikes.clone(),
            peers,
        },
        config.queue.workers as usize,
    );
    let (http_addr, api_addr) = (OnceLock::new(), OnceLock::new());
    if let Ok(addr) = listeners.http.local_addr() {
        let _ = http_addr.set(addr);
    }
    if let Ok(addr) = listeners.api.local_addr() {
        let _ = api_addr.set(addr);
    }
    let ui_addr = OnceLock::new();
    if let Ok(addr) = listeners.ui.local_addr() {
        let _ = ui_addr.set(addr);
    }
    let observability_args = ObservabilityArgs {
        client: observability.clone(),
        spikes,
        logs: logs.map(|queue| LogShipping {
            queue: Arc::new(tokio::sync::Mutex::new(queue)),
            host: info.node_name.clone(),
        }),
        metrics: metrics.clone(),
    };
    let node = Arc::new(NodeContext {
        config,
        info,
        metrics,
        http_addr,
        api_addr,
        ui_addr,
        published,
        readiness,
        tree_root: Default::default(),
        faults: Default::default(),
        lifecycle: Default::default(),
        health: Default::default(),
        memory: Default::default(),
        fleet,
        queue,
        observability,
    });
    // The tree.
    let observer = Arc::new(NodeObserver::new(node.metrics.clone()));
    let root = root(&node, listeners, observability_args, observer.clone());
    Assembly {
        node,
        observer,
        root,
    }
}

/// The root supervisor's arguments.
fn root(
    node: &Arc<NodeContext>,
    listeners: Listeners,
    observability: ObservabilityArgs,
    observer: Arc<NodeObserver>,
) -> SupervisorArgs {
    let sup = &node.config.supervision;
    let children = vec![
        store(node),
        // The fleet before the queue: workers call the fleet (vps.exec), so rest_for_one
        // restarts the queue when the fleet goes, a queue failure leaves the SSH sessions
        // alone, and on the way down the workers finish against a live fleet.
        fleet(node.fleet.clone(), observer.clone(), sup),
        queue(node, observer.clone(), sup),
        monitors(node, observer.clone(), sup),
        edge(node, listeners, observer.clone(), sup),
        // Last, so that rest_for_one restarts nothing else when it fails: nothing depends on
        // the actor (queries use the client handle). Its stopping first on the way down only
        // means the last lines reach the journal, not Loki.
        fixed_leaf(
            &node.faults,
            "observability",
            || ObservabilityActor,
            observability,
        ),
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
/// start failures injected with `debug.fault`, which live outside the supervisors so that
/// they survive the restart of the whole subtree (a child that "fails forever").
fn leaf<A, M, F>(faults: &StartFaults, id: &str, actor: M, args: F) -> ChildSpec
where
    A: Actor,
    M: Fn() -> A + Send + Sync + 'static,
    F: Fn() -> A::Arguments + Send + Sync + 'static,
{
    let faults = faults.clone();
    ChildSpec::worker(id, move |start: StartCtx| {
        let injected = faults.take(&start.path);
        let args = args();
        let made = actor();
        async move {
            if injected {
                return Err(SpawnErr::StartupFailed(
                    "injected start failure (debug.fault)".into(),
                ));
            }
            let (actor, _) = Actor::spawn_linked(None, made, args, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    })
}

/// A [`leaf`] started with a copy of the same arguments every time.
fn fixed_leaf<A>(faults: &StartFaults, id: &str, actor: fn() -> A, args: A::Arguments) -> ChildSpec
where
    A: Actor,
    A::Arguments: Clone + Sync,
{
    leaf(faults, id, actor, move || args.clone())
}

fn store(node: &NodeContext) -> ChildSpec {
    let args = StoreArgs {
        config: node.config.clone(),
        node: node.info.clone(),
        backends: node.published.clone(),
        readiness: node.readiness.clone(),
    };
    fixed_leaf(&node.faults, "store", || StoreActor, args)
        // Closing pools waits for connections in use; bounded in the actor itself too.
        .shutdown(Shutdown::Timeout(Duration::from_secs(10)))
}

/// A queue [`leaf`] whose arguments are the queue's shared state alone.
fn queue_leaf<A: Actor>(
    faults: &StartFaults,
    id: &str,
    actor: fn() -> A,
    shared: &Arc<QueueShared>,
    args: fn(Arc<QueueShared>) -> A::Arguments,
) -> ChildSpec {
    let shared = shared.clone();
    leaf(faults, id, actor, move || args(shared.clone()))
}

/// `queue` (one_for_one): completer first and reaper last, so that a shutdown (reverse order)
/// stops maintenance and claims first, lets the workers finish their jobs, and stops the
/// completer only after it wrote their results.
fn queue(node: &NodeContext, observer: Arc<NodeObserver>, sup: &SupervisionConfig) -> ChildSpec {
    let faults = &node.faults;
    let shared = &node.queue;
    let mut children = Vec::new();
    children.push(
        queue_leaf(
            faults,
            "completer",
            || CompleterActor,
            shared,
            |shared| CompleterArgs { shared },
        )
        .shutdown(Shutdown::Timeout(Duration::from_secs(10))),
    );
    // A worker finishes its current job when stopped; jobs still running when the node's
    // shutdown timeout expires are released for retry by `node::run`.
    let grace = node.config.node.shutdown_timeout;
    for index in 0..shared.workers() {
        let (s, fleet) = (shared.clone(), node.fleet.clone());
        children.push(
            leaf(
                faults,
                &format!("worker:{}", index + 1),
                || WorkerActor,
                move || WorkerArgs {
                    shared: s.clone(),
                    index,
                    fleet: fleet.clone(),
                },
            )
            .shutdown(Shutdown::Timeout(grace)),
        );
    }
    children.push(queue_leaf(
        faults,
        "dispatcher",
        || DispatcherActor,
        shared,
        |shared| DispatcherArgs { shared },
    ));
    children.push(queue_leaf(
        faults,
        "reaper",
        || ReaperActor,
        shared,
        |shared| ReaperArgs { shared },
    ));
    subtree("queue", Strategy::OneForOne, children, observer, sup)
}

/// `fleet` (dynamic one_for_one): `inventory` first, which adds a `vps:<id>` child per server
/// (and removes them) through this supervisor, and `breaker-sync`, which hands the breaker
/// changes other nodes publish to those children. A restarted fleet starts with these two
/// alone; `inventory` adds the servers again.
fn fleet(fleet: Arc<Fleet>, observer: Arc<NodeObserver>, sup: &SupervisionConfig) -> ChildSpec {
    let fleet_for_sync = fleet.clone();
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
    let sync = ChildSpec::worker("breaker-sync", move |start: StartCtx| {
        let fleet = fleet_for_sync.clone();
        async move {
            let (actor, _) =
                Actor::spawn_linked(None, BreakerSyncActor, fleet, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    });
    subtree(
        "fleet",
        Strategy::OneForOne,
        vec![inventory, sync],
        observer,
        sup,
    )
}

fn monitors(node: &NodeContext, observer: Arc<NodeObserver>, sup: &SupervisionConfig) -> ChildSpec {
    let health_args = HealthArgs {
        checks: node.checks(),
        cache: node.health.clone(),
    };
    let health = fixed_leaf(&node.faults, "health", || HealthActor, health_args);
    let memory_args = MemoryArgs {
        config: node.config.memory.clone(),
        status: node.memory.clone(),
        metrics: node.metrics.clone(),
        lifecycle: node.lifecycle.clone(),
        queue: node.queue.clone(),
    };
    let memory = fixed_leaf(&node.faults, "memory", || MemoryActor, memory_args);
    let watchdog_args = WatchdogArgs {
        status: StatusSources {
            root: node.tree_root.clone(),
            readiness: node.readiness.clone(),
            queue: node.queue.clone(),
            metrics: node.metrics.clone(),
            breakers: node.fleet.ctx.breakers.clone(),
        },
        watchdog: sd_notify::watchdog_enabled(),
    };
    let watchdog = fixed_leaf(&node.faults, "watchdog", || WatchdogActor, watchdog_args);
    subtree(
        "monitors",
        Strategy::OneForOne,
        vec![health, memory, watchdog],
        observer,
        sup,
    )
}

/// An edge actor serving `door` on `listener`; each incarnation gets a clone of the door
/// (and so shares what it holds, e.g. the API's rate limiter).
fn door<D: Door + Clone>(
    node: &Arc<NodeContext>,
    id: &str,
    door: D,
    listener: Arc<D::Listener>,
) -> ChildSpec {
    let ctx = node.clone();
    leaf(
        &node.faults,
        id,
        move || EdgeActor(door.clone()),
        move || EdgeArgs {
            ctx: ctx.clone(),
            listener: listener.clone(),
        },
    )
}

/// The edges get the whole node: they are its control surface.
fn edge(
    node: &Arc<NodeContext>,
    listeners: Listeners,
    observer: Arc<NodeObserver>,
    sup: &SupervisionConfig,
) -> ChildSpec {
    let http = door(node, "http", Http, listeners.http);
    let admin = door(node, "admin", Admin, listeners.admin);
    // One limiter for the node's whole life: the in-process budgets (memory://, fallback)
    // survive a restart of the API actor. While Redis is away each node allows its share of
    // a tier's quota: quota / the nodes heartbeating in the database (the reaper counts them).
    let queue = node.queue.clone();
    let live_nodes = Arc::new(move || u32::try_from(queue.live_nodes()).unwrap_or(u32::MAX));
    let limiter = RateLimiter::for_node(
        &node.config,
        node.published.clone(),
        live_nodes,
        node.metrics.clone(),
    );
    let api = door(node, "api", Api::new(limiter), listeners.api);
    let ui = door(
        node,
        "ui",
        Ui::new(&node.config.node.data_dir),
        listeners.ui,
    );
    subtree(
        "edge",
        Strategy::OneForOne,
        vec![http, admin, api, ui],
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
