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
use crate::store;

/// Largest batch written in one transaction.
const MAX_BATCH: usize = 1000;

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
    retry_delay: Option<Duration>,
    last_error_log: Option<Instant>,
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
            retry_delay: None,
            last_error_log: None,
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
        _: ActorRef<CompleterMsg>,
        state: &mut CompleterState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.set_completer(None);
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
            if state.retry_delay.take().is_some() {
                info!("queue: results are written again");
            }
            if state.shared.pending_completions() > 0 {
                let _ = myself.send_message(CompleterMsg::Flush);
            }
        }
        Err(error) => {
            if state
                .last_error_log
                .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
            {
                warn!(%error, pending = state.shared.pending_completions(), "queue: cannot record job results; keeping them and retrying");
                state.last_error_log = Some(Instant::now());
            }
            let delay = state.retry_delay.map_or(Duration::from_millis(100), |d| {
                (d * 2).min(Duration::from_secs(5))
            });
            state.retry_delay = Some(delay);
            myself.send_after(delay, || CompleterMsg::Flush);
        }
    }
}

/// Write one batch of pending results; on failure they go back to the front of the list.
async fn write(shared: &QueueShared) -> Result<usize, store::StoreError> {
    let batch = shared.take_completions(MAX_BATCH);
    if batch.is_empty() {
        return Ok(0);
    }
    let Some(backends) = shared.ctx.backends() else {
        shared.return_completions(batch);
        return Err(store::StoreError::Timeout(Duration::ZERO));
    };
    let started = Instant::now();
    match store::with_timeout(Duration::from_secs(10), backends.store.complete(&batch)).await {
        Ok(()) => {
            tracing::trace!(batch = batch.len(), took = ?started.elapsed(), "queue: completions written");
            Ok(batch.len())
        }
        Err(error) => {
            shared.return_completions(batch);
            Err(error)
        }
    }
}
