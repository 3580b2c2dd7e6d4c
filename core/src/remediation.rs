//! When to heal a failing health check, and when to stop trying: a pure, clock-injected state
//! machine per check, the way monit protects against restart loops.
//!
//! A check that fails `failures_before` times in a row is remediated (its owner restarted, or
//! its configured command run), and its failure streak starts again. More than
//! `max_remediations` remediations within `window` stop remediation for that check: it is
//! reported as an error with "remediation exhausted" until it has passed `recovery_cycles`
//! times in a row, after which remediation is armed again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The thresholds (`[health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemediationPolicy {
    /// Consecutive failures before a remediation (`health.failures_before_restart`).
    pub failures_before: u32,
    /// Remediations allowed within `window` (`health.max_remediations`).
    pub max_remediations: u32,
    /// Sliding window of `max_remediations` (`health.remediation_window`).
    pub window: Duration,
    /// Consecutive passes that re-arm an exhausted check (`health.recovery_cycles`).
    pub recovery_cycles: u32,
}

/// What to do after one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Remediate now.
    Remediate,
    /// Too many remediations: stop and report (returned once, when it happens).
    Exhausted,
    /// An exhausted check passed long enough: remediation is armed again (returned once).
    Rearmed,
}

/// One check's remediation state.
#[derive(Debug, Clone)]
pub struct Remediator {
    policy: RemediationPolicy,
    streak: u32,
    passes: u32,
    history: VecDeque<Instant>,
    exhausted: bool,
}

impl Remediator {
    /// A fresh, armed remediator.
    pub fn new(policy: RemediationPolicy) -> Self {
        Remediator {
            policy,
            streak: 0,
            passes: 0,
            history: VecDeque::new(),
            exhausted: false,
        }
    }

    /// Whether remediation gave up for now.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Consecutive failures seen.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Remediations inside the window as of `now`.
    pub fn recent(&self, now: Instant) -> usize {
        self.history
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.policy.window)
            .count()
    }

    /// Feed one check result (`failed`: the check is in error).
    pub fn observe(&mut self, failed: bool, now: Instant) -> Action {
        while let Some(first) = self.history.front() {
            if now.saturating_duration_since(*first) >= self.policy.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if !failed {
            self.streak = 0;
            self.passes = self.passes.saturating_add(1);
            if self.exhausted && self.passes >= self.policy.recovery_cycles.max(1) {
                self.exhausted = false;
                self.history.clear();
                return Action::Rearmed;
            }
            return Action::None;
        }
        self.passes = 0;
        self.streak = self.streak.saturating_add(1);
        if self.exhausted || self.streak < self.policy.failures_before.max(1) {
            return Action::None;
        }
        self.streak = 0;
        if self.history.len() >= self.policy.max_remediations as usize {
            self.exhausted = true;
            return Action::Exhausted;
        }
        self.history.push_back(now);
        Action::Remediate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RemediationPolicy {
        RemediationPolicy {
            failures_before: 3,
            max_remediations: 2,
            window: Duration::from_secs(600),
            recovery_cycles: 2,
        }
    }

    #[test]
    fn three_failures_remediate_then_the_streak_restarts() {
        let t = Instant::now();
        let mut r = Remediator::new(policy());
        assert_eq!(r.observe(true, t), Action::None);
        assert_eq!(r.observe(true, t), Action::None);
        assert_eq!(r.observe(true, t), Action::Remediate);
        assert_eq!(r.observe(true, t), Action::None);
        // A pass in between resets the streak.
        assert_eq!(r.observe(false, t), Action::None);
        assert_eq!(r.observe(true, t), Action::None);
        assert_eq!(r.observe(true, t), Action::None);
        assert_eq!(r.observe(true, t), Action::Remediate);
    }

    #[test]
    fn too_many_remediations_exhaust_until_recovered() {
        let t = Instant::now();
        let mut r = Remediator::new(policy());
        let mut actions = Vec::new();
        for _ in 0..12 {
            actions.push(r.observe(true, t));
        }
        let remediations = actions.iter().filter(|a| **a == Action::Remediate).count();
        assert_eq!(remediations, 2);
        assert_eq!(
            actions.iter().filter(|a| **a == Action::Exhausted).count(),
            1
        );
        assert!(r.exhausted());
        assert_eq!(r.observe(false, t), Action::None);
        assert_eq!(r.observe(false, t), Action::Rearmed);
        assert!(!r.exhausted());
        for _ in 0..2 {
            r.observe(true, t);
        }
        assert_eq!(r.observe(true, t), Action::Remediate);
    }

    #[test]
    fn old_remediations_leave_the_window() {
        let t = Instant::now();
        let mut r = Remediator::new(policy());
        for i in 0..30u64 {
            // One remediation every 301 s: never more than 2 in 600 s.
            let now = t + Duration::from_secs(i / 3 * 301);
            assert_ne!(r.observe(true, now), Action::Exhausted, "at {i}");
        }
    }

    proptest! {
        #[test]
        /// Between two re-armings, never more than `max_remediations` within any window.
        fn never_more_than_max_remediations_in_any_window(
            steps in proptest::collection::vec((any::<bool>(), 0u64..120), 1..300)
        ) {
            let p = policy();
            let mut r = Remediator::new(p);
            let mut now = Instant::now();
            let mut done: Vec<Instant> = Vec::new();
            for (failed, dt) in steps {
                now += Duration::from_secs(dt);
                match r.observe(failed, now) {
                    Action::Remediate => {
                        prop_assert!(failed);
                        prop_assert!(!r.exhausted());
                        done.push(now);
                    }
                    // A proven recovery starts the count afresh.
                    Action::Rearmed => done.clear(),
                    Action::Exhausted => prop_assert!(r.exhausted()),
                    Action::None => {}
                }
                let in_window = done.iter().filter(|t| now.saturating_duration_since(**t) < p.window).count();
                prop_assert!(in_window <= p.max_remediations as usize);
            }
        }
    }
}
