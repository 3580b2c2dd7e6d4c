//! The node's side of the observability host: the Prometheus client with its breaker and
//! cached answers (client.rs).

pub mod client;

pub use client::{ObservabilityClient, ObservabilityDeps, QueryError};
