//! The supervisor actor: starts its children, restarts them per strategy, restart type,
//! intensity and backoff, stops them in reverse start order, and gives up upward.
//!
//! ractor reports child exits as supervision events but has no restart logic; this
//! actor is that logic. Restarting means spawning a new actor: each child's current
//! incarnation is tracked by actor id, and events about any other id (an incarnation the
//! supervisor replaced or stopped itself) are ignored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use ractor::{SupervisionEvent, concurrency::JoinHandle};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::debug;

use crate::backoff::Backoff;
use crate::child::{Child, ChildStatus};
use crate::error::SupervisorError;
use crate::exit::{Exit, ExitKind};
use crate::intensity::{Intensity, IntensityTracker, Verdict};
use crate::observer::Observer;
use crate::report::{FailureReport, SupervisorReport};
use crate::spec::{
    ChildSpec, Restart, Strategy, SupervisorArgs, SupervisorSpec, child_path, valid_id,
};

/// How long [`SupervisorMsg::Tree`] waits for each child supervisor's report.
pub const TREE_TIMEOUT: Duration = Duration::from_secs(1);

/// The clock of all restart decisions. tokio's, so that tests can pause time.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts a supervisor at `path` (`""` for the root), linked to `parent` when given.
///
/// Returns once every child has started; fails (after stopping the children already
/// started, in reverse order) if one of them does not.
pub async fn start_supervisor(
    path: impl Into<String>,
    spec: SupervisorSpec,
    parent: Option<ActorCell>,
) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), ractor::SpawnErr> {
    let args = SupervisorArgs {
        path: path.into(),
        spec,
    };
    // No global names: many trees can live in one process.
    match parent {
        Some(parent) => Actor::spawn_linked(None, Supervisor, args, parent).await,
        None => Actor::spawn(None, Supervisor, args).await,
    }
}

/// The supervisor actor. Start it with [`start_supervisor`] or
/// [`ChildSpec::subtree`](crate::ChildSpec::subtree).
#[derive(Clone, Copy, Debug, Default)]
pub struct Supervisor;

/// Requests a supervisor answers. Paths are relative to the supervisor receiving them
/// (`"worker:2"`, or `"monitors/watchdog"`, which is forwarded to `monitors`).
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Liveness round trip: `Ok` only if this supervisor and every descendant supervisor
    /// answered within `timeout`; otherwise `Err` holds the path of the one that did not.
    Ping {
        /// Time the whole subtree has to answer.
        timeout: Duration,
        /// Answer.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Report of this supervisor and, recursively, of its descendant supervisors (one that
    /// does not answer within [`TREE_TIMEOUT`] is reported without children).
    Tree(RpcReplyPort<SupervisorReport>),
    /// Restarts only the child (or subtree) at `path`: no strategy, no intensity, but
    /// counted in its `restart_count` and reported as [`Observer::child_restarted`]
    /// with reason `"manual"`.
    Restart {
        /// Relative path of the child.
        path: String,
        /// Answer.
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    },
    /// Adds and starts a child (after the existing ones). Fails on a duplicate or invalid
    /// id, when `max_children` is reached, or when it does not start (it is then not kept).
    AddChild {
        /// The new child.
        spec: ChildSpec,
        /// Answer.
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    },
    /// Stops a child per its shutdown and forgets it.
    RemoveChild {
        /// Id of the child.
        id: String,
        /// Answer.
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    },
    /// The live actor at `path`, if any.
    Lookup {
        /// Relative path of the child or descendant.
        path: String,
        /// Answer.
        reply: RpcReplyPort<Option<ActorCell>>,
    },
    /// Fault injection: the handler sleeps for `duration`, so the mailbox stops answering.
    Stall {
        /// How long to stall.
        duration: Duration,
    },
    /// Fault injection on the child at `path` (forwarded down like `Restart`).
    InjectFault {
        /// Relative path of the child.
        path: String,
        /// What to do to it.
        fault: Fault,
        /// Answer (sent once the fault is injected, not once it has played out).
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    },
    /// Internal: `Tree` with an explicit deadline, used between supervisors so that every
    /// level answers before its parent stops waiting.
    TreeWithin {
        /// Time this supervisor has to answer.
        timeout: Duration,
        /// Answer.
        reply: RpcReplyPort<SupervisorReport>,
    },
    /// Internal: a scheduled restart is due.
    RestartDue {
        /// Identifies the schedule; children now waiting for another one ignore it.
        token: u64,
        /// Children to start, in start order.
        members: Vec<String>,
        /// Why they are restarted.
        reason: String,
    },
}

