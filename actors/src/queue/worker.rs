//! `queue/worker:N`: runs one job at a time under its timeout.
//!
//! The outcome (completed, retry with backoff, or failed for good) is decided here from the
//! kind's policy and handed to the completer. A panic in a handler crashes this actor; its
//! replacement finds the job in the slot and hands it back for retry. After
//! `queue.max_jobs_per_worker` jobs or `queue.max_worker_time` the worker stops with the
//! reason `recycle` and its supervisor starts a fresh one (a planned replacement, not a
//! failure).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chom_core::job::{Completion, Job};
use chom_core::policy::{AttemptOutcome, Decision, decide};
use chom_supervisors::RECYCLE;
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, error, warn};

use super::QueueShared;
use crate::fleet::Fleet;
use crate::jobs::{self, JobEnv};

/// A worker actor.
pub struct WorkerActor;

/// Start-up arguments.
pub struct WorkerArgs {
    /// The queue's shared state.
    pub shared: Arc<QueueShared>,
    /// This worker's slot (0-based; its path is `queue/worker:{index+1}`).
    pub index: usize,
    /// The fleet the jobs' commands run on (`vps.exec`, `site.provision`).
    pub fleet: Arc<Fleet>,
}

/// Running state.
pub struct WorkerState {
    shared: Arc<QueueShared>,
    index: usize,
    fleet: Arc<Fleet>,
    done: u32,
    born: Instant,
}

/// Messages.
pub enum WorkerMsg {
    /// Run this job (already claimed for this node).
    Run(Arc<Job>),
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let WorkerArgs {
            shared,
            index,
            fleet,
        } = args;
        let (leftover, crash) = {
            let mut slot = shared.slot(index);
            slot.worker = Some(myself);
            (slot.assigned.take(), slot.crash.take())
        };
        if let Some(assigned) = leftover {
            // The previous incarnation died holding this job.
            let completion = if assigned.started {
                let error = match crash {
                    Some(panic) => format!("worker crashed while running the job: {panic}"),
                    None => "worker crashed while running the job".to_owned(),
                };
                warn!(job = assigned.job.id, kind = %assigned.job.kind, %error, "queue: worker crashed while running a job; its attempt failed");
                settle(
                    &shared,
                    &assigned.job,
                    &AttemptOutcome::Failed {
                        error,
                        permanent: false,
                    },
                    Duration::ZERO,
                )
            } else {
                Completion::Release {
                    id: assigned.job.id,
                }
            };
            shared.complete(completion);
        }
        shared.wake();
        Ok(WorkerState {
            shared,
            index,
            fleet,
            done: 0,
            born: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Run(job) => run(&myself, state, job).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let leftover = {
            let mut slot = state.shared.slot(state.index);
            // A replacement that already started owns the slot and its job: leave both.
            if slot
                .worker
                .as_ref()
                .is_some_and(|w| w.get_id() != myself.get_id())
            {
                return Ok(());
            }
            slot.worker = None;
            slot.assigned.take()
        };
        // A job handed over but not started when we were stopped (graceful shutdown): give it
        // back without using up an attempt.
        if let Some(assigned) = leftover {
            state.shared.complete(Completion::Release {
                id: assigned.job.id,
            });
        }
        Ok(())
    }
}

async fn run(myself: &ActorRef<WorkerMsg>, state: &mut WorkerState, job: Arc<Job>) {
    let shared = state.shared.clone();
    if let Some(a) = shared.slot(state.index).assigned.as_mut() {
        a.started = true;
    }
    let ctx = &shared.ctx;
    let waited = (chrono::Utc::now() - job.available_at)
        .to_std()
        .unwrap_or_default();
    ctx.metrics.job_waited(&job.queue, waited);
    let policy = shared.policy(&job.kind);
    let limit = job.timeout_ms.map_or(policy.timeout, Duration::from_millis);
    let env = JobEnv {
        id: job.id,
        node: &ctx.node_name,
        debug_hooks: ctx.debug_hooks,
        fleet: Some(&state.fleet),
    };
    let started = Instant::now();
    let attempt = AssertUnwindSafe(jobs::run(&job.kind, &job.payload, &env)).catch_unwind();
    let result = match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(panic)) => {
            // Leave the message for the next incarnation, which fails the attempt with it;
            // then crash as the panic would have, so the supervisor restarts this worker.
            shared.slot(state.index).crash = Some(panic_message(panic.as_ref()));
            std::panic::resume_unwind(panic);
        }
        Err(elapsed) => Err(elapsed),
    };
    let outcome = match result {
        Ok(Ok(())) => AttemptOutcome::Succeeded,
        Ok(Err(error)) => error.outcome(),
        Err(_) => AttemptOutcome::TimedOut { limit },
    };
    let completion = settle(&shared, &job, &outcome, started.elapsed());
    finish(myself, state, completion);
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

