//! `monitors/watchdog`: tells systemd the node is alive, only while it is.
//!
//! Every half `WATCHDOG_USEC` it makes a liveness round trip through every supervisor of the
//! tree (`SupervisorMsg::Ping`); only when every one answers in time does it send WATCHDOG=1.
//! A wedged supervisor therefore stops the pings and systemd restarts the node, which is the
//! last step of the escalation chain. It also refreshes STATUS= with a one-line summary.

use std::sync::Arc;
use std::time::Duration;

use chom_supervisors::SupervisorMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sd_notify::NotifyState;
use tracing::{info, warn};

use crate::handles::{Readiness, TreeRoot};
use crate::metrics::Metrics;
use crate::notify::notify;
use crate::queue::QueueShared;
use crate::tree;

/// The watchdog actor.
pub struct WatchdogActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct WatchdogArgs {
    /// What the liveness round trip and the STATUS= line read.
    pub status: StatusSources,
    /// systemd's watchdog period (`WATCHDOG_USEC`), when systemd asked for pings.
    pub watchdog: Option<Duration>,
}

/// What the actor holds while running.
pub struct WatchdogState {
    status: StatusSources,
    ping_watchdog: bool,
    interval: Duration,
    healthy: bool,
}

/// Messages.
pub enum WatchdogMsg {
    /// Time for a liveness round trip.
    Tick,
}

/// How often STATUS= is refreshed when systemd's watchdog is off.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

impl Actor for WatchdogActor {
    type Msg = WatchdogMsg;
    type State = WatchdogState;
    type Arguments = WatchdogArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WatchdogArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Half the period, as sd_watchdog_enabled(3) recommends.
        let interval = args.watchdog.map_or(STATUS_INTERVAL, |p| p / 2);
        myself.send_message(WatchdogMsg::Tick)?;
        Ok(WatchdogState {
            status: args.status,
            ping_watchdog: args.watchdog.is_some(),
            interval,
            healthy: true,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WatchdogMsg::Tick => tick(&myself, state).await,
        }
        Ok(())
    }
}

async fn tick(myself: &ActorRef<WatchdogMsg>, state: &mut WatchdogState) {
    // The round trip must finish well within the period, or the ping would arrive late anyway.
    let timeout = (state.interval / 2).min(Duration::from_secs(5));
    match liveness(&state.status, timeout).await {
        Ok(status) => {
            if !state.healthy {
                info!("watchdog: supervision tree answers again; resuming WATCHDOG=1");
                state.healthy = true;
            }
            if state.ping_watchdog {
                notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            } else {
                notify(&[NotifyState::Status(&status)]);
            }
        }
        Err(reason) => {
            if state.healthy {
                warn!(%reason, "watchdog: liveness round trip failed; withholding WATCHDOG=1");
                state.healthy = false;
            }
            notify(&[NotifyState::Status(&format!("unresponsive: {reason}"))]);
        }
    }
    // Scheduled after the work, so a slow round trip never queues a burst of ticks.
    myself.send_after(state.interval, || WatchdogMsg::Tick);
}

/// What the watchdog reads: the tree it pings and what the STATUS= line summarizes.
#[derive(Clone)]
pub struct StatusSources {
    /// The root supervisor the round trip starts at.
    pub root: TreeRoot,
    /// `ready` or `starting`.
    pub readiness: Readiness,
    /// The workers running.
    pub queue: Arc<QueueShared>,
    /// The queue's size.
    pub metrics: Metrics,
    /// Open breakers.
    pub breakers: crate::fleet::breakers::BreakerBoard,
}

/// One liveness round trip; on success, the STATUS= line.
async fn liveness(sources: &StatusSources, timeout: Duration) -> Result<String, String> {
    let root = sources.root.get().ok_or("tree not started")?;
    let deadline_ms = (timeout * 2).as_millis() as u64;
    ractor::call_t!(
        root,
        |reply| SupervisorMsg::Ping { timeout, reply },
        deadline_ms
    )
    .map_err(|e| format!("root supervisor: {e}"))??;
    let report = tree::fetch(root, timeout).await?;
    Ok(status_line(sources, &tree::summarize(&report)))
}

/// `ready; 3/3 workers; 0 open breakers; queue 12; 25/25 actors running; 0 restarts`, or
/// `starting; ...` before migrations ran.
pub fn status_line(sources: &StatusSources, summary: &tree::TreeSummary) -> String {
    let phase = if sources.readiness.ready() {
        "ready"
    } else {
        "starting (waiting for database migrations)"
    };
    let workers = (sources.queue.running_workers(), sources.queue.workers());
    let open = sources.breakers.open_count();
    let queue = sources
        .metrics
        .queue_total()
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    format!(
        "{phase}; {}/{} workers; {open} open breakers; queue {queue}; {}/{} actors running; {} restarts",
        workers.0, workers.1, summary.running, summary.actors, summary.restarts
    )
}
