//! Restart delays, on tokio's paused clock: exact times, no waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chom_supervisors::{Backoff, Intensity, Strategy, SupervisorSpec};
use tokio::time::Instant;

use crate::common::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn backoff() -> Backoff {
    Backoff {
        min: ms(100),
        max: ms(400),
        jitter: 0.0,
        reset_after: Duration::from_secs(10),
        immediate: 1,
    }
}

/// Offsets from `t0` of the observer events matching `f`.
fn offsets(rec: &Recorder, t0: Instant, f: impl Fn(&Ev) -> bool) -> Vec<Duration> {
    rec.timed()
        .into_iter()
        .filter(|(_, e)| f(e))
        .map(|(at, _)| at - t0)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn crash_loop_restarts_back_off_exponentially_then_reset_after_a_stable_run() {
    let (log, rec) = (new_log(), Recorder::new());
    let script = Script::crash_loop();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(100, Duration::from_secs(60)))
        .backoff(backoff())
        .observer(rec.clone())
        .child(probe("w", &log, &script));
    let t0 = Instant::now();
    let (sup, handle) = started("", spec).await;

    until("six starts", || async {
        rec.count(|e| matches!(e, Ev::Started(_))) >= 6
    })
    .await;
    let starts = offsets(&rec, t0, |e| matches!(e, Ev::Started(_)));
    // initial, immediate, then 100, 200, 400 (capped), 400
    assert_eq!(starts[..6], [0, 0, 100, 300, 700, 1100].map(ms));

    // while it waits for its delay, the child is reported as restarting
    until("w to be waiting", || async {
        state_of(&sup, "w").await.as_deref() == Some("restarting")
    })
    .await;

    // let it run stably past reset_after: the next crash restarts at once again
    script.crash_after_start.store(false, Ordering::SeqCst);
    until("w to run", || async { lookup(&sup, "w").await.is_some() }).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let w = id_of(&sup, "w").await;
    let crashed_at = Instant::now();
    poke(&sup, "w", ProbeMsg::Fail).await;
    replaced(&sup, "w", w).await;
    let last = *offsets(&rec, t0, |e| matches!(e, Ev::Started(_)))
        .last()
        .unwrap();
    assert_eq!(t0 + last, crashed_at, "restarted with no delay");

    sup.stop(None);
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failed_restarts_are_retried_with_backoff() {
    let (log, rec) = (new_log(), Recorder::new());
    let script = Arc::new(Script::default());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(10, Duration::from_secs(60)))
        .backoff(backoff())
        .observer(rec.clone())
        .child(probe("w", &log, &script));
    let (sup, handle) = started("", spec).await;
    let w = id_of(&sup, "w").await;

    script.fail_starts.store(2, Ordering::SeqCst);
    let t0 = Instant::now();
    poke(&sup, "w", ProbeMsg::Panic).await;
    replaced(&sup, "w", w).await;

    // crash -> immediate restart fails -> 100 ms -> fails -> 200 ms -> runs
    let failed = offsets(
        &rec,
        t0,
        |e| matches!(e, Ev::StartFailed(p, r) if p == "w" && r == "pre_start boom"),
    );
    assert_eq!(failed, [0, 100].map(ms));
    let started = offsets(&rec, t0, |e| matches!(e, Ev::Started(_)));
    assert_eq!(started.last(), Some(&ms(300)));
    let report = tree(&sup).await;
    let w = report.child("w").unwrap();
    assert_eq!(w.restart_count, 1);
    assert_eq!(w.last_failure.as_ref().unwrap().reason, "pre_start boom");
    sup.stop(None);
    handle.await.unwrap();
}
