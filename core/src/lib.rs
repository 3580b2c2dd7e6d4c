//! Pure domain types and state machines of the CHOM node: configuration (parsed and
//! validated from text; the binary reads the files), input bounds, jobs and their retry
//! policy, the circuit breaker, remediation, retry pacing, log throttling and the
//! observability query policy (live, probe or cache), the alerts received from
//! Alertmanager, and the tenant API's rate limit (GCRA). No IO: every
//! input, the time included, is handed in.

#![warn(missing_docs)]

pub mod alert;
pub mod backoff;
pub mod breaker;
pub mod config;
pub mod inventory;
pub mod job;
pub mod limits;
pub mod observe;
pub mod policy;
pub mod ratelimit;
pub mod remediation;
pub mod throttle;
