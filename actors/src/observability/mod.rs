//! The node's side of the observability host: the client with its breaker, cached PromQL
//! answers and alert pushes (client.rs), and log shipping to Loki (loki.rs).

pub mod client;
pub mod loki;

pub use client::{ObservabilityClient, ObservabilityDeps, QueryError};
