//! A supervisor that exceeds its restart intensity gives up, and its parent handles that.

use std::time::Duration;

use chom_supervisors::{
    Backoff, ChildSpec, ChildStatus, Fault, Intensity, Strategy, SupervisorMsg, SupervisorSpec,
};

use crate::common::*;

fn quick(max_restarts: u32, rec: &std::sync::Arc<Recorder>) -> SupervisorSpec {
    SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(max_restarts, Duration::from_secs(60)))
        .backoff(Backoff::none())
        .observer(rec.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_fails_forever_makes_its_supervisor_give_up() {
    let (log, rec) = (new_log(), Recorder::new());
    let spec = quick(3, &rec).child(probe("w", &log, &Script::crash_loop()));
    let (_sup, handle) = started("", spec).await;

    tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        rec.count(|e| matches!(e, Ev::Restarted(p, _) if p == "w")),
        3
    );
    let events = rec.events();
    let Some(Ev::Escalated(path, reason)) = events.last() else {
        panic!("no escalation: {events:?}");
    };
    assert_eq!(path, "");
    assert!(reason.contains("more than 3 restarts"), "{reason}");
    assert!(reason.contains("w: crash loop"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_escalation_restarts_the_subtree_then_reaches_the_root() {
    let (log, rec) = (new_log(), Recorder::new());
    let mid = quick(1, &rec).child(probe("w", &log, &Script::crash_loop()));
    let root = quick(2, &rec).child(ChildSpec::subtree("mid", mid));
    let (_sup, handle) = started("", root).await;

    tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap();

    // mid gives up three times; the root restarts it twice, then gives up itself
    assert_eq!(rec.escalations("mid"), 3);
    assert_eq!(
        rec.count(|e| matches!(e, Ev::Restarted(p, _) if p == "mid")),
        2
    );
    assert_eq!(
        rec.count(|e| matches!(e, Ev::Exited(p, r, true) if p == "mid" && r.contains("gave up"))),
        3
    );
    assert_eq!(rec.escalations(""), 1);
    assert!(matches!(rec.events().last(), Some(Ev::Escalated(p, _)) if p.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_permanent_start_failure_escalates_and_the_parent_recovers_the_subtree() {
    let (log, rec) = (new_log(), Recorder::new());
    let mid = quick(2, &rec).child(calm("w", &log));
    let root = quick(5, &rec).child(ChildSpec::subtree("mid", mid));
    let (sup, handle) = started("", root).await;
    let mid_id = id_of(&sup, "mid").await;
    let w = id_of(&sup, "mid/w").await;

    let path = "mid/w".to_owned();
    let fault = Fault::FailStarts(u32::MAX);
    call(&sup, |reply| SupervisorMsg::InjectFault {
        path,
        fault,
        reply,
    })
    .await
    .unwrap();

    // the fault lives in the old mid's bookkeeping: a fresh mid starts w normally
    replaced(&sup, "mid", mid_id).await;
    replaced(&sup, "mid/w", w).await;
    assert_eq!(rec.escalations("mid"), 1);
    assert_eq!(rec.escalations(""), 0);
    assert_eq!(
        rec.count(|e| *e == Ev::StartFailed("mid/w".into(), "injected start failure".into())),
        2
    );
    let report = tree(&sup).await;
    assert_eq!(report.child("mid").unwrap().restart_count, 1);
    assert_eq!(report.child("mid/w").unwrap().state, ChildStatus::Running);
    sup.stop(None);
    handle.await.unwrap();
}
