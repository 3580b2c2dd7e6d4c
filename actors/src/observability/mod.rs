//! The node's side of the observability host: the client with its breaker, cached PromQL
//! answers and alert pushes (client.rs), log shipping to Loki (loki.rs), and the
//! `observability` actor that runs the pushes in the background (actor.rs).

pub mod actor;
pub mod client;
pub mod loki;

use std::sync::{Arc, Mutex};

use chom_core::job::KindFailures;
use tokio::sync::Notify;

pub use client::{ObservabilityClient, ObservabilityDeps, QueryError, Reach};

/// The dead-letter analysis' latest verdict (the kinds at the threshold), from whoever runs it
/// (`queue/reaper`, `chom failed analyze`) to the `observability` actor, which tells
/// Alertmanager. Reporting never waits on the observability host.
#[derive(Clone, Default)]
pub struct SpikeReports(Arc<SpikeInner>);

#[derive(Default)]
struct SpikeInner {
    latest: Mutex<Option<Vec<KindFailures>>>,
    changed: Notify,
}

impl SpikeReports {
    /// Replace the verdict with `flagged` (every kind at the threshold now; empty = none).
    pub fn report(&self, flagged: Vec<KindFailures>) {
        *self.0.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(flagged);
        self.0.changed.notify_one();
    }

    /// The latest verdict; `None` before the first analysis of this process.
    pub fn latest(&self) -> Option<Vec<KindFailures>> {
        self.0
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait for the next report (one made since the last wait counts).
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }
}
