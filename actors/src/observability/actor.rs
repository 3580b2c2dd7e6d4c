//! `observability`: the background half of the node's link to the observability host. It
//! runs two tasks that must never hold up the work they report on:
//!
//! - alerts: the dead-letter analysis' verdict ([`SpikeReports`]) pushed to Alertmanager as
//!   `ChomDeadLetterSpike{kind}` when it changes and re-sent every [`RESEND`] while it holds,
//!   each push firing until [`HOLD`] later, so the alert resolves by itself if this node stops
//!   telling; a kind no longer flagged is resolved at once (endsAt now);
//! - logs (when `observability.loki_url` is set): the node's own events, queued by the
//!   `tracing` layer of [`super::loki`], shipped to Loki.
//!
//! Both go through the shared [`ObservabilityClient`] and its breaker. The queries
//! (`chom metrics query`, health) use the same client from their callers' tasks, so the actor
//! holds no request in its mailbox. A task that ends on its own is a bug: the actor then fails
//! and its supervisor restarts it; the log queue survives the restart.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::loki::{self, LokiQueue};
use super::{ObservabilityClient, SpikeReports};
use crate::metrics::Metrics;

/// How often a held dead-letter alert is sent again.
pub const RESEND: Duration = Duration::from_secs(60);

/// How long each push keeps a dead-letter alert firing without another: a few resends, so a
/// lost push or two change nothing, and a node that stopped telling lets it resolve.
pub const HOLD: Duration = Duration::from_secs(5 * 60);

/// How long a stopping actor waits for its tasks (the log task sends what is queued once).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The log events waiting for Loki, kept across restarts of the actor.
#[derive(Clone)]
pub struct LogShipping {
    /// The `tracing` layer's queue; held by the running log task.
    pub queue: Arc<tokio::sync::Mutex<LokiQueue>>,
    /// The `host` label.
    pub host: String,
}

/// The actor.
pub struct ObservabilityActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct ObservabilityArgs {
    /// The one client of the observability host.
    pub client: ObservabilityClient,
    /// The dead-letter verdicts to tell Alertmanager.
    pub spikes: SpikeReports,
    /// Log shipping, when `observability.loki_url` is set.
    pub logs: Option<LogShipping>,
    /// For the dropped-events counter.
    pub metrics: Metrics,
}

/// Running state: the tasks and how to stop them.
pub struct ObservabilityState {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Messages.
pub enum ObservabilityMsg {
    /// A task ended while the actor runs (it panicked, or returned by mistake).
    TaskEnded(&'static str),
}

impl Actor for ObservabilityActor {
    type Msg = ObservabilityMsg;
    type State = ObservabilityState;
    type Arguments = ObservabilityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ObservabilityMsg>,
        args: ObservabilityArgs,
    ) -> Result<ObservabilityState, ActorProcessingErr> {
        let stop = CancellationToken::new();
        let mut tasks = vec![watched(
            &myself,
            &stop,
            "alerts",
            push_alerts(args.client.clone(), args.spikes, stop.clone()),
        )];
        if let Some(logs) = args.logs {
            let (client, metrics, token) = (args.client, args.metrics, stop.clone());
            let ship = async move {
                // A previous incarnation's task may still be sending its last batch.
                let mut queue = logs.queue.lock().await;
                loki::ship(&mut queue, client, logs.host, metrics, token).await;
            };
            tasks.push(watched(&myself, &stop, "logs", ship));
        }
        Ok(ObservabilityState { stop, tasks })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ObservabilityMsg>,
        message: ObservabilityMsg,
        _state: &mut ObservabilityState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ObservabilityMsg::TaskEnded(task) => {
                Err(format!("the {task} task ended while the actor runs").into())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ObservabilityMsg>,
        state: &mut ObservabilityState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.cancel();
        for task in state.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        Ok(())
    }
}

/// Spawn `task`; if it ends before `stop` (a panic included), tell the actor, which fails.
fn watched(
    myself: &ActorRef<ObservabilityMsg>,
    stop: &CancellationToken,
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let (myself, stop) = (myself.clone(), stop.clone());
    tokio::spawn(async move {
        let ended = AssertUnwindSafe(task).catch_unwind().await;
        if !stop.is_cancelled() {
            if ended.is_err() {
                debug!(task = name, "observability: task panicked");
            }
            let _ = myself.cast(ObservabilityMsg::TaskEnded(name));
        }
    })
}

/// Push the dead-letter verdict when it changes and every [`RESEND`] while it holds. A failed
/// push (host down, breaker open) is tried again at the next turn, whole.
async fn push_alerts(client: ObservabilityClient, spikes: SpikeReports, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = spikes.changed() => {}
            () = tokio::time::sleep(RESEND) => {}
            () = stop.cancelled() => return,
        }
        let Some(flagged) = spikes.latest() else {
            continue;
        };
        match client.push_dead_letters(&flagged, HOLD).await {
            Ok(0) => {}
            Ok(sent) => debug!(alerts = sent, "observability: dead-letter alerts sent"),
            Err(why) => {
                debug!(error = %why, "observability: dead-letter alerts not sent; next turn")
            }
        }
    }
}
