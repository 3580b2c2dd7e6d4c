//! `queue/completer`: writes job outcomes back to the database in batches.
//!
//! Completions arriving while a write is under way pile up and go in the next batch (a flush
//! is queued behind them, so a burst becomes one transaction). While the database is down the
//! batch is kept and retried with backoff; nothing is dropped. If this actor itself dies, its
//! unwritten batch is lost but the jobs are still `reserved` in the database: they are
//! released at the node's next start or rescued by another node (at-least-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chom_core::job::Completion;
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
    pending: Vec<Completion>,
    flush_queued: bool,
    retry_delay: Option<Duration>,
    last_error_log: Option<Instant>,
}

/// Messages.
pub enum CompleterMsg {
    /// An attempt's result.
    Done(Completion),
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
        args.shared.set_completer(Some(myself));
        Ok(CompleterState {
            shared: args.shared,
            pending: Vec::new(),
            flush_queued: false,
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
            CompleterMsg::Done(c) => {
                state.pending.push(c);
                // Behind every Done already queued: they join this batch.
                if !state.flush_queued && state.retry_delay.is_none() {
                    state.flush_queued = true;
                    myself.send_message(CompleterMsg::Flush)?;
                }
            }
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
        while !state.pending.is_empty() && Instant::now() < deadline {
            if write(state).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !state.pending.is_empty() {
            warn!(
                jobs = state.pending.len(),
                "queue: could not record results before stopping; the jobs stay reserved and will be retried"
            );
        }
        Ok(())
    }
}

async fn flush(myself: &ActorRef<CompleterMsg>, state: &mut CompleterState) {
    state.flush_queued = false;
    if state.pending.is_empty() {
        state.retry_delay = None;
        return;
    }
    match write(state).await {
        Ok(()) => {
            if state.retry_delay.take().is_some() {
                info!("queue: results are written again");
            }
            if !state.pending.is_empty() {
                state.flush_queued = true;
                let _ = myself.send_message(CompleterMsg::Flush);
            }
        }
        Err(error) => {
            if state
                .last_error_log
                .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
            {
                warn!(%error, pending = state.pending.len(), "queue: cannot record job results; keeping them and retrying");
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

/// Write one batch; on success it is removed from `pending`.
async fn write(state: &mut CompleterState) -> Result<(), store::StoreError> {
    let Some(backends) = state.shared.ctx.backends() else {
        return Err(store::StoreError::Timeout(Duration::ZERO));
    };
    let n = state.pending.len().min(MAX_BATCH);
    let started = Instant::now();
    store::with_timeout(
        Duration::from_secs(10),
        backends.store.complete(&state.pending[..n]),
    )
    .await?;
    tracing::trace!(batch = n, took = ?started.elapsed(), "queue: completions written");
    state.pending.drain(..n);
    Ok(())
}
