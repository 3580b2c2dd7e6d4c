//! OTP-style supervision for any [`ractor`] actor.
//!
//! ractor reports a child's exit to its parent but has no restart strategies, restart
//! intensity or ordered shutdown. This crate adds them, following OTP's `supervisor`
//! (with Akka's restart backoff, which OTP lacks):
//!
//! - strategies [`Strategy::OneForOne`], [`Strategy::OneForAll`], [`Strategy::RestForOne`],
//!   and dynamic supervisors ([`SupervisorSpec::max_children`]);
//! - restart types [`Restart::Permanent`], [`Restart::Transient`], [`Restart::Temporary`];
//! - restart [`Intensity`]: too many restarts within a period and the supervisor stops its
//!   children and fails, so that its own supervisor sees a failure (escalation);
//! - per-child restart delay ([`Backoff`]): exponential with jitter, reset after a stable run;
//! - [`Shutdown`] per child, always in reverse start order, one child at a time;
//! - a planned-replacement exit reason, [`RECYCLE`], that is not a failure.
//!
//! The restart arithmetic ([`intensity`], [`backoff`]) is pure, clock-injected code; the
//! [`Supervisor`] actor applies it. Nothing here knows what its children do.
//!
//! ```no_run
//! # use chom_supervisors::*;
//! # use ractor::{Actor, ActorProcessingErr, ActorRef};
//! struct Worker;
//! impl Actor for Worker {
//!     type Msg = ();
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//! }
//! # async fn run() -> Result<(), ractor::SpawnErr> {
//! let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("worker:1", |ctx| async move {
//!     let (worker, _) = Actor::spawn_linked(None, Worker, (), ctx.supervisor).await?;
//!     Ok(worker.get_cell())
//! }));
//! let (root, handle) = start_supervisor("", spec, None).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
#[cfg(feature = "bench")]
pub mod bench;
mod child;
mod error;
mod exit;
pub mod intensity;
mod observer;
mod report;
mod spec;
mod supervisor;

pub use backoff::{Backoff, BackoffState};
pub use child::ChildStatus;
pub use error::SupervisorError;
pub use exit::{ExitKind, RECYCLE, SHUTDOWN, classify_reason};
pub use intensity::{Intensity, IntensityTracker, Verdict};
pub use observer::{NoopObserver, Observer};
pub use report::{ChildReport, FailureReport, SupervisorReport};
pub use spec::{
    ChildKind, ChildSpec, Restart, Shutdown, StartCtx, StartFn, Strategy, SupervisorArgs,
    SupervisorSpec, child_path, valid_id,
};
pub use supervisor::{
    Fault, Supervisor, SupervisorMsg, SupervisorState, TREE_TIMEOUT, start_supervisor,
};
