//! Restart intensity: how many restarts a supervisor tolerates before it gives up.
//!
//! This is OTP's rule (`supervisor:add_restart/1`): every restart is timestamped; the
//! timestamps older than `period` are forgotten; if more than `max_restarts` remain
//! (counting the new one), the supervisor must stop its children and fail upward.
//! The code is pure and takes `now` as an argument, so it is tested without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart intensity limit of one supervisor: at most `max_restarts` restarts within any
/// `period`; one more and the supervisor escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts tolerated within `period`. `0` means the first restart already escalates.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

impl Intensity {
    /// A limit of `max_restarts` restarts within `period`.
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Self {
            max_restarts,
            period,
        }
    }
}

impl Default for Intensity {
    /// OTP's default: one restart within five seconds.
    fn default() -> Self {
        Self::new(1, Duration::from_secs(5))
    }
}

/// Verdict for one restart recorded in an [`IntensityTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The restart is within the limit: go ahead.
    Allowed,
    /// More than `max_restarts` restarts within `period`: the supervisor must give up.
    Exceeded,
}

/// Sliding-window restart counter of one supervisor (the supervisor owns it in its state).
#[derive(Clone, Debug, Default)]
pub struct IntensityTracker {
    /// Timestamps of the restarts still inside the window, oldest first.
    restarts: VecDeque<Instant>,
}

// === impl IntensityTracker ===

impl IntensityTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a restart happening at `now` and says whether it is still allowed.
    ///
    /// `now` must not go backwards between calls (a monotonic clock).
    pub fn record(&mut self, limit: &Intensity, now: Instant) -> Verdict {
        // OTP keeps restarts with `R >= Now - Period`: the window is closed at both ends.
        if let Some(threshold) = now.checked_sub(limit.period) {
            while self.restarts.front().is_some_and(|&at| at < threshold) {
                self.restarts.pop_front();
            }
        }
        self.restarts.push_back(now);
        if self.restarts.len() as u64 > u64::from(limit.max_restarts) {
            Verdict::Exceeded
        } else {
            Verdict::Allowed
        }
    }

    /// Number of restarts currently remembered (inside the window at the last `record`).
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    /// True when no restart is remembered.
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn zero_restarts_escalates_on_first() {
        let mut t = IntensityTracker::new();
        let limit = Intensity::new(0, Duration::from_secs(5));
        assert_eq!(t.record(&limit, Instant::now()), Verdict::Exceeded);
    }

    #[test]
    fn window_is_closed_at_both_ends() {
        let base = Instant::now();
        let limit = Intensity::new(1, Duration::from_millis(100));
        let mut t = IntensityTracker::new();
        assert_eq!(t.record(&limit, at(base, 0)), Verdict::Allowed);
        // exactly `period` later the first restart is still inside the window (OTP: >=)
        assert_eq!(t.record(&limit, at(base, 100)), Verdict::Exceeded);

        let mut t = IntensityTracker::new();
        assert_eq!(t.record(&limit, at(base, 0)), Verdict::Allowed);
        assert_eq!(t.record(&limit, at(base, 101)), Verdict::Allowed);
    }

    /// Reference model: OTP's definition written the slow, obvious way.
    fn otp_exceeds(history: &[Instant], now: Instant, limit: &Intensity) -> bool {
        let in_window = history
            .iter()
            .chain(std::iter::once(&now))
            .filter(|&&t| now.duration_since(t) <= limit.period)
            .count();
        in_window as u64 > u64::from(limit.max_restarts)
    }

    proptest! {
        /// Exceeding is reported exactly when OTP would, and the restarts that were allowed
        /// never number more than `max_restarts` in any window of length `period`.
        #[test]
        fn matches_otp_and_bounds_every_window(
            max_restarts in 0u32..6,
            period_ms in 1u64..500,
            gaps in proptest::collection::vec(0u64..200, 1..60),
        ) {
            let base = Instant::now();
            let limit = Intensity::new(max_restarts, Duration::from_millis(period_ms));
            let mut tracker = IntensityTracker::new();
            let mut history = Vec::new();
            let mut now_ms = 0;
            for gap in gaps {
                now_ms += gap;
                let now = at(base, now_ms);
                let verdict = tracker.record(&limit, now);
                let expected = otp_exceeds(&history, now, &limit);
                prop_assert_eq!(verdict == Verdict::Exceeded, expected);
                if verdict == Verdict::Exceeded {
                    // the supervisor is gone after this, nothing more is recorded
                    break;
                }
                history.push(now);
            }
            // the densest window of length `period` ends at one of the allowed restarts
            for &end in &history {
                let count = history
                    .iter()
                    .filter(|&&t| t <= end && end.duration_since(t) <= limit.period)
                    .count();
                prop_assert!(count as u64 <= u64::from(max_restarts));
            }
            prop_assert!(tracker.len() as u64 <= u64::from(max_restarts) + 1);
        }
    }
}