/// Hand the result to the completer and take the next job (or recycle).
fn finish(myself: &ActorRef<WorkerMsg>, state: &mut WorkerState, completion: Completion) {
    let shared = state.shared.clone();
    let ctx = &shared.ctx;
    shared.complete(completion);
    shared.finished_one();
    state.done += 1;
    let q = &ctx.config.queue;
    let recycle = state.done >= q.max_jobs_per_worker || state.born.elapsed() >= q.max_worker_time;
    // Clear the slot and take the next job straight from the ready buffer in one step under
    // the slot lock, so the dispatcher never sees this worker idle in between (no database
    // round trip between jobs, and no job handed to a worker that already has one).
    let next = {
        let mut slot = shared.slot(state.index);
        let next = if recycle {
            None
        } else {
            shared.pop_ready().map(Arc::new)
        };
        slot.assigned = next.clone().map(|job| super::Assigned {
            job,
            started: false,
        });
        next
    };
    if recycle {
        debug!(
            worker = state.index + 1,
            jobs = state.done,
            "queue: recycling worker"
        );
        myself.stop(Some(RECYCLE.to_owned()));
        return;
    }
    let Some(next) = next else {
        shared.worker_idle();
        return;
    };
    let id = next.id;
    if myself.send_message(WorkerMsg::Run(next)).is_err() {
        shared.slot(state.index).assigned = None;
        shared.complete(Completion::Release { id });
    }
    // Refill the buffer once it is half empty.
    if shared.maybe_more() && shared.ready_len() < shared.prefetch() / 2 {
        shared.wake();
    }
}

/// Decide what happens to `job` after `outcome`, count it, run the final-failure hook, and
/// return the completion to write.
fn settle(shared: &QueueShared, job: &Job, outcome: &AttemptOutcome, ran: Duration) -> Completion {
    let ctx = &shared.ctx;
    let policy = shared.policy(&job.kind);
    let max = job.max_attempts.unwrap_or(policy.max_attempts);
    let decision = decide(outcome, job.attempts, max, &policy, &mut rand::rng());
    let label = match (&decision, outcome) {
        // Not an attempt: nothing ran.
        (Decision::Defer { .. }, _) => None,
        (_, AttemptOutcome::TimedOut { .. }) => Some("timed_out"),
        (Decision::Complete, _) => Some("completed"),
        (Decision::Retry { .. }, _) => Some("retried"),
        (Decision::Fail { .. }, _) => Some("failed"),
    };
    if let Some(label) = label {
        ctx.metrics.job_attempt(&job.queue, &job.kind, label, ran);
    }
    match decision {
        Decision::Defer { delay, error } => {
            debug!(job = job.id, kind = %job.kind, reason = %error, retry_in = ?delay, "queue: job deferred; its attempt does not count");
            let available_at = chom_core::limits::saturating_after(chrono::Utc::now(), delay);
            Completion::Defer {
                id: job.id,
                error,
                available_at,
            }
        }
        Decision::Complete => Completion::Completed { id: job.id },
        Decision::Retry { delay, error } => {
            debug!(job = job.id, kind = %job.kind, attempt = job.attempts, %error, retry_in = ?delay, "queue: attempt failed; will retry");
            let available_at = chom_core::limits::saturating_after(chrono::Utc::now(), delay);
            Completion::Retry {
                id: job.id,
                error,
                available_at,
            }
        }
        Decision::Fail { error } => {
            error!(job = job.id, kind = %job.kind, attempts = job.attempts, %error, "queue: job failed for good; moved to failed_jobs");
            jobs::on_final_failure(
                &ctx.published,
                ctx.debug_hooks,
                &job.kind,
                &job.payload,
                &error,
            );
            Completion::Fail { id: job.id, error }
        }
    }
}
