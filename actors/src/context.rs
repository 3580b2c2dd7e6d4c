//! The node's control surface: [`NodeContext`], what the edges (admin RPC, HTTP) hold.
//!
//! The edges legitimately reach most of the node, so they get one aggregate of every handle
//! ([`crate::handles`], [`PublishedBackends`], [`HealthCache`], [`MemoryStatus`]) plus the
//! fleet's and the queue's shared state. Actors never get it: each gets exactly the handles it
//! uses, and nothing inside this crate imports this module, so the aggregate sits on top of
//! the parts it holds and never the other way round.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chom_core::config::Config;
use chom_supervisors::SupervisorMsg;
use ractor::ActorRef;
use tokio_util::sync::WaitForCancellationFuture;

pub use crate::backends::{Backends, PublishedBackends};
use crate::fleet::Fleet;
pub use crate::handles::{Lifecycle, NodeInfo, Readiness, StartFaults, TreeRoot};
use crate::metrics::Metrics;
use crate::monitors::health::{Checks, HealthCache, HealthReport};
use crate::monitors::memory::MemoryStatus;
use crate::observability::ObservabilityClient;
use crate::queue::QueueShared;

/// Every handle of one node, for its edges. Built once by the binary's wiring, after the
/// handles, the fleet and the queue's shared state it holds.
pub struct NodeContext {
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// Name, version, start times, debug hooks.
    pub info: NodeInfo,
    /// Every metric instrument.
    pub metrics: Metrics,
    /// The address the HTTP listener actually bound (`http.listen` may ask for port 0).
    pub http_addr: OnceLock<SocketAddr>,
    /// The address the tenant API's listener actually bound (`api.listen` may ask for port 0).
    pub api_addr: OnceLock<SocketAddr>,
    /// The operator console's bound address.
    pub ui_addr: OnceLock<SocketAddr>,
    /// The store actor's backends.
    pub published: PublishedBackends,
    /// Migrations applied, node name held, tree started.
    pub readiness: Readiness,
    /// The root supervisor, once spawned.
    pub tree_root: TreeRoot,
    /// Start failures injected with `debug.fault`.
    pub faults: StartFaults,
    /// Shutdown and restart requests, operators' background commands.
    pub lifecycle: Lifecycle,
    /// `monitors/health`'s last report.
    pub health: HealthCache,
    /// `monitors/memory`'s last sample.
    pub memory: MemoryStatus,
    /// The fleet's shared state (`vps.*`, `breaker.*`).
    pub fleet: Arc<Fleet>,
    /// The queue's shared state (admin methods wake the dispatcher and pause queues through it).
    pub queue: Arc<QueueShared>,
    /// The observability host's client (`metrics.query`, `breaker.list`, the health check).
    pub observability: ObservabilityClient,
}

impl NodeContext {
    /// What the health checks look at (`health`, `/health?fresh=true`).
    pub fn checks(&self) -> Checks {
        Checks {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            breakers: self.fleet.ctx.breakers.clone(),
            published: self.published.clone(),
            readiness: self.readiness.clone(),
            root: self.tree_root.clone(),
            observability: self.observability.clone(),
        }
    }

    /// The backends currently published by the store actor, if it is running.
    pub fn backends(&self) -> Option<Backends> {
        self.published.current()
    }

    /// Whether migrations have been applied by this process.
    pub fn migrated(&self) -> bool {
        self.readiness.migrated()
    }

    /// Whether this process holds its node name (see [`Readiness::identity_held`]).
    pub fn identity_held(&self) -> bool {
        self.readiness.identity_held()
    }

    /// See [`Readiness::ready`].
    pub fn ready(&self) -> bool {
        self.readiness.ready()
    }

    /// The root supervisor, once started.
    pub fn root(&self) -> Option<&ActorRef<SupervisorMsg>> {
        self.tree_root.get()
    }

    /// The health actor's latest report, if it is younger than `max_age`.
    pub fn cached_health(&self, max_age: Duration) -> Option<HealthReport> {
        self.health.get(max_age)
    }

    /// The memory monitor's last sample (for `chom status`).
    pub fn memory_status(&self) -> Option<serde_json::Value> {
        self.memory.get()
    }

    /// Make the next `starts` starts of the actor at `path` fail (`u32::MAX`: forever).
    pub fn inject_start_failures(&self, path: &str, starts: u32) {
        self.faults.inject(path, starts);
    }

    /// Ask the node to shut down gracefully (admin `shutdown`, same as SIGTERM).
    pub fn request_shutdown(&self) {
        self.lifecycle.request_shutdown();
    }

    /// Resolves when a graceful shutdown was requested.
    pub fn shutdown_requested(&self) -> WaitForCancellationFuture<'_> {
        self.lifecycle.shutdown_requested()
    }
}