/// A fault to inject into a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill the child now (a crash, handled like any other).
    Kill,
    /// The child's next N starts fail as if `pre_start` panicked, and it is killed now;
    /// `u32::MAX` means forever.
    FailStarts(u32),
}

/// The supervisor's private state (opaque).
pub struct SupervisorState {
    path: String,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    max_children: Option<usize>,
    observer: Arc<dyn Observer>,
    /// In start order.
    children: Vec<Child>,
    /// The ids of `children`, so that adding a child checks for a duplicate without comparing
    /// its id with every other one (a fleet supervisor adds one child per server, 10,000s).
    ids: HashSet<String>,
    restarts: IntensityTracker,
    rng: SmallRng,
    next_token: u64,
}

/// The supervisor gave up: returned from the handler so the parent sees `ActorFailed`.
#[derive(Debug, thiserror::Error)]
#[error("gave up: {0}")]
pub(crate) struct GaveUp(String);

impl GaveUp {
    fn to_error(&self) -> SupervisorError {
        SupervisorError::Escalated(self.0.clone())
    }
}

/// A restart decided but not yet done.
struct PendingRestart {
    token: u64,
    members: Vec<String>,
    reason: String,
    delay: Duration,
}

/// Where a relative path leads.
enum Route {
    /// To this supervisor's child at this index.
    Here(usize),
    /// Further down: the child supervisor, the rest of the path, and the child's path.
    Down(ActorRef<SupervisorMsg>, String, String),
    /// Nowhere.
    Fail(SupervisorError),
}

// === impl Supervisor ===

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState::new(args)?;
        state.start_all(&myself).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Otherwise ractor would kill the children, concurrently and without post_stop.
        state.stop_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Ping { timeout, reply } => state.ping(timeout, reply),
            SupervisorMsg::Tree(reply) => state.tree(TREE_TIMEOUT, reply),
            SupervisorMsg::TreeWithin { timeout, reply } => state.tree(timeout, reply),
            SupervisorMsg::Restart { path, reply } => state.restart(&myself, path, reply).await?,
            SupervisorMsg::AddChild { spec, reply } => state.add_child(&myself, spec, reply).await,
            SupervisorMsg::RemoveChild { id, reply } => state.remove_child(id, reply).await,
            SupervisorMsg::Lookup { path, reply } => state.lookup(path, reply),
            SupervisorMsg::Stall { duration } => tokio::time::sleep(duration).await,
            SupervisorMsg::InjectFault { path, fault, reply } => {
                state.inject_fault(path, fault, reply)
            }
            SupervisorMsg::RestartDue {
                token,
                members,
                reason,
            } => state.restart_due(&myself, token, members, reason).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(exit) = Exit::from_event(&event) {
            state.on_child_exit(&myself, exit).await?;
        }
        Ok(())
    }
}

// === impl SupervisorState: lifecycle ===

impl SupervisorState {
    fn new(args: SupervisorArgs) -> Result<Self, SupervisorError> {
        let SupervisorArgs { path, spec } = args;
        let mut children: Vec<Child> = Vec::with_capacity(spec.children.len());
        let mut ids = HashSet::with_capacity(spec.children.len());
        for child in spec.children {
            if !valid_id(&child.id) {
                return Err(SupervisorError::InvalidId(child.id));
            }
            if !ids.insert(child.id.clone()) {
                return Err(SupervisorError::DuplicateId(child.id));
            }
            children.push(Child::new(child, &path));
        }
        Ok(Self {
            path,
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            max_children: spec.max_children,
            observer: spec.observer,
            children,
            ids,
            restarts: IntensityTracker::new(),
            rng: SmallRng::from_os_rng(),
            next_token: 0,
        })
    }

