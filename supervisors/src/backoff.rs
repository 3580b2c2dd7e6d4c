//! Restart delay of one child: Akka's exponential backoff with jitter, which OTP lacks.
//!
//! A child that fails because something outside it is down (the database, the network)
//! would fail again at once; restarting it in a tight loop only burns the restart
//! intensity and the CPU. So the n-th consecutive failure waits
//! `min(max, min * 2^n) * (1 + jitter * u)` with `u` uniform in `[0, 1)`, after the first
//! `immediate` failures, which restart at once (a one-off crash should cost microseconds,
//! not `min`). A child that ran for at least `reset_after` before failing is considered
//! to have recovered: its count starts again from zero.
//!
//! The code is pure: it takes `now` and the random source as arguments.

use std::time::{Duration, Instant};

use rand::Rng;

/// Restart-delay policy, shared by all children of a supervisor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Base delay of the first non-immediate failure.
    pub min: Duration,
    /// Cap of the base delay (before jitter).
    pub max: Duration,
    /// Random extra fraction of the base delay, `>= 0` (0.2 = up to 20% longer);
    /// negative or non-finite values count as 0.
    pub jitter: f64,
    /// A child that ran at least this long before failing starts its count again.
    pub reset_after: Duration,
    /// Number of consecutive failures restarted with no delay at all.
    pub immediate: u32,
}

impl Backoff {
    /// No delay ever: every restart happens at once (restart intensity is then the only
    /// brake on a crash loop).
    pub fn none() -> Self {
        Self {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::ZERO,
            immediate: 0,
        }
    }

    /// Base delay (no jitter) of the `n`-th non-immediate consecutive failure, counted
    /// from 0: `min(max, min * 2^n)`, and never below `min`.
    pub fn base_delay(&self, n: u32) -> Duration {
        let doubled = self.min.saturating_mul(2u32.saturating_pow(n));
        doubled.min(self.max).max(self.min)
    }

    /// Delay of the `n`-th non-immediate consecutive failure, with jitter drawn from `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, n: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(n);
        let jitter = self.jitter_fraction();
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        let u: f64 = rng.random();
        base.saturating_add(scale(base, jitter * u))
    }

    /// Longest delay this policy can produce: `max * (1 + jitter)`.
    pub fn max_delay(&self) -> Duration {
        let cap = self.max.max(self.min);
        cap.saturating_add(scale(cap, self.jitter_fraction()))
    }

    fn jitter_fraction(&self) -> f64 {
        if self.jitter.is_finite() && self.jitter > 0.0 {
            self.jitter
        } else {
            0.0
        }
    }
}

impl Default for Backoff {
    /// One immediate restart, then 100 ms doubling up to 30 s, 20% jitter, forgiven after
    /// a minute of stable running.
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
            immediate: 1,
        }
    }
}

/// `d * factor`, saturating instead of panicking on overflow.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Consecutive-failure count of one child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackoffState {
    consecutive: u32,
}

// === impl BackoffState ===

impl BackoffState {
    /// A child that has not failed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failure at `now` and returns how long to wait before restarting.
    ///
    /// `started_at` is when the failed incarnation started; `None` when it never ran
    /// (its start failed), which never resets the count.
    pub fn on_failure<R: Rng + ?Sized>(
        &mut self,
        policy: &Backoff,
        started_at: Option<Instant>,
        now: Instant,
        rng: &mut R,
    ) -> Duration {
        if started_at.is_some_and(|at| now.saturating_duration_since(at) >= policy.reset_after) {
            self.consecutive = 0;
        }
        let k = self.consecutive;
        self.consecutive = self.consecutive.saturating_add(1);
        if k < policy.immediate {
            Duration::ZERO
        } else {
            policy.delay(k - policy.immediate, rng)
        }
    }

    /// Failures counted so far (since the last reset).
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Forgets past failures (a manual restart, for instance).
    pub fn reset(&mut self) {
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn policy() -> impl Strategy<Value = Backoff> {
        (
            0u64..1_000,
            0u64..60_000,
            0.0f64..2.0,
            0u64..10_000,
            0u32..4,
        )
            .prop_map(|(min, extra, jitter, reset_after, immediate)| Backoff {
                min: ms(min),
                max: ms(min + extra),
                jitter,
                reset_after: ms(reset_after),
                immediate,
            })
    }

    /// `n` failures in a row of incarnations that never ran, from a fresh state: the state
    /// after them and the delay each got.
    fn failures(b: &Backoff, n: usize, seed: u64) -> (BackoffState, Vec<Duration>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = BackoffState::new();
        let now = Instant::now();
        let delays = (0..n)
            .map(|_| state.on_failure(b, None, now, &mut rng))
            .collect();
        (state, delays)
    }

    #[test]
    fn none_never_waits() {
        let (_, delays) = failures(&Backoff::none(), 100, 1);
        assert_eq!(delays, vec![Duration::ZERO; 100]);
    }

    #[test]
    fn doubles_then_caps() {
        let b = Backoff {
            min: ms(100),
            max: ms(1_000),
            jitter: 0.0,
            reset_after: ms(5_000),
            immediate: 1,
        };
        let (_, delays) = failures(&b, 7, 7);
        let expected = [0, 100, 200, 400, 800, 1_000, 1_000].map(ms);
        assert_eq!(delays, expected);
    }

    #[test]
    fn huge_counts_saturate_instead_of_panicking() {
        let b = Backoff {
            min: Duration::MAX,
            max: Duration::MAX,
            jitter: 1.0,
            reset_after: ms(1),
            immediate: 0,
        };
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(b.delay(u32::MAX, &mut rng), Duration::MAX);
    }

    proptest! {
        /// Immediate failures never wait; every other delay lies in `[min, max * (1 + jitter)]`.
        #[test]
        fn delay_bounds(b in policy(), seed in any::<u64>(), n in 1usize..40) {
            let (_, delays) = failures(&b, n, seed);
            for (k, d) in delays.into_iter().enumerate() {
                if (k as u64) < u64::from(b.immediate) {
                    prop_assert_eq!(d, Duration::ZERO);
                } else {
                    prop_assert!(d >= b.min, "{:?} < min {:?}", d, b.min);
                    prop_assert!(d <= b.max_delay(), "{:?} > {:?}", d, b.max_delay());
                }
            }
        }

        /// The base delay never decreases as failures accumulate.
        #[test]
        fn base_is_monotone(b in policy(), n in 0u32..80) {
            prop_assert!(b.base_delay(n) <= b.base_delay(n + 1));
        }

        /// A child that ran at least `reset_after` starts from the first failure again;
        /// one that ran less keeps counting.
        #[test]
        fn resets_after_stable_period(b in policy(), seed in any::<u64>(), n in 1u32..20) {
            let (mut state, _) = failures(&b, n as usize, seed);
            let mut rng = SmallRng::seed_from_u64(seed);
            let start = Instant::now();
            let mut short = state;
            if let Some(brief) = b.reset_after.checked_sub(ms(1)) {
                short.on_failure(&b, Some(start), start + brief, &mut rng);
                prop_assert_eq!(short.consecutive(), n + 1);
            }
            let d = state.on_failure(&b, Some(start), start + b.reset_after, &mut rng);
            prop_assert_eq!(state.consecutive(), 1);
            if b.immediate > 0 {
                prop_assert_eq!(d, Duration::ZERO);
            } else {
                prop_assert!(d >= b.min && d <= b.base_delay(0) + scale(b.base_delay(0), b.jitter));
            }
        }
    }
}
