//! The breaker through its public API only, as the VPS actor uses it: random operation
//! sequences including operator actions and restarts (snapshot, JSON, restore), plus the
//! hostile inputs a cache or a config can hand it.

use std::time::{Duration, Instant};

use chom_core::breaker::{Breaker, BreakerSettings, BreakerState, Permit, Snapshot};
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

const MIN: Duration = Duration::from_secs(60);

fn wall0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn defaults() -> BreakerSettings {
    BreakerSettings::from(&chom_core::config::BreakerConfig::default())
}

fn opened(settings: BreakerSettings, now: Instant) -> Breaker {
    let threshold = settings.failure_threshold;
    let mut b = Breaker::new(settings);
    for _ in 0..threshold {
        let p = b.try_acquire(now).expect("closed admits");
        b.on_failure(p, now);
    }
    assert_eq!(b.state(now), BreakerState::Open);
    b
}

fn through_json(s: &Snapshot) -> Snapshot {
    Snapshot::from_json(&serde_json::to_string(s).unwrap()).unwrap()
}

#[test]
fn restore_after_the_wall_clock_went_back_stays_open_one_period_at_most() {
    let t = Instant::now();
    let b = opened(defaults(), t);
    let snap = through_json(&b.snapshot(t, wall0()));
    // The new process's wall clock is an hour behind the old one's.
    let mut r = Breaker::restore(defaults(), &snap, t, wall0() - TimeDelta::hours(1));
    let left = r.info(t).open_remaining_ms.unwrap();
    assert!(left <= 60_000, "open for {left} ms after restore");
    assert!(r.try_acquire(t + MIN).is_ok_and(|p| p.is_trial()));
}

#[test]
fn a_snapshot_from_far_in_the_future_neither_panics_nor_opens_for_ever() {
    let t = Instant::now();
    for until in ["9999-12-31T23:59:59Z", "+262142-12-31T23:59:59Z"] {
        let json = format!(
            r#"{{"state":"open","reason":null,"trips":3,"open_until":"{until}","failures":["{until}"]}}"#
        );
        let Ok(snap) = Snapshot::from_json(&json) else {
            continue; // an unparseable date is the caller's "start fresh"
        };
        let mut r = Breaker::restore(defaults(), &snap, t, wall0());
        assert!(r.info(t).open_remaining_ms.unwrap() <= 600_000, "{until}");
        assert!(r.try_acquire(t + 10 * MIN).is_ok(), "{until}");
    }
}

#[test]
fn huge_hand_made_periods_do_not_panic() {
    let t = Instant::now();
    let settings = BreakerSettings {
        failure_threshold: 1,
        failure_window: Duration::MAX,
        open_timeout: Duration::MAX,
        max_open: Duration::MAX,
        half_open_calls: 1,
    };
    let mut b = Breaker::new(settings.clone());
    let p = b.try_acquire(t).unwrap();
    b.on_failure(p, t);
    assert_eq!(b.state(t), BreakerState::Open);
    assert!(b.try_acquire(t + 1000 * 24 * 60 * MIN).is_err());
    let snap = b.snapshot(t, wall0());
    let r = Breaker::restore(settings, &snap, t, wall0());
    assert_eq!(r.state(t), BreakerState::Open);
}

#[test]
fn permits_of_a_previous_incarnation_are_stale_after_restore() {
    let t = Instant::now();
    let mut b = Breaker::new(defaults());
    let old: Vec<Permit> = (0..5).map(|_| b.try_acquire(t).unwrap()).collect();
    let snap = b.snapshot(t, wall0());
    let mut r = Breaker::restore(defaults(), &snap, t, wall0());
    for p in old {
        assert_eq!(r.on_failure(p, t), None);
    }
    assert_eq!(r.state(t), BreakerState::Closed);
    assert_eq!(r.info(t).failures, 0);
}

#[test]
fn forced_open_and_disabled_survive_a_restart() {
    let t = Instant::now();
    let mut b = Breaker::new(defaults());
    b.force_open("host key mismatch for vps-1".to_owned(), t);
    let snap = through_json(&b.snapshot(t, wall0()));
    let mut r = Breaker::restore(defaults(), &snap, t, wall0() + TimeDelta::days(30));
    let rejection = r.try_acquire(t + 24 * 60 * MIN).unwrap_err();
    assert_eq!(rejection.state, BreakerState::ForcedOpen);
    assert_eq!(
        rejection.to_string(),
        "circuit breaker forced open: host key mismatch for vps-1"
    );
    r.close(t);
    assert!(r.try_acquire(t).is_ok());

    b.disable(t);
    let snap = through_json(&b.snapshot(t, wall0()));
    let mut r = Breaker::restore(defaults(), &snap, t, wall0());
    for _ in 0..10 {
        let p = r.try_acquire(t).unwrap();
        r.on_failure(p, t);
    }
    assert_eq!(r.info(t).state, BreakerState::Disabled);
    assert_eq!(r.info(t).failures, 0);
}