    /// Starts every child in order; on the first failure stops the started ones.
    async fn start_all(&mut self, me: &ActorRef<SupervisorMsg>) -> Result<(), SupervisorError> {
        for idx in 0..self.children.len() {
            if let Err(why) = self.start_child(me, idx).await {
                self.stop_all().await;
                return Err(SupervisorError::StartFailed(format!(
                    "{}: {why}",
                    self.children[idx].path
                )));
            }
        }
        Ok(())
    }

    /// Starts child `idx`, telling the observer either way.
    async fn start_child(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        idx: usize,
    ) -> Result<(), String> {
        let child = &mut self.children[idx];
        match child.start(&me.get_cell()).await {
            Ok(()) => {
                self.observer.child_started(&child.path);
                Ok(())
            }
            Err(why) => {
                debug!(child = %child.path, reason = %why, "child failed to start");
                child.last_failure = Some(FailureReport::now(&why));
                self.observer.child_start_failed(&child.path, &why);
                Err(why)
            }
        }
    }

    /// Stops every child, in reverse start order, one at a time.
    async fn stop_all(&mut self) {
        for idx in (0..self.children.len()).rev() {
            self.stop_child(idx).await;
            let child = &mut self.children[idx];
            child.pending = None;
            if matches!(child.status, ChildStatus::Running | ChildStatus::Restarting) {
                child.status = ChildStatus::Stopped;
            }
        }
    }

    /// Stops child `idx` if it is running, and reports its exit.
    async fn stop_child(&mut self, idx: usize) {
        let child = &mut self.children[idx];
        if let Some(reason) = child.shut_down().await {
            self.observer.child_exited(&child.path, reason, false);
        }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    /// Drop child `idx` from the list (and its id).
    fn forget(&mut self, idx: usize) {
        let child = self.children.remove(idx);
        self.ids.remove(&child.spec.id);
    }

    fn is_dynamic(&self) -> bool {
        self.max_children.is_some()
    }
}

// === impl SupervisorState: exits and restarts ===

impl SupervisorState {
    async fn on_child_exit(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        exit: Exit,
    ) -> Result<(), GaveUp> {
        let current = |c: &Child| {
            c.cell
                .as_ref()
                .is_some_and(|cell| cell.get_id() == exit.actor)
        };
        let Some(idx) = self.children.iter().position(current) else {
            // An incarnation already replaced or stopped by this supervisor.
            return Ok(());
        };
        let child = &mut self.children[idx];
        child.cell = None;
        let ran_since = child.started_at.take();
        let abnormal = exit.kind.is_abnormal();
        debug!(child = %child.path, reason = %exit.reason, abnormal, "child exited");
        self.observer
            .child_exited(&child.path, &exit.reason, abnormal);
        if abnormal {
            child.last_failure = Some(FailureReport::now(&exit.reason));
            child.failed_at.get_or_insert_with(Instant::now);
        }

        if exit.kind == ExitKind::Recycle && child.spec.restart != Restart::Temporary {
            child.recycles += 1;
            return match self.start_child(me, idx).await {
                Ok(()) => Ok(()),
                Err(why) => self.retry_later(me, idx, why).await,
            };
        }
        if !child.spec.restart.restarts_after(abnormal) {
            self.retire(idx, abnormal);
            return Ok(());
        }

        let pending = self.prepare_restart(idx, exit.reason, ran_since).await?;
        if pending.delay.is_zero() {
            // The common case, a one-off crash: restart inline, no timer round trip.
            self.run_restart(me, pending).await
        } else {
            self.schedule(me, pending);
            Ok(())
        }
    }

