//! One failed step of a command call, classified once ([`Failure`]). Everything the call
//! path does with a failure is derived from that one value by one method each: the
//! `chom_ssh_commands_total` outcome label ([`Failure::metric_label`]), what the server's
//! breaker hears ([`Failure::observation`]), whether the retry step may try again
//! ([`Failure::may_retry`]) and the caller's [`ExecError`] (`From`), from which a job's
//! outcome follows (`JobError: From<ExecError>` in `jobs`).

use std::time::Duration;

use chom_core::breaker::Rejection;
use chom_ssh::{ErrorClass, SshError};

use super::ExecError;
use super::vps::Observation;

/// Why one attempt of a command call did not produce an output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// No such server in the inventory.
    UnknownVps(String),
    /// The server is in the inventory but its actor did not come up in time.
    Starting(String),
    /// The breaker turned the call away without touching the network.
    BreakerOpen {
        /// Why (the server and the breaker's state).
        reason: String,
        /// When a call may pass again.
        retry_in: Duration,
    },
    /// The bulkhead was full, or its waiting line ran out of time.
    Busy {
        /// Why.
        reason: String,
        /// When trying again makes sense.
        retry_in: Duration,
    },
    /// The server's actor stopped while answering (it is being restarted).
    ActorStopped(String),
    /// The host could not be reached or the session broke.
    Transport {
        /// What happened.
        message: String,
        /// Whether the command had been sent (it may have run).
        started: bool,
    },
    /// The host presented a key we do not trust.
    Security(String),
    /// The command ran past its limit; its channel was closed.
    Timeout(Duration),
    /// A local problem (private key unreadable).
    Local(String),
}

impl Failure {
    /// Classify an SSH error (from connecting or from running the command).
    pub(crate) fn from_ssh(error: &SshError) -> Failure {
        let message = error.to_string();
        match (error.class(), error) {
            (ErrorClass::Transport { started }, _) => Failure::Transport { message, started },
            (ErrorClass::Security, _) => Failure::Security(message),
            (ErrorClass::Timeout, SshError::CommandTimeout { limit, .. }) => {
                Failure::Timeout(*limit)
            }
            // `class()` gives Timeout only to CommandTimeout; anything else is not the host's.
            (ErrorClass::Timeout | ErrorClass::Local, _) => Failure::Local(message),
        }
    }

    /// The breaker's rejection of a call to `vps`; `open_timeout` when it names no time.
    pub(crate) fn breaker_open(vps: &str, rejection: &Rejection, open_timeout: Duration) -> Self {
        Failure::BreakerOpen {
            reason: format!("vps `{vps}`: {rejection}"),
            retry_in: rejection.retry_in.unwrap_or(open_timeout),
        }
    }

    /// The bulkhead of `vps` (at most `max_concurrent` at once) had no slot within
    /// `queue_timeout`.
    pub(crate) fn busy(vps: &str, max_concurrent: u32, queue_timeout: Duration) -> Self {
        Failure::Busy {
            reason: format!(
                "too many concurrent operations on {vps} (at most {max_concurrent} at once)"
            ),
            retry_in: queue_timeout.max(Duration::from_secs(1)),
        }
    }

