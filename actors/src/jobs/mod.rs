//! Job handlers: what each job kind does, one file per kind (`noop` does nothing).
//!
//! A (kind, payload) pair is read once into a typed [`Job`] ([`Job::parse`]); the kind's
//! names live in [`chom_core::job::JobKind`]. A handler returns `Ok(())`, a retryable error,
//! or a permanent one (bad payload, unknown kind: retrying cannot help). A panic in a handler
//! is a bug: it crashes the worker actor, its supervisor restarts it, and the job is retried.
//! A job turned away by its VPS (bulkhead full, breaker open) is deferred: put back for later
//! without using up an attempt.
//!
//! With debug hooks on (`CHOM_DEBUG_HOOKS=1`, tests only) the `debug.*` kinds exist to make
//! jobs record, sleep, fail or panic on purpose.

mod debug;
mod payload;
mod site_delete;
mod site_provision;
mod vps_exec;

use std::sync::Arc;
use std::time::Duration;

use chom_core::job::JobKind;
use chom_core::policy::AttemptOutcome;

use crate::backends::PublishedBackends;
use crate::fleet::{ExecError, Fleet};

pub use debug::{DebugJob, Fail, Panic, PanicOnce, Record, Sleep};
pub use payload::Job;
pub use site_delete::SiteDelete;
pub use site_provision::SiteProvision;
pub use vps_exec::VpsExec;

/// Why a job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a remote host down, a timeout).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (unparseable payload, unknown kind).
    #[error("{0}")]
    Permanent(String),
    /// The job could not start for a reason outside it (its server's bulkhead is full or its
    /// breaker is open): run it again after `after`, without counting this attempt.
    #[error("{reason}")]
    Defer {
        /// Why.
        reason: String,
        /// When to try again.
        after: Duration,
    },
}

impl JobError {
    /// How the attempt ended, for the queue's decision.
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            JobError::Retryable(error) => AttemptOutcome::Failed {
                error,
                permanent: false,
            },
            JobError::Permanent(error) => AttemptOutcome::Failed {
                error,
                permanent: true,
            },
            JobError::Defer { reason, after } => AttemptOutcome::Deferred { reason, after },
        }
    }
}

/// What a failed command call means for the job: turned away is deferred; a call that can
/// never succeed (unknown server, bad command, untrusted host key) is permanent; the rest is
/// worth another attempt.
impl From<ExecError> for JobError {
    fn from(error: ExecError) -> JobError {
        match error {
            ExecError::Rejected { reason, retry_in } => JobError::Defer {
                reason,
                after: retry_in,
            },
            ExecError::UnknownVps(_) | ExecError::InvalidCommand(_) | ExecError::Security(_) => {
                JobError::Permanent(error.to_string())
            }
            ExecError::Transport(_) | ExecError::Timeout(_) | ExecError::Local(_) => {
                JobError::Retryable(error.to_string())
            }
        }
    }
}

/// What a handler may use.
pub struct JobEnv<'a> {
    /// The job's id.
    pub id: i64,
    /// The node running it.
    pub node: &'a str,
    /// Whether the debug kinds are available.
    pub debug_hooks: bool,
    /// The node (fleet and store access); `None` in unit tests of the pure kinds.
    pub fleet: Option<&'a Arc<Fleet>>,
}

/// Kinds this node can run.
pub fn known_kind(kind: &str, debug_hooks: bool) -> bool {
    JobKind::available(kind, debug_hooks).is_some()
}

/// Run one attempt of a job.
pub async fn run(kind: &str, payload: &str, env: &JobEnv<'_>) -> Result<(), JobError> {
    match Job::parse(kind, payload, env.debug_hooks)? {
        Job::Noop => Ok(()),
        Job::VpsExec(job) => vps_exec::run(&job, env).await,
        Job::SiteProvision(job) => site_provision::run(&job, env).await,
        Job::SiteDelete(job) => site_delete::run(&job, env).await,
        Job::Debug(job) => debug::run(job, env).await,
    }
}