    /// A child that will not be restarted: forgotten by a dynamic supervisor, kept as
    /// stopped or failed by a static one.
    fn retire(&mut self, idx: usize, abnormal: bool) {
        if self.is_dynamic() {
            self.forget(idx);
        } else {
            let child = &mut self.children[idx];
            child.pending = None;
            child.status = if abnormal {
                ChildStatus::Failed
            } else {
                ChildStatus::Stopped
            };
        }
    }

    /// Counts a restart against the intensity, computes the failed child's delay, stops
    /// the rest of its group (per strategy) and marks the group as waiting.
    async fn prepare_restart(
        &mut self,
        idx: usize,
        reason: String,
        ran_since: Option<Instant>,
    ) -> Result<PendingRestart, GaveUp> {
        let now = now();
        if self.restarts.record(&self.intensity, now) == Verdict::Exceeded {
            let why = format!(
                "more than {} restarts in {:?}, last {}: {reason}",
                self.intensity.max_restarts, self.intensity.period, self.children[idx].path
            );
            return Err(self.give_up(why).await);
        }
        let delay =
            self.children[idx]
                .backoff
                .on_failure(&self.backoff, ran_since, now, &mut self.rng);

        let group = match self.strategy {
            Strategy::OneForOne => idx..idx + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => idx..self.children.len(),
        };
        // Siblings go down in reverse start order, one at a time.
        for sibling in group.clone().rev().filter(|&j| j != idx) {
            self.stop_child(sibling).await;
        }

        self.next_token += 1;
        let token = self.next_token;
        let mut members = Vec::with_capacity(group.len());
        let mut temporary = Vec::new();
        for j in group {
            let child = &mut self.children[j];
            if j != idx && child.spec.restart == Restart::Temporary {
                temporary.push(j);
                continue;
            }
            child.status = ChildStatus::Restarting;
            child.pending = Some(token);
            members.push(child.spec.id.clone());
        }
        // Temporary siblings are never restarted; retire from the back so indices hold.
        for j in temporary.into_iter().rev() {
            self.retire(j, false);
        }
        debug!(supervisor = %self.path, ?members, ?delay, "restart scheduled");
        Ok(PendingRestart {
            token,
            members,
            reason,
            delay,
        })
    }

    /// Starts the members of a pending restart that still wait for it, in start order.
    async fn run_restart(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        pending: PendingRestart,
    ) -> Result<(), GaveUp> {
        for id in &pending.members {
            let Some(idx) = self.position(id) else {
                continue;
            };
            if self.children[idx].pending != Some(pending.token) {
                continue;
            }
            match self.start_child(me, idx).await {
                Ok(()) => {
                    let child = &mut self.children[idx];
                    child.restart_count += 1;
                    if let Some(failed_at) = child.failed_at.take() {
                        child.last_recovery = Some(failed_at.elapsed());
                    }
                    self.observer.child_restarted(&child.path, &pending.reason);
                }
                Err(why) => return self.retry_later(me, idx, why).await,
            }
        }
        Ok(())
    }

    /// A failed start counts as another failure; its restart always goes through the
    /// mailbox, so a child that cannot start never spins inside one handler.
    async fn retry_later(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        idx: usize,
        why: String,
    ) -> Result<(), GaveUp> {
        let pending = self.prepare_restart(idx, why, None).await?;
        self.schedule(me, pending);
        Ok(())
    }

    fn schedule(&self, me: &ActorRef<SupervisorMsg>, pending: PendingRestart) {
        let PendingRestart {
            token,
            members,
            reason,
            delay,
        } = pending;
        let msg = SupervisorMsg::RestartDue {
            token,
            members,
            reason,
        };
        if delay.is_zero() {
            let _ = me.send_message(msg);
        } else {
            // If the supervisor is gone by then, the send fails and nothing happens.
            ractor::time::send_after(delay, me.get_cell(), move || msg);
        }
    }

