//! Every actor of the CHOM node, one file each, plus the IO-facing pieces they own.
//!
//! Dependencies point one way: `chom-core` (pure) -> this crate -> the `chom` binary.
//! `chom-supervisors` knows nothing of this crate; actors here are supervised by it.

pub mod backends;
pub mod cache;
pub mod context;
pub mod fleet;
pub mod handles;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod monitors;
pub mod notify;
pub mod observability;
pub mod queue;
pub mod ratelimit;
pub mod sys;
pub mod tree;
