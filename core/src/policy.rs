//! Retry policy per job kind: which queue, how many attempts, how long one may take, and how
//! long to wait before the next one.
//!
//! Resolution order for each field: the `jobs.<kind>` table of the config, then the code
//! default for built-in kinds ([`builtin`]), then the `[queue]` section. A job's own
//! `max_attempts`/`timeout` (given at enqueue) override the policy.

use std::time::Duration;

use rand::Rng;

use crate::config::Config;
use crate::job::JobKind;

/// The effective policy of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPolicy {
    /// Queue a job of this kind goes to when the enqueuer names none.
    pub queue: String,
    /// Attempts before the job fails for good.
    pub max_attempts: u32,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Delay before attempt n+1 is `backoff[n-1]`; the last value repeats (as Laravel's array).
    pub backoff: Vec<Duration>,
    /// Full jitter: the delay is uniform in [0, backoff value].
    pub jitter: bool,
}

/// Code defaults of the built-in kinds that differ from `[queue]` (SPEC.md "Jobs").
pub fn builtin(kind: &str) -> (Option<&'static str>, Option<u32>, Option<Duration>) {
    match JobKind::from_name(kind) {
        Some(JobKind::SiteProvision | JobKind::SiteDelete) => {
            (Some("high"), Some(5), Some(Duration::from_secs(300)))
        }
        _ => (None, None, None),
    }
}

impl JobPolicy {
    /// The policy of `kind` under `config`.
    pub fn resolve(kind: &str, config: &Config) -> JobPolicy {
        let q = &config.queue;
        let (b_queue, b_attempts, b_timeout) = builtin(kind);
        let over = config.jobs.get(kind);
        JobPolicy {
            queue: over
                .and_then(|o| o.queue.clone())
                .or_else(|| b_queue.map(str::to_owned))
                .unwrap_or_else(|| "default".to_owned()),
            max_attempts: over
                .and_then(|o| o.max_attempts)
                .or(b_attempts)
                .unwrap_or(q.max_attempts)
                .max(1),
            timeout: over
                .and_then(|o| o.timeout)
                .or(b_timeout)
                .unwrap_or(q.timeout),
            backoff: over
                .and_then(|o| o.backoff.clone())
                .unwrap_or_else(|| q.backoff.clone()),
            jitter: over.and_then(|o| o.jitter).unwrap_or(q.jitter),
        }
    }

    /// Delay after the failure of attempt number `attempt` (1-based).
    pub fn retry_delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let Some(last) = self.backoff.last() else {
            return Duration::ZERO;
        };
        let index = (attempt.max(1) - 1) as usize;
        let base = *self.backoff.get(index).unwrap_or(last);
        if self.jitter && !base.is_zero() {
            base.mul_f64(rng.random::<f64>())
        } else {
            base
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed; `permanent` errors are never retried (bad payload, unknown kind).
    Failed {
        /// What went wrong.
        error: String,
        /// True when retrying cannot help.
        permanent: bool,
    },
    /// The attempt ran past its timeout and was cancelled.
    TimedOut {
        /// The limit it exceeded.
        limit: Duration,
    },
    /// The attempt could not start for a reason outside the job (its server's bulkhead full,
    /// its breaker open): it does not count, the job runs again after `after`.
    Deferred {
        /// Why it could not run now.
        reason: String,
        /// When trying again makes sense.
        after: Duration,
    },
}

/// What to do with the job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Mark it completed.
    Complete,
    /// Run it again after `delay`.
    Retry {
        /// Wait before the next attempt.
        delay: Duration,
        /// The error to record.
        error: String,
    },
    /// Move it to failed_jobs.
    Fail {
        /// The error to record.
        error: String,
    },
    /// Run it again after `delay` without counting the attempt.
    Defer {
        /// Wait before the next attempt.
        delay: Duration,
        /// The reason to record.
        error: String,
    },
}