    async fn restart_due(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        token: u64,
        members: Vec<String>,
        reason: String,
    ) -> Result<(), GaveUp> {
        let pending = PendingRestart {
            token,
            members,
            reason,
            delay: Duration::ZERO,
        };
        self.run_restart(me, pending).await
    }

    /// Restart intensity exceeded: stop everything and fail upward.
    async fn give_up(&mut self, why: String) -> GaveUp {
        debug!(supervisor = %self.path, reason = %why, "supervisor gives up");
        self.stop_all().await;
        self.observer.escalated(&self.path, &why);
        GaveUp(why)
    }
}

// === impl SupervisorState: requests ===

impl SupervisorState {
    fn route(&self, path: &str) -> Route {
        let (id, rest) = path.split_once('/').unwrap_or((path, ""));
        let full = child_path(&self.path, path);
        let Some(idx) = self.position(id) else {
            return Route::Fail(SupervisorError::NoSuchChild(full));
        };
        if rest.is_empty() {
            return Route::Here(idx);
        }
        let child = &self.children[idx];
        match child.supervisor_ref() {
            Some(sup) => Route::Down(sup, rest.to_owned(), child.path.clone()),
            None if child.cell.is_some() => Route::Fail(SupervisorError::NoSuchChild(full)),
            None => Route::Fail(SupervisorError::NotRunning(child.path.clone())),
        }
    }

    fn ping(&self, timeout: Duration, reply: RpcReplyPort<Result<(), String>>) {
        let subs: Vec<_> = self
            .children
            .iter()
            .filter_map(|c| Some((c.path.clone(), c.supervisor_ref()?)))
            .collect();
        if subs.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        // Each level gets less time than its parent waits, so the deepest silent
        // supervisor is the one named. The fan-out runs in a task: a stalled child must
        // not stall this supervisor's mailbox.
        let inner = timeout * 3 / 4;
        tokio::spawn(async move {
            let answers = join_all(subs.into_iter().map(|(path, sup)| async move {
                match sup
                    .call(
                        |reply| SupervisorMsg::Ping {
                            timeout: inner,
                            reply,
                        },
                        Some(inner),
                    )
                    .await
                {
                    Ok(CallResult::Success(answer)) => answer,
                    _ => Err(path),
                }
            }))
            .await;
            let _ = reply.send(answers.into_iter().collect());
        });
    }

