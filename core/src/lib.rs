//! Pure domain types and state machines of the CHOM node: configuration (parsed and
//! validated from text; the binary reads the files), input bounds, jobs and their retry
//! policy, the circuit breaker, remediation, retry pacing, log throttling and the
//! observability query policy (live, probe or cache), the alerts received from
//! Alertmanager, tenant API tokens, the tenant API's rate limit (GCRA) and tenant-scoped
//! PromQL. No IO: every input, the time included, is handed in (the one exception: a new API
//! token's random bytes come from the operating system).

#![warn(missing_docs)]

pub mod alert;
pub mod backoff;
pub mod breaker;
pub mod config;
pub mod inventory;
pub mod job;
pub mod lease;
pub mod limits;
pub mod observe;
pub mod policy;
pub mod promql;
pub mod ratelimit;
pub mod remediation;
pub mod signin;
pub mod throttle;
pub mod token;
