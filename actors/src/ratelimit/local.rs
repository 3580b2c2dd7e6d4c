//! An in-process limiter: chom-core's GCRA over a map of TATs behind a mutex, on the process'
//! monotonic clock. It serves `cache.url = memory://` and is the fallback while Redis is
//! unreachable. The map is bounded: at [`LocalLimiter::max_tenants`] it first forgets the
//! tenants whose budget is full again (their TAT has passed, so forgetting changes nothing),
//! then the one closest to a full budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chom_core::ratelimit::{Decision, Gcra};

/// Per-tenant TATs of one process.
#[derive(Debug)]
pub(super) struct LocalLimiter {
    /// Time 0 of the TATs, in microseconds after this instant (0 itself means "no TAT").
    epoch: Instant,
    tats: Mutex<HashMap<i64, u64>>,
    max_tenants: usize,
}

impl LocalLimiter {
    /// An empty limiter that tracks at most `max_tenants` tenants (at least 1).
    pub(super) fn new(max_tenants: usize) -> LocalLimiter {
        LocalLimiter {
            epoch: Instant::now(),
            tats: Mutex::default(),
            max_tenants: max_tenants.max(1),
        }
    }

    /// Decide one request of `tenant` at `now`.
    pub(super) fn check(&self, tenant: i64, gcra: &Gcra, now: Instant) -> Decision {
        // +1: a first request at the epoch itself must not look like "no TAT" afterwards.
        let now_us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut tats = self.tats.lock().expect("rate limiter lock");
        let decision = gcra.check(tats.get(&tenant).copied().unwrap_or(0), now_us);
        if decision.allowed {
            if tats.len() >= self.max_tenants && !tats.contains_key(&tenant) {
                make_room(&mut tats, self.max_tenants, now_us);
            }
            tats.insert(tenant, decision.new_tat);
        }
        decision
    }

    /// Tenants tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tats.lock().expect("rate limiter lock").len()
    }
}

/// Frees at least one slot of a full map: every TAT already passed, else the smallest one
/// (the tenant nearest to a full budget loses the least by being forgotten).
fn make_room(tats: &mut HashMap<i64, u64>, max: usize, now_us: u64) {
    tats.retain(|_, tat| *tat > now_us);
    if tats.len() >= max
        && let Some(oldest) = tats.iter().min_by_key(|(_, tat)| **tat).map(|(t, _)| *t)
    {
        tats.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_per_tenant_on_the_given_clock() {
        let limiter = LocalLimiter::new(10);
        let g = Gcra::per_minute(3);
        let t0 = Instant::now();
        let allowed = |tenant, at| limiter.check(tenant, &g, at).allowed;
        assert!((0..3).all(|_| allowed(1, t0)));
        assert!(!allowed(1, t0));
        assert!(allowed(2, t0), "another tenant has its own budget");
        assert!(!allowed(1, t0 + Duration::from_secs(19)));
        assert!(allowed(1, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_full_budgets_first() {
        let limiter = LocalLimiter::new(3);
        let g = Gcra::per_minute(60);
        let t0 = Instant::now();
        for tenant in 1..=3 {
            limiter.check(tenant, &g, t0);
        }
        // Tenant 3 keeps using its budget; 1 and 2 are full again a second later.
        for _ in 0..30 {
            limiter.check(3, &g, t0);
        }
        let later = t0 + Duration::from_secs(2);
        for tenant in 4..=5 {
            assert!(limiter.check(tenant, &g, later).allowed);
        }
        assert_eq!(limiter.tracked(), 3);
        // Tenant 3 was remembered: its budget is still spent down.
        let d = limiter.check(3, &g, later);
        assert!(d.remaining < 40, "{d:?}");
        // With every entry live, the one nearest to a full budget goes.
        for tenant in 6..100 {
            assert!(limiter.check(tenant, &g, later).allowed);
            assert!(limiter.tracked() <= 3);
        }
    }
}
