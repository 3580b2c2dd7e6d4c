//! The tenant API's rate limit: GCRA (the generic cell rate algorithm), a pure function of a
//! stored "theoretical arrival time" (TAT) and `now`. It never reads a clock: times are whole
//! microseconds since an epoch the caller picks (Redis' `TIME` for the shared limiter, a
//! process-local instant for the in-process one), so tests drive it with made-up times and
//! the Lua script in chom-actors applies exactly the same arithmetic.
//!
//! A quota of `q` requests per window `w` gives the emission interval `T = ceil(w / q)` and the
//! tolerance `τ = q·T`. A request at `now` with stored TAT `s` computes `tat = max(s, now)` and
//! is allowed iff `tat + T - now <= τ`; an allowed request stores `tat + T`, a refused one
//! changes nothing. That is a token bucket of `q` tokens refilled one per `T`, with no
//! fixed-window edges: a burst of the whole quota is allowed at once, then one request per `T`.
//!
//! Bound (proved in the tests, exact): in any closed interval of length `L`, at most
//! `q + floor(L / T)` requests are allowed. Each allowed request raises the TAT by at least
//! `T`, so the `n`-th allowed one in the interval has TAT at least `t_1 + n·T`, and it was
//! allowed only if that TAT is at most `t_n + τ = t_n + q·T`; so `n·T <= (t_n - t_1) + q·T`.
//! A full burst at `t` followed by one request every `T` reaches the bound. So no interval
//! shorter than `T` ever admits more than `q` (no double bursts), and a window of length `w`
//! admits at most `2q` (the full bucket plus what refills during the window), never more.

use std::time::Duration;

use crate::inventory::Tier;

/// Microseconds in one second.
const MICROS: u64 = 1_000_000;

/// The window every `[api.rate_limits]` quota is counted over: they are requests per minute.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One GCRA policy: `quota` requests per `window`, bursts of up to `quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    quota: u32,
    window_us: u64,
    interval_us: u64,
}

/// What one check decided, and the numbers the response headers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The TAT to store: `tat + T` when allowed, the stored one unchanged when refused.
    pub new_tat: u64,
    /// Requests that could still be allowed at `now`, after this one (0 to `quota`).
    pub remaining: u32,
    /// Whole seconds (rounded up, at least 1) until a request can be allowed, when refused;
    /// 0 when allowed.
    pub retry_after: u64,
    /// Whole seconds (rounded up) until the full quota is available again.
    pub reset: u64,
}

impl Gcra {
    /// `quota` requests per `window`. A zero quota counts as 1 and a window under a
    /// microsecond as one microsecond: a limiter never refuses everyone (config validation
    /// keeps quotas in `1..=1_000_000`).
    pub fn new(quota: u32, window: Duration) -> Gcra {
        let quota = quota.max(1);
        let window_us = u64::try_from(window.as_micros())
            .unwrap_or(u64::MAX / 2)
            .clamp(1, u64::MAX / 2);
        // Rounded up: the sustained rate never exceeds quota per window.
        let interval_us = window_us.div_ceil(u64::from(quota));
        Gcra {
            quota,
            window_us,
            interval_us,
        }
    }

    /// The tier's policy from `[api.rate_limits]`, over [`WINDOW`].
    pub fn per_minute(quota: u32) -> Gcra {
        Gcra::new(quota, WINDOW)
    }

    /// Requests per window.
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// The window, in whole seconds (at least 1), as `RateLimit-Policy`'s `w` says it.
    pub fn window_secs(&self) -> u64 {
        self.window_us.div_ceil(MICROS).max(1)
    }

    /// `T`: the time one request's share of the quota takes to come back, in microseconds.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// `τ = quota · T`, in microseconds: how far ahead of `now` the TAT may run.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us.saturating_mul(u64::from(self.quota))
    }

    /// Decide one request at `now_us`, given the stored TAT (0, or anything at or before
    /// `now_us`, means a full budget).
    pub fn check(&self, stored_tat: u64, now_us: u64) -> Decision {
        let tat = stored_tat.max(now_us);
        let next = tat.saturating_add(self.interval_us);
        let allowed = next - now_us <= self.tolerance_us();
        let new_tat = if allowed { next } else { stored_tat };
        self.describe(allowed, new_tat, now_us)
    }

    /// The decision's numbers from its outcome alone: whether it was allowed and the TAT
    /// stored afterwards. The Redis script decides and stores atomically and returns these
    /// two (and its `now`); this turns them into the same [`Decision`] as [`Gcra::check`].
    pub fn describe(&self, allowed: bool, new_tat: u64, now_us: u64) -> Decision {
        let tat = new_tat.max(now_us);
        let ahead = tat - now_us;
        // A TAT further ahead than τ only comes from a clock that went back (a Redis
        // failover): nothing remains, and the waits below stay finite.
        let spare = self.tolerance_us().saturating_sub(ahead);
        let remaining = u32::try_from(spare / self.interval_us)
            .unwrap_or(u32::MAX)
            .min(self.quota);
        let retry_after = if allowed {
            0
        } else {
            // Allowed again once tat + T - now <= τ.
            let wait = ahead
                .saturating_add(self.interval_us)
                .saturating_sub(self.tolerance_us());
            wait.div_ceil(MICROS).max(1)
        };
        Decision {
            allowed,
            new_tat,
            remaining,
            retry_after,
            reset: ahead.div_ceil(MICROS),
        }
    }
}

