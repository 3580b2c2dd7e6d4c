//! Test actors, a recording observer and polling helpers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chom_supervisors::{
    ChildSpec, Observer, SupervisorError, SupervisorMsg, SupervisorReport, SupervisorSpec,
    start_supervisor,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};

/// Shared, ordered record of `start:<id>` / `stop:<id>` lines written by probes.
pub type Log = Arc<Mutex<Vec<String>>>;

pub fn new_log() -> Log {
    Arc::default()
}

pub fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

pub fn clear(log: &Log) {
    log.lock().unwrap().clear();
}

/// Lines of `log` that start with `prefix`, in order.
pub fn with_prefix(log: &Log, prefix: &str) -> Vec<String> {
    lines(log)
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// What a probe does, changeable while it runs (shared by all its incarnations).
#[derive(Default)]
pub struct Script {
    /// The next N `pre_start`s panic.
    pub fail_starts: AtomicU32,
    /// Every incarnation fails right after starting (in `post_start`): a crash loop.
    pub crash_after_start: AtomicBool,
    /// `post_stop` never returns.
    pub hang_post_stop: AtomicBool,
}

impl Script {
    pub fn crash_loop() -> Arc<Script> {
        let s = Script::default();
        s.crash_after_start.store(true, Ordering::SeqCst);
        Arc::new(s)
    }
}

/// A worker that logs its starts and stops and misbehaves on request.
pub struct Probe;

pub struct ProbeArgs {
    pub id: String,
    pub log: Log,
    pub script: Arc<Script>,
}

pub enum ProbeMsg {
    Panic,
    Fail,
    Stop(Option<String>),
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeArgs;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProbeMsg>,
        args: ProbeArgs,
    ) -> Result<ProbeArgs, ActorProcessingErr> {
        let fail = args
            .script
            .fail_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            panic!("pre_start boom");
        }
        args.log.lock().unwrap().push(format!("start:{}", args.id));
        Ok(args)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<ProbeMsg>,
        state: &mut ProbeArgs,
    ) -> Result<(), ActorProcessingErr> {
        if state.script.crash_after_start.load(Ordering::SeqCst) {
            return Err("crash loop".into());
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ProbeMsg>,
        state: &mut ProbeArgs,
    ) -> Result<(), ActorProcessingErr> {
        if state.script.hang_post_stop.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        state.log.lock().unwrap().push(format!("stop:{}", state.id));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _state: &mut ProbeArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Panic => panic!("handle boom"),
            ProbeMsg::Fail => Err("handle error".into()),
            ProbeMsg::Stop(reason) => {
                myself.stop(reason);
                Ok(())
            }
        }
    }
}

/// A permanent worker spec running a [`Probe`].
pub fn probe(id: &str, log: &Log, script: &Arc<Script>) -> ChildSpec {
    let (log, script) = (log.clone(), script.clone());
    let id_owned = id.to_owned();
    ChildSpec::worker(id, move |ctx| {
        let args = ProbeArgs {
            id: id_owned.clone(),
            log: log.clone(),
            script: script.clone(),
        };
        async move {
            let (probe, _) = Actor::spawn_linked(None, Probe, args, ctx.supervisor).await?;
            Ok(probe.get_cell())
        }
    })
}

/// A well-behaved probe.
pub fn calm(id: &str, log: &Log) -> ChildSpec {
    probe(id, log, &Arc::default())
}

/// One observer call.
#[derive(Clone, Debug, PartialEq)]
pub enum Ev {
    Started(String),
    Restarted(String, String),
    Exited(String, String, bool),
    StartFailed(String, String),
    Escalated(String, String),
}

/// An observer that records every call with the (tokio) time it happened.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<(tokio::time::Instant, Ev)>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::default()
    }

    fn push(&self, ev: Ev) {
        self.events
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), ev));
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn timed(&self) -> Vec<(tokio::time::Instant, Ev)> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| f(e))
            .count()
    }

    pub fn escalations(&self, path: &str) -> usize {
        self.count(|e| matches!(e, Ev::Escalated(p, _) if p == path))
    }
}

impl Observer for Recorder {
    fn child_started(&self, path: &str) {
        self.push(Ev::Started(path.into()));
    }
    fn child_restarted(&self, path: &str, reason: &str) {
        self.push(Ev::Restarted(path.into(), reason.into()));
    }
    fn child_exited(&self, path: &str, reason: &str, abnormal: bool) {
        self.push(Ev::Exited(path.into(), reason.into(), abnormal));
    }
    fn child_start_failed(&self, path: &str, reason: &str) {
        self.push(Ev::StartFailed(path.into(), reason.into()));
    }
    fn escalated(&self, supervisor_path: &str, reason: &str) {
        self.push(Ev::Escalated(supervisor_path.into(), reason.into()));
    }
}

/// How long any condition may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn call<T: Send + 'static>(
    sup: &ActorRef<SupervisorMsg>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> SupervisorMsg,
) -> T {
    match sup.call(msg, Some(DEADLINE)).await {
        Ok(CallResult::Success(answer)) => answer,
        Ok(_) => panic!("supervisor did not answer"),
        Err(e) => panic!("supervisor unreachable: {e}"),
    }
}

pub async fn lookup(sup: &ActorRef<SupervisorMsg>, path: &str) -> Option<ActorCell> {
    let path = path.to_owned();
    call(sup, |reply| SupervisorMsg::Lookup { path, reply }).await
}

pub async fn id_of(sup: &ActorRef<SupervisorMsg>, path: &str) -> ActorId {
    lookup(sup, path)
        .await
        .unwrap_or_else(|| panic!("{path} is not running"))
        .get_id()
}

/// Waits until `path` runs as an actor other than `old`, and returns the new id.
pub async fn replaced(sup: &ActorRef<SupervisorMsg>, path: &str, old: ActorId) -> ActorId {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(new) = lookup(sup, path)
            .await
            .map(|c| c.get_id())
            .filter(|id| *id != old)
        {
            return new;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {path} to be replaced"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn tree(sup: &ActorRef<SupervisorMsg>) -> SupervisorReport {
    call(sup, SupervisorMsg::Tree).await
}

/// State string of the child at `path` in a fresh report.
pub async fn state_of(sup: &ActorRef<SupervisorMsg>, path: &str) -> Option<String> {
    tree(sup)
        .await
        .child(path)
        .map(|c| c.state.as_str().to_owned())
}

pub async fn restart(sup: &ActorRef<SupervisorMsg>, path: &str) -> Result<(), SupervisorError> {
    let path = path.to_owned();
    call(sup, |reply| SupervisorMsg::Restart { path, reply }).await
}

pub fn send(cell: &ActorCell, msg: ProbeMsg) {
    cell.send_message(msg).expect("probe is alive");
}

/// Sends `msg` to the live probe at `path`.
pub async fn poke(sup: &ActorRef<SupervisorMsg>, path: &str, msg: ProbeMsg) {
    let cell = lookup(sup, path)
        .await
        .unwrap_or_else(|| panic!("{path} not running"));
    send(&cell, msg);
}

/// The reference of the descendant supervisor at `path`.
pub async fn sub(sup: &ActorRef<SupervisorMsg>, path: &str) -> ActorRef<SupervisorMsg> {
    lookup(sup, path).await.expect("subtree running").into()
}

/// A root supervisor (no parent) at `path`, started.
pub async fn started(
    path: &str,
    spec: SupervisorSpec,
) -> (ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>) {
    start_supervisor(path, spec, None)
        .await
        .expect("supervisor starts")
}