#[test]
fn half_open_restores_as_open_with_a_trial_allowed_next() {
    let t = Instant::now();
    let mut b = opened(defaults(), t);
    let trial = b.try_acquire(t + MIN).unwrap();
    assert!(trial.is_trial());
    let snap = through_json(&b.snapshot(t + MIN, wall0()));
    assert_eq!(snap.state, BreakerState::HalfOpen);
    let mut r = Breaker::restore(defaults(), &snap, t + MIN, wall0() + TimeDelta::seconds(5));
    assert_eq!(r.state(t + MIN), BreakerState::Open);
    assert_eq!(r.info(t + MIN).open_remaining_ms, Some(0));
    // The old process's trial cannot decide for the new one.
    assert_eq!(r.on_success(trial, t + MIN), None);
    let fresh = r.try_acquire(t + MIN).unwrap();
    assert!(fresh.is_trial());
    assert_eq!(
        r.on_failure(fresh, t + MIN).map(|t| t.to),
        Some(BreakerState::Open)
    );
    // Trips came along: the reopened period is the doubled one.
    assert_eq!(r.info(t + MIN).open_remaining_ms, Some(120_000));
}

// === property test ===

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Acquire,
    Succeed(usize),
    Fail(usize),
    Cancel(usize),
    ForceOpen,
    Close,
    Reset,
    Disable,
    /// Snapshot, JSON, restore in a "new process" whose wall clock is `skew` seconds off.
    Restart {
        skew: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..120_000).prop_map(Op::Wait),
        5 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        4 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Close),
        1 => Just(Op::Reset),
        1 => Just(Op::Disable),
        2 => prop_oneof![Just(0i64), -7200i64..7200].prop_map(|skew| Op::Restart { skew }),
    ]
}

fn settings() -> impl Strategy<Value = BreakerSettings> {
    (1u32..6, 1u64..300, 1u64..60, 0u64..4, 1u32..4).prop_map(
        |(threshold, window, open, doublings, trials)| BreakerSettings {
            failure_threshold: threshold,
            failure_window: Duration::from_secs(window),
            open_timeout: Duration::from_secs(open),
            max_open: Duration::from_secs(open << doublings),
            half_open_calls: trials,
        },
    )
}