    /// The `outcome` label of `chom_ssh_commands_total` (SPEC.md "Metrics"), or `None` when
    /// the failure is not a command attempt on the host (nothing was tried, or the fault is
    /// ours).
    pub(crate) fn metric_label(&self) -> Option<&'static str> {
        match self {
            Failure::BreakerOpen { .. } | Failure::Busy { .. } => Some("rejected"),
            // A refused host key ends the connection attempt like any transport failure.
            Failure::Transport { .. } | Failure::Security(_) => Some("transport_failed"),
            Failure::Timeout(_) => Some("command_failed"),
            Failure::UnknownVps(_)
            | Failure::Starting(_)
            | Failure::ActorStopped(_)
            | Failure::Local(_) => None,
        }
    }

    /// What the server's breaker hears about the permit the failed attempt held, or `None`
    /// when no permit was held or nobody is left to hear it. `generation` is the session the
    /// failure happened on, if one was in use (that session is dropped).
    pub(crate) fn observation(&self, generation: Option<u64>) -> Option<Observation> {
        match self {
            Failure::Transport { .. } => Some(Observation::TransportFailure { generation }),
            Failure::Security(reason) => Some(Observation::Security {
                reason: reason.clone(),
            }),
            // Nothing learnt about the host: the permit is given back.
            Failure::Busy { .. } | Failure::Timeout(_) | Failure::Local(_) => {
                Some(Observation::Cancelled)
            }
            Failure::UnknownVps(_)
            | Failure::Starting(_)
            | Failure::BreakerOpen { .. }
            | Failure::ActorStopped(_) => None,
        }
    }

    /// Whether another attempt may follow: only when the command cannot have run (a
    /// transport failure before it started, the actor restarting), or when it is
    /// `idempotent`.
    pub(crate) fn may_retry(&self, idempotent: bool) -> bool {
        match self {
            Failure::Transport { started, .. } => !started || idempotent,
            Failure::ActorStopped(_) => true,
            Failure::UnknownVps(_)
            | Failure::Starting(_)
            | Failure::BreakerOpen { .. }
            | Failure::Busy { .. }
            | Failure::Security(_)
            | Failure::Timeout(_)
            | Failure::Local(_) => false,
        }
    }

    /// The failure that ends the retries, given the `last` retryable one: an open breaker
    /// leaves the last real failure standing (the job's policy decides on it); only when
    /// nothing ran is the call turned away.
    pub(crate) fn ending(self, last: Option<Failure>) -> Failure {
        match (self, last) {
            (Failure::BreakerOpen { .. }, Some(last)) => last,
            (failure, _) => failure,
        }
    }
}

