//! Pure domain types of the CHOM node: configuration, and (later) job and breaker logic.
//! No IO beyond reading what it is handed.

#![warn(missing_docs)]

pub mod backoff;
pub mod breaker;
pub mod config;
pub mod inventory;
pub mod job;
pub mod limits;
pub mod policy;
pub mod remediation;