/// Per-kind hook run once when a job fails for good (after its last attempt, or at once for a
/// permanent error): `site.provision` and `site.delete` mark their site failed with the
/// reason; a debug job
/// writes the reason to its `hook_file`.
pub fn on_final_failure(
    backends: &PublishedBackends,
    debug_hooks: bool,
    kind: &str,
    payload: &str,
    error: &str,
) {
    match Job::parse(kind, payload, debug_hooks) {
        Ok(Job::SiteProvision(job)) => site_provision::on_final_failure(backends, &job, error),
        Ok(Job::SiteDelete(job)) => site_delete::on_final_failure(backends, &job, error),
        _ => {}
    }
    // Tests observe the hook through the file.
    if let Some(path) = debug::hook_file(kind, payload, debug_hooks) {
        let _ = std::fs::write(path, error);
    }
}

fn fleet<'a>(env: &'a JobEnv<'_>) -> Result<&'a Arc<Fleet>, JobError> {
    env.fleet
        .ok_or_else(|| JobError::Retryable("the fleet is not running on this node".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_come_from_the_kind_list() {
        assert!(known_kind("noop", false) && known_kind("site.provision", false));
        assert!(!known_kind("debug.sleep", false) && known_kind("debug.sleep", true));
        assert!(!known_kind("nope", true) && !known_kind("debug.nope", true));
    }

    #[test]
    fn exec_errors_become_job_outcomes() {
        let after = Duration::from_secs(7);
        assert_eq!(
            JobError::from(ExecError::Rejected {
                reason: "busy".into(),
                retry_in: after
            }),
            JobError::Defer {
                reason: "busy".into(),
                after
            }
        );
        for permanent in [
            ExecError::UnknownVps("v".into()),
            ExecError::InvalidCommand("c".into()),
            ExecError::Security("key".into()),
        ] {
            let text = permanent.to_string();
            assert_eq!(JobError::from(permanent), JobError::Permanent(text));
        }
        for retryable in [
            ExecError::Transport("t".into()),
            ExecError::Timeout(after),
            ExecError::Local("l".into()),
        ] {
            let text = retryable.to_string();
            assert_eq!(JobError::from(retryable), JobError::Retryable(text));
        }
    }

    #[test]
    fn job_errors_become_attempt_outcomes() {
        assert_eq!(
            JobError::Retryable("r".into()).outcome(),
            AttemptOutcome::Failed {
                error: "r".into(),
                permanent: false
            }
        );
        assert_eq!(
            JobError::Permanent("p".into()).outcome(),
            AttemptOutcome::Failed {
                error: "p".into(),
                permanent: true
            }
        );
        let after = Duration::from_secs(3);
        assert_eq!(
            JobError::Defer {
                reason: "d".into(),
                after
            }
            .outcome(),
            AttemptOutcome::Deferred {
                reason: "d".into(),
                after
            }
        );
    }

    fn env(debug: bool) -> JobEnv<'static> {
        JobEnv {
            id: 1,
            node: "n",
            debug_hooks: debug,
            fleet: None,
        }
    }

    #[tokio::test]
    async fn bad_payload_and_unknown_kind_are_permanent() {
        assert!(
            matches!(run("noop", "{oops", &env(false)).await, Err(JobError::Permanent(m)) if m.contains("not valid JSON"))
        );
        assert!(
            matches!(run("nope", "{}", &env(false)).await, Err(JobError::Permanent(m)) if m.contains("unknown job kind"))
        );
        assert_eq!(run("noop", "{}", &env(false)).await, Ok(()));
        // Debug kinds do not exist without debug hooks.
        assert!(matches!(
            run("debug.sleep", "{}", &env(false)).await,
            Err(JobError::Permanent(_))
        ));
        assert!(matches!(
            run("debug.fail", "{\"permanent\":true}", &env(true)).await,
            Err(JobError::Permanent(_))
        ));
        assert!(matches!(
            run("debug.fail", "{}", &env(true)).await,
            Err(JobError::Retryable(_))
        ));
    }
}