    fn tree(&self, timeout: Duration, reply: RpcReplyPort<SupervisorReport>) {
        let mut report = SupervisorReport {
            path: self.path.clone(),
            strategy: self.strategy.as_str().to_owned(),
            children: self.children.iter().map(Child::report).collect(),
        };
        let subs: Vec<_> = self
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.supervisor_ref()?)))
            .collect();
        if subs.is_empty() {
            let _ = reply.send(report);
            return;
        }
        let inner = timeout * 3 / 4;
        tokio::spawn(async move {
            let answers = join_all(subs.into_iter().map(|(i, sup)| async move {
                let call = sup.call(
                    |reply| SupervisorMsg::TreeWithin {
                        timeout: inner,
                        reply,
                    },
                    Some(inner),
                );
                match call.await {
                    Ok(CallResult::Success(sub)) => (i, Some(sub)),
                    _ => (i, None),
                }
            }))
            .await;
            for (i, sub) in answers {
                report.children[i].children = sub;
            }
            let _ = reply.send(report);
        });
    }

    async fn restart(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        path: String,
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    ) -> Result<(), GaveUp> {
        let idx = match self.route(&path) {
            Route::Here(idx) => idx,
            Route::Down(sup, rest, via) => {
                forward(&sup, &via, SupervisorMsg::Restart { path: rest, reply });
                return Ok(());
            }
            Route::Fail(err) => {
                let _ = reply.send(Err(err));
                return Ok(());
            }
        };
        self.stop_child(idx).await;
        match self.start_child(me, idx).await {
            Ok(()) => {
                let child = &mut self.children[idx];
                child.restart_count += 1;
                self.observer.child_restarted(&child.path, "manual");
                let _ = reply.send(Ok(()));
                Ok(())
            }
            Err(why) => match self.retry_later(me, idx, why.clone()).await {
                Ok(()) => {
                    let _ = reply.send(Err(SupervisorError::StartFailed(why)));
                    Ok(())
                }
                Err(gave_up) => {
                    let _ = reply.send(Err(gave_up.to_error()));
                    Err(gave_up)
                }
            },
        }
    }

    async fn add_child(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    ) {
        let _ = reply.send(self.try_add_child(me, spec).await);
    }

    async fn try_add_child(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<(), SupervisorError> {
        if !valid_id(&spec.id) {
            return Err(SupervisorError::InvalidId(spec.id));
        }
        if self.ids.contains(&spec.id) {
            return Err(SupervisorError::DuplicateId(spec.id));
        }
        if let Some(max) = self.max_children.filter(|&max| self.children.len() >= max) {
            return Err(SupervisorError::MaxChildren(max));
        }
        self.ids.insert(spec.id.clone());
        self.children.push(Child::new(spec, &self.path));
        let idx = self.children.len() - 1;
        if let Err(why) = self.start_child(me, idx).await {
            self.forget(idx);
            return Err(SupervisorError::StartFailed(why));
        }
        Ok(())
    }

    async fn remove_child(&mut self, id: String, reply: RpcReplyPort<Result<(), SupervisorError>>) {
        let answer = match self.position(&id) {
            Some(idx) => {
                self.stop_child(idx).await;
                self.forget(idx);
                Ok(())
            }
            None => Err(SupervisorError::NoSuchChild(child_path(&self.path, &id))),
        };
        let _ = reply.send(answer);
    }

    fn lookup(&self, path: String, reply: RpcReplyPort<Option<ActorCell>>) {
        match self.route(&path) {
            Route::Here(idx) => {
                let _ = reply.send(self.children[idx].cell.clone());
            }
            Route::Down(sup, rest, via) => {
                forward(&sup, &via, SupervisorMsg::Lookup { path: rest, reply })
            }
            Route::Fail(_) => {
                let _ = reply.send(None);
            }
        }
    }

    fn inject_fault(
        &mut self,
        path: String,
        fault: Fault,
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    ) {
        let idx = match self.route(&path) {
            Route::Here(idx) => idx,
            Route::Down(sup, rest, via) => {
                forward(
                    &sup,
                    &via,
                    SupervisorMsg::InjectFault {
                        path: rest,
                        fault,
                        reply,
                    },
                );
                return;
            }
            Route::Fail(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let child = &mut self.children[idx];
        // The kill is reported back as an ordinary `killed` exit, handled like any crash.
        let answer = match (fault, &child.cell) {
            (Fault::Kill, Some(cell)) => {
                cell.kill();
                Ok(())
            }
            (Fault::Kill, None) => Err(SupervisorError::NotRunning(child.path.clone())),
            (Fault::FailStarts(n), cell) => {
                child.fail_starts = n;
                if let Some(cell) = cell {
                    cell.kill();
                }
                Ok(())
            }
        };
        let _ = reply.send(answer);
    }
}

/// Hands a request to a child supervisor; if it is gone meanwhile, answers for it.
fn forward(target: &ActorRef<SupervisorMsg>, target_path: &str, msg: SupervisorMsg) {
    if let Err(MessagingErr::SendErr(msg)) = target.send_message(msg) {
        let gone = || SupervisorError::NotRunning(target_path.to_owned());
        match msg {
            SupervisorMsg::Restart { reply, .. } | SupervisorMsg::InjectFault { reply, .. } => {
                let _ = reply.send(Err(gone()));
            }
            SupervisorMsg::Lookup { reply, .. } => {
                let _ = reply.send(None);
            }
            _ => {}
        }
    }
}