impl Decision {
    /// The `t` of the `RateLimit` header: when refused, the same point in time as
    /// `Retry-After` (the draft has `Retry-After` win and never point earlier than `t`);
    /// when allowed, the seconds until the full quota is back.
    pub fn header_t(&self) -> u64 {
        if self.allowed {
            self.reset
        } else {
            self.retry_after
        }
    }
}

/// `RateLimit-Policy: "<tier>";q=<quota>;w=<window secs>` (draft-ietf-httpapi-ratelimit-headers).
pub fn policy_header(tier: Tier, gcra: &Gcra) -> String {
    format!(
        "\"{}\";q={};w={}",
        tier.as_str(),
        gcra.quota(),
        gcra.window_secs()
    )
}

/// `RateLimit: "<tier>";r=<remaining>;t=<secs>` for one decision.
pub fn ratelimit_header(tier: Tier, decision: &Decision) -> String {
    format!(
        "\"{}\";r={};t={}",
        tier.as_str(),
        decision.remaining,
        decision.header_t()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = MICROS;
    /// An epoch far from 0, as Redis' clock is.
    const T0: u64 = 1_764_000_000 * SEC;

    fn starter() -> Gcra {
        Gcra::per_minute(100)
    }

    /// Runs `times` through one limiter from an empty state; the decisions in order.
    fn run(gcra: &Gcra, times: &[u64]) -> Vec<Decision> {
        let mut tat = 0;
        times
            .iter()
            .map(|&now| {
                let d = gcra.check(tat, now);
                tat = d.new_tat;
                d
            })
            .collect()
    }

    #[test]
    fn a_starter_burst_of_150_allows_100_then_one_per_600ms() {
        let g = starter();
        assert_eq!(g.interval_us(), 600_000);
        let decisions = run(&g, &[T0; 150]);
        let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
        assert_eq!(allowed.len(), 100);
        assert!(decisions[..100].iter().all(|d| d.allowed));
        assert_eq!(decisions[0].remaining, 99);
        assert_eq!(decisions[0].reset, 1);
        assert_eq!(decisions[99].remaining, 0);
        assert_eq!(decisions[99].reset, 60);
        let refused = decisions[100];
        assert!(!refused.allowed);
        assert_eq!(
            (refused.remaining, refused.retry_after, refused.reset),
            (0, 1, 60)
        );
        let tat = refused.new_tat;
        assert_eq!(tat, T0 + 60 * SEC);
        assert!(!g.check(tat, T0 + 599_999).allowed);
        let again = g.check(tat, T0 + 600_000);
        assert!(again.allowed);
        assert_eq!(again.remaining, 0);
    }

    #[test]
    fn headers_follow_the_draft() {
        let g = Gcra::per_minute(500);
        assert_eq!(policy_header(Tier::Pro, &g), "\"pro\";q=500;w=60");
        let d = g.check(0, T0);
        assert_eq!(ratelimit_header(Tier::Pro, &d), "\"pro\";r=499;t=1");
        let mut tat = 0;
        let mut last = d;
        for _ in 0..501 {
            last = g.check(tat, T0);
            tat = last.new_tat;
        }
        assert!(!last.allowed);
        assert_eq!(ratelimit_header(Tier::Pro, &last), "\"pro\";r=0;t=1");
        assert_eq!(last.header_t(), last.retry_after);
    }

    #[test]
    fn quotas_that_do_not_divide_the_window_round_the_interval_up() {
        let g = Gcra::per_minute(7);
        assert_eq!(g.interval_us(), 8_571_429);
        assert_eq!(run(&g, &[T0; 10]).iter().filter(|d| d.allowed).count(), 7);
        let g = Gcra::per_minute(1_000_000);
        assert_eq!(g.interval_us(), 60);
        assert_eq!(Gcra::new(0, Duration::ZERO).quota(), 1);
    }

    #[test]
    fn the_window_bound_is_reached() {
        // A full burst, then one request every T: q + floor(L/T) in [T0, T0 + L] for L = w.
        let g = Gcra::per_minute(10);
        let t = g.interval_us();
        let mut times = vec![T0; 10];
        times.extend((1..=10).map(|k| T0 + k * t));
        let decisions = run(&g, &times);
        assert!(decisions.iter().all(|d| d.allowed));
        assert_eq!(times.last(), Some(&(T0 + 60 * SEC)));
        // One more anywhere in that window is refused.
        let tat = decisions.last().unwrap().new_tat;
        assert!(!g.check(tat, T0 + 60 * SEC).allowed);
    }

    #[test]
    fn a_clock_that_went_back_refuses_with_a_finite_wait() {
        let g = starter();
        let tat = T0 + 3600 * SEC;
        let d = g.check(tat, T0);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, 3600 - 60 + 1);
        assert_eq!(d.new_tat, tat);
        // Saturating at the ends of the range, no panic.
        assert!(!g.check(u64::MAX, 0).allowed);
        let _ = g.check(u64::MAX, u64::MAX);
    }

    /// Request times: non-decreasing gaps from 0 up to a few intervals.
    fn times(max_gap_us: u64) -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(
            prop_oneof![Just(0u64), 0..max_gap_us, 0..10 * max_gap_us],
            1..400,
        )
        .prop_map(|gaps| {
            gaps.iter()
                .scan(T0, |t, g| {
                    *t += g;
                    Some(*t)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_burst_allows_exactly_min_n_quota(n in 1usize..600, quota in 1u32..300, at in 0u64..u64::MAX / 4) {
            let g = Gcra::per_minute(quota);
            let decisions = run(&g, &vec![at; n]);
            let allowed = decisions.iter().filter(|d| d.allowed).count();
            prop_assert_eq!(allowed, n.min(quota as usize));
            // The allowed ones come first: a refusal never lets a later one through.
            prop_assert!(decisions.iter().take(allowed).all(|d| d.allowed));
        }

        #[test]
        fn no_interval_admits_more_than_the_bound(
            quota in 1u32..50,
            times in times(3_000_000),
            len_us in prop_oneof![Just(60 * SEC), 0..120 * SEC],
        ) {
            let g = Gcra::per_minute(quota);
            let admitted: Vec<u64> = times
                .iter()
                .zip(run(&g, &times))
                .filter(|(_, d)| d.allowed)
                .map(|(t, _)| *t)
                .collect();
            let bound = u64::from(quota) + len_us / g.interval_us();
            for (i, start) in admitted.iter().enumerate() {
                let inside = admitted[i..].iter().take_while(|t| **t <= start + len_us).count();
                prop_assert!(inside as u64 <= bound, "{} in [{}, +{}] > {}", inside, start, len_us, bound);
            }
        }

        #[test]
        fn waiting_retry_after_admits_one(quota in 1u32..200, times in times(2_000_000)) {
            let g = Gcra::per_minute(quota);
            let mut tat = 0;
            for now in times {
                let d = g.check(tat, now);
                if !d.allowed {
                    prop_assert!(d.retry_after >= 1);
                    prop_assert_eq!(d.new_tat, tat);
                    prop_assert!(d.header_t() <= d.retry_after);
                    let later = g.check(tat, now + d.retry_after * SEC);
                    prop_assert!(later.allowed);
                    // And not much earlier: one second less is still too soon, unless the
                    // exact wait was rounded up by almost a second.
                    let exact = tat + g.interval_us() - g.tolerance_us() - now;
                    prop_assert!(exact > (d.retry_after - 1) * SEC);
                }
                tat = d.new_tat;
            }
        }

        #[test]
        fn remaining_and_reset_are_consistent(quota in 1u32..200, times in times(2_000_000)) {
            let g = Gcra::per_minute(quota);
            let mut tat = 0;
            for now in times {
                let d = g.check(tat, now);
                prop_assert!(d.remaining <= quota);
                if d.allowed {
                    prop_assert!(d.remaining < quota);
                    prop_assert_eq!(d.retry_after, 0);
                    prop_assert!(d.new_tat > tat);
                } else {
                    prop_assert_eq!(d.remaining, 0);
                }
                // After `reset` seconds the whole quota is back: a burst of quota passes.
                let back = now + d.reset * SEC;
                let burst = (0..quota).try_fold(d.new_tat, |t, _| {
                    let b = g.check(t, back);
                    b.allowed.then_some(b.new_tat)
                });
                prop_assert!(burst.is_some());
                tat = d.new_tat;
            }
        }

        #[test]
        fn remaining_counts_what_a_burst_now_would_get(quota in 1u32..100, times in times(2_000_000)) {
            let g = Gcra::per_minute(quota);
            let mut tat = 0;
            for now in times {
                let d = g.check(tat, now);
                tat = d.new_tat;
                let more = run_from(&g, tat, now, quota as usize + 1);
                prop_assert_eq!(more, d.remaining as usize);
            }
        }

        #[test]
        fn deterministic(quota in 1u32..100, times in times(2_000_000)) {
            let g = Gcra::per_minute(quota);
            prop_assert_eq!(run(&g, &times), run(&g, &times));
        }

        #[test]
        fn describe_agrees_with_check(quota in 1u32..100, times in times(2_000_000)) {
            let g = Gcra::per_minute(quota);
            let mut tat = 0;
            for now in times {
                let d = g.check(tat, now);
                prop_assert_eq!(g.describe(d.allowed, d.new_tat, now), d);
                tat = d.new_tat;
            }
        }
    }

    /// How many of `n` requests at `now` are allowed, starting from `tat`.
    fn run_from(g: &Gcra, mut tat: u64, now: u64, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            let d = g.check(tat, now);
            if d.allowed {
                allowed += 1;
            }
            tat = d.new_tat;
        }
        allowed
    }
}
