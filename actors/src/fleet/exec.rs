//! The steps of a command call, each usable and tested alone; [`Fleet::exec`] composes them
//! (outermost first):
//!
//! 1. [`Retry`]: runs attempts, pausing `base · 2^(n-1)` plus up to as much again of jitter
//!    before attempt n+1, while [`Failure::may_retry`] allows it;
//! 2. breaker admission: the server's actor gives a permit or a rejection
//!    ([`Failure::breaker_open`]), without touching the network;
//! 3. [`Bulkhead`]: at most `ssh.max_concurrent` commands at once per server, a bounded
//!    waiting line, each waiter at most `ssh.queue_timeout`;
//! 4. the command on the server's session under `ssh.command_timeout` (the limit is enforced
//!    by `chom_ssh`, which closes the channel when it passes);
//!
//! and then, from the classified result, the metric ([`outcome_label`]) and, after it, the
//! breaker's observation, so the metrics never lag the breaker.
//!
//! [`Fleet::exec`]: super::Fleet::exec

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chom_ssh::Output;
use rand::Rng as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::failure::Failure;

/// Waiters allowed per server beyond the running commands; more are rejected at once.
pub(crate) const MAX_WAITING: usize = 64;

/// At most `max` commands at once on one server; up to `max_waiting` more wait for a slot.
/// Kept by the fleet, not the VPS actor, so that a restarted actor does not hand out a fresh
/// set of slots while commands of the old one still run.
pub(crate) struct Bulkhead {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Bulkhead {
    /// `max` slots (at least one) and a line of `max_waiting`.
    pub(crate) fn new(max: usize, max_waiting: usize) -> Bulkhead {
        Bulkhead {
            slots: Arc::new(Semaphore::new(max.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot, waiting at most `limit`; `None` when the line is full or the wait ran out.
    pub(crate) async fn enter(&self, limit: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let slot = tokio::time::timeout(limit, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        slot.ok().and_then(Result::ok)
    }
}

/// Attempts of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// Attempts at most (at least one is made).
    pub attempts: u32,
    /// Pause before the second attempt, doubled for each one after.
    pub base: Duration,
    /// Whether the command may run twice (`ssh.idempotent_commands`).
    pub idempotent: bool,
}

impl Retry {
    /// Run `attempt(n)` for n = 1, 2, ... until it succeeds, fails in a way that allows no
    /// retry ([`Failure::may_retry`], [`Failure::ending`]), or the attempts run out (the last
    /// failure stands).
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut last = None;
        for n in 1..=self.attempts.max(1) {
            if n > 1 {
                tokio::time::sleep(retry_delay(self.base, n - 1)).await;
            }
            match attempt(n).await {
                Ok(value) => return Ok(value),
                Err(failure) if failure.may_retry(self.idempotent) => last = Some(failure),
                Err(failure) => return Err(failure.ending(last)),
            }
        }
        Err(last.unwrap_or_else(|| Failure::Transport {
            message: "no attempt was made".into(),
            started: false,
        }))
    }
}

/// Delay before retry `n` (1-based): `base · 2^(n-1)` plus up to as much again of jitter.
pub(crate) fn retry_delay(base: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1 << (n - 1).min(16));
    let jitter = rand::rng().random_range(0.0..=1.0);
    exp + exp.mul_f64(jitter)
}

/// The `chom_ssh_commands_total` outcome of an attempt that got past the breaker: a command
/// that ran is `ok` or `command_failed` by its exit status, a failure says its own.
pub(crate) fn outcome_label(result: &Result<Output, Failure>) -> Option<&'static str> {
    match result {
        Ok(output) if output.success() => Some("ok"),
        Ok(_) => Some("command_failed"),
        Err(failure) => failure.metric_label(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        for n in 1..=4 {
            let floor = base * (1 << (n - 1));
            for _ in 0..100 {
                let d = retry_delay(base, n);
                assert!(d >= floor && d <= floor * 2, "retry {n}: {d:?}");
            }
        }
    }

    fn lost(started: bool) -> Failure {
        Failure::Transport {
            message: "lost".into(),
            started,
        }
    }

    fn retry(attempts: u32, idempotent: bool) -> Retry {
        Retry {
            attempts,
            base: Duration::from_secs(1),
            idempotent,
        }
    }

    /// Run `retry` with attempts answered by `answers` in turn; the times of the attempts
    /// (offsets from the start) and the result.
    async fn scripted(
        retry: Retry,
        answers: Vec<Result<u32, Failure>>,
    ) -> (Vec<Duration>, Result<u32, Failure>) {
        let t0 = Instant::now();
        let times = Mutex::new(Vec::new());
        let answers = Mutex::new(answers.into_iter());
        let result = retry
            .run(|_| {
                times.lock().unwrap().push(t0.elapsed());
                let answer = answers
                    .lock()
                    .unwrap()
                    .next()
                    .expect("an answer per attempt");
                async move { answer }
            })
            .await;
        (times.into_inner().unwrap(), result)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_before_the_command_started_are_retried_at_a_doubling_pace() {
        let (times, result) = scripted(retry(4, false), vec![Err(lost(false)); 4]).await;
        assert_eq!(result, Err(lost(false)));
        assert_eq!(times.len(), 4);
        for (n, pair) in times.windows(2).enumerate() {
            let floor = Duration::from_secs(1 << n);
            let gap = pair[1] - pair[0];
            assert!(gap >= floor && gap <= floor * 2, "pause {}: {gap:?}", n + 1);
        }
        let (times, result) = scripted(retry(3, false), vec![Err(lost(false)), Ok(7)]).await;
        assert_eq!((times.len(), result), (2, Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_that_may_have_run_is_retried_only_when_idempotent() {
        let (times, result) = scripted(retry(3, false), vec![Err(lost(true))]).await;
        assert_eq!((times, result), (vec![Duration::ZERO], Err(lost(true))));
        let (times, result) = scripted(retry(3, true), vec![Err(lost(true)); 3]).await;
        assert_eq!((times.len(), result), (3, Err(lost(true))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_ends_the_retries_with_the_last_real_failure() {
        let open = Failure::BreakerOpen {
            reason: "open".into(),
            retry_in: Duration::from_secs(30),
        };
        let (times, result) =
            scripted(retry(5, false), vec![Err(lost(false)), Err(open.clone())]).await;
        assert_eq!((times.len(), result), (2, Err(lost(false))));
        // Turned away before anything ran: the rejection itself.
        let (times, result) = scripted(retry(5, false), vec![Err(open.clone())]).await;
        assert_eq!((times.len(), result), (1, Err(open)));
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_end_the_retries_as_themselves() {
        for failure in [
            Failure::Timeout(Duration::from_secs(1)),
            Failure::Security("key".into()),
            Failure::busy("v", 1, Duration::ZERO),
            Failure::Starting("v".into()),
        ] {
            let (times, result) =
                scripted(retry(5, true), vec![Err(lost(false)), Err(failure.clone())]).await;
            assert_eq!((times.len(), result), (2, Err(failure)));
        }
        // A restarting actor is retried like a failure before the command started.
        let stopped = Failure::ActorStopped("v".into());
        let (times, result) = scripted(retry(2, false), vec![Err(stopped.clone()); 2]).await;
        assert_eq!((times.len(), result), (2, Err(stopped)));
    }

    #[tokio::test(start_paused = true)]
    async fn at_least_one_attempt_is_made() {
        let (times, result) = scripted(retry(0, false), vec![Ok(1)]).await;
        assert_eq!((times.len(), result), (1, Ok(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bulkhead_admits_max_then_waits_at_most_the_limit() {
        let b = Bulkhead::new(2, MAX_WAITING);
        let first = b.enter(Duration::from_millis(10)).await;
        let second = b.enter(Duration::from_millis(10)).await;
        assert!(first.is_some() && second.is_some());
        let started = Instant::now();
        assert!(b.enter(Duration::from_millis(50)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        // A slot given back goes to the next caller.
        drop(first);
        assert!(b.enter(Duration::from_millis(10)).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_given_back() {
        let b = Arc::new(Bulkhead::new(1, MAX_WAITING));
        let held = b.enter(Duration::ZERO).await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let started = Instant::now();
                b.enter(Duration::from_secs(10))
                    .await
                    .map(|_| started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_line_is_bounded_and_refuses_at_once() {
        let b = Arc::new(Bulkhead::new(1, 2));
        let _held = b.enter(Duration::ZERO).await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.enter(Duration::from_secs(60)).await.is_some() })
            })
            .collect();
        for _ in 0..1000 {
            if b.waiting.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.waiting.load(Ordering::SeqCst),
            2,
            "the waiters never lined up"
        );
        let started = Instant::now();
        assert!(b.enter(Duration::from_secs(60)).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The two in line wait out their limit (the slot is never given back).
        for waiter in waiters {
            assert!(!waiter.await.unwrap());
        }
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_metric_comes_from_the_classified_result() {
        let output = |status| Output {
            exit_status: Some(status),
            exit_signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            json: None,
            elapsed: Duration::ZERO,
        };
        assert_eq!(outcome_label(&Ok(output(0))), Some("ok"));
        assert_eq!(outcome_label(&Ok(output(3))), Some("command_failed"));
        assert_eq!(outcome_label(&Err(lost(true))), Some("transport_failed"));
        assert_eq!(outcome_label(&Err(Failure::Local("k".into()))), None);
    }
}
