//! The retry pace of work that waits for a dependency to come back (the database, a lock):
//! delays that double from a first one up to a cap, without jitter. Pure: it only computes
//! delays; the caller sleeps. (Restarts of actors use the supervisors' jittered `Backoff`.)

use std::time::Duration;

/// Doubling delays from `first`, capped at `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doubling {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Doubling {
    /// Delays `first`, `2·first`, `4·first`, ... never above `max` (nor below `first`).
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        Doubling {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        now
    }

    /// Start again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut d = Doubling::new(Duration::from_millis(100), Duration::from_secs(1));
        let seen: Vec<u64> = (0..6).map(|_| d.next_delay().as_millis() as u64).collect();
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000]);
        d.reset();
        assert_eq!(d.next_delay(), Duration::from_millis(100));
    }

    proptest! {
        #[test]
        fn delays_never_shrink_and_stay_within_bounds(first_ms in 0u64..10_000, max_ms in 0u64..100_000, n in 1usize..200) {
            let (first, max) = (Duration::from_millis(first_ms), Duration::from_millis(max_ms));
            let mut d = Doubling::new(first, max);
            let mut last = Duration::ZERO;
            for _ in 0..n {
                let delay = d.next_delay();
                prop_assert!(delay >= last && delay >= first && delay <= max.max(first));
                last = delay;
            }
        }
    }
}
