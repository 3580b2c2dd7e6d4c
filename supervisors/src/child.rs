//! One child as its supervisor tracks it: spec, current incarnation, counters.

use std::time::Instant;

use ractor::{ActorCell, ActorRef, RactorErr, SpawnErr};

use crate::backoff::BackoffState;
use crate::exit::SHUTDOWN;
use crate::report::{ChildReport, FailureReport};
use crate::spec::{ChildSpec, Shutdown, StartCtx, child_path};
use crate::supervisor::SupervisorMsg;

/// Lifecycle state of a child, as reported (lowercase on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildStatus {
    /// Its start function is running.
    Starting,
    /// Started and running.
    Running,
    /// Waiting for a scheduled restart.
    Restarting,
    /// Exited normally (or was stopped) and will not be restarted.
    Stopped,
    /// Exited abnormally and will not be restarted.
    Failed,
}

impl ChildStatus {
    /// Lowercase name, as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildStatus::Starting => "starting",
            ChildStatus::Running => "running",
            ChildStatus::Restarting => "restarting",
            ChildStatus::Stopped => "stopped",
            ChildStatus::Failed => "failed",
        }
    }
}

/// A child of a supervisor.
pub(crate) struct Child {
    pub(crate) spec: ChildSpec,
    pub(crate) path: String,
    /// The live incarnation. Exit events of any other actor id are stale.
    pub(crate) cell: Option<ActorCell>,
    pub(crate) status: ChildStatus,
    /// When the live incarnation started (feeds the backoff reset).
    pub(crate) started_at: Option<Instant>,
    /// Token of the scheduled restart this child waits for; a timer carrying another
    /// token is stale.
    pub(crate) pending: Option<u64>,
    pub(crate) restart_count: u64,
    pub(crate) recycles: u64,
    pub(crate) last_failure: Option<FailureReport>,
    /// When the failure that the pending restart answers was noticed (the first one, when
    /// starts fail again after it).
    pub(crate) failed_at: Option<Instant>,
    /// From the last failure noticed to its replacement running.
    pub(crate) last_recovery: Option<std::time::Duration>,
    pub(crate) backoff: BackoffState,
    /// Fault injection: this many next starts fail (`u32::MAX`: all of them).
    pub(crate) fail_starts: u32,
}

// === impl Child ===

impl Child {
    pub(crate) fn new(spec: ChildSpec, supervisor_path: &str) -> Self {
        Self {
            path: child_path(supervisor_path, &spec.id),
            spec,
            cell: None,
            status: ChildStatus::Stopped,
            started_at: None,
            pending: None,
            restart_count: 0,
            recycles: 0,
            last_failure: None,
            failed_at: None,
            last_recovery: None,
            backoff: BackoffState::new(),
            fail_starts: 0,
        }
    }

    /// Starts a new incarnation; `Err` carries the reason the start failed.
    pub(crate) async fn start(&mut self, supervisor: &ActorCell) -> Result<(), String> {
        self.status = ChildStatus::Starting;
        self.pending = None;
        if self.fail_starts > 0 {
            if self.fail_starts != u32::MAX {
                self.fail_starts -= 1;
            }
            return Err("injected start failure".to_owned());
        }
        let ctx = StartCtx {
            supervisor: supervisor.clone(),
            path: self.path.clone(),
        };
        let cell = (self.spec.start)(ctx).await.map_err(start_error)?;
        // A start function that forgot `spawn_linked` would leave the child unwatched.
        if cell.try_get_supervisor().map(|s| s.get_id()) != Some(supervisor.get_id()) {
            cell.link(supervisor.clone());
        }
        self.cell = Some(cell);
        self.status = ChildStatus::Running;
        self.started_at = Some(crate::supervisor::now());
        Ok(())
    }

    /// Stops the live incarnation, if any, per the child's [`Shutdown`]; returns the exit
    /// reason to report, or `None` when nothing was running.
    pub(crate) async fn shut_down(&mut self) -> Option<&'static str> {
        let cell = self.cell.take()?;
        self.started_at = None;
        Some(stop_cell(&cell, self.spec.shutdown).await)
    }

    /// The live incarnation, when it is a [`Supervisor`](crate::Supervisor) that can be
    /// asked for reports and pings.
    pub(crate) fn supervisor_ref(&self) -> Option<ActorRef<SupervisorMsg>> {
        let cell = self.cell.as_ref()?;
        (cell.is_message_type_of::<SupervisorMsg>() == Some(true)).then(|| cell.clone().into())
    }

    pub(crate) fn report(&self) -> ChildReport {
        ChildReport {
            id: self.spec.id.clone(),
            path: self.path.clone(),
            kind: self.spec.kind,
            restart: self.spec.restart,
            state: self.status,
            restart_count: self.restart_count,
            recycles: self.recycles,
            last_failure: self.last_failure.clone(),
            last_recovery_us: self
                .last_recovery
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            children: None,
        }
    }
}

fn start_error(err: SpawnErr) -> String {
    match err {
        // ractor wraps the panic message or error; the wrapper adds nothing useful
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Stops `cell` per `shutdown` and waits until it is gone; returns the exit reason to
/// report (`"shutdown"` or `"shutdown:..."`).
pub(crate) async fn stop_cell(cell: &ActorCell, shutdown: Shutdown) -> &'static str {
    match shutdown {
        Shutdown::BrutalKill => {
            // waiting without a limit: a kill cancels the actor at its next `.await`
            let _ = cell.kill_and_wait(None).await;
            "shutdown:brutal_kill"
        }
        Shutdown::Timeout(limit) => {
            match cell.stop_and_wait(Some(SHUTDOWN.into()), Some(limit)).await {
                Ok(()) => SHUTDOWN,
                Err(RactorErr::Timeout) => {
                    let _ = cell.kill_and_wait(None).await;
                    "shutdown:killed_after_timeout"
                }
                // Its stop port is gone: it is already exiting on its own. Give it the same time.
                Err(_) => {
                    if cell.wait(Some(limit)).await.is_err() {
                        let _ = cell.kill_and_wait(None).await;
                        "shutdown:killed_after_timeout"
                    } else {
                        SHUTDOWN
                    }
                }
            }
        }
        Shutdown::Infinity => {
            if cell
                .stop_and_wait(Some(SHUTDOWN.into()), None)
                .await
                .is_err()
            {
                let _ = cell.wait(None).await;
            }
            SHUTDOWN
        }
    }
}
