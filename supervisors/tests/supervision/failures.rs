//! One test per way a child can end: panic, error, kill, normal stop, failed start, recycle.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chom_supervisors::{
    Backoff, ChildStatus, Intensity, Restart, Strategy, SupervisorSpec, start_supervisor,
};

use crate::common::*;

fn one_for_one(rec: &Arc<Recorder>) -> SupervisorSpec {
    SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(10, Duration::from_secs(10)))
        .backoff(Backoff::none())
        .observer(rec.clone())
}

/// A crash of `a` (by `crash`) restarts `a` only, counted as an abnormal exit with `reason`.
async fn crash_restarts_only_that_child(crash: ProbeMsg, reason: &str) {
    let (log, rec) = (new_log(), Recorder::new());
    let spec = one_for_one(&rec)
        .child(calm("a", &log))
        .child(calm("b", &log));
    let (sup, handle) = started("", spec).await;
    let (a, b) = (id_of(&sup, "a").await, id_of(&sup, "b").await);

    poke(&sup, "a", crash).await;
    replaced(&sup, "a", a).await;

    assert_eq!(
        id_of(&sup, "b").await,
        b,
        "one_for_one leaves siblings alone"
    );
    let report = tree(&sup).await;
    let a_report = report.child("a").unwrap();
    assert_eq!(a_report.restart_count, 1);
    assert_eq!(a_report.state, ChildStatus::Running);
    let failure = a_report.last_failure.as_ref().expect("failure recorded");
    assert!(failure.reason.contains(reason), "{failure:?}");
    assert!(failure.at_unix_ms > 0);
    // Out of service from the failure noticed to the replacement running: measured, and
    // short (no backoff here).
    let out = a_report.last_recovery_us.expect("recovery time recorded");
    assert!(out > 0 && out < 1_000_000, "{out} us");
    assert_eq!(report.child("b").unwrap().last_recovery_us, None);
    assert_eq!(
        rec.count(|e| matches!(e, Ev::Exited(p, r, true) if p == "a" && r.contains(reason))),
        1
    );
    assert_eq!(
        rec.count(|e| matches!(e, Ev::Restarted(p, _) if p == "a")),
        1
    );

    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_handle_restarts_child() {
    crash_restarts_only_that_child(ProbeMsg::Panic, "handle boom").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_from_handle_restarts_child() {
    crash_restarts_only_that_child(ProbeMsg::Fail, "handle error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_restarts_child() {
    let (log, rec) = (new_log(), Recorder::new());
    let spec = one_for_one(&rec).child(calm("a", &log));
    let (sup, handle) = started("", spec).await;
    let a = lookup(&sup, "a").await.unwrap();

    a.kill();
    replaced(&sup, "a", a.get_id()).await;

    assert_eq!(
        rec.count(|e| *e == Ev::Exited("a".into(), "killed".into(), true)),
        1
    );
    assert_eq!(tree(&sup).await.child("a").unwrap().restart_count, 1);
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_stop_restarts_only_permanent_children() {
    let (log, rec) = (new_log(), Recorder::new());
    let spec = one_for_one(&rec)
        .child(calm("perm", &log))
        .child(calm("trans", &log).restart(Restart::Transient))
        .child(calm("temp", &log).restart(Restart::Temporary))
        .child(calm("trans_crash", &log).restart(Restart::Transient));
    let (sup, handle) = started("", spec).await;
    let perm = id_of(&sup, "perm").await;
    let trans_crash = id_of(&sup, "trans_crash").await;

    poke(&sup, "perm", ProbeMsg::Stop(None)).await;
    poke(&sup, "trans", ProbeMsg::Stop(Some("normal".into()))).await;
    poke(&sup, "temp", ProbeMsg::Stop(Some("shutdown:done".into()))).await;
    // an unexpected stop reason is abnormal: a transient child comes back
    poke(
        &sup,
        "trans_crash",
        ProbeMsg::Stop(Some("lost my socket".into())),
    )
    .await;

    replaced(&sup, "perm", perm).await;
    replaced(&sup, "trans_crash", trans_crash).await;
    until("transient and temporary to stop", || async {
        state_of(&sup, "trans").await.as_deref() == Some("stopped")
            && state_of(&sup, "temp").await.as_deref() == Some("stopped")
    })
    .await;
    assert!(lookup(&sup, "trans").await.is_none());
    assert!(lookup(&sup, "temp").await.is_none());
    assert_eq!(
        rec.count(
            |e| matches!(e, Ev::Exited(p, _, false) if p == "perm" || p == "trans" || p == "temp")
        ),
        3
    );
    assert_eq!(
        rec.count(|e| *e == Ev::Exited("trans_crash".into(), "lost my socket".into(), true)),
        1
    );
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_initial_start_fails_supervisor_and_stops_started_children() {
    let log = new_log();
    let broken = Arc::new(Script::default());
    broken.fail_starts.store(1, Ordering::SeqCst);
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(calm("a", &log))
        .child(calm("b", &log))
        .child(probe("c", &log, &broken))
        .child(calm("d", &log));

    let err = start_supervisor("", spec, None).await.unwrap_err();

    assert!(err.to_string().contains("c: pre_start boom"), "{err}");
    assert_eq!(lines(&log), ["start:a", "start:b", "stop:b", "stop:a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycle_is_neither_a_restart_nor_counted_in_intensity() {
    let (log, rec) = (new_log(), Recorder::new());
    // no restart tolerated at all: a recycle counted as a restart would escalate
    let spec = one_for_one(&rec)
        .intensity(Intensity::new(0, Duration::from_secs(10)))
        .child(calm("w", &log).restart(Restart::Transient))
        .child(calm("temp", &log).restart(Restart::Temporary));
    let (sup, handle) = started("", spec).await;

    for _ in 0..3 {
        let w = id_of(&sup, "w").await;
        poke(&sup, "w", ProbeMsg::Stop(Some("recycle".into()))).await;
        replaced(&sup, "w", w).await;
    }
    // a temporary child is never started again, not even to recycle it
    poke(&sup, "temp", ProbeMsg::Stop(Some("recycle".into()))).await;
    until("temp to stop", || async {
        state_of(&sup, "temp").await.as_deref() == Some("stopped")
    })
    .await;

    let w = tree(&sup).await.child("w").cloned().unwrap();
    assert_eq!((w.recycles, w.restart_count, w.last_failure), (3, 0, None));
    assert_eq!(rec.count(|e| matches!(e, Ev::Restarted(..))), 0);
    assert_eq!(rec.count(|e| matches!(e, Ev::Escalated(..))), 0);
    assert_eq!(
        rec.count(|e| *e == Ev::Exited("w".into(), "recycle".into(), false)),
        3
    );
    sup.stop(None);
    handle.await.unwrap();
}
