//! At most one report per interval of a condition that repeats (a database that cannot be
//! reached, a connection limit reached): the first occurrence is reported at once, the next
//! ones are counted and folded into the next report once the interval has passed. Pure: the
//! caller passes the time and writes the log line.

use std::time::{Duration, Instant};

/// A throttle for one repeated report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    interval: Duration,
    reported_at: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// At most one report per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            reported_at: None,
            held: 0,
        }
    }

    /// Note one occurrence at `now`. `Some(n)` when it is to be reported: `n` occurrences since
    /// the last report, this one included. `None`: held back, counted for the next report.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.held += 1;
        let due = self
            .reported_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
        if !due {
            return None;
        }
        self.reported_at = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// Start over (the condition ended): the next occurrence is reported at once.
    pub fn reset(&mut self) {
        self.reported_at = None;
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reports_the_first_then_one_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Throttle::new(Duration::from_secs(30));
        assert_eq!(t.note(at(0)), Some(1));
        assert_eq!(t.note(at(1_000)), None);
        assert_eq!(t.note(at(29_999)), None);
        assert_eq!(t.note(at(30_000)), Some(3));
        assert_eq!(t.note(at(90_000)), Some(1));
        t.note(at(90_001));
        t.reset();
        assert_eq!(
            t.note(at(90_002)),
            Some(1),
            "reported at once, the held one forgotten"
        );
    }

    proptest! {
        #[test]
        fn reports_are_an_interval_apart_and_every_occurrence_is_counted_once(
            interval_ms in 1u64..10_000,
            gaps in proptest::collection::vec(0u64..5_000, 1..300),
        ) {
            let t0 = Instant::now();
            let interval = Duration::from_millis(interval_ms);
            let mut t = Throttle::new(interval);
            let (mut now, mut reported, mut counted) = (t0, Vec::new(), 0u64);
            for gap in &gaps {
                now += Duration::from_millis(*gap);
                if let Some(n) = t.note(now) {
                    reported.push(now);
                    counted += n;
                }
            }
            // The first occurrence is always reported.
            prop_assert_eq!(reported.first().copied(), Some(t0 + Duration::from_millis(gaps[0])));
            for pair in reported.windows(2) {
                prop_assert!(pair[1] - pair[0] >= interval);
            }
            prop_assert_eq!(counted + t.held, gaps.len() as u64);
        }
    }
}
