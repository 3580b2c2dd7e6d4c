//! one_for_all and rest_for_one restart the right children, in the right order.

use std::time::Duration;

use chom_supervisors::{Backoff, Intensity, Restart, Strategy, SupervisorSpec};

use crate::common::*;

fn spec(strategy: Strategy, log: &Log) -> SupervisorSpec {
    SupervisorSpec::new(strategy)
        .intensity(Intensity::new(10, Duration::from_secs(10)))
        .backoff(Backoff::none())
        .child(calm("a", log))
        .child(calm("b", log))
        .child(calm("c", log))
        .child(calm("d", log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order() {
    let log = new_log();
    let (sup, handle) = started("", spec(Strategy::OneForAll, &log)).await;
    let mut ids = Vec::new();
    for id in ["a", "b", "c", "d"] {
        ids.push(id_of(&sup, id).await);
    }
    clear(&log);

    poke(&sup, "b", ProbeMsg::Fail).await;
    replaced(&sup, "d", ids[3]).await;

    // b crashed (no post_stop); the others go down last-started first
    assert_eq!(
        lines(&log),
        [
            "stop:d", "stop:c", "stop:a", "start:a", "start:b", "start:c", "start:d"
        ]
    );
    let report = tree(&sup).await;
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        assert_ne!(id_of(&sup, id).await, ids[i], "{id} restarted");
        assert_eq!(report.child(id).unwrap().restart_count, 1);
    }
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    let log = new_log();
    let (sup, handle) = started("", spec(Strategy::RestForOne, &log)).await;
    let (a, d) = (id_of(&sup, "a").await, id_of(&sup, "d").await);
    clear(&log);

    poke(&sup, "b", ProbeMsg::Panic).await;
    replaced(&sup, "d", d).await;

    assert_eq!(
        lines(&log),
        ["stop:d", "stop:c", "start:b", "start:c", "start:d"]
    );
    assert_eq!(
        id_of(&sup, "a").await,
        a,
        "a was started before b: untouched"
    );
    let report = tree(&sup).await;
    assert_eq!(report.child("a").unwrap().restart_count, 0);
    assert_eq!(report.child("c").unwrap().restart_count, 1);
    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restart_does_not_bring_back_temporary_siblings() {
    let log = new_log();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .backoff(Backoff::none())
        .child(calm("a", &log))
        .child(calm("temp", &log).restart(Restart::Temporary));
    let (sup, handle) = started("", spec).await;
    let a = id_of(&sup, "a").await;

    poke(&sup, "a", ProbeMsg::Fail).await;
    replaced(&sup, "a", a).await;

    assert!(lookup(&sup, "temp").await.is_none());
    assert_eq!(state_of(&sup, "temp").await.as_deref(), Some("stopped"));
    sup.stop(None);
    handle.await.unwrap();
}
