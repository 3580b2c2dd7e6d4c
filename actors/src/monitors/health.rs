//! Health checks and the `/health` report (SPEC.md "HTTP").
//!
//! Each check runs under `health.check_timeout`, so a wedged dependency makes its check an
//! error instead of hanging the report. `database` and `supervision` are critical: an error in
//! either makes the node `unhealthy` (HTTP 503); any other problem makes it `degraded`. The
//! `observability` and `alerts` checks are never worse than a warning.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use chom_core::breaker::BreakerState;
use chom_core::config::{Config, redact_url};
use chom_core::job::QueueStats;

use crate::backends::PublishedBackends;
use crate::handles::{Readiness, TreeRoot};
use crate::http::{HttpClient, describe};
use crate::metrics::{CheckLevel, Metrics};
use crate::observability::Reach;
use crate::sys::ShellOutcome;
use crate::{sys, tree};

/// Status of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Working.
    Ok,
    /// Working, but needs attention.
    Warning,
    /// Not working.
    Error,
}

/// Overall status of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overall {
    /// Every check ok.
    Healthy,
    /// Some non-critical check is not ok.
    Degraded,
    /// A critical check (database, supervision) is in error.
    Unhealthy,
}

/// One check's result: its status, an optional message, and check-specific fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// ok, warning or error.
    pub status: CheckStatus,
    /// What is wrong, when something is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Check-specific fields (`latency_ms`, `used_percent`, ...).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// The `/health` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    /// healthy, degraded or unhealthy.
    pub status: Overall,
    /// When the checks ran (RFC 3339).
    pub timestamp: String,
    /// Every check by name.
    pub checks: BTreeMap<String, CheckResult>,
}

/// Checks whose error makes the whole node unhealthy.
pub const CRITICAL: &[&str] = &["database", "supervision"];

impl CheckResult {
    fn new(status: CheckStatus, message: Option<String>, details: Value) -> Self {
        let details = match details {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        CheckResult {
            status,
            message,
            details,
        }
    }
    fn ok(details: Value) -> Self {
        Self::new(CheckStatus::Ok, None, details)
    }
    fn warning(message: impl Into<String>, details: Value) -> Self {
        Self::new(CheckStatus::Warning, Some(message.into()), details)
    }
    fn error(message: impl Into<String>, details: Value) -> Self {
        Self::new(CheckStatus::Error, Some(message.into()), details)
    }
}

impl HealthReport {
    /// Combine check results into a report.
    pub fn from_checks(checks: BTreeMap<String, CheckResult>) -> Self {
        let critical_error = checks
            .iter()
            .any(|(name, c)| c.status == CheckStatus::Error && CRITICAL.contains(&name.as_str()));
        let any_problem = checks.values().any(|c| c.status != CheckStatus::Ok);
        let status = if critical_error {
            Overall::Unhealthy
        } else if any_problem {
            Overall::Degraded
        } else {
            Overall::Healthy
        };
        HealthReport {
            status,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            checks,
        }
    }

    /// 503 when unhealthy, else 200.
    pub fn http_status(&self) -> u16 {
        if self.status == Overall::Unhealthy {
            503
        } else {
            200
        }
    }
}

/// What the checks look at: the `/health` document is made from these handles alone.
#[derive(Clone)]
pub struct Checks {
    /// `health` (limits, operator checks), `node.data_dir`, `queue`, `observability`.
    pub config: Arc<Config>,
    /// Where the results are recorded.
    pub metrics: Metrics,
    /// The servers' breaker states (the `fleet` check).
    pub breakers: crate::fleet::breakers::BreakerBoard,
    /// The store's backends (`database`, `cache`, `queue` checks).
    pub published: PublishedBackends,
    /// Whether migrations ran (before that, `database` is a round trip and `queue` waits).
    pub readiness: Readiness,
    /// The tree the `supervision` check fetches.
    pub root: TreeRoot,
    /// The observability host's client (the `observability` check).
    pub observability: crate::observability::ObservabilityClient,
}

/// The last report of `monitors/health` and when it was made, served by `/health` so that a
/// scrape costs no database query. Cloning shares the same report.
#[derive(Clone, Default)]
pub struct HealthCache(Arc<Mutex<Option<(Instant, HealthReport)>>>);

impl HealthCache {
    /// Keep the health actor's latest report.
    pub fn set(&self, report: HealthReport) {
        *self.0.lock().expect("health lock") = Some((Instant::now(), report));
    }

