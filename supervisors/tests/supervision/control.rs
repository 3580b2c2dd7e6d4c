//! Requests: Restart by path, Tree, Ping, Lookup, InjectFault.

use std::time::{Duration, Instant};

use chom_supervisors::{
    Backoff, ChildSpec, Fault, Intensity, Strategy, SupervisorError, SupervisorMsg,
    SupervisorReport, SupervisorSpec,
};
use ractor::ActorRef;

use crate::common::*;

/// root (rest_for_one) -> store, queue (one_for_one) -> worker:1, worker:2, fleet (dynamic)
fn node_like(log: &Log, rec: &std::sync::Arc<Recorder>) -> SupervisorSpec {
    let queue = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(0, Duration::from_secs(10)))
        .observer(rec.clone())
        .child(calm("worker:1", log))
        .child(calm("worker:2", log));
    let fleet = SupervisorSpec::dynamic(8).observer(rec.clone());
    SupervisorSpec::new(Strategy::RestForOne)
        .intensity(Intensity::new(0, Duration::from_secs(10)))
        .backoff(Backoff::none())
        .observer(rec.clone())
        .child(calm("store", log))
        .child(ChildSpec::subtree("queue", queue))
        .child(ChildSpec::subtree("fleet", fleet))
}

async fn ping(sup: &ActorRef<SupervisorMsg>, timeout: Duration) -> Result<(), String> {
    call(sup, |reply| SupervisorMsg::Ping { timeout, reply }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_by_path_replaces_only_that_child_and_skips_intensity() {
    let (log, rec) = (new_log(), Recorder::new());
    let (sup, handle) = started("", node_like(&log, &rec)).await;
    let w1 = id_of(&sup, "queue/worker:1").await;
    let w2 = id_of(&sup, "queue/worker:2").await;
    let queue = id_of(&sup, "queue").await;

    // intensity 0 everywhere: a manual restart counted as a failure would escalate
    for _ in 0..2 {
        restart(&sup, "queue/worker:1").await.unwrap();
    }

    assert_ne!(id_of(&sup, "queue/worker:1").await, w1);
    assert_eq!(id_of(&sup, "queue/worker:2").await, w2);
    assert_eq!(id_of(&sup, "queue").await, queue);
    let report = tree(&sup).await;
    assert_eq!(report.child("queue/worker:1").unwrap().restart_count, 2);
    assert_eq!(report.child("queue/worker:2").unwrap().restart_count, 0);
    assert_eq!(
        rec.count(|e| *e == Ev::Restarted("queue/worker:1".into(), "manual".into())),
        2
    );

    // a whole subtree; rest_for_one is not applied, so fleet stays
    let fleet = id_of(&sup, "fleet").await;
    restart(&sup, "queue").await.unwrap();
    assert_ne!(id_of(&sup, "queue").await, queue);
    assert_eq!(id_of(&sup, "fleet").await, fleet);
    assert_eq!(tree(&sup).await.child("queue").unwrap().restart_count, 1);

    assert_eq!(
        restart(&sup, "nope").await,
        Err(SupervisorError::NoSuchChild("nope".into()))
    );
    assert_eq!(
        restart(&sup, "queue/nope").await,
        Err(SupervisorError::NoSuchChild("queue/nope".into()))
    );
    assert_eq!(
        restart(&sup, "store/deeper").await,
        Err(SupervisorError::NoSuchChild("store/deeper".into()))
    );
    assert_eq!(rec.count(|e| matches!(e, Ev::Escalated(..))), 0);
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_reports_the_whole_tree() {
    let (log, rec) = (new_log(), Recorder::new());
    let (sup, handle) = started("", node_like(&log, &rec)).await;

    let report = tree(&sup).await;
    assert_eq!(report.path, "");
    assert_eq!(report.strategy, "rest_for_one");
    let top: Vec<_> = report
        .children
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.path.as_str(),
                c.kind.as_str(),
                c.restart.as_str(),
                c.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        top,
        [
            ("store", "store", "worker", "permanent", "running"),
            ("queue", "queue", "supervisor", "permanent", "running"),
            ("fleet", "fleet", "supervisor", "permanent", "running"),
        ]
    );
    assert!(report.child("store").unwrap().children.is_none());
    let queue = report.find("queue").expect("queue answered");
    assert_eq!(queue.path, "queue");
    assert_eq!(queue.strategy, "one_for_one");
    let workers: Vec<_> = queue.children.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(workers, ["queue/worker:1", "queue/worker:2"]);
    assert!(report.find("fleet").unwrap().children.is_empty());

    // it is a wire type: it survives JSON
    let json = serde_json::to_string(&report).unwrap();
    let back: SupervisorReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_and_names_a_stalled_descendant() {
    let log = new_log();
    let leaf = SupervisorSpec::new(Strategy::OneForOne).child(calm("w", &log));
    let mid = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::subtree("leaf", leaf));
    let root = SupervisorSpec::new(Strategy::OneForOne)
        .child(calm("a", &log))
        .child(ChildSpec::subtree("mid", mid));
    let (sup, handle) = started("", root).await;
    let timeout = Duration::from_millis(200);

    assert_eq!(ping(&sup, timeout).await, Ok(()));

    let leaf = sub(&sup, "mid/leaf").await;
    leaf.cast(SupervisorMsg::Stall {
        duration: Duration::from_secs(30),
    })
    .unwrap();
    let asked = Instant::now();
    assert_eq!(ping(&sup, timeout).await, Err("mid/leaf".into()));
    assert!(
        asked.elapsed() < timeout,
        "the root answers within the timeout"
    );

    // the tree still answers, without the silent supervisor's children
    let report = tree(&sup).await;
    assert!(report.find("mid").is_some());
    assert!(report.child("mid/leaf").unwrap().children.is_none());

    // a stalled supervisor would make an orderly stop wait; kill the tree
    sup.kill();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_and_inject_kill_reach_descendants() {
    let (log, rec) = (new_log(), Recorder::new());
    let queue = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(Backoff::none())
        .observer(rec.clone())
        .child(calm("worker:1", &log));
    let root = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::subtree("queue", queue));
    let (sup, handle) = started("", root).await;
    assert!(lookup(&sup, "queue/nope").await.is_none());
    assert!(lookup(&sup, "nope/worker:1").await.is_none());
    let w = id_of(&sup, "queue/worker:1").await;

    let path = "queue/worker:1".to_owned();
    call(&sup, |reply| SupervisorMsg::InjectFault {
        path,
        fault: Fault::Kill,
        reply,
    })
    .await
    .unwrap();

    replaced(&sup, "queue/worker:1", w).await;
    assert_eq!(
        rec.count(|e| *e == Ev::Exited("queue/worker:1".into(), "killed".into(), true)),
        1
    );
    let path = "queue/nope".to_owned();
    let missing = call(&sup, |reply| SupervisorMsg::InjectFault {
        path,
        fault: Fault::Kill,
        reply,
    })
    .await;
    assert_eq!(
        missing,
        Err(SupervisorError::NoSuchChild("queue/nope".into()))
    );
    sup.stop(None);
    handle.await.unwrap();
}
