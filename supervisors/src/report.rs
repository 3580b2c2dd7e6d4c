//! Snapshot of a supervision tree, as returned by [`SupervisorMsg::Tree`](crate::SupervisorMsg::Tree)
//! and shown by the admin RPC.

use serde::{Deserialize, Serialize};

use crate::child::ChildStatus;
use crate::spec::{ChildKind, Restart};

/// One supervisor and its children.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SupervisorReport {
    /// Path of the supervisor (`""` for the root).
    pub path: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: String,
    /// Children in start order.
    pub children: Vec<ChildReport>,
}

/// One child of a supervisor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChildReport {
    /// Id among its siblings.
    pub id: String,
    /// Full path in the tree.
    pub path: String,
    /// `worker` or `supervisor`.
    pub kind: ChildKind,
    /// `permanent`, `transient` or `temporary`.
    pub restart: Restart,
    /// `starting`, `running`, `restarting` (waiting for its restart delay), `stopped`
    /// (exited and not restarted) or `failed` (crashed and not restarted).
    pub state: ChildStatus,
    /// Restarts so far (after failures, with a failed sibling, or manual); not recycles.
    pub restart_count: u64,
    /// Planned replacements so far (exits with reason `"recycle"`).
    pub recycles: u64,
    /// The last abnormal exit or failed start.
    pub last_failure: Option<FailureReport>,
    /// Microseconds from the last failure noticed to its replacement running (restart delay
    /// included): how long the child was out of service.
    #[serde(default)]
    pub last_recovery_us: Option<u64>,
    /// The child's own report when it is a supervisor that answered in time.
    pub children: Option<SupervisorReport>,
}

/// An abnormal exit or a failed start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FailureReport {
    /// Panic message, error, or exit reason.
    pub reason: String,
    /// Wall-clock time of the failure, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl FailureReport {
    /// A failure happening now.
    pub fn now(reason: impl Into<String>) -> Self {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            reason: reason.into(),
            at_unix_ms,
        }
    }
}

impl SupervisorReport {
    /// The report of the descendant supervisor at `path` relative to this one
    /// (`""` is this one), when it answered.
    pub fn find(&self, path: &str) -> Option<&SupervisorReport> {
        if path.is_empty() {
            return Some(self);
        }
        let (id, rest) = path.split_once('/').unwrap_or((path, ""));
        let child = self.children.iter().find(|c| c.id == id)?;
        child.children.as_ref()?.find(rest)
    }

    /// The child at `path` relative to this supervisor, when it is known.
    pub fn child(&self, path: &str) -> Option<&ChildReport> {
        let (parent, id) = path.rsplit_once('/').unwrap_or(("", path));
        self.find(parent)?.children.iter().find(|c| c.id == id)
    }
}
