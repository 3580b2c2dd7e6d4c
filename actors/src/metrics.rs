//! The node's metrics: OpenTelemetry instruments exported into a `prometheus` registry and
//! rendered as Prometheus text on `/metrics`.
//!
//! Instrument names are exactly the SPEC.md names: the exporter is built without unit and
//! counter suffixes (it appends them blindly), without `target_info` and without scope labels.
//! Every metric the node exports is created here, so the names live in one file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder as _, TextEncoder};

/// Health check status as exported by `chom_health_check_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckLevel {
    /// 0
    Ok = 0,
    /// 1
    Warning = 1,
    /// 2
    Error = 2,
}

/// Handle to every instrument; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    actor_restarts: Counter<u64>,
    escalations: Counter<u64>,
    health: Arc<Mutex<BTreeMap<String, i64>>>,
    _gauges: Vec<ObservableGauge<i64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Create the registry, the exporter and every instrument.
    pub fn new(version: &str) -> Metrics {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("chom");

        let actor_restarts = meter
            .u64_counter("chom_actor_restarts_total")
            .with_description("Actor restarts by supervisors (failures and manual restarts)")
            .build();
        let escalations = meter
            .u64_counter("chom_supervisor_escalations_total")
            .with_description("Supervisors that exceeded their restart intensity and gave up")
            .build();
        let health: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
        let health_view = health.clone();
        let version = version.to_owned();
        let gauges = vec![
            meter
                .i64_observable_gauge("chom_health_check_status")
                .with_description("Last result of each health check: 0 ok, 1 warning, 2 error")
                .with_callback(move |o| {
                    for (check, level) in health_view.lock().expect("health lock").iter() {
                        o.observe(*level, &[KeyValue::new("check", check.clone())]);
                    }
                })
                .build(),
            meter
                .i64_observable_gauge("chom_memory_rss_bytes")
                .with_description("Resident set size of the node process")
                .with_callback(|o| {
                    if let Some(rss) = crate::sys::rss_bytes() {
                        o.observe(rss as i64, &[]);
                    }
                })
                .build(),
            meter
                .i64_observable_gauge("chom_build_info")
                .with_description("Always 1; the version label names the running build")
                .with_callback(move |o| o.observe(1, &[KeyValue::new("version", version.clone())]))
                .build(),
        ];
        Metrics {
            inner: Arc::new(Inner {
                registry,
                provider,
                actor_restarts,
                escalations,
                health,
                _gauges: gauges,
            }),
        }
    }

    /// Count one restart of the actor at `path` (instance numbers are stripped for the label).
    pub fn actor_restarted(&self, path: &str) {
        self.inner
            .actor_restarts
            .add(1, &[KeyValue::new("actor", actor_label(path))]);
    }

    /// Count one escalation of the supervisor at `path` (`root` for the root).
    pub fn supervisor_escalated(&self, path: &str) {
        let label = if path.is_empty() {
            "root".to_owned()
        } else {
            actor_label(path)
        };
        self.inner
            .escalations
            .add(1, &[KeyValue::new("supervisor", label)]);
    }

    /// Record the latest status of a health check.
    pub fn set_health(&self, check: &str, level: CheckLevel) {
        self.inner
            .health
            .lock()
            .expect("health lock")
            .insert(check.to_owned(), level as i64);
    }

    /// Render every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.inner.registry.gather();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// Flush and stop the meter provider.
    pub fn shutdown(&self) {
        let _ = self.inner.provider.shutdown();
    }
}

/// `queue/worker:2` -> `queue/worker`, `fleet/vps:7` -> `fleet/vps`: one series per kind of
/// actor, not per instance, so the label set stays bounded on a 10,000-server fleet.
pub fn actor_label(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split_once(':').map_or(segment, |(kind, _)| kind))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_instance_numbers() {
        assert_eq!(actor_label("queue/worker:2"), "queue/worker");
        assert_eq!(actor_label("fleet/vps:web-7"), "fleet/vps");
        assert_eq!(actor_label("store"), "store");
        assert_eq!(actor_label("monitors/watchdog"), "monitors/watchdog");
    }

    #[test]
    fn exported_names_match_the_spec() {
        let m = Metrics::new("1.2.3");
        m.actor_restarted("queue/worker:1");
        m.actor_restarted("queue/worker:2");
        m.supervisor_escalated("");
        m.set_health("database", CheckLevel::Error);
        let text = m.render();
        assert!(
            text.contains("chom_actor_restarts_total{actor=\"queue/worker\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("chom_supervisor_escalations_total{supervisor=\"root\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("chom_health_check_status{check=\"database\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("chom_build_info{version=\"1.2.3\"} 1"),
            "{text}"
        );
        assert!(text.contains("chom_memory_rss_bytes "), "{text}");
        assert!(!text.contains("otel_scope"), "{text}");
        assert!(!text.contains("target_info"), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }
}
