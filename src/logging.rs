//! Log set-up: `tracing` to stderr (journald picks it up under systemd), text or JSON, and,
//! when `observability.loki_url` is set, a copy of every event queued for Loki (the
//! `observability` actor ships the queue; a full queue drops events and counts them, so
//! logging never waits on the network).

use std::io::IsTerminal as _;

use chom_actors::observability::loki::{self, LokiQueue};
use chom_core::config::{LogConfig, ObservabilityConfig};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Returns the
/// queue of events for Loki when `observability.loki_url` is set.
pub fn init(cfg: &LogConfig, observability: &ObservabilityConfig) -> Option<LokiQueue> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain `key=value` text.
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = if cfg.format == "json" {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed()
    } else {
        fmt.boxed()
    };
    let (loki, queue) = if observability.loki_url.is_empty() {
        (None, None)
    } else {
        let (layer, queue) = loki::channel(observability.log_buffer as usize);
        (Some(layer), Some(queue))
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(loki)
        .try_init();
    // Already installed (tests calling twice): keep the first, and ship nothing.
    installed.ok().and(queue)
}

/// Quiet logging for client commands: warnings and errors only.
pub fn init_client() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
}
