//! Children are stopped in reverse start order, per their `Shutdown`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chom_supervisors::{Backoff, Intensity, Shutdown, Strategy, SupervisorSpec};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_supervisor_stops_children_in_reverse_start_order() {
    let log = new_log();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(calm("a", &log))
        .child(calm("b", &log))
        .child(calm("c", &log));
    let (sup, handle) = started("", spec).await;

    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
    handle.await.unwrap();

    assert_eq!(
        lines(&log),
        [
            "start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_supervisors_stop_depth_first_in_reverse_order() {
    let log = new_log();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .child(calm("x", &log))
        .child(calm("y", &log));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(calm("a", &log))
        .child(chom_supervisors::ChildSpec::subtree("mid", inner))
        .child(calm("c", &log));
    let (sup, handle) = started("", spec).await;
    clear(&log);

    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
    handle.await.unwrap();

    assert_eq!(lines(&log), ["stop:c", "stop:y", "stop:x", "stop:a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_stops_children_in_reverse_start_order() {
    let (log, rec) = (new_log(), Recorder::new());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(2, Duration::from_secs(10)))
        .backoff(Backoff::none())
        .observer(rec.clone())
        .child(probe("looping", &log, &Script::crash_loop()))
        .child(calm("a", &log))
        .child(calm("b", &log))
        .child(calm("c", &log));
    let (_sup, handle) = started("", spec).await;

    tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(with_prefix(&log, "stop:"), ["stop:c", "stop:b", "stop:a"]);
    assert_eq!(rec.escalations(""), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_shutdown_kills_a_child_whose_post_stop_hangs() {
    let (log, rec) = (new_log(), Recorder::new());
    let hangs = Arc::new(Script::default());
    hangs.hang_post_stop.store(true, Ordering::SeqCst);
    let limit = Duration::from_millis(100);
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .observer(rec.clone())
        .child(calm("a", &log))
        .child(probe("brutal", &log, &Arc::default()).shutdown(Shutdown::BrutalKill))
        .child(probe("hangs", &log, &hangs).shutdown(Shutdown::Timeout(limit)));
    let (sup, handle) = started("", spec).await;
    let hanging = lookup(&sup, "hangs").await.unwrap();

    let started = tokio::time::Instant::now();
    sup.stop_and_wait(None, Some(DEADLINE)).await.unwrap();
    handle.await.unwrap();

    assert!(started.elapsed() >= limit);
    assert_eq!(hanging.get_status(), ractor::ActorStatus::Stopped);
    // neither the hanging nor the brutally killed child ran its post_stop to the end
    assert_eq!(with_prefix(&log, "stop:"), ["stop:a"]);
    let exits: Vec<_> = rec
        .events()
        .into_iter()
        .filter(|e| matches!(e, Ev::Exited(..)))
        .collect();
    assert_eq!(
        exits,
        [
            Ev::Exited(
                "hangs".into(),
                "shutdown:killed_after_timeout".into(),
                false
            ),
            Ev::Exited("brutal".into(), "shutdown:brutal_kill".into(), false),
            Ev::Exited("a".into(), "shutdown".into(), false),
        ]
    );
}
