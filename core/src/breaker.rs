//! The circuit breaker in front of each VPS: a pure state machine. It never sleeps, spawns or
//! reads a clock: every call takes `now`, so tests drive it with made-up instants and the VPS
//! actor that owns it stays the only place with IO.
//!
//! States: `closed` (calls pass; transport failures are counted in a sliding window),
//! `open` (calls are rejected until the open period has passed), `half_open` (up to
//! `half_open_calls` trial calls; all succeeding closes it, any failing reopens it),
//! `forced_open` (an operator or a security event: rejected until an operator resets it) and
//! `disabled` (an operator switched it off: everything passes, nothing is counted).
//!
//! Beyond the classic breaker, the open period grows on consecutive trips:
//! `open_timeout · 2^(trips-1)`, capped at `max_open`, back to `open_timeout` once it closes.
//! A snapshot in wall-clock terms lets an open breaker stay open across a process restart.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::BreakerConfig;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of trial calls pass.
    HalfOpen,
    /// Rejected until an operator resets or closes it.
    ForcedOpen,
    /// Switched off by an operator: every call passes, nothing counts.
    Disabled,
}

impl BreakerState {
    /// Every state, in the order `chom_circuit_breaker_state` reports them.
    pub const ALL: [BreakerState; 5] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::Disabled,
    ];

    /// Whether calls are rejected: open, by failures or by an operator.
    pub fn is_open(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }

    /// The name used in metrics, logs and `chom breaker list`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        }
    }
}

/// The breaker's parameters (`[breaker]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Transport failures within `failure_window` that open it.
    pub failure_threshold: u32,
    /// Sliding window of `failure_threshold`.
    pub failure_window: Duration,
    /// First open period.
    pub open_timeout: Duration,
    /// Cap of the growing open period.
    pub max_open: Duration,
    /// Trial calls let through while half-open.
    pub half_open_calls: u32,
}

impl From<&BreakerConfig> for BreakerSettings {
    fn from(c: &BreakerConfig) -> Self {
        BreakerSettings {
            failure_threshold: c.failure_threshold.max(1),
            failure_window: c.failure_window,
            open_timeout: c.open_timeout,
            max_open: c.max_open.max(c.open_timeout),
            half_open_calls: c.half_open_calls.max(1),
        }
    }
}

/// Permission to make one call. A plain token: hand it back with `on_success`,
/// `on_failure` or `on_cancel`.
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    trial: bool,
    /// The breaker incarnation (changes at every transition), so a late report about a call
    /// admitted in an earlier state does not disturb the current one.
    epoch: u64,
}

/// Source of epochs. Process-wide rather than per breaker, so a permit matches only the breaker
/// and state that issued it: not a breaker rebuilt by `restore` (whose epochs would otherwise
/// start again from the same number) nor another server's.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

fn next_epoch() -> u64 {
    NEXT_EPOCH.fetch_add(1, Ordering::Relaxed)
}

/// `now + d`, or as far as an `Instant` reaches: a hand-made or absurd period (years beyond
/// what the platform's clock can represent) must not panic, it just means "open for good".
fn later(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

impl Permit {
    /// Whether this call is a half-open trial, whose outcome decides whether the breaker closes.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

/// A call turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The state that rejected it.
    pub state: BreakerState,
    /// When a call may pass again (`None`: only after an operator acts).
    pub retry_in: Option<Duration>,
    /// Why, when forced open.
    pub reason: Option<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, &self.reason, self.retry_in) {
            (BreakerState::ForcedOpen, Some(reason), _) => {
                write!(f, "circuit breaker forced open: {reason}")
            }
            (BreakerState::HalfOpen, _, _) => {
                write!(f, "circuit breaker half open: trial call in progress")
            }
            (_, _, Some(d)) => write!(f, "circuit breaker open (retry in {}s)", d.as_secs().max(1)),
            _ => write!(f, "circuit breaker open"),
        }
    }
}