    /// The health actor's latest report, if it is younger than `max_age`.
    pub fn get(&self, max_age: Duration) -> Option<HealthReport> {
        self.0
            .lock()
            .expect("health lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, r)| r.clone())
    }
}

/// Run every check now (concurrently) and record the results in the metrics.
pub async fn run_checks(ctx: &Checks) -> HealthReport {
    let limit = ctx.config.health.check_timeout;
    let fleet = check_fleet(ctx);
    let (database, cache, disk, supervision, queue, observability, alerts) = tokio::join!(
        bounded(limit, check_database(ctx, limit)),
        bounded(limit, check_cache(ctx)),
        bounded(limit, async { check_disk(ctx) }),
        bounded(limit, check_supervision(ctx, limit)),
        bounded(limit, check_queue(ctx)),
        check_observability(ctx),
        check_alerts(ctx, limit),
    );
    let configured = futures::future::join_all(
        ctx.config
            .health
            .checks
            .iter()
            .map(|c| async move { (c.name.clone(), check_configured(c, limit).await) }),
    )
    .await;
    let checks: BTreeMap<String, CheckResult> = [
        ("database", database),
        ("cache", cache),
        ("disk", disk),
        ("supervision", supervision),
        ("queue", queue),
        ("fleet", fleet),
        ("observability", observability),
        ("alerts", alerts),
    ]
    .into_iter()
    .map(|(name, result)| (name.to_owned(), result))
    .chain(configured)
    .collect();
    for (name, result) in &checks {
        let level = match result.status {
            CheckStatus::Ok => CheckLevel::Ok,
            CheckStatus::Warning => CheckLevel::Warning,
            CheckStatus::Error => CheckLevel::Error,
        };
        ctx.metrics.set_health(name, level);
    }
    HealthReport::from_checks(checks)
}

async fn bounded(limit: Duration, check: impl Future<Output = CheckResult>) -> CheckResult {
    match tokio::time::timeout(limit, check).await {
        Ok(result) => result,
        Err(_) => CheckResult::error(format!("check did not finish within {limit:?}"), json!({})),
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// The database check. Once migrated it commits a one-row write ([`Store::probe_write`]): a
/// store that answers `SELECT 1` but cannot write (a full disk, a pool of connections wedged
/// inside failed transactions) is reported `error`, so remediation restarts it. Before the
/// migrations are applied there is nothing to write to, and a plain round trip is the check.
///
/// [`Store::probe_write`]: chom_store::Store::probe_write
async fn check_database(ctx: &Checks, limit: Duration) -> CheckResult {
    let Some(backends) = ctx.published.current() else {
        return CheckResult::error("store actor is not running", json!({}));
    };
    let backend = backends.store.backend().as_str();
    // `health.check_timeout` is this check's own budget, shorter than the store's limits.
    if !ctx.readiness.migrated() {
        return match chom_store::with_timeout(limit, backends.store.ping()).await {
            Ok(latency) => CheckResult::warning(
                "reachable, migrations not applied yet",
                json!({ "backend": backend, "latency_ms": millis(latency) }),
            ),
            Err(error) => CheckResult::error(error.to_string(), json!({ "backend": backend })),
        };
    }
    match chom_store::with_timeout(limit, backends.store.probe_write()).await {
        Ok(latency) => {
            CheckResult::ok(json!({ "backend": backend, "latency_ms": millis(latency) }))
        }
        Err(error) => CheckResult::error(
            format!("cannot write: {error}"),
            json!({ "backend": backend }),
        ),
    }
}

async fn check_cache(ctx: &Checks) -> CheckResult {
    let Some(backends) = ctx.published.current() else {
        return CheckResult::error("store actor is not running", json!({}));
    };
    let backend = backends.cache.kind();
    match backends.cache.ping().await {
        Ok(latency) => {
            CheckResult::ok(json!({ "backend": backend, "latency_ms": millis(latency) }))
        }
        Err(error) => CheckResult::error(error.to_string(), json!({ "backend": backend })),
    }
}

fn check_disk(ctx: &Checks) -> CheckResult {
    let dir = &ctx.config.node.data_dir;
    match sys::disk_usage(dir) {
        Ok(usage) => {
            let details = json!({
                "path": dir.display().to_string(),
                "used_percent": (usage.used_percent * 10.0).round() / 10.0,
                "free_gb": (usage.available_bytes as f64 / 1e9 * 100.0).round() / 100.0,
            });
            let limit = f64::from(ctx.config.health.disk_warning_percent);
            if usage.used_percent >= limit {
                CheckResult::warning(
                    format!("disk {:.1}% used (warning at {limit}%)", usage.used_percent),
                    details,
                )
            } else {
                CheckResult::ok(details)
            }
        }
        Err(error) => CheckResult::error(
            format!("cannot read disk usage of {}: {error}", dir.display()),
            json!({ "path": dir.display().to_string() }),
        ),
    }
}

async fn check_queue(ctx: &Checks) -> CheckResult {
    let Some(backends) = ctx.published.current().filter(|_| ctx.readiness.migrated()) else {
        return CheckResult::error("database not ready", json!({}));
    };
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let stats = backends.store.queue_stats(&ctx.config.queue.queues);
    let failed = backends.store.failed_since(since);
    match tokio::try_join!(stats, failed) {
        Ok((stats, failed_last_hour)) => {
            let queue_size: u64 = stats.iter().map(QueueStats::size).sum();
            let ready: u64 = stats.iter().map(|s| s.ready).sum();
            let paused: Vec<&str> = stats
                .iter()
                .filter(|s| s.paused)
                .map(|s| s.queue.as_str())
                .collect();
            let details = json!({ "queue_size": queue_size, "failed_last_hour": failed_last_hour, "paused": paused });
            let h = &ctx.config.health;
            if failed_last_hour > h.failed_last_hour_warning {
                CheckResult::warning(
                    format!(
                        "{failed_last_hour} jobs failed in the last hour (warning above {})",
                        h.failed_last_hour_warning
                    ),
                    details,
                )
            } else if ready > h.queue_backlog {
                CheckResult::warning(
                    format!("{ready} jobs waiting (warning above {})", h.queue_backlog),
                    details,
                )
            } else {
                CheckResult::ok(details)
            }
        }
        Err(error) => CheckResult::error(error.to_string(), json!({})),
    }
}

/// An operator's `[[health.checks]]` entry: its command exits 0, or its URL answers 2xx,
/// within `limit`.
async fn check_configured(
    check: &chom_core::config::HealthCheckConfig,
    limit: Duration,
) -> CheckResult {
    let started = std::time::Instant::now();
    if let Some(command) = &check.command {
        let outcome = crate::sys::run_shell(command, limit).await;
        let code = match &outcome {
            ShellOutcome::Success => Some(0),
            ShellOutcome::Failed { code, .. } => *code,
            _ => None,
        };
        let details = json!({ "command": command, "exit_code": code, "latency_ms": millis(started.elapsed()) });
        return match outcome {
            ShellOutcome::Success => CheckResult::ok(details),
            ShellOutcome::Failed { status, stderr, .. } if stderr.is_empty() => {
                CheckResult::error(format!("`{command}` {status}"), details)
            }
            ShellOutcome::Failed { status, stderr, .. } => {
                CheckResult::error(format!("`{command}` {status}: {stderr}"), details)
            }
            ShellOutcome::NotRun(e) => {
                CheckResult::error(format!("cannot run `{command}`: {e}"), details)
            }
            ShellOutcome::TimedOut => CheckResult::error(
                format!("`{command}` did not finish within {limit:?}"),
                details,
            ),
        };
    }
    let url = check.url.as_deref().unwrap_or_default();
    let answer = http_get(url, limit).await;
    // /health, `chom health` and the logs show the URL without its password or tokens.
    let shown = redact_url(url);
    let details = json!({ "url": shown, "latency_ms": millis(started.elapsed()) });
    match answer {
        Ok(status) if status.is_success() => CheckResult::ok(details),
        Ok(status) => CheckResult::error(format!("{shown} answered {status}"), details),
        Err(error) => CheckResult::error(format!("{shown} unreachable: {error}"), details),
    }
}

/// The status of a GET of `url`, within `limit`. The error leaves the URL out; callers name
/// it redacted.
async fn http_get(url: &str, limit: Duration) -> Result<reqwest::StatusCode, String> {
    // Not pooled: each check opens its own connection, as a client arriving fresh would.
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    let client = CLIENT.get_or_init(|| HttpClient::build(|b| b.pool_max_idle_per_host(0)));
    let request = client.get(url)?.timeout(limit);
    let response = request.send().await.map_err(describe)?;
    Ok(response.status())
}

/// Whether the observability host answers, from the client's verdict (kept for
/// `observability.cache_ttl`, so a slow or dead Prometheus costs one probe per TTL, and an open
/// observability breaker costs none). Never worse than a warning: the node's work does not
/// depend on its observers.
async fn check_observability(ctx: &Checks) -> CheckResult {
    let started = std::time::Instant::now();
    let reach = ctx.observability.reachability().await;
    let mut details = json!({ "url": ctx.observability.prometheus_url() });
    match reach {
        Reach::NotConfigured => CheckResult::ok(json!({ "configured": false })),
        Reach::Reachable { cached } => {
            details["cached"] = Value::Bool(cached);
            if !cached {
                details["latency_ms"] = json!(millis(started.elapsed()));
            }
            CheckResult::ok(details)
        }
        Reach::Unreachable { cached } => {
            details["cached"] = Value::Bool(cached);
            CheckResult::warning(with_cause("prometheus unreachable", ctx), details)
        }
        Reach::BreakerOpen => CheckResult::warning(
            with_cause("the observability circuit breaker is open", ctx),
            details,
        ),
    }
}

/// `what`, and why when this host cannot reach the configured Prometheus at all (https://
/// without CA certificates), which no retry will mend.
fn with_cause(what: &str, ctx: &Checks) -> String {
    match ctx.observability.prometheus_refused() {
        Some(why) => format!("{what}: {why}"),
        None => what.to_owned(),
    }
}

/// The alerts Alertmanager's webhook stored: `ok` with the `active` count, `warning` naming
/// them while one labelled `severity="critical"` is active. One bounded statement, under its
/// own timeout: an unreachable store is a warning here (the `database` check reports it as
/// the error it is), never an error, so alerts never make the node unhealthy.
async fn check_alerts(ctx: &Checks, limit: Duration) -> CheckResult {
    let Some(backends) = ctx.published.current().filter(|_| ctx.readiness.migrated()) else {
        return CheckResult::warning("alerts unknown: database not ready", json!({}));
    };
    match chom_store::with_timeout(limit, backends.store.alert_counts()).await {
        Ok(counts) => {
            let details = json!({ "active": counts.active, "critical": counts.critical });
            if counts.critical == 0 {
                CheckResult::ok(details)
            } else {
                // The names are the oldest critical ones, each once; the count says if
                // there are more.
                CheckResult::warning(
                    format!(
                        "{} critical alert{} firing: {}",
                        counts.critical,
                        if counts.critical == 1 { "" } else { "s" },
                        names(&counts.critical_names),
                    ),
                    details,
                )
            }
        }
        Err(error) => CheckResult::warning(format!("alerts unknown: {error}"), json!({})),
    }
}

/// Alert names for a message: each cut to 100 bytes (label values may be 1024 characters).
fn names(list: &[String]) -> String {
    list.iter()
        .map(|n| chom_core::limits::cut_at_char_boundary(n, 100))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Warning while any server's circuit breaker is open (from the states the VPS actors
/// keep on the board, so the check costs nothing however large the fleet).
fn check_fleet(ctx: &Checks) -> CheckResult {
    let states = ctx.breakers.states();
    let open: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s.is_open())
        .map(|(service, _)| chom_core::inventory::vps_of_service(service).unwrap_or(service))
        .collect();
    let half_open = states
        .iter()
        .filter(|(_, s)| *s == BreakerState::HalfOpen)
        .count();
    let details = json!({ "servers": states.len(), "open": open, "half_open": half_open });
    if open.is_empty() {
        CheckResult::ok(details)
    } else {
        CheckResult::warning(
            format!("circuit breaker open for {}", open.join(", ")),
            details,
        )
    }
}

async fn check_supervision(ctx: &Checks, limit: Duration) -> CheckResult {
    let Some(root) = ctx.root.get() else {
        return CheckResult::error("supervision tree not started", json!({}));
    };
    match tree::fetch(root, limit).await {
        Ok(report) => {
            let s = tree::summarize(&report);
            let details =
                json!({ "actors": s.actors, "running": s.running, "restarts": s.restarts });
            if s.not_running.is_empty() {
                CheckResult::ok(details)
            } else {
                CheckResult::error(
                    format!("not running: {}", s.not_running.join(", ")),
                    details,
                )
            }
        }
        Err(message) => CheckResult::error(message, json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(list: &[(&str, CheckStatus)]) -> BTreeMap<String, CheckResult> {
        list.iter()
            .map(|(n, s)| (n.to_string(), CheckResult::new(*s, None, json!({}))))
            .collect()
    }

    #[test]
    fn overall_status_follows_critical_checks() {
        use CheckStatus::*;
        use Overall::{Degraded, Healthy, Unhealthy};
        // (checks, overall status, HTTP status of /health)
        type Case = (&'static [(&'static str, CheckStatus)], Overall, u16);
        let cases: [Case; 5] = [
            (&[("database", Ok), ("cache", Ok)], Healthy, 200),
            (&[("database", Ok), ("cache", Error)], Degraded, 200),
            (&[("database", Warning)], Degraded, 200),
            (&[("database", Error), ("cache", Ok)], Unhealthy, 503),
            (&[("supervision", Error)], Unhealthy, 503),
        ];
        for (list, status, http_status) in cases {
            let report = HealthReport::from_checks(checks(list));
            assert_eq!(
                (report.status, report.http_status()),
                (status, http_status),
                "{list:?}"
            );
        }
    }

    #[test]
    fn details_are_flattened_into_the_check() {
        let r = CheckResult::ok(json!({"latency_ms": 1.5}));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, json!({"status": "ok", "latency_ms": 1.5}));
    }
}