/// Decide after attempt number `attempts` (1-based, as counted at claim) of `max_attempts`. A
/// deferred attempt does not count, so it is deferred whatever the attempts.
pub fn decide<R: Rng + ?Sized>(
    outcome: &AttemptOutcome,
    attempts: u32,
    max_attempts: u32,
    policy: &JobPolicy,
    rng: &mut R,
) -> Decision {
    let (error, permanent) = match outcome {
        AttemptOutcome::Succeeded => return Decision::Complete,
        AttemptOutcome::Failed { error, permanent } => (error.clone(), *permanent),
        AttemptOutcome::TimedOut { limit } => (
            format!("timed out after {}", humantime::format_duration(*limit)),
            false,
        ),
        AttemptOutcome::Deferred { reason, after } => {
            return Decision::Defer {
                delay: *after,
                error: reason.clone(),
            };
        }
    };
    if permanent || attempts >= max_attempts {
        Decision::Fail { error }
    } else {
        Decision::Retry {
            delay: policy.retry_delay(attempts, rng),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn policy(backoff: &[u64], jitter: bool) -> JobPolicy {
        JobPolicy {
            queue: "default".into(),
            max_attempts: 3,
            timeout: Duration::from_secs(1),
            backoff: backoff.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter,
        }
    }

    #[test]
    fn backoff_list_last_value_repeats() {
        let p = policy(&[30, 60, 180], false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (1..=5)
            .map(|a| p.retry_delay(a, &mut rng).as_secs())
            .collect();
        assert_eq!(delays, vec![30, 60, 180, 180, 180]);
    }

    #[test]
    fn resolution_order_is_config_then_builtin_then_queue_section() {
        let mut config = Config::default();
        let p = JobPolicy::resolve("site.provision", &config);
        assert_eq!(
            (p.queue.as_str(), p.max_attempts, p.timeout),
            ("high", 5, Duration::from_secs(300))
        );
        let n = JobPolicy::resolve("noop", &config);
        assert_eq!(
            (n.queue.as_str(), n.max_attempts, n.timeout),
            ("default", 3, Duration::from_secs(180))
        );
        config.jobs.insert(
            "site.provision".into(),
            crate::config::JobPolicyConfig {
                max_attempts: Some(7),
                ..Default::default()
            },
        );
        let o = JobPolicy::resolve("site.provision", &config);
        assert_eq!((o.queue.as_str(), o.max_attempts), ("high", 7));
    }

    #[test]
    fn decisions() {
        let p = policy(&[1, 2], false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let failed = |error: &str, permanent| AttemptOutcome::Failed {
            error: error.into(),
            permanent,
        };
        let retry = |secs, error: &str| Decision::Retry {
            delay: Duration::from_secs(secs),
            error: error.into(),
        };
        let fail = |error: &str| Decision::Fail {
            error: error.into(),
        };
        // (case, outcome, attempts of 3, decision)
        let cases = [
            (
                "succeeded",
                AttemptOutcome::Succeeded,
                1,
                Decision::Complete,
            ),
            (
                "failed, attempts left",
                failed("x", false),
                1,
                retry(1, "x"),
            ),
            ("failed, none left", failed("x", false), 3, fail("x")),
            (
                "permanent",
                failed("bad payload", true),
                1,
                fail("bad payload"),
            ),
            (
                "deferred, none left",
                AttemptOutcome::Deferred {
                    reason: "breaker open".into(),
                    after: Duration::from_secs(9),
                },
                3,
                Decision::Defer {
                    delay: Duration::from_secs(9),
                    error: "breaker open".into(),
                },
            ),
            (
                "timed out",
                AttemptOutcome::TimedOut {
                    limit: Duration::from_millis(500),
                },
                2,
                retry(2, "timed out after 500ms"),
            ),
        ];
        for (case, outcome, attempts, expected) in cases {
            assert_eq!(
                decide(&outcome, attempts, 3, &p, &mut rng),
                expected,
                "{case}"
            );
        }
    }

    proptest! {
        #[test]
        fn jittered_delay_is_within_zero_and_the_base(attempt in 1u32..20, seed in any::<u64>(), list in prop::collection::vec(0u64..1000, 1..5)) {
            let p = policy(&list, true);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let base = Duration::from_secs(*list.get(attempt as usize - 1).unwrap_or(list.last().unwrap()));
            let d = p.retry_delay(attempt, &mut rng);
            prop_assert!(d <= base);
        }

        #[test]
        fn never_retries_past_max_attempts(attempts in 1u32..10, max in 1u32..10, permanent in any::<bool>()) {
            let p = policy(&[1], false);
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let d = decide(&AttemptOutcome::Failed { error: "e".into(), permanent }, attempts, max, &p, &mut rng);
            let retried = matches!(d, Decision::Retry { .. });
            prop_assert_eq!(retried, !permanent && attempts < max);
        }
    }
}