/// A change of state, returned so the caller logs and exports it in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: BreakerState,
    /// After.
    pub to: BreakerState,
}

/// What `chom breaker list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerInfo {
    /// Current state.
    pub state: BreakerState,
    /// Why it is forced open.
    pub reason: Option<String>,
    /// Transport failures inside the window.
    pub failures: u32,
    /// Consecutive trips without a close.
    pub trips: u32,
    /// Time left in the open period, when open.
    pub open_remaining_ms: Option<u64>,
    /// Trial calls in flight, when half-open.
    pub trials_in_flight: u32,
}

/// A breaker's state in wall-clock terms, for the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// State at the time.
    pub state: BreakerState,
    /// Why, when forced open.
    pub reason: Option<String>,
    /// Consecutive trips.
    pub trips: u32,
    /// End of the open period, when open.
    pub open_until: Option<DateTime<Utc>>,
    /// Failures inside the window.
    pub failures: Vec<DateTime<Utc>>,
}

impl Snapshot {
    /// Parse a snapshot read from the cache.
    pub fn from_json(text: &str) -> Result<Snapshot, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[derive(Debug, Clone)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
    ForcedOpen { reason: String },
    Disabled,
}

/// One server's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Inner,
    failures: VecDeque<Instant>,
    trips: u32,
    epoch: u64,
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Inner::Closed,
            failures: VecDeque::new(),
            trips: 0,
            epoch: next_epoch(),
        }
    }

    /// The state as of `now`. An open breaker whose period has passed still reports `open`
    /// until the next `try_acquire` lets a trial through (which is when it becomes half-open).
    pub fn state(&self, _now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
            Inner::ForcedOpen { .. } => BreakerState::ForcedOpen,
            Inner::Disabled => BreakerState::Disabled,
        }
    }

    fn open_period(&self) -> Duration {
        let exp = self.trips.saturating_sub(1).min(30);
        self.settings
            .open_timeout
            .saturating_mul(1u32 << exp)
            .min(self.settings.max_open)
    }

    fn prune(&mut self, now: Instant) {
        while let Some(first) = self.failures.front() {
            if now.saturating_duration_since(*first) >= self.settings.failure_window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }

    fn set(&mut self, inner: Inner) {
        self.inner = inner;
        self.epoch = next_epoch();
    }

    fn trip(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        let until = later(now, self.open_period());
        self.set(Inner::Open { until });
    }

    /// Ask to make a call.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejection> {
        match &mut self.inner {
            Inner::Closed | Inner::Disabled => Ok(Permit {
                trial: false,
                epoch: self.epoch,
            }),
            Inner::Open { until } => {
                if now >= *until {
                    self.set(Inner::HalfOpen {
                        in_flight: 1,
                        succeeded: 0,
                    });
                    Ok(Permit {
                        trial: true,
                        epoch: self.epoch,
                    })
                } else {
                    Err(Rejection {
                        state: BreakerState::Open,
                        retry_in: Some(*until - now),
                        reason: None,
                    })
                }
            }
            Inner::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.settings.half_open_calls {
                    *in_flight += 1;
                    Ok(Permit {
                        trial: true,
                        epoch: self.epoch,
                    })
                } else {
                    Err(Rejection {
                        state: BreakerState::HalfOpen,
                        retry_in: Some(Duration::from_secs(1)),
                        reason: None,
                    })
                }
            }
            Inner::ForcedOpen { reason } => Err(Rejection {
                state: BreakerState::ForcedOpen,
                retry_in: None,
                reason: Some(reason.clone()),
            }),
        }
    }

    fn transition(&self, from: BreakerState, now: Instant) -> Option<Transition> {
        let to = self.state(now);
        (from != to).then_some(Transition { from, to })
    }

    /// The call reached the host and the host answered (whatever the command's exit status).
    pub fn on_success(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        let from = self.state(now);
        if permit.epoch != self.epoch {
            return None;
        }
        if let Inner::HalfOpen {
            in_flight,
            succeeded,
        } = &mut self.inner
            && permit.trial
        {
            *in_flight = in_flight.saturating_sub(1);
            *succeeded += 1;
            if *succeeded >= self.settings.half_open_calls {
                self.close(now);
            }
        }
        self.transition(from, now)
    }

    /// The call failed in transport (connect refused or timed out, handshake or auth error,
    /// session lost).
    pub fn on_failure(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        let from = self.state(now);
        match &self.inner {
            Inner::Disabled | Inner::ForcedOpen { .. } | Inner::Open { .. } => {}
            Inner::HalfOpen { .. } => {
                if permit.trial && permit.epoch == self.epoch {
                    self.trip(now);
                }
            }
            Inner::Closed => {
                if permit.epoch != self.epoch {
                    // Admitted before an operator action or an earlier trip: old news.
                    return None;
                }
                self.prune(now);
                self.failures.push_back(now);
                if self.failures.len() >= self.settings.failure_threshold as usize {
                    self.failures.clear();
                    self.trip(now);
                }
            }
        }
        self.transition(from, now)
    }

    /// The permit was not used to reach the host (the caller gave up before, or the call
    /// ended without telling anything about the host): a trial slot is given back.
    pub fn on_cancel(&mut self, permit: Permit) {
        if permit.epoch != self.epoch {
            return;
        }
        if let Inner::HalfOpen { in_flight, .. } = &mut self.inner
            && permit.trial
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Forced open (operator maintenance, host key mismatch) until reset or closed.
    pub fn force_open(&mut self, reason: String, _now: Instant) {
        self.set(Inner::ForcedOpen { reason });
    }

    /// Closed now: failures and trips forgotten.
    pub fn close(&mut self, _now: Instant) {
        self.failures.clear();
        self.trips = 0;
        self.set(Inner::Closed);
    }

    /// Same as [`Breaker::close`]: the operator's "start over", from any state.
    pub fn reset(&mut self, now: Instant) {
        self.close(now);
    }

    /// Switched off: every call passes and nothing is counted, until reset or closed.
    pub fn disable(&mut self, _now: Instant) {
        self.failures.clear();
        self.set(Inner::Disabled);
    }

    /// Take on the state another node published (a [`Snapshot`] it took at a decisive change:
    /// opened, forced open, disabled or closed), so that every node's breaker for a server
    /// agrees within one synchronisation. Only the state travels: the open period's end and
    /// the trips (so the next period grows the same everywhere) and a forced-open reason; each
    /// node keeps counting its own failures, which closing forgets. A published half-open
    /// state (another node's trial under way) reads as open with no time left, and leaves a
    /// breaker that is half-open itself alone. Permits issued before are stale for the result.
    pub fn adopt(
        &mut self,
        shared: &Snapshot,
        now: Instant,
        wall_now: DateTime<Utc>,
    ) -> Option<Transition> {
        let from = self.state(now);
        let same = match shared.state {
            BreakerState::HalfOpen => from == BreakerState::HalfOpen,
            BreakerState::Closed | BreakerState::Disabled => from == shared.state,
            BreakerState::ForcedOpen => {
                from == shared.state && self.info(now).reason == shared.reason
            }
            BreakerState::Open => false,
        };
        if same {
            return None;
        }
        let mut adopted = Breaker::restore(self.settings.clone(), shared, now, wall_now);
        adopted.failures = match adopted.inner {
            Inner::Closed | Inner::Disabled => VecDeque::new(),
            _ => std::mem::take(&mut self.failures),
        };
        *self = adopted;
        self.transition(from, now)
    }

    /// A trial permit the cluster did not allow (another node holds this open period's trial
    /// call): the slot is given back and the caller is turned away as by a half-open breaker
    /// whose trials are all in flight.
    pub fn trial_elsewhere(&mut self, permit: Permit) -> Rejection {
        self.on_cancel(permit);
        Rejection {
            state: BreakerState::HalfOpen,
            retry_in: Some(Duration::from_secs(1)),
            reason: None,
        }
    }

    /// For `chom breaker list`.
    pub fn info(&self, now: Instant) -> BreakerInfo {
        let failures = self
            .failures
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.settings.failure_window)
            .count() as u32;
        BreakerInfo {
            state: self.state(now),
            reason: match &self.inner {
                Inner::ForcedOpen { reason } => Some(reason.clone()),
                _ => None,
            },
            failures,
            trips: self.trips,
            open_remaining_ms: match self.inner {
                Inner::Open { until } => {
                    Some(until.saturating_duration_since(now).as_millis() as u64)
                }
                _ => None,
            },
            trials_in_flight: match self.inner {
                Inner::HalfOpen { in_flight, .. } => in_flight,
                _ => 0,
            },
        }
    }

    /// The state in wall-clock terms (`now` and `wall_now` are the same moment).
    pub fn snapshot(&self, now: Instant, wall_now: DateTime<Utc>) -> Snapshot {
        let to_wall = |t: Instant| {
            let back = now.saturating_duration_since(t);
            let ahead = t.saturating_duration_since(now);
            wall_now - chrono::Duration::from_std(back).unwrap_or_default()
                + chrono::Duration::from_std(ahead).unwrap_or_default()
        };
        Snapshot {
            state: self.state(now),
            reason: match &self.inner {
                Inner::ForcedOpen { reason } => Some(reason.clone()),
                _ => None,
            },
            trips: self.trips,
            open_until: match self.inner {
                Inner::Open { until } => Some(to_wall(until)),
                _ => None,
            },
            failures: self
                .failures
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < self.settings.failure_window)
                .map(|t| to_wall(*t))
                .collect(),
        }
    }

    /// A breaker from a snapshot taken earlier (possibly by another process). An open one
    /// stays open for what is left of its period, but never longer than the period its trips
    /// give under `settings` (a wall clock that went back, or a corrupt snapshot, cannot keep
    /// it open beyond that); a half-open one comes back open with no time left (the next call
    /// is a trial); failures keep their age. Permits issued before are stale for the result.
    pub fn restore(
        settings: BreakerSettings,
        snapshot: &Snapshot,
        now: Instant,
        wall_now: DateTime<Utc>,
    ) -> Self {
        let to_instant = |t: DateTime<Utc>| -> Instant {
            match (t - wall_now).to_std() {
                Ok(ahead) => later(now, ahead),
                Err(_) => {
                    let back = (wall_now - t).to_std().unwrap_or_default();
                    now.checked_sub(back).unwrap_or(now)
                }
            }
        };
        let mut breaker = Breaker::new(settings);
        breaker.trips = snapshot.trips;
        breaker.failures = snapshot
            .failures
            .iter()
            .map(|t| to_instant(*t))
            .filter(|t| now.saturating_duration_since(*t) < breaker.settings.failure_window)
            .collect();
        breaker.inner = match snapshot.state {
            BreakerState::Closed => Inner::Closed,
            BreakerState::Open => Inner::Open {
                until: snapshot
                    .open_until
                    .map_or(now, to_instant)
                    .min(later(now, breaker.open_period())),
            },
            BreakerState::HalfOpen => Inner::Open { until: now },
            BreakerState::ForcedOpen => Inner::ForcedOpen {
                reason: snapshot
                    .reason
                    .clone()
                    .unwrap_or_else(|| "forced open".to_owned()),
            },
            BreakerState::Disabled => Inner::Disabled,
        };
        breaker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed() -> BreakerSettings {
        BreakerSettings::from(&BreakerConfig::default())
    }

    fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
        let p = b.try_acquire(now).expect("admitted");
        b.on_failure(p, now)
    }

    /// `n` failures `every` apart from `t0`, none of which changes the state.
    fn fail_quietly(b: &mut Breaker, t0: Instant, n: u32, every: Duration) {
        for i in 0..n {
            assert_eq!(fail(b, t0 + every * i), None, "failure {i}");
        }
    }

    /// Five failures at `now`: what opens a closed breaker with the default settings.
    fn trip(b: &mut Breaker, now: Instant) {
        for _ in 0..5 {
            fail(b, now);
        }
    }

    /// A breaker with the default settings, just opened at `now`.
    fn opened(now: Instant) -> Breaker {
        let mut b = Breaker::new(seed());
        trip(&mut b, now);
        b
    }

    #[test]
    fn five_failures_within_five_minutes_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(seed());
        fail_quietly(&mut b, t0, 4, Duration::from_secs(60));
        assert_eq!(b.info(t0 + Duration::from_secs(240)).failures, 4);
        let t = fail(&mut b, t0 + Duration::from_secs(299));
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        let r = b.try_acquire(t0 + Duration::from_secs(300)).unwrap_err();
        assert_eq!(r.state, BreakerState::Open);
        assert!(r.retry_in.unwrap() <= Duration::from_secs(60));
        assert!(r.to_string().starts_with("circuit breaker open"), "{r}");
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(seed());
        // One every 80 s: never 5 inside 5 minutes.
        fail_quietly(&mut b, t0, 10, Duration::from_secs(80));
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn one_trial_after_the_open_period_and_success_closes() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.try_acquire(t0 + Duration::from_secs(59)).is_err());
        let t1 = t0 + Duration::from_secs(60);
        let trial = b.try_acquire(t1).expect("trial");
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let second = b.try_acquire(t1).unwrap_err();
        assert_eq!(second.state, BreakerState::HalfOpen);
        assert_eq!(
            b.on_success(trial, t1),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(b.info(t1).trips, 0);
        assert!(b.try_acquire(t1).is_ok());
    }

    #[test]
    fn failed_trials_reopen_with_a_doubling_period_capped_at_max_open() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let mut now = t0;
        let mut periods = Vec::new();
        for _ in 0..6 {
            let remaining = b.info(now).open_remaining_ms.unwrap();
            periods.push(remaining / 1000);
            now += Duration::from_millis(remaining);
            let trial = b.try_acquire(now).unwrap();
            assert_eq!(b.on_failure(trial, now).unwrap().to, BreakerState::Open);
        }
        assert_eq!(periods, vec![60, 120, 240, 480, 600, 600]);
        // Closing resets the growth.
        b.close(now);
        trip(&mut b, now);
        assert_eq!(b.info(now).open_remaining_ms, Some(60_000));
    }

    #[test]
    fn cancel_gives_the_trial_slot_back() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let t1 = t0 + Duration::from_secs(60);
        let trial = b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err());
        b.on_cancel(trial);
        assert!(b.try_acquire(t1).is_ok());
    }

    #[test]
    fn forced_open_ignores_time_and_disabled_counts_nothing() {
        let t0 = Instant::now();
        let mut b = Breaker::new(seed());
        b.force_open("host key mismatch".into(), t0);
        let r = b.try_acquire(t0 + Duration::from_secs(86_400)).unwrap_err();
        assert_eq!(r.state, BreakerState::ForcedOpen);
        assert_eq!(r.retry_in, None);
        assert!(r.to_string().contains("host key mismatch"));
        b.disable(t0);
        fail_quietly(&mut b, t0, 50, Duration::ZERO);
        assert_eq!(b.state(t0), BreakerState::Disabled);
        b.reset(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn late_reports_from_an_earlier_state_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(seed());
        let old = b.try_acquire(t0).unwrap();
        trip(&mut b, t0);
        let t1 = t0 + Duration::from_secs(60);
        let _trial = b.try_acquire(t1).unwrap();
        // A success of a call admitted while closed does not close the half-open breaker.
        assert_eq!(b.on_success(old, t1), None);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
    }

    #[test]
    fn snapshot_survives_a_restart_later_in_wall_time() {
        let t0 = Instant::now();
        let w0 = Utc::now();
        let b = opened(t0);
        let json = serde_json::to_string(&b.snapshot(t0, w0)).unwrap();
        let snap = Snapshot::from_json(&json).unwrap();
        // Another process, 20 s later, with its own monotonic clock.
        let t1 = Instant::now() + Duration::from_secs(1000);
        let w1 = w0 + chrono::Duration::seconds(20);
        let mut r = Breaker::restore(seed(), &snap, t1, w1);
        assert_eq!(r.state(t1), BreakerState::Open);
        let left = r.info(t1).open_remaining_ms.unwrap();
        assert!((39_000..=40_000).contains(&left), "{left}");
        assert!(r.try_acquire(t1 + Duration::from_secs(39)).is_err());
        assert!(r.try_acquire(t1 + Duration::from_secs(40)).is_ok());
        // Restored after the period: the next call is a trial.
        let mut late = Breaker::restore(seed(), &snap, t1, w0 + chrono::Duration::seconds(90));
        assert!(late.try_acquire(t1).is_ok());
        assert_eq!(late.state(t1), BreakerState::HalfOpen);
        assert!(Snapshot::from_json("{not json").is_err());
    }

    #[test]
    fn adopting_a_published_state_opens_closes_and_forces_here_too() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut leader = Breaker::new(seed());
        let mut follower = Breaker::new(seed());
        fail_quietly(&mut follower, t0, 2, Duration::from_secs(1));
        trip(&mut leader, t0);
        let shared = leader.snapshot(t0, wall);
        let t = follower.adopt(&shared, t0, wall).expect("a transition");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(
            follower.info(t0).open_remaining_ms,
            leader.info(t0).open_remaining_ms
        );
        assert_eq!(follower.info(t0).trips, 1);
        assert_eq!(
            follower.info(t0).failures,
            2,
            "its own failures are kept while open"
        );
        // Rejected without a call, like the leader.
        assert!(follower.try_acquire(t0).is_err());
        // Adopting the same state again changes nothing.
        assert_eq!(follower.adopt(&shared, t0, wall), None);
        // The leader's trial closes it: the follower closes and forgets its failures.
        let period = seed().open_timeout + Duration::from_secs(1);
        let later = t0 + period;
        let trial = leader.try_acquire(later).expect("trial");
        leader.on_success(trial, later);
        let closed = leader.snapshot(later, wall + period);
        let t = follower.adopt(&closed, later, wall + period);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::Closed));
        assert_eq!(
            (follower.info(later).failures, follower.info(later).trips),
            (0, 0)
        );
        // Forced open with a reason, then a new reason.
        leader.force_open("maintenance".into(), later);
        follower.adopt(&leader.snapshot(later, wall), later, wall);
        assert_eq!(follower.info(later).reason.as_deref(), Some("maintenance"));
        leader.force_open("host key".into(), later);
        assert_eq!(
            follower.adopt(&leader.snapshot(later, wall), later, wall),
            None
        );
        assert_eq!(follower.info(later).reason.as_deref(), Some("host key"));
    }

    #[test]
    fn a_trial_held_elsewhere_gives_the_slot_back() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let later = t0 + seed().open_timeout + Duration::from_secs(1);
        let trial = b.try_acquire(later).expect("trial");
        let rejection = b.trial_elsewhere(trial);
        assert_eq!(rejection.state, BreakerState::HalfOpen);
        assert_eq!(b.info(later).trials_in_flight, 0);
        // Another node's published half-open state leaves this one alone.
        let mut other = opened(t0);
        let _ = other.try_acquire(later).expect("trial");
        let shared = other.snapshot(later, Utc::now());
        assert_eq!(b.adopt(&shared, later, Utc::now()), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed,
        Fail,
        Cancel,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => Just(Op::Succeed),
            3 => Just(Op::Fail),
            1 => Just(Op::Cancel),
            2 => (0u64..200_000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_sequence(
            ops in proptest::collection::vec(op(), 1..200),
            threshold in 1u32..6,
            trials in 1u32..4,
        ) {
            let settings = BreakerSettings {
                failure_threshold: threshold,
                failure_window: Duration::from_secs(60),
                open_timeout: Duration::from_secs(10),
                max_open: Duration::from_secs(100),
                half_open_calls: trials,
            };
            let mut b = Breaker::new(settings.clone());
            let mut now = Instant::now();
            let mut held: Vec<Permit> = Vec::new();
            let mut closed_failures: Vec<Instant> = Vec::new();
            for op in ops {
                let before = b.state(now);
                match op {
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Acquire => {
                        let open_until = b.info(now).open_remaining_ms;
                        match b.try_acquire(now) {
                            Ok(p) => {
                                prop_assert!(before != BreakerState::ForcedOpen);
                                if before == BreakerState::Open {
                                    prop_assert_eq!(open_until, Some(0));
                                }
                                held.push(p);
                            }
                            Err(r) => prop_assert!(matches!(r.state, BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen)),
                        }
                    }
                    Op::Succeed => if let Some(p) = held.pop() { b.on_success(p, now); },
                    Op::Cancel => if let Some(p) = held.pop() { b.on_cancel(p); },
                    Op::Fail => if let Some(p) = held.pop() {
                        if before == BreakerState::Closed {
                            closed_failures.retain(|t| now.saturating_duration_since(*t) < settings.failure_window);
                            closed_failures.push(now);
                        }
                        let t = b.on_failure(p, now);
                        if before == BreakerState::Closed && t.is_some_and(|t| t.to == BreakerState::Open) {
                            prop_assert!(closed_failures.len() >= threshold as usize);
                            closed_failures.clear();
                        }
                    },
                }
                if b.state(now) == BreakerState::Closed && before != BreakerState::Closed {
                    closed_failures.clear();
                }
                let info = b.info(now);
                prop_assert!(info.trials_in_flight <= trials);
                if let Some(ms) = info.open_remaining_ms {
                    prop_assert!(ms <= 100_000);
                }
                let wall = Utc::now();
                let again = Breaker::restore(settings.clone(), &b.snapshot(now, wall), now, wall);
                let (a, c) = (again.info(now), b.info(now));
                if c.state != BreakerState::HalfOpen {
                    prop_assert_eq!(a.state, c.state);
                    prop_assert_eq!(a.failures, c.failures);
                    prop_assert_eq!(a.trips, c.trips);
                    prop_assert_eq!(a.reason, c.reason);
                }
            }
        }

        /// A follower that adopts the leader's state at each of its decisive changes agrees
        /// with it on whether calls pass, on the trips and on the end of the open period.
        #[test]
        fn a_follower_adopting_each_change_agrees_with_the_leader(
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut leader = Breaker::new(seed());
            let mut follower = Breaker::new(seed());
            let mut now = Instant::now();
            let wall = Utc::now();
            let mut held: Vec<Permit> = Vec::new();
            for op in ops {
                let before = leader.state(now);
                match op {
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Acquire => if let Ok(p) = leader.try_acquire(now) { held.push(p) },
                    Op::Succeed => if let Some(p) = held.pop() { leader.on_success(p, now); },
                    Op::Cancel => if let Some(p) = held.pop() { leader.on_cancel(p); },
                    Op::Fail => if let Some(p) = held.pop() { leader.on_failure(p, now); },
                }
                let after = leader.state(now);
                if after != before && after != BreakerState::HalfOpen {
                    follower.adopt(&leader.snapshot(now, wall), now, wall);
                    let (l, f) = (leader.info(now), follower.info(now));
                    prop_assert_eq!(f.state, l.state);
                    prop_assert_eq!(f.trips, l.trips);
                    prop_assert_eq!(f.open_remaining_ms, l.open_remaining_ms);
                }
            }
        }
    }
}
