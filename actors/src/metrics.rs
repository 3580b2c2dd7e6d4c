//! The node's metrics: OpenTelemetry instruments exported into a `prometheus` registry and
//! rendered as Prometheus text on `/metrics`.
//!
//! Instrument names are exactly the SPEC.md names: the exporter is built without unit and
//! counter suffixes (it appends them blindly), without `target_info` and without scope labels.
//! Every metric the node exports is created here, so the names live in one file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chom_core::breaker::BreakerState;
use chom_core::inventory::Tier;
use opentelemetry::KeyValue;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::metrics::{
    AsyncInstrument, Counter, Histogram, Meter, MeterProvider as _, ObservableGauge,
};
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
    jobs: Counter<u64>,
    /// Attempts completed and failed for good since start, read by the console's charts.
    outcome_totals: [AtomicU64; 2],
    job_duration: Histogram<f64>,
    job_wait: Histogram<f64>,
    queue_sizes: Arc<Mutex<BTreeMap<String, i64>>>,
    failed_last_hour: Arc<AtomicI64>,
    dead_letters: Arc<Mutex<BTreeMap<String, i64>>>,
    memory_limit: Arc<AtomicI64>,
    kinds_flagged: Counter<u64>,
    ssh_commands: Counter<u64>,
    remediations: Counter<u64>,
    memory_actions: Counter<u64>,
    ssh_duration: Histogram<f64>,
    observability_queries: Counter<u64>,
    observability_probe: Histogram<f64>,
    breaker_trips: Counter<u64>,
    log_drops: Counter<u64>,
    alerts_received: Counter<u64>,
    rate_limited: Counter<u64>,
    rate_limit_fallback: Counter<u64>,
    api_requests: Counter<u64>,
    api_duration: Histogram<f64>,
    /// Current state of each breaker by service (`vps:<id>`).
    breakers: Arc<Mutex<BTreeMap<String, BreakerState>>>,
    /// (active tenants, active sites), once read.
    inventory: Arc<Mutex<Option<(i64, i64)>>>,
    _gauges: Vec<ObservableGauge<i64>>,
}

/// The longest `alertname` label of `chom_alerts_received_total`, in characters.
pub const MAX_ALERTNAME_LABEL_CHARS: usize = 100;

