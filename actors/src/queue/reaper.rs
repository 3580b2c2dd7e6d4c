//! `queue/reaper`: periodic maintenance.
//!
//! Every tick (5 s): heartbeat in `nodes`, queue sizes and failures of the last hour for the
//! metrics, and rescue of jobs whose node stopped heartbeating for `queue.retry_after`. Every
//! `queue.stuck_check_interval`: the stuck-job killer (`queue.stuck_after`). Every
//! `queue.analyze_interval`: dead-letter analysis (kinds with `queue.analyze_threshold` or more
//! failures in 24 h are logged as errors, counted, and handed to the `observability` actor,
//! which tells Alertmanager). Hourly: pruning of finished jobs older
//! than `queue.retention`. None of these reads the retained finished jobs (see the store's
//! `rescue_expired`, `kill_stuck` and `queue_stats`): a tick costs the same with a million of
//! them as with none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chom_core::limits::saturating_before;
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, error, info, warn};

use super::QueueShared;
use crate::backends::Backends;
use chom_store::StoreError;

const TICK: Duration = Duration::from_secs(5);

/// A node counts as live while its last heartbeat is this recent: three ticks, so one late
/// or failed heartbeat does not drop it from the count.
pub const LIVE_WINDOW: Duration = Duration::from_secs(15);

/// The reaper actor.
pub struct ReaperActor;

/// Start-up arguments.
pub struct ReaperArgs {
    /// The queue's shared state.
    pub shared: Arc<QueueShared>,
}

/// Running state.
pub struct ReaperState {
    shared: Arc<QueueShared>,
    last_stuck: Instant,
    /// `None` until the first analysis, which runs at the first tick: a restarted node tells
    /// Alertmanager again before a held alert's endsAt passes.
    last_analyze: Option<Instant>,
    last_prune: Option<Instant>,
}

/// Messages.
pub enum ReaperMsg {
    /// Time for maintenance.
    Tick,
}

/// The reason recorded for jobs the stuck-job killer fails.
pub const STUCK_REASON: &str = "killed after timeout";

impl Actor for ReaperActor {
    type Msg = ReaperMsg;
    type State = ReaperState;
    type Arguments = ReaperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReaperMsg>,
        args: ReaperArgs,
    ) -> Result<ReaperState, ActorProcessingErr> {
        myself.send_message(ReaperMsg::Tick)?;
        let now = Instant::now();
        Ok(ReaperState {
            shared: args.shared,
            last_stuck: now,
            last_analyze: None,
            last_prune: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ReaperMsg>,
        message: ReaperMsg,
        state: &mut ReaperState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReaperMsg::Tick => {
                if let (true, Some(b)) = (
                    state.shared.ctx.readiness.migrated(),
                    state.shared.ctx.published.current(),
                ) && let Err(error) = tick(state, &b).await
                {
                    debug!(%error, "queue: maintenance skipped");
                }
                myself.send_after(TICK, || ReaperMsg::Tick);
            }
        }
        Ok(())
    }
}

async fn tick(state: &mut ReaperState, b: &Backends) -> Result<(), StoreError> {
    let ctx = &state.shared.ctx;
    let q = &ctx.config.queue;
    let now = Utc::now();
    let live = b
        .store
        .heartbeat(
            &ctx.node_name,
            saturating_before(now, LIVE_WINDOW),
            state.shared.busy_workers() as u64,
        )
        .await?;
    state.shared.set_live_nodes(live);

    let stats = b.store.queue_stats(&q.queues).await?;
    ctx.metrics
        .set_queue_sizes(stats.iter().map(|s| (s.queue.clone(), s.size())));
    let failed = b
        .store
        .failed_since(now - chrono::Duration::hours(1))
        .await?;
    ctx.metrics.set_failed_last_hour(failed);

    // Config durations are bounded when the config loads; the saturating arithmetic is the
    // guard behind that, so no value can wrap a cutoff into "everything".
    let cutoff = saturating_before(now, q.retry_after);
    let rescued = b.store.rescue_expired(cutoff, &ctx.node_name).await?;
    if rescued > 0 {
        warn!(
            jobs = rescued,
            "queue: rescued jobs reserved by a node that stopped heartbeating"
        );
        state.shared.wake();
    }

    if state.last_stuck.elapsed() >= q.stuck_check_interval {
        state.last_stuck = Instant::now();
        kill_stuck(ctx, b, q.stuck_after).await?;
    }
    if state
        .last_analyze
        .is_none_or(|t| t.elapsed() >= q.analyze_interval)
    {
        state.last_analyze = Some(Instant::now());
        analyze(ctx, b).await?;
    }
    if state
        .last_prune
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
    {
        state.last_prune = Some(Instant::now());
        let cutoff = saturating_before(now, q.retention);
        let pruned = b.store.prune_jobs(cutoff).await?;
        if pruned > 0 {
            info!(jobs = pruned, "queue: pruned finished jobs past retention");
        }
    }
    Ok(())
}

/// Fail jobs reserved longer than `older_than` (also `chom jobs kill-stuck`, which refuses
/// values above `limits::MAX_DURATION` first). An age reaching before the epoch matches no job.
pub async fn kill_stuck(
    ctx: &super::QueueContext,
    b: &Backends,
    older_than: Duration,
) -> Result<Vec<i64>, StoreError> {
    let cutoff = saturating_before(Utc::now(), older_than);
    let ids = b.store.kill_stuck(cutoff, STUCK_REASON).await?;
    if !ids.is_empty() {
        error!(jobs = ?ids, older_than = %humantime::format_duration(older_than), node = %ctx.node_name, "queue: killed stuck jobs; moved to failed_jobs");
    }
    Ok(ids)
}

/// Dead-letter analysis over 24 h; returns every kind with its count and whether it is flagged.
pub async fn analyze(
    ctx: &super::QueueContext,
    b: &Backends,
) -> Result<Vec<(chom_core::job::KindFailures, bool)>, StoreError> {
    let since = Utc::now() - chrono::Duration::hours(24);
    let kinds = b.store.failures_by_kind(since).await?;
    ctx.metrics
        .set_dead_letters(kinds.iter().map(|k| (k.kind.clone(), k.count)));
    let threshold = u64::from(ctx.config.queue.analyze_threshold);
    let kinds: Vec<_> = kinds
        .into_iter()
        .map(|k| {
            let flagged = k.count >= threshold;
            if flagged {
                error!(kind = %k.kind, failures = k.count, threshold, last_error = %k.last_error, "queue: job kind failing repeatedly in the last 24h");
                ctx.metrics.kind_flagged(&k.kind);
            }
            (k, flagged)
        })
        .collect();
    // The `observability` actor tells Alertmanager (ChomDeadLetterSpike), in the background.
    ctx.spikes.report(
        kinds
            .iter()
            .filter(|(_, flagged)| *flagged)
            .map(|(k, _)| k.clone())
            .collect(),
    );
    Ok(kinds)
}
