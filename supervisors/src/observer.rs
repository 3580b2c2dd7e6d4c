//! Hook through which the node turns supervision events into metrics and logs.
//!
//! The supervisors themselves log only at debug level: what is worth a warning, a metric
//! or an alert is the node's decision, and logging it in one place keeps it logged once.

/// Told about every start, restart, exit and escalation of a supervisor's children.
///
/// Every method has a no-op default. They are called from inside the supervisor's
/// handler: keep them quick and never block.
#[allow(unused_variables)]
pub trait Observer: Send + Sync + 'static {
    /// An incarnation of the child at `path` started (first start, restart, recycle).
    fn child_started(&self, path: &str) {}

    /// The child at `path` was started again after `reason`: a failure, the failure of a
    /// sibling it is restarted with, or `"manual"` for a [`Restart`](crate::SupervisorMsg::Restart).
    /// Recycles are not restarts (see [`child_exited`](Self::child_exited)).
    fn child_restarted(&self, path: &str, reason: &str) {}

    /// An incarnation of the child at `path` ended. `abnormal` is false for a normal
    /// exit, a recycle (`reason == "recycle"`) and a shutdown by the supervisor itself
    /// (`reason` `"shutdown"` or `"shutdown:..."`).
    fn child_exited(&self, path: &str, reason: &str, abnormal: bool) {}

    /// Starting the child at `path` failed (its start is retried like a crash).
    fn child_start_failed(&self, path: &str, reason: &str) {}

    /// The supervisor at `supervisor_path` (`""` for the root) exceeded its restart
    /// intensity, stopped its children and is failing upward.
    fn escalated(&self, supervisor_path: &str, reason: &str) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}