/// Histogram buckets in seconds, from 1 ms (noop jobs, pickup latency) to 10 minutes
/// (site provisioning).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Create the registry, the exporter and every instrument.
    #[allow(
        clippy::too_many_lines,
        reason = "a table: one builder call per instrument, in SPEC.md's order"
    )]
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
        // The standard process_* series (start time, CPU, resident memory, open and max fds):
        // dashboards and the NodeRestarted alert read them under their usual names.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("a fresh registry accepts the process collector");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("chom");

        let actor_restarts = counter(
            &meter,
            "chom_actor_restarts_total",
            "Actor restarts by supervisors (failures and manual restarts)",
        );
        let escalations = counter(
            &meter,
            "chom_supervisor_escalations_total",
            "Supervisors that exceeded their restart intensity and gave up",
        );
        let jobs = counter(
            &meter,
            "chom_jobs_total",
            "Job attempts by outcome: completed, retried, failed, timed_out",
        );
        let job_duration = seconds_histogram(
            &meter,
            "chom_job_duration_seconds",
            "Time one job attempt ran",
        );
        let job_wait = seconds_histogram(
            &meter,
            "chom_job_wait_seconds",
            "Time from a job being available to its attempt starting",
        );
        let kinds_flagged = counter(
            &meter,
            "chom_failed_job_kinds_flagged_total",
            "Dead-letter analyses that flagged a job kind for too many failures",
        );
        let ssh_commands = counter(
            &meter,
            "chom_ssh_commands_total",
            "SSH command attempts by outcome: ok, command_failed, transport_failed, rejected",
        );
        let ssh_duration = seconds_histogram(
            &meter,
            "chom_ssh_command_duration_seconds",
            "Time one SSH command took, from request to exit",
        );
        let observability_queries = counter(
            &meter,
            "chom_observability_queries_total",
            "PromQL queries to the observability host by outcome: live, cached, failed",
        );
        let observability_probe = seconds_histogram(
            &meter,
            "chom_observability_probe_seconds",
            "Reachability probes of the observability host, by how long they took",
        );
        let log_drops = counter(
            &meter,
            "chom_log_events_dropped_total",
            "Log events not shipped to Loki: its buffer was full, or the node stopped mid-retry",
        );
        // Present from the start (at 0), so rate() and alerts see the first drop or query.
        log_drops.add(0, &[]);
        for outcome in ["live", "cached", "failed"] {
            observability_queries.add(0, &[KeyValue::new("outcome", outcome)]);
        }
        let alerts_received = counter(
            &meter,
            "chom_alerts_received_total",
            "Alerts received from Alertmanager's webhook and stored, by alertname and status: firing, resolved",
        );
        let breaker_trips = counter(
            &meter,
            "chom_circuit_breaker_trips_total",
            "Times a circuit breaker opened on failures, by service",
        );
        let remediations = counter(
            &meter,
            "chom_health_remediations_total",
            "Remediations by health check and outcome: restarted, exhausted",
        );
        let memory_actions = counter(
            &meter,
            "chom_memory_actions_total",
            "Actions of the memory monitor: recycle (workers), restart (node)",
        );
        let (rate_limited, rate_limit_fallback) = rate_limit_counters(&meter);
        let api_requests = counter(
            &meter,
            "chom_api_requests_total",
            "Tenant API answers by route template (`unmatched` for unknown paths) and status code",
        );
        let api_duration = seconds_histogram(
            &meter,
            "chom_api_request_duration_seconds",
            "Time the tenant API took to answer, by route template",
        );
        let breakers: Arc<Mutex<BTreeMap<String, BreakerState>>> = Arc::default();
        let inventory = Arc::new(Mutex::new(None::<(i64, i64)>));
        let queue_sizes: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
        let failed_last_hour = Arc::new(AtomicI64::new(-1));
        let dead_letters: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
        let memory_limit = Arc::new(AtomicI64::new(-1));
        let health: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
        let version = version.to_owned();
        let gauges = vec![
            breaker_gauge(
                &meter,
                "chom_circuit_breaker_open",
                "1 while a circuit breaker is open (or forced open), else 0",
                breakers.clone(),
                |o, service, state| o.observe(i64::from(state.is_open()), &[service]),
            ),
            breaker_gauge(
                &meter,
                "chom_circuit_breaker_state",
                "1 for the current state of each circuit breaker, 0 for the others",
                breakers.clone(),
                |o, service, state| {
                    for candidate in BreakerState::ALL {
                        let labels = [service.clone(), KeyValue::new("state", candidate.as_str())];
                        o.observe(i64::from(candidate == state), &labels);
                    }
                },
            ),
            inventory_gauge(
                &meter,
                "chom_active_tenants",
                "Tenants with status active",
                inventory.clone(),
                |(tenants, _)| tenants,
            ),
            inventory_gauge(
                &meter,
                "chom_active_sites",
                "Active sites of active tenants",
                inventory.clone(),
                |(_, sites)| sites,
            ),
            labelled_gauge(
                &meter,
                "chom_queue_size",
                "Jobs waiting or running per queue",
                "queue",
                queue_sizes.clone(),
            ),
            reading_gauge(
                &meter,
                "chom_failed_jobs_last_hour",
                "Rows added to failed_jobs in the last hour",
                {
                    let failed = failed_last_hour.clone();
                    // -1 until the first reading: export nothing rather than a made-up zero.
                    move || Some(failed.load(Ordering::Relaxed)).filter(|v| *v >= 0)
                },
            ),
            labelled_gauge(
                &meter,
                "chom_health_check_status",
                "Last result of each health check: 0 ok, 1 warning, 2 error",
                "check",
                health.clone(),
            ),
            labelled_gauge(
                &meter,
                "chom_dead_letters_last_day",
                "Rows added to failed_jobs in the last 24 hours, per job kind (dead-letter analysis)",
                "kind",
                dead_letters.clone(),
            ),
            reading_gauge(
                &meter,
                "chom_memory_limit_bytes",
                "The memory limit the memory monitor measures against (memory.max_rss or the cgroup's memory.max); absent when only host memory bounds the node",
                {
                    let limit = memory_limit.clone();
                    move || Some(limit.load(Ordering::Relaxed)).filter(|v| *v >= 0)
                },
            ),
            reading_gauge(
                &meter,
                "chom_memory_rss_bytes",
                "Resident set size of the node process",
                || crate::sys::rss_bytes().map(|rss| rss as i64),
            ),
            gauge(
                &meter,
                "chom_build_info",
                "Always 1; the version label names the running build",
                move |o| o.observe(1, &[KeyValue::new("version", version.clone())]),
            ),
        ];
        Metrics {
            inner: Arc::new(Inner {
                registry,
                provider,
                actor_restarts,
                escalations,
                health,
                jobs,
                outcome_totals: [AtomicU64::new(0), AtomicU64::new(0)],
                job_duration,
                job_wait,
                queue_sizes,
                failed_last_hour,
                dead_letters,
                memory_limit,
                kinds_flagged,
                ssh_commands,
                remediations,
                memory_actions,
                ssh_duration,
                observability_queries,
                observability_probe,
                breaker_trips,
                log_drops,
                alerts_received,
                rate_limited,
                rate_limit_fallback,
                api_requests,
                api_duration,
                breakers,
                inventory,
                _gauges: gauges,
            }),
        }
    }

    /// Count one SSH command attempt on `vps` (`outcome`: ok, command_failed,
    /// transport_failed, rejected); `took` is recorded unless it was rejected before running.
    pub fn ssh_command(&self, vps: &str, outcome: &'static str, took: Option<Duration>) {
        let v = KeyValue::new("vps", vps.to_owned());
        self.inner
            .ssh_commands
            .add(1, &[v.clone(), KeyValue::new("outcome", outcome)]);
        if let Some(took) = took {
            self.inner.ssh_duration.record(took.as_secs_f64(), &[v]);
        }
    }

    /// Count one remediation decision for `check` (`outcome`: restarted, exhausted).
    pub fn remediation(&self, check: &str, outcome: &'static str) {
        self.inner.remediations.add(
            1,
            &[
                KeyValue::new("check", check.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Count one action of the memory monitor (`recycle`, `restart`).
    pub fn memory_action(&self, action: &'static str) {
        self.inner
            .memory_actions
            .add(1, &[KeyValue::new("action", action)]);
    }

    /// Record the state of the breaker of `service` (`vps:<id>`, `observability`).
    pub fn set_breaker(&self, service: &str, state: BreakerState) {
        // The trip counter exists from the breaker's first state on (a 0 before any trip).
        self.inner
            .breaker_trips
            .add(0, &[KeyValue::new("service", service.to_owned())]);
        self.inner
            .breakers
            .lock()
            .expect("breakers lock")
            .insert(service.to_owned(), state);
    }

    /// Forget a breaker (its VPS was removed).
    pub fn remove_breaker(&self, service: &str) {
        self.inner
            .breakers
            .lock()
            .expect("breakers lock")
            .remove(service);
    }

    /// Record the inventory counts.
    pub fn set_inventory(&self, active_tenants: u64, active_sites: u64) {
        *self.inner.inventory.lock().expect("inventory lock") =
            Some((active_tenants as i64, active_sites as i64));
    }

    /// Count one restart of the actor at `path` (instance numbers are stripped for the label).
    pub fn actor_restarted(&self, path: &str) {
        self.inner
            .actor_restarts
            .add(1, &[KeyValue::new("actor", actor_label(path))]);
    }

    /// Start the restart and escalation counters of every actor of the tree at zero, so that
    /// alerts and dashboards over `increase(...)` see the series before the first failure
    /// (`paths`: each actor's path and whether it supervises; VPS actors come and go, so
    /// `fleet/vps` is always included).
    pub fn zero_supervision(&self, paths: &[(String, bool)]) {
        // The label of every `fleet/vps:<id>`, present or not.
        let workers = paths
            .iter()
            .map(|(path, _)| path.as_str())
            .chain(std::iter::once("fleet/vps"));
        for path in workers {
            self.inner
                .actor_restarts
                .add(0, &[KeyValue::new("actor", actor_label(path))]);
        }
        let supervisors = paths
            .iter()
            .filter(|(_, supervises)| *supervises)
            .map(|(path, _)| actor_label(path))
            .chain(std::iter::once("root".to_owned()));
        for label in supervisors {
            self.inner
                .escalations
                .add(0, &[KeyValue::new("supervisor", label)]);
        }
    }

    /// Start the remediation counters of `check` at zero for each of `outcomes`.
    pub fn zero_remediations(&self, check: &str, outcomes: &[&'static str]) {
        for outcome in outcomes {
            self.inner.remediations.add(
                0,
                &[
                    KeyValue::new("check", check.to_owned()),
                    KeyValue::new("outcome", *outcome),
                ],
            );
        }
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

    /// Count one job attempt (`outcome`: completed, retried, failed, timed_out) and its duration.
    pub fn job_attempt(&self, queue: &str, kind: &str, outcome: &str, ran: Duration) {
        let q = KeyValue::new("queue", queue.to_owned());
        let k = KeyValue::new("kind", kind.to_owned());
        self.inner.jobs.add(
            1,
            &[
                q.clone(),
                k.clone(),
                KeyValue::new("outcome", outcome.to_owned()),
            ],
        );
        self.inner.job_duration.record(ran.as_secs_f64(), &[q, k]);
        let total = match outcome {
            "completed" => &self.inner.outcome_totals[0],
            "failed" | "timed_out" => &self.inner.outcome_totals[1],
            _ => return,
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts that completed, and that failed or timed out, since the node started.
    pub fn outcome_totals(&self) -> (u64, u64) {
        let [completed, failed] = &self.inner.outcome_totals;
        (
            completed.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        )
    }

    /// The per-queue sizes (waiting + running) as the reaper last counted them.
    pub fn queue_sizes(&self) -> BTreeMap<String, u64> {
        let sizes = self.inner.queue_sizes.lock().expect("queue sizes lock");
        sizes
            .iter()
            .map(|(q, n)| (q.clone(), u64::try_from(*n).unwrap_or(0)))
            .collect()
    }

    /// The 95th percentile of `chom_job_wait_seconds` over every queue since start, from its
    /// buckets (the upper bound of the bucket holding it); `None` before any job waited.
    pub fn wait_p95_seconds(&self) -> Option<f64> {
        let families = self.inner.registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "chom_job_wait_seconds")?;
        let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
        let mut count = 0u64;
        for metric in family.get_metric() {
            let histogram = metric.get_histogram();
            count += histogram.get_sample_count();
            for bucket in histogram.get_bucket() {
                *buckets.entry(bucket.upper_bound().to_bits()).or_default() +=
                    bucket.cumulative_count();
            }
        }
        if count == 0 {
            return None;
        }
        let wanted = count.saturating_mul(95).div_ceil(100);
        let mut bounds: Vec<(f64, u64)> = buckets
            .into_iter()
            .map(|(bits, n)| (f64::from_bits(bits), n))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        bounds
            .into_iter()
            .find(|(_, n)| *n >= wanted)
            .map(|(bound, _)| bound)
    }

    /// Record how long a job waited between becoming available and starting.
    pub fn job_waited(&self, queue: &str, waited: Duration) {
        self.inner.job_wait.record(
            waited.as_secs_f64(),
            &[KeyValue::new("queue", queue.to_owned())],
        );
    }

    /// Replace the per-queue sizes (waiting + running).
    pub fn set_queue_sizes(&self, sizes: impl IntoIterator<Item = (String, u64)>) {
        let mut map = self.inner.queue_sizes.lock().expect("queue sizes lock");
        map.clear();
        map.extend(sizes.into_iter().map(|(q, n)| (q, n as i64)));
    }

    /// Jobs waiting or running over every queue, once the reaper has counted them.
    pub fn queue_total(&self) -> Option<u64> {
        let sizes = self.inner.queue_sizes.lock().expect("queue sizes lock");
        (!sizes.is_empty()).then(|| sizes.values().map(|n| (*n).max(0) as u64).sum())
    }

    /// Record the number of failed_jobs rows of the last hour.
    /// Count one observability query by how it was answered (`live`, `cached`, `failed`).
    pub fn observability_query(&self, outcome: &'static str) {
        self.inner
            .observability_queries
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Record how long a reachability probe of the observability host took.
    pub fn observability_probe(&self, took: Duration) {
        self.inner
            .observability_probe
            .record(took.as_secs_f64(), &[]);
    }

    /// Count `n` log events that were not shipped to Loki.
    pub fn log_events_dropped(&self, n: u64) {
        if n > 0 {
            self.inner.log_drops.add(n, &[]);
        }
    }

    /// Count one alert received from Alertmanager and stored (`status`: firing, resolved).
    /// The alertname label is cut to [`MAX_ALERTNAME_LABEL_CHARS`]: it comes from outside.
    pub fn alert_received(&self, alertname: &str, status: &'static str) {
        let alertname = match alertname.char_indices().nth(MAX_ALERTNAME_LABEL_CHARS) {
            Some((end, _)) => &alertname[..end],
            None => alertname,
        };
        self.inner.alerts_received.add(
            1,
            &[
                KeyValue::new("alertname", alertname.to_owned()),
                KeyValue::new("status", status),
            ],
        );
    }

    /// Count one tenant API request refused by the rate limit of `tier`.
    pub fn rate_limited(&self, tier: Tier) {
        self.inner
            .rate_limited
            .add(1, &[KeyValue::new("tier", tier.as_str())]);
    }

    /// Count one rate-limit check answered by the node's local fallback limiter (Redis
    /// unreachable or slower than `api.redis_timeout`).
    pub fn rate_limit_fallback(&self) {
        self.inner.rate_limit_fallback.add(1, &[]);
    }

    /// Count one tenant API answer: `route` is the matched route template (never a raw path,
    /// so the label set stays bounded), `status` its HTTP status code.
    pub fn api_request(&self, route: &'static str, status: u16, took: Duration) {
        let route = KeyValue::new("route", route);
        self.inner.api_requests.add(
            1,
            &[route.clone(), KeyValue::new("status", status.to_string())],
        );
        self.inner.api_duration.record(took.as_secs_f64(), &[route]);
    }

    /// Count a breaker of `service` opening on failures.
    pub fn breaker_tripped(&self, service: &str) {
        self.inner
            .breaker_trips
            .add(1, &[KeyValue::new("service", service.to_owned())]);
    }

    /// Replace the dead letters of the last 24 hours per kind (kinds without any drop out).
    pub fn set_dead_letters(&self, by_kind: impl IntoIterator<Item = (String, u64)>) {
        let mut map = self.inner.dead_letters.lock().expect("dead letters lock");
        map.clear();
        map.extend(by_kind.into_iter().map(|(k, n)| (k, n as i64)));
    }

    /// Record the memory limit in force (`None`: only host memory bounds the node).
    pub fn set_memory_limit(&self, bytes: Option<u64>) {
        let v = bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.inner.memory_limit.store(v, Ordering::Relaxed);
    }

    pub fn set_failed_last_hour(&self, n: u64) {
        self.inner
            .failed_last_hour
            .store(n as i64, Ordering::Relaxed);
    }

    /// Count a dead-letter analysis that flagged `kind`.
    pub fn kind_flagged(&self, kind: &str) {
        self.inner
            .kinds_flagged
            .add(1, &[KeyValue::new("kind", kind.to_owned())]);
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

/// A counter named `name` on `/metrics`.
fn counter(meter: &Meter, name: &'static str, description: &'static str) -> Counter<u64> {
    meter
        .u64_counter(name)
        .with_description(description)
        .build()
}

/// `chom_rate_limited_total{tier}` and `chom_rate_limit_fallback_total`, every series present
/// from the start at 0 so `increase()` sees the first refusal and the first fallback.
fn rate_limit_counters(meter: &Meter) -> (Counter<u64>, Counter<u64>) {
    let limited = counter(
        meter,
        "chom_rate_limited_total",
        "Tenant API requests refused by the rate limit (429), by tenant tier",
    );
    for tier in [Tier::Starter, Tier::Pro, Tier::Enterprise] {
        limited.add(0, &[KeyValue::new("tier", tier.as_str())]);
    }
    let fallback = counter(
        meter,
        "chom_rate_limit_fallback_total",
        "Rate-limit checks answered by the node's local limiter because Redis was unreachable or slow",
    );
    fallback.add(0, &[]);
    (limited, fallback)
}

/// A histogram of durations in seconds over [`SECONDS_BUCKETS`].
fn seconds_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_description(description)
        .with_boundaries(SECONDS_BUCKETS.to_vec())
        .build()
}

/// A gauge whose series `observe` reports at each scrape.
fn gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    observe: impl Fn(&dyn AsyncInstrument<i64>) + Send + Sync + 'static,
) -> ObservableGauge<i64> {
    meter
        .i64_observable_gauge(name)
        .with_description(description)
        .with_callback(observe)
        .build()
}

/// A gauge of one unlabelled series, absent while `read` has no value.
fn reading_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> Option<i64> + Send + Sync + 'static,
) -> ObservableGauge<i64> {
    gauge(meter, name, description, move |o| {
        if let Some(value) = read() {
            o.observe(value, &[]);
        }
    })
}

/// A gauge of one of the inventory counts, absent until they are first read.
fn inventory_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    inventory: Arc<Mutex<Option<(i64, i64)>>>,
    count: fn((i64, i64)) -> i64,
) -> ObservableGauge<i64> {
    reading_gauge(meter, name, description, move || {
        inventory.lock().expect("inventory lock").map(count)
    })
}

/// A gauge with one series per entry of `values`, its key as the `label` label.
fn labelled_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    label: &'static str,
    values: Arc<Mutex<BTreeMap<String, i64>>>,
) -> ObservableGauge<i64> {
    gauge(meter, name, description, move |o| {
        for (key, value) in values.lock().expect("gauge values lock").iter() {
            o.observe(*value, &[KeyValue::new(label, key.clone())]);
        }
    })
}

/// A gauge over every circuit breaker: `observe` reports the series of one breaker, given
/// its `service` label and its state.
fn breaker_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    breakers: Arc<Mutex<BTreeMap<String, BreakerState>>>,
    observe: fn(&dyn AsyncInstrument<i64>, KeyValue, BreakerState),
) -> ObservableGauge<i64> {
    gauge(meter, name, description, move |o| {
        for (service, state) in breakers.lock().expect("breakers lock").iter() {
            observe(o, KeyValue::new("service", service.clone()), *state);
        }
    })
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
        // Absent until known, then the value.
        assert!(!text.contains("chom_memory_limit_bytes "), "{text}");
        m.set_memory_limit(Some(500_000_000));
        m.set_dead_letters([("vps.exec".to_owned(), 6)]);
        let text = m.render();
        assert!(text.contains("chom_memory_limit_bytes 500000000"), "{text}");
        assert!(
            text.contains("chom_dead_letters_last_day{kind=\"vps.exec\"} 6"),
            "{text}"
        );
        m.alert_received(&"A".repeat(150), "firing");
        m.alert_received("QueueBacklog", "resolved");
        let text = m.render();
        let cut = "A".repeat(MAX_ALERTNAME_LABEL_CHARS);
        assert!(
            text.contains(&format!(
                "chom_alerts_received_total{{alertname=\"{cut}\",status=\"firing\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "chom_alerts_received_total{alertname=\"QueueBacklog\",status=\"resolved\"} 1"
            ),
            "{text}"
        );
        m.set_dead_letters([]);
        assert!(
            !m.render().contains("chom_dead_letters_last_day{"),
            "{text}"
        );
        for name in [
            "process_start_time_seconds",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "no {name}: {text}");
        }
        assert!(!text.contains("otel_scope"), "{text}");
        assert!(!text.contains("target_info"), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn rate_limit_counters_start_at_zero() {
        let m = Metrics::new("1.2.3");
        let text = m.render();
        for tier in ["starter", "pro", "enterprise"] {
            assert!(
                text.contains(&format!("chom_rate_limited_total{{tier=\"{tier}\"}} 0")),
                "{text}"
            );
        }
        assert!(
            text.contains("\nchom_rate_limit_fallback_total 0"),
            "{text}"
        );
        m.rate_limited(Tier::Pro);
        m.rate_limit_fallback();
        let after = m.render();
        assert!(
            after.contains("chom_rate_limited_total{tier=\"pro\"} 1"),
            "{after}"
        );
        assert!(
            after.contains("\nchom_rate_limit_fallback_total 1"),
            "{after}"
        );
    }

    #[test]
    fn api_requests_are_labelled_by_route_template_and_status() {
        let m = Metrics::new("1.2.3");
        m.api_request("/api/v1/sites/{id}", 404, Duration::from_millis(3));
        m.api_request("/api/v1/sites/{id}", 404, Duration::from_millis(30));
        m.api_request("unmatched", 401, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("chom_api_requests_total{route=\"/api/v1/sites/{id}\",status=\"404\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("chom_api_requests_total{route=\"unmatched\",status=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "chom_api_request_duration_seconds_count{route=\"/api/v1/sites/{id}\"} 2"
            ),
            "{text}"
        );
    }
}
