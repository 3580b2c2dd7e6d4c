//! Integration tests of the supervisor with real ractor actors.
//!
//! One test binary (one link step) with a module per concern.

mod common;

mod control;
mod dynamic;
mod escalation;
mod failures;
mod shutdown;
mod strategies;
mod timing;
