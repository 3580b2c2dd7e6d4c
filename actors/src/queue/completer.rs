//! `queue/completer`: writes job outcomes back to the database in batches.
//!
//! Workers put results into [`QueueShared`]'s pending list (not into this actor's mailbox) and
//! send one `Flush`; a flush takes everything pending, so a burst becomes one transaction.
//! While the database is down the batch goes back to the front of the list and is retried with
//! backoff. Because the list lives outside the actor, nothing is lost when the completer is
//! stopped (its last flush writes what is pending) or restarted (the next incarnation writes
//! it). Only the node process dying loses unwritten results, and then the jobs are still
//! `reserved` in the database: they are released at the next start or rescued by another node
//! (at-least-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::QueueShared;
use chom_core::backoff::Doubling;
use chom_core::job::Completion;
use chom_core::throttle::Throttle;
use chom_store as store;

/// Largest batch written in one transaction.
const MAX_BATCH: usize = 1000;

/// Batches at least this large are written as two concurrent transactions (PostgreSQL).
const SPLIT: usize = 256;

/// The completer actor.
pub struct CompleterActor;

/// Start-up arguments.
pub struct CompleterArgs {
    /// The queue's shared state.
    pub shared: Arc<QueueShared>,
}

/// Running state.
pub struct CompleterState {
    shared: Arc<QueueShared>,
    retry_pace: Doubling,
    /// The last write failed (a success after it is logged once).
    failing: bool,
    /// Write failures, logged once per 30 s while they last.
    write_errors: Throttle,
}

/// Messages.
pub enum CompleterMsg {
    /// Write what is pending.
    Flush,
}

impl Actor for CompleterActor {
    type Msg = CompleterMsg;
    type State = CompleterState;
    type Arguments = CompleterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CompleterMsg>,
        args: CompleterArgs,
    ) -> Result<CompleterState, ActorProcessingErr> {
        args.shared.set_completer(Some(myself.clone()));
        // Results left by a previous incarnation (or sent while none was running).
        if args.shared.pending_completions() > 0 {
            myself.send_message(CompleterMsg::Flush)?;
        }
        Ok(CompleterState {
            shared: args.shared,
            retry_pace: Doubling::new(Duration::from_millis(100), Duration::from_secs(5)),
            failing: false,
            write_errors: Throttle::new(Duration::from_secs(30)),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CompleterMsg>,
        message: CompleterMsg,
        state: &mut CompleterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CompleterMsg::Flush => flush(&myself, state).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<CompleterMsg>,
        state: &mut CompleterState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.unset_completer(&myself);
        // Last chance to write what the workers finished (bounded: the node is stopping).
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.shared.pending_completions() > 0 && Instant::now() < deadline {
            if write(&state.shared).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let left = state.shared.pending_completions();
        if left > 0 {
            warn!(
                jobs = left,
                "queue: could not record results before stopping; the jobs stay reserved and will be retried"
            );
        }
        Ok(())
    }
}

async fn flush(myself: &ActorRef<CompleterMsg>, state: &mut CompleterState) {
    match write(&state.shared).await {
        Ok(_) => {
            if std::mem::take(&mut state.failing) {
                state.retry_pace.reset();
                info!("queue: results are written again");
            }
            if state.shared.pending_completions() > 0 {
                let _ = myself.send_message(CompleterMsg::Flush);
            }
        }
        Err(error) => {
            if let Some(failures) = state.write_errors.note(Instant::now()) {
                warn!(%error, failures, pending = state.shared.pending_completions(), "queue: cannot record job results; keeping them and retrying");
            }
            state.failing = true;
            let delay = state.retry_pace.next_delay();
            myself.send_after(delay, || CompleterMsg::Flush);
        }
    }
}

/// Write one batch of pending results; on failure they go back to the front of the list.
/// On PostgreSQL a large batch is written as two transactions at once on two connections (an
/// UPDATE of a thousand rows is CPU work in the database, and one statement uses one core);
/// the two halves hold different jobs, so they cannot conflict, and each half that fails goes
/// back on its own.
async fn write(shared: &QueueShared) -> Result<usize, store::StoreError> {
    let Some(backends) = shared.ctx.published.current() else {
        return if shared.pending_completions() == 0 {
            Ok(0)
        } else {
            Err(store::StoreError::Timeout(Duration::ZERO))
        };
    };
    let parallel = backends.store.backend() == store::Backend::Postgres;
    let mut batch = shared.take_completions(if parallel { 2 * MAX_BATCH } else { MAX_BATCH });
    if batch.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let one = |b: Vec<Completion>| async {
        match backends.store.complete(&shared.ctx.node_name, &b).await {
            Ok(()) => Ok(b.len()),
            Err(error) => Err((b, error)),
        }
    };
    let written = if parallel && batch.len() >= SPLIT {
        let second = batch.split_off(batch.len() / 2);
        match tokio::join!(one(batch), one(second)) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Err((failed, error)), Ok(_)) | (Ok(_), Err((failed, error))) => {
                shared.return_completions(failed);
                Err(error)
            }
            (Err((mut first, error)), Err((second, _))) => {
                first.extend(second);
                shared.return_completions(first);
                Err(error)
            }
        }
    } else {
        one(batch).await.map_err(|(failed, error)| {
            shared.return_completions(failed);
            error
        })
    };
    if let Ok(n) = written {
        tracing::trace!(batch = n, took = ?started.elapsed(), "queue: completions written");
    }
    written
}
