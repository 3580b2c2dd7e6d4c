//! `queue/dispatcher`: claims due jobs in batches sized to the idle workers and hands one to
//! each. Woken by PostgreSQL LISTEN/NOTIFY (a trigger on `jobs` inserts), by idle workers when
//! the last claim was full, by local enqueues, and by a poll timer (`queue.poll_interval`) as
//! the fallback (SQLite, delayed jobs becoming due, a lost listener connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chom_core::throttle::Throttle;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::QueueShared;
use super::worker::WorkerMsg;
use crate::handles::AbortOnDrop;
use chom_store as store;

/// The dispatcher actor.
pub struct DispatcherActor;

/// Start-up arguments.
pub struct DispatcherArgs {
    /// The queue's shared state.
    pub shared: Arc<QueueShared>,
}

/// Running state.
pub struct DispatcherState {
    shared: Arc<QueueShared>,
    released_own: bool,
    /// Claim failures, logged once per 30 s while they last.
    claim_errors: Throttle,
    failing: bool,
    _waker: AbortOnDrop,
}

/// Messages.
pub enum DispatcherMsg {
    /// Run one claim round.
    Wake,
}

impl Actor for DispatcherActor {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = DispatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DispatcherMsg>,
        args: DispatcherArgs,
    ) -> Result<DispatcherState, ActorProcessingErr> {
        let shared = args.shared;
        shared.set_dispatcher(Some(myself));
        let waker = tokio::spawn(waker(shared.clone()));
        // A wake the previous incarnation accepted but never handled (a stop overtakes queued
        // messages) would otherwise stay "pending" and swallow every wake-up from now on: the
        // queue would never claim again.
        shared.take_wake_pending();
        shared.cast_wake();
        Ok(DispatcherState {
            shared,
            released_own: false,
            claim_errors: Throttle::new(Duration::from_secs(30)),
            failing: false,
            _waker: AbortOnDrop(waker),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<DispatcherMsg>,
        message: DispatcherMsg,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DispatcherMsg::Wake => claim_round(state).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<DispatcherMsg>,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.unset_dispatcher(&myself);
        // Stopped on purpose (shutdown, restart): buffered jobs go back without using up an
        // attempt. (A crash skips this; the buffer survives for the next incarnation.)
        for job in state.shared.drain_ready() {
            state
                .shared
                .complete(chom_core::job::Completion::Release { id: job.id });
        }
        Ok(())
    }
}

/// Turns every wake-up source into (coalesced) `Wake` messages.
async fn waker(shared: Arc<QueueShared>) {
    let mut poll = tokio::time::interval(shared.ctx.config.queue.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener: Option<futures::stream::BoxStream<'static, ()>> = None;
    let mut next_listen = Instant::now();
    loop {
        if listener.is_none() && Instant::now() >= next_listen && shared.ctx.readiness.migrated() {
            if let Some(b) = shared.ctx.published.current() {
                match b.store.listen().await {
                    Ok(stream) => listener = stream,
                    Err(error) => {
                        warn!(%error, "queue: cannot LISTEN for new jobs; polling meanwhile")
                    }
                }
            }
            // Retry a lost listener every 5 s; SQLite (None) asks again rarely and cheaply.
            next_listen = Instant::now() + Duration::from_secs(5);
        }
        tokio::select! {
            _ = shared.notified() => {}
            _ = poll.tick() => {}
            item = async {
                match listener.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match item {
                    Some(()) => shared.wake_for_new_jobs(),
                    None => listener = None,
                }
            }
        }
        shared.cast_wake();
    }
}

async fn claim_round(state: &mut DispatcherState) {
    let shared = state.shared.clone();
    shared.take_wake_pending();
    let ctx = &shared.ctx;
    // Until this process holds its name, jobs reserved under that name may be another live
    // node's: neither release nor claim them.
    if !ctx.readiness.migrated() || !ctx.readiness.identity_held() {
        return;
    }
    let Some(backends) = ctx.published.current() else {
        return;
    };
    if !state.released_own {
        // Jobs this node held when it died (SIGKILL, OOM) go back to pending before we claim.
        match backends.store.release_node(&ctx.node_name).await {
            Ok(n) => {
                if n > 0 {
                    info!(
                        jobs = n,
                        "queue: released jobs reserved by this node before it restarted"
                    );
                }
                state.released_own = true;
            }
            Err(error) => return log_error(state, &error.to_string()),
        }
    }
    let queues = shared.active_queues().await;
    if queues.is_empty() {
        return;
    }
    let new_jobs = shared.take_new_jobs();
    let idle = shared.idle_workers();
    // Claim for every idle worker plus a refill of the ready buffer, but only once the buffer
    // is half empty: topping it up by a few jobs would cost a round trip per few jobs.
    let (ready, prefetch) = (shared.ready_len(), shared.prefetch());
    let want = if ready == 0 || ready < prefetch / 2 {
        idle.len() + prefetch.saturating_sub(ready)
    } else {
        0
    };
    if want > 0 {
        let started = Instant::now();
        let jobs = match claim(&backends, &ctx.node_name, &queues, want).await {
            Ok(jobs) => jobs,
            Err(error) => return log_error(state, &error.to_string()),
        };
        tracing::trace!(want, claimed = jobs.len(), took = ?started.elapsed(), "queue: claim");
        shared.set_maybe_more(jobs.len() == want);
        shared.push_ready(jobs);
    } else if new_jobs {
        // Buffer full, workers busy, and jobs were added: keep priority strict by trading
        // buffered jobs for due jobs of strictly higher-priority queues.
        if let Err(error) = displace(&shared, &backends, &queues).await {
            return log_error(state, &error.to_string());
        }
    }
    if std::mem::take(&mut state.failing) {
        state.claim_errors.reset();
        info!("queue: claims work again");
    }
    for index in idle {
        let Some(job) = shared.pop_ready() else { break };
        let id = job.id;
        match hand_over(&shared, index, job) {
            Handover::Done => {}
            // The worker took a buffered job by itself since we looked: keep this one buffered.
            Handover::Busy(job) => shared.push_ready([*job]),
            Handover::Gone => shared.complete(chom_core::job::Completion::Release { id }),
        }
    }
    if want > 0 && shared.maybe_more() {
        shared.cast_wake();
    }
}

/// Claims at least this large are split in two statements run at once on two connections:
/// a claim is CPU work in the database (~10 µs a row), and one statement uses one core.
const SPLIT_CLAIM: usize = 256;

/// Claim up to `want` due jobs, in strict queue order. Large claims run as two concurrent
/// statements; SKIP LOCKED keeps their rows apart and the ready buffer orders the union by
/// priority, so the result is that of one claim of the same size. If one half fails, the
/// jobs the other half claimed are kept (they are reserved by now) and the error is logged.
async fn claim(
    backends: &crate::backends::Backends,
    node: &str,
    queues: &[String],
    want: usize,
) -> Result<Vec<chom_core::job::Job>, store::StoreError> {
    let one = |n: usize| backends.store.claim(node, queues, n as u32);
    if want < SPLIT_CLAIM || backends.store.backend() != store::Backend::Postgres {
        // (SQLite has one writer: two statements would only queue behind each other.)
        return one(want).await;
    }
    let half = want / 2;
    match tokio::join!(one(half), one(want - half)) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            Ok(a)
        }
        (Ok(jobs), Err(error)) | (Err(error), Ok(jobs)) => {
            if jobs.is_empty() {
                return Err(error);
            }
            warn!(%error, claimed = jobs.len(), "queue: one of two concurrent claims failed");
            Ok(jobs)
        }
        (Err(error), Err(_)) => Err(error),
    }
}

