//! What a supervisor is told to do: its strategy, limits and children.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::{ActorCell, SpawnErr};

use crate::backoff::Backoff;
use crate::intensity::Intensity;
use crate::observer::{NoopObserver, Observer};

/// Which children are restarted when one of them must be restarted (OTP names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: the others are stopped (reverse start order), then all are started
    /// again in start order. For children that cannot work without each other.
    OneForAll,
    /// The child that exited and every child started after it. For children that depend
    /// on the ones started before them.
    RestForOne,
}

impl Strategy {
    /// OTP spelling, used in reports: `one_for_one`, `one_for_all`, `rest_for_one`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

/// When a child is restarted after it exits (OTP meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always restarted, even after a normal exit.
    Permanent,
    /// Restarted only after an abnormal exit (a crash, a kill, an unexpected stop reason).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Lowercase name, used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }

    /// Whether a child of this type is restarted after an exit of this kind.
    pub fn restarts_after(self, abnormal: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        }
    }
}

/// How a child is stopped by its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once: no `post_stop`, the running handler is cancelled at its next `.await`
    /// (an actor blocking its thread is waited for until it reaches one).
    BrutalKill,
    /// Asked to stop (reason `"shutdown"`, `post_stop` runs); killed if it has not
    /// stopped within the duration.
    Timeout(Duration),
    /// Asked to stop, and waited for however long it takes (the default for
    /// supervisors, whose own shutdown is bounded by their children's).
    Infinity,
}

/// What a child is, which decides its default shutdown and how it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildKind {
    /// Any actor doing work.
    Worker,
    /// A [`Supervisor`](crate::Supervisor) (or another actor supervising children).
    Supervisor,
}

impl ChildKind {
    /// Lowercase name, used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Worker => "worker",
            ChildKind::Supervisor => "supervisor",
        }
    }
}

/// What a start function gets to start one incarnation of a child.
#[derive(Clone, Debug)]
pub struct StartCtx {
    /// The supervisor: the new actor must be spawned linked to it
    /// (`Actor::spawn_linked(None, .., ctx.supervisor)`), or its exits go unseen.
    pub supervisor: ActorCell,
    /// Path of the child being started, e.g. `"queue/worker:2"`.
    pub path: String,
}

/// Starts one incarnation of a child and returns its cell.
///
/// It runs inside the supervisor's handler, so it must not call the supervisor back
/// (that would wait for itself), and a slow start delays the supervisor.
pub type StartFn =
    Arc<dyn Fn(StartCtx) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to start and treat one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Name unique among its siblings; the last segment of the child's path.
    /// Must be non-empty and contain no `/`.
    pub id: String,
    /// Starts one incarnation.
    pub start: StartFn,
    /// When it is restarted.
    pub restart: Restart,
    /// How it is stopped.
    pub shutdown: Shutdown,
    /// Worker or supervisor.
    pub kind: ChildKind,
}

// === impl ChildSpec ===

impl ChildSpec {
    /// A permanent worker stopped with a 5 s timeout.
    pub fn worker<F, Fut>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(StartCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            start: Arc::new(move |ctx| start(ctx).boxed()),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            kind: ChildKind::Worker,
        }
    }

    /// A permanent supervisor child, stopped with [`Shutdown::Infinity`].
    pub fn supervisor<F, Fut>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(StartCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            kind: ChildKind::Supervisor,
            shutdown: Shutdown::Infinity,
            ..Self::worker(id, start)
        }
    }

    /// A permanent child that is a [`Supervisor`](crate::Supervisor) running `spec`
    /// (a subtree). Each incarnation starts from a clone of `spec`.
    pub fn subtree(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        Self::supervisor(id, move |ctx: StartCtx| {
            let spec = spec.clone();
            async move {
                let (sup, _) =
                    crate::start_supervisor(ctx.path, spec, Some(ctx.supervisor)).await?;
                Ok(sup.get_cell())
            }
        })
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Everything a supervisor needs: strategy, limits, children.
#[derive(Clone)]
pub struct SupervisorSpec {
    /// Which children are restarted together.
    pub strategy: Strategy,
    /// When to give up and fail upward.
    pub intensity: Intensity,
    /// Restart delays.
    pub backoff: Backoff,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
    /// `Some(n)` makes this a dynamic supervisor: children are added at run time
    /// ([`AddChild`](crate::SupervisorMsg::AddChild)), at most `n` at a time, and a child
    /// that will not be restarted is forgotten instead of kept as stopped.
    pub max_children: Option<usize>,
    /// Told about starts, restarts, exits and escalation.
    pub observer: Arc<dyn Observer>,
}

// === impl SupervisorSpec ===

impl SupervisorSpec {
    /// A supervisor with no children, [`Intensity::default`], [`Backoff::default`] and
    /// no observer.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
            max_children: None,
            observer: Arc::new(NoopObserver),
        }
    }

    /// A dynamic one_for_one supervisor holding at most `max_children` children.
    pub fn dynamic(max_children: usize) -> Self {
        Self {
            max_children: Some(max_children),
            ..Self::new(Strategy::OneForOne)
        }
    }

    /// Appends a child (started after the ones already there).
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets the restart delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the observer.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("children", &self.children)
            .field("max_children", &self.max_children)
            .finish_non_exhaustive()
    }
}

/// Start arguments of a [`Supervisor`](crate::Supervisor).
#[derive(Clone, Debug)]
pub struct SupervisorArgs {
    /// Path of this supervisor in the tree: `""` for the root.
    pub path: String,
    /// What it supervises.
    pub spec: SupervisorSpec,
}

/// Path of child `id` of the supervisor at `parent`: `id` under the root (`""`),
/// `"{parent}/{id}"` elsewhere.
pub fn child_path(parent: &str, id: &str) -> String {
    if parent.is_empty() {
        id.to_owned()
    } else {
        format!("{parent}/{id}")
    }
}

/// Whether `id` can name a child: non-empty, and no `/` (which separates path segments).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(child_path("", "queue"), "queue");
        assert_eq!(child_path("queue", "worker:2"), "queue/worker:2");
        assert!(valid_id("worker:2"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn builders_set_otp_defaults() {
        let w = ChildSpec::worker("w", |_ctx| async { Err(SpawnErr::ActorAlreadyStarted) });
        assert_eq!(w.restart, Restart::Permanent);
        assert_eq!(w.shutdown, Shutdown::Timeout(Duration::from_secs(5)));
        assert_eq!(w.kind, ChildKind::Worker);
        let s = ChildSpec::supervisor("s", |_ctx| async { Err(SpawnErr::ActorAlreadyStarted) })
            .restart(Restart::Transient);
        assert_eq!(s.restart, Restart::Transient);
        assert_eq!(s.shutdown, Shutdown::Infinity);
        assert_eq!(s.kind, ChildKind::Supervisor);
    }
}