impl From<Failure> for ExecError {
    fn from(failure: Failure) -> ExecError {
        match failure {
            Failure::UnknownVps(vps) => ExecError::UnknownVps(vps),
            Failure::Starting(vps) => ExecError::Rejected {
                reason: format!("vps `{vps}` is starting"),
                retry_in: Duration::from_secs(5),
            },
            Failure::BreakerOpen { reason, retry_in } | Failure::Busy { reason, retry_in } => {
                ExecError::Rejected { reason, retry_in }
            }
            Failure::ActorStopped(vps) => {
                ExecError::Transport(format!("vps `{vps}` actor stopped during the call"))
            }
            Failure::Transport { message, .. } => ExecError::Transport(message),
            Failure::Security(message) => ExecError::Security(message),
            Failure::Timeout(limit) => ExecError::Timeout(limit),
            Failure::Local(message) => ExecError::Local(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use chom_core::breaker::BreakerState;

    use super::*;

    fn addr() -> String {
        "10.0.0.1:22".into()
    }

    fn transport(started: bool) -> Failure {
        Failure::Transport {
            message: "lost".into(),
            started,
        }
    }

    /// One of each, with its label, observation (on session 3), retry without and with
    /// idempotence.
    #[allow(clippy::type_complexity, reason = "a table")]
    fn table() -> Vec<(
        Failure,
        Option<&'static str>,
        Option<Observation>,
        bool,
        bool,
    )> {
        let lost = Some(Observation::TransportFailure {
            generation: Some(3),
        });
        let cancelled = Some(Observation::Cancelled);
        vec![
            (Failure::UnknownVps("v".into()), None, None, false, false),
            (Failure::Starting("v".into()), None, None, false, false),
            (
                Failure::breaker_open("v", &open(), Duration::from_secs(60)),
                Some("rejected"),
                None,
                false,
                false,
            ),
            (
                Failure::busy("v", 4, Duration::ZERO),
                Some("rejected"),
                cancelled.clone(),
                false,
                false,
            ),
            (Failure::ActorStopped("v".into()), None, None, true, true),
            (
                transport(false),
                Some("transport_failed"),
                lost.clone(),
                true,
                true,
            ),
            (transport(true), Some("transport_failed"), lost, false, true),
            (
                Failure::Security("key".into()),
                Some("transport_failed"),
                Some(Observation::Security {
                    reason: "key".into(),
                }),
                false,
                false,
            ),
            (
                Failure::Timeout(Duration::from_secs(1)),
                Some("command_failed"),
                cancelled.clone(),
                false,
                false,
            ),
            (
                Failure::Local("key file".into()),
                None,
                cancelled,
                false,
                false,
            ),
        ]
    }

    fn open() -> Rejection {
        Rejection {
            state: BreakerState::Open,
            retry_in: Some(Duration::from_secs(30)),
            reason: None,
        }
    }

    #[test]
    fn each_failure_has_one_label_one_observation_and_one_retry_rule() {
        for (failure, label, observation, retry, retry_idempotent) in table() {
            assert_eq!(failure.metric_label(), label, "{failure:?}");
            assert_eq!(failure.observation(Some(3)), observation, "{failure:?}");
            assert_eq!(failure.may_retry(false), retry, "{failure:?}");
            assert_eq!(failure.may_retry(true), retry_idempotent, "{failure:?}");
        }
    }

    #[test]
    fn ssh_errors_are_classified_by_their_class() {
        let limit = Duration::from_millis(800);
        let cases = [
            (
                SshError::Connect {
                    addr: addr(),
                    reason: "refused".into(),
                },
                transport(false),
            ),
            (
                SshError::SessionLost {
                    addr: addr(),
                    started: true,
                },
                transport(true),
            ),
            (
                SshError::CommandTimeout {
                    addr: addr(),
                    limit,
                },
                Failure::Timeout(limit),
            ),
            (
                SshError::UnknownHostKey {
                    addr: addr(),
                    known_hosts: "kh".into(),
                    presented: "fp".into(),
                },
                Failure::Security(String::new()),
            ),
            (
                SshError::Key {
                    path: "/k".into(),
                    reason: "unreadable".into(),
                },
                Failure::Local(String::new()),
            ),
        ];
        for (error, expected) in cases {
            let failure = Failure::from_ssh(&error);
            assert_eq!(
                std::mem::discriminant(&failure),
                std::mem::discriminant(&expected),
                "{error}"
            );
            match (&failure, &expected) {
                (
                    Failure::Transport { message, started },
                    Failure::Transport {
                        started: expected, ..
                    },
                ) => {
                    assert_eq!((message.as_str(), started), (&*error.to_string(), expected));
                }
                (Failure::Security(m) | Failure::Local(m), _) => assert_eq!(*m, error.to_string()),
                _ => assert_eq!(failure, expected),
            }
        }
    }

    #[test]
    fn callers_see_todays_errors() {
        let cases: [(Failure, &str); 6] = [
            (
                Failure::UnknownVps("web-9".into()),
                "no vps `web-9` in the inventory",
            ),
            (Failure::Starting("web-1".into()), "vps `web-1` is starting"),
            (
                Failure::breaker_open("web-1", &open(), Duration::from_secs(60)),
                "vps `web-1`: circuit breaker open (retry in 30s)",
            ),
            (
                Failure::busy("web-1", 4, Duration::from_secs(5)),
                "too many concurrent operations on web-1 (at most 4 at once)",
            ),
            (
                Failure::ActorStopped("web-1".into()),
                "vps `web-1` actor stopped during the call",
            ),
            (
                Failure::Timeout(Duration::from_millis(800)),
                "command timed out after 800ms",
            ),
        ];
        for (failure, text) in cases {
            assert_eq!(ExecError::from(failure).to_string(), text);
        }
        let retry_in = |f: Failure| match ExecError::from(f) {
            ExecError::Rejected { retry_in, .. } => retry_in,
            other => panic!("not a rejection: {other:?}"),
        };
        assert_eq!(
            retry_in(Failure::Starting("v".into())),
            Duration::from_secs(5)
        );
        // The breaker's own time, else the configured open timeout.
        assert_eq!(
            retry_in(Failure::breaker_open("v", &open(), Duration::from_secs(60))),
            Duration::from_secs(30)
        );
        let forced = Rejection {
            state: BreakerState::ForcedOpen,
            retry_in: None,
            reason: Some("operator".into()),
        };
        assert_eq!(
            retry_in(Failure::breaker_open("v", &forced, Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        // Never sooner than a second, however short the bulkhead's wait.
        assert_eq!(
            retry_in(Failure::busy("v", 1, Duration::from_millis(10))),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_in(Failure::busy("v", 1, Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn an_open_breaker_leaves_the_last_real_failure_standing() {
        let rejected = || Failure::breaker_open("v", &open(), Duration::from_secs(60));
        assert_eq!(rejected().ending(Some(transport(false))), transport(false));
        assert_eq!(rejected().ending(None), rejected());
        // Any other failure ends the retries as itself.
        let busy = Failure::busy("v", 1, Duration::ZERO);
        assert_eq!(busy.clone().ending(Some(transport(false))), busy);
    }
}