/// Claim due jobs of queues ranked above the lowest buffered job, and give back as many of the
/// lowest buffered jobs (their attempt restored).
async fn displace(
    shared: &QueueShared,
    backends: &crate::backends::Backends,
    queues: &[String],
) -> Result<(), store::StoreError> {
    let Some(lowest) = shared.lowest_buffered() else {
        return Ok(());
    };
    let configured = &shared.ctx.config.queue.queues;
    let higher: Vec<String> = queues
        .iter()
        .filter(|q| {
            configured
                .iter()
                .position(|c| c == *q)
                .is_some_and(|p| p < lowest)
        })
        .cloned()
        .collect();
    if higher.is_empty() {
        return Ok(());
    }
    let n = shared.ready_len().min(shared.prefetch()) as u32;
    let ctx = &shared.ctx;
    let jobs = backends.store.claim(&ctx.node_name, &higher, n).await?;
    if jobs.is_empty() {
        return Ok(());
    }
    for job in shared.take_lowest(jobs.len()) {
        shared.complete(chom_core::job::Completion::Release { id: job.id });
    }
    shared.push_ready(jobs);
    Ok(())
}

enum Handover {
    Done,
    Busy(Box<chom_core::job::Job>),
    Gone,
}

/// Give `job` to the worker in slot `index`, if it is still running and idle.
fn hand_over(shared: &QueueShared, index: usize, job: chom_core::job::Job) -> Handover {
    let mut slot = shared.slot(index);
    let Some(worker) = slot.worker.clone() else {
        return Handover::Gone;
    };
    if slot.assigned.is_some() {
        return Handover::Busy(Box::new(job));
    }
    let job = std::sync::Arc::new(job);
    slot.assigned = Some(super::Assigned {
        job: job.clone(),
        started: false,
    });
    drop(slot);
    if worker.cast(WorkerMsg::Run(job)).is_ok() {
        Handover::Done
    } else {
        shared.slot(index).assigned = None;
        Handover::Gone
    }
}

fn log_error(state: &mut DispatcherState, error: &str) {
    state.failing = true;
    // Once per 30 s while the database is unreachable, not once per poll.
    if let Some(failures) = state.claim_errors.note(Instant::now()) {
        warn!(%error, failures, "queue: cannot claim jobs; retrying");
    }
}