/// A permit held by the test, tagged with the episode (as the test counts them) it came from.
struct Held {
    permit: Permit,
    episode: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_contract_holds_for_any_sequence(
        settings in settings(),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let start = Instant::now();
        let max_open_ms = settings.max_open.as_millis() as u64;
        let mut now = start;
        // The wall clock of the current "process": in step with `now`, shifted by restarts.
        let mut wall_offset = TimeDelta::zero();
        let wall = |now: Instant, offset: TimeDelta| {
            wall0() + TimeDelta::from_std(now - start).unwrap() + offset
        };
        let mut b = Breaker::new(settings.clone());
        let mut held: Vec<Held> = Vec::new();
        // The test's own count of episodes: bumped whenever the state changes and on every
        // operator action or restart, which is when the breaker must treat old permits as stale.
        let mut episode = 0u64;
        // Failure reports made while closed, since the breaker last became closed.
        let mut closed_failures: Vec<Instant> = Vec::new();

        for op in ops {
            let before = b.state(now);
            let info_before = b.info(now);
            // Operator actions and restarts make every held permit stale; operator actions
            // also forget the failures (a restart carries them over).
            let mut operator = false;
            let mut restarted = false;
            match op {
                Op::Wait(ms) => now += Duration::from_millis(ms),
                Op::Acquire => {
                    let result = b.try_acquire(now);
                    match before {
                        BreakerState::ForcedOpen => {
                            let r = result.as_ref().unwrap_err();
                            prop_assert_eq!(r.state, BreakerState::ForcedOpen);
                            prop_assert!(r.reason.is_some());
                        }
                        BreakerState::Open if info_before.open_remaining_ms.unwrap() > 0 => {
                            let r = result.as_ref().unwrap_err();
                            prop_assert_eq!(r.state, BreakerState::Open);
                            let retry = r.retry_in.unwrap();
                            prop_assert!(!retry.is_zero() && retry <= settings.max_open);
                        }
                        BreakerState::Closed | BreakerState::Disabled => {
                            prop_assert!(result.as_ref().is_ok_and(|p| !p.is_trial()));
                        }
                        _ => {}
                    }
                    if let Ok(permit) = result {
                        // Open -> HalfOpen starts the episode this trial belongs to (the
                        // common bookkeeping below moves `episode` there).
                        let episode = if b.state(now) != before { episode + 1 } else { episode };
                        held.push(Held { permit, episode });
                    }
                }
                Op::Succeed(i) | Op::Fail(i) | Op::Cancel(i) if !held.is_empty() => {
                    let Held { permit, episode: from } = held.swap_remove(i % held.len());
                    let transition = match op {
                        Op::Succeed(_) => b.on_success(permit, now),
                        Op::Fail(_) => {
                            if before == BreakerState::Closed {
                                closed_failures.push(now);
                            }
                            b.on_failure(permit, now)
                        }
                        _ => {
                            b.on_cancel(permit);
                            None
                        }
                    };
                    if from != episode {
                        prop_assert_eq!(transition, None, "a stale permit changed the state");
                    }
                    if let Some(t) = transition {
                        prop_assert_eq!(t.from, before);
                        prop_assert_eq!(t.to, b.state(now));
                        if t.from == BreakerState::Closed {
                            prop_assert_eq!(t.to, BreakerState::Open);
                            let inside = closed_failures
                                .iter()
                                .filter(|&&f| now.saturating_duration_since(f) < settings.failure_window)
                                .count();
                            prop_assert!(
                                inside >= settings.failure_threshold as usize,
                                "opened after {} failures in the window", inside
                            );
                        }
                    }
                }
                Op::Succeed(_) | Op::Fail(_) | Op::Cancel(_) => {}
                Op::ForceOpen => {
                    b.force_open("host key mismatch".to_owned(), now);
                    operator = true;
                }
                Op::Close => {
                    b.close(now);
                    operator = true;
                }
                Op::Reset => {
                    b.reset(now);
                    operator = true;
                }
                Op::Disable => {
                    b.disable(now);
                    operator = true;
                }
                Op::Restart { skew } => {
                    // Restored failures are aged by the wall clock, so a skewed clock may
                    // legitimately age them differently: skew only restarts of a non-closed breaker.
                    let skew = if before == BreakerState::Closed { 0 } else { skew };
                    let json = serde_json::to_string(&b.snapshot(now, wall(now, wall_offset))).unwrap();
                    let snap = Snapshot::from_json(&json).unwrap();
                    wall_offset += TimeDelta::seconds(skew);
                    let restored = Breaker::restore(settings.clone(), &snap, now, wall(now, wall_offset));
                    let (was, is) = (b.info(now), restored.info(now));
                    if skew == 0 {
                        if was.state == BreakerState::HalfOpen {
                            prop_assert_eq!(is.state, BreakerState::Open);
                            prop_assert_eq!(is.open_remaining_ms, Some(0));
                            prop_assert_eq!(is.trips, was.trips);
                        } else {
                            prop_assert_eq!(&is, &was);
                        }
                    } else {
                        prop_assert_eq!(is.state == BreakerState::Open, matches!(was.state, BreakerState::Open | BreakerState::HalfOpen));
                    }
                    b = restored;
                    restarted = true;
                }
            }
            if operator {
                episode += 1;
                closed_failures.clear();
            } else if restarted {
                episode += 1;
            } else if b.state(now) != before {
                episode += 1;
                if b.state(now) == BreakerState::Closed {
                    closed_failures.clear();
                }
            }

            let info = b.info(now);
            let current_trials = held.iter().filter(|h| h.episode == episode && h.permit.is_trial()).count();
            prop_assert!(current_trials <= settings.half_open_calls as usize);
            if info.state == BreakerState::HalfOpen {
                prop_assert_eq!(info.trials_in_flight as usize, current_trials);
            } else {
                prop_assert_eq!(info.trials_in_flight, 0);
            }
            if let Some(ms) = info.open_remaining_ms {
                prop_assert!(ms <= max_open_ms, "open for {} ms, cap {} ms", ms, max_open_ms);
            }
            prop_assert_eq!(info.open_remaining_ms.is_some(), info.state == BreakerState::Open);
            if info.state == BreakerState::Disabled {
                prop_assert_eq!(info.failures, 0);
            }
            prop_assert!(info.failures < settings.failure_threshold);
        }
    }
}
