//! The node itself: `status`, `tree`, `restart`, `health`, `shutdown`.

use std::collections::BTreeMap;
use std::time::Duration;

use chom_actors::monitors::health::HealthReport;
use chom_actors::tree::TreeSummary;
use chom_core::breaker::BreakerState;
use chom_core::limits;
use chom_supervisors::SupervisorReport;
use serde::Deserialize;
use serde_json::Value;

use super::{ensure, invalid};
use crate::rpc::protocol::RpcError;

/// The longest actor path `restart` and the debug hooks accept, in characters.
pub const MAX_PATH_CHARS: usize = 255;

/// An actor path parameter: bounded, no control characters (an empty path is let through for
/// the caller to judge).
pub fn check_path(what: &str, path: &str) -> Result<(), RpcError> {
    if path.is_empty() {
        return Ok(());
    }
    limits::check_text(what, path, MAX_PATH_CHARS).map_err(invalid)
}

request! {
    /// `status`: a summary of the node.
    Status("status") -> StatusReply {}
}

reply! {
    /// The answer to `status`.
    StatusReply {
        /// The node's version.
        pub version: String,
        /// `node.name`.
        pub node: String,
        /// Process id.
        pub pid: u32,
        /// Seconds since the process started.
        pub uptime_secs: u64,
        /// When the process started (RFC 3339, seconds).
        pub started_at: String,
        /// Migrations applied and tree started.
        pub ready: bool,
        /// The bound HTTP address, once bound.
        pub http: Option<String>,
        /// The bound tenant API address, once bound.
        #[serde(default)]
        pub api: Option<String>,
        /// The bound operator console address, once bound.
        #[serde(default)]
        pub ui: Option<String>,
        /// The admin socket's path.
        pub admin_socket: String,
        /// `postgres` or `sqlite`, while the store runs.
        pub database: Option<String>,
        /// `memory` or `redis`, while the store runs.
        pub cache: Option<String>,
        /// Counts over the supervision tree.
        pub tree: TreeSummary,
        /// Resident memory, when readable.
        pub memory_rss_bytes: Option<u64>,
        /// The memory monitor's last sample (its own document; see [`MemoryPressure`]).
        pub memory: Option<Value>,
        /// Jobs waiting or running per queue (empty while the database is unreachable).
        pub queues: BTreeMap<String, u64>,
        /// The queues this node claims from now.
        pub claiming: Vec<String>,
        /// Servers whose breaker rejects calls.
        pub open_breakers: Vec<OpenBreaker>,
        /// Nodes sharing the database that heartbeat in the last 15 s, this one included
        /// (0 before the first heartbeat); `cluster.nodes` lists them.
        #[serde(default)]
        pub live_nodes: u64,
    }
}

/// The part of the memory monitor's sample `chom status` shows.
#[derive(Debug, Clone, Deserialize)]
pub struct MemoryPressure {
    /// Pressure against the limit that applies, in percent.
    pub pressure_percent: f64,
    /// Which limit: `cgroup`, `max_rss` or `host`.
    pub basis: String,
    /// Where the monitor acts, in percent.
    pub threshold_percent: Value,
}

impl StatusReply {
    /// The memory pressure, when the monitor has sampled it.
    pub fn memory_pressure(&self) -> Option<MemoryPressure> {
        self.memory
            .as_ref()
            .and_then(|m| serde_json::from_value(m.clone()).ok())
    }
}

reply! {
    /// A server whose breaker is open or forced open.
    OpenBreaker {
        /// Server id.
        pub vps: String,
        /// `open` or `forced_open`.
        pub state: BreakerState,
        /// Why, when forced open.
        pub reason: Option<String>,
    }
}

request! {
    /// `tree`: the whole supervision tree.
    Tree("tree") -> SupervisorReport {}
}

request! {
    /// `restart`: restart one actor or subtree by path.
    Restart("restart") -> Restarted {
        /// The actor's path as `chom tree` shows it (`store`, `edge/http`); surrounding '/' ignored.
        pub path: String,
    }
    impl {
        /// Restarting a subtree waits for its children's shutdown timeouts.
        fn timeout(&self) -> Duration {
            Duration::from_secs(120)
        }

        fn validate(&self) -> Result<(), RpcError> {
            check_path("path", &self.path)?;
            ensure(
                !self.actor_path().is_empty(),
                "path must name an actor or subtree, e.g. store or edge/http",
            )
        }
    }
}

impl Restart {
    /// The path without surrounding '/'.
    pub fn actor_path(&self) -> &str {
        self.path.trim_matches('/')
    }
}

reply! {
    /// The answer to `restart`: the actor as it stands after the restart.
    Restarted {
        /// The path restarted.
        pub path: String,
        /// Its state now, when the tree knows it.
        pub state: Option<chom_supervisors::ChildStatus>,
        /// Its restart count now.
        pub restart_count: Option<u64>,
    }
}

request! {
    /// `health`: run every health check now.
    Health("health") -> HealthReport {}
}

request! {
    /// `shutdown`: graceful shutdown (same as SIGTERM).
    Shutdown("shutdown") -> ShuttingDown {}
}

reply! {
    /// The answer to `shutdown`.
    ShuttingDown {
        /// Always true.
        pub shutting_down: bool,
    }
}
