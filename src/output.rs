//! Human output of the admin commands. Each renderer takes its method's typed reply (decoded
//! from the document `--json` prints, with control characters escaped) and returns the text
//! and the exit status.

use std::fmt::Write as _;

use chom_actors::monitors::health::{HealthReport, Overall};
use chom_core::inventory::Tenant;
use chom_core::job::{Enqueued, Job};
use chom_core::limits::escape_control;
use chom_supervisors::{ChildReport, SupervisorReport};
use serde::Serialize;
use serde_json::Value;

use crate::api;
use crate::api::breaker::ServerBreaker;
use crate::api::node::{Restarted, ShuttingDown, StatusReply};

/// The document with control characters escaped in every string and key (`\u{1b}`, `\n`),
/// for the human renderers below: names, errors and reasons are stored text, and a stored
/// ANSI escape or newline must never reach the terminal raw or fake another line. `--json`
/// prints the document itself (JSON escapes them already).
pub fn escape_strings(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(escape_control(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(escape_strings).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (escape_control(k).into_owned(), escape_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A reply field as the JSON document shows it: strings bare, anything else (numbers, times
/// as their RFC 3339 text, null) in JSON form.
fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// An optional text, `-` when absent.
fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// `out`, then one line per row as `line` writes it.
fn table<T>(mut out: String, rows: &[T], line: impl Fn(&T) -> String) -> String {
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// `chom status`.
/// `chom cluster`.
pub fn cluster(v: &api::cluster::ClusterNodes) -> (String, u8) {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let header = format!(
        "{:<24} {:<16} {:<10} {:<20} {:<20} {:>7} HOST/PID\n",
        "NAME", "INSTANCE", "VERSION", "STARTED", "LAST HEARTBEAT", "RUNNING"
    );
    let out = table(header, &v.nodes, |n| {
        format!(
            "{:<24} {:<16} {:<10} {:<20} {:<20} {:>7} {}/{}",
            n.name,
            n.instance,
            n.version,
            time(&n.started_at),
            time(&n.seen_at),
            n.jobs_running,
            n.hostname,
            n.pid
        )
    });
    (out, 0)
}

pub fn status(v: &StatusReply) -> (String, u8) {
    let mut out = String::new();
    let uptime = std::time::Duration::from_secs(v.uptime_secs);
    let ready = if v.ready {
        "ready"
    } else {
        "starting (migrations pending)"
    };
    let _ = writeln!(
        out,
        "chom {} on {} (pid {}), up {}, {ready}",
        v.version,
        v.node,
        v.pid,
        humantime::format_duration(uptime)
    );
    let _ = writeln!(
        out,
        "database: {}, cache: {}",
        or_dash(v.database.as_deref()),
        or_dash(v.cache.as_deref())
    );
    if v.live_nodes > 1 {
        let _ = writeln!(
            out,
            "cluster: {} live nodes (chom cluster lists them)",
            v.live_nodes
        );
    }
    let tree = &v.tree;
    let _ = writeln!(
        out,
        "tree: {}/{} actors running, {} restarts",
        tree.running, tree.actors, tree.restarts
    );
    if !tree.not_running.is_empty() {
        let _ = writeln!(out, "not running: {}", tree.not_running.join(", "));
    }
    if let Some(rss) = v.memory_rss_bytes {
        let pressure = match v.memory_pressure() {
            Some(m) => format!(
                ", {:.1}% of the {} limit (acts at {}%)",
                m.pressure_percent, m.basis, m.threshold_percent
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "memory: {:.1} MiB resident{pressure}",
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    if !v.open_breakers.is_empty() {
        let names: Vec<&str> = v.open_breakers.iter().map(|b| b.vps.as_str()).collect();
        let _ = writeln!(out, "open breakers: {}", names.join(", "));
    }
    (out, 0)
}

/// `chom tree`.
pub fn tree(report: &SupervisorReport) -> (String, u8) {
    let mut out = format!("root ({})\n", report.strategy);
    render_children(&report.children, "", &mut out);
    (out, 0)
}

fn render_children(children: &[ChildReport], prefix: &str, out: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (branch, next) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let label = match &child.children {
            Some(sub) => format!("{} ({})", child.id, sub.strategy),
            None => child.id.clone(),
        };
        let width = 28usize.saturating_sub(prefix.chars().count() + 4);
        let _ = write!(
            out,
            "{prefix}{branch}{label:<width$} {:<10} restarts {}",
            child.state.as_str(),
            child.restart_count
        );
        if child.recycles > 0 {
            let _ = write!(out, ", recycled {}", child.recycles);
        }
        if let Some(f) = &child.last_failure {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(f.at_unix_ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            let _ = write!(out, "  last failure {at}: {}", f.reason);
            if let Some(us) = child.last_recovery_us {
                let _ = write!(out, " (back in {})", micros(us));
            }
        }
        out.push('\n');
        if let Some(sub) = &child.children {
            render_children(&sub.children, &format!("{prefix}{next}"), out);
        }
    }
}

/// `chom restart PATH`.
pub fn restart(v: &Restarted) -> (String, u8) {
    (
        format!(
            "restarted {} (now {}, restart count {})\n",
            v.path,
            or_dash(v.state.map(|s| s.as_str())),
            text(&v.restart_count)
        ),
        0,
    )
}

/// `chom health`: exit 1 when unhealthy, so scripts can use it as a probe.
pub fn health(v: &HealthReport) -> (String, u8) {
    let mut out = format!("{} at {}\n", text(&v.status), v.timestamp);
    for (name, check) in &v.checks {
        let mut details: Vec<String> = check
            .details
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        if let Some(m) = &check.message {
            details.insert(0, m.clone());
        }
        let _ = writeln!(
            out,
            "  {name:<14} {:<8} {}",
            text(&check.status),
            details.join("  ")
        );
    }
    let code = if v.status == Overall::Unhealthy { 1 } else { 0 };
    (out, code)
}

/// `chom shutdown`.
pub fn shutdown(_: &ShuttingDown) -> (String, u8) {
    ("node is shutting down\n".to_owned(), 0)
}

// === jobs, queues, dead letters ===
//
// Numbers in the listings are printed without padding: that is how these lines have always
// looked, and scripts may read them.

/// `chom jobs enqueue`: the id alone, so scripts can capture it.
pub fn enqueued(v: &Enqueued) -> (String, u8) {
    (format!("{}\n", v.id), 0)
}

fn job_line(j: &Job) -> String {
    format!(
        "{}  {:<9} {:<9} {:<16} attempts {}{}",
        j.id,
        j.state.as_str(),
        j.queue,
        j.kind,
        j.attempts,
        j.last_error
            .as_ref()
            .map(|e| format!("  last error: {e}{}", cut_mark(j.last_error_truncated)))
            .unwrap_or_default()
    )
}

/// "…" after a text the node cut short (a listing's preview), so a reader knows there is more
/// (`chom jobs show` has the whole).
fn cut_mark(truncated: bool) -> &'static str {
    if truncated { " …(cut)" } else { "" }
}

/// `chom jobs show`.
pub fn job(v: &Job) -> (String, u8) {
    let rows = [
        ("id", Some(text(&v.id)), false),
        ("kind", Some(v.kind.clone()), false),
        ("queue", Some(v.queue.clone()), false),
        ("state", Some(text(&v.state)), false),
        ("attempts", Some(text(&v.attempts)), false),
        ("max_attempts", v.max_attempts.as_ref().map(text), false),
        ("timeout_ms", v.timeout_ms.as_ref().map(text), false),
        ("unique_key", v.unique_key.clone(), false),
        ("payload", Some(v.payload.clone()), v.payload_truncated),
        ("last_error", v.last_error.clone(), v.last_error_truncated),
        ("available_at", Some(text(&v.available_at)), false),
        ("reserved_at", v.reserved_at.as_ref().map(text), false),
        ("reserved_by", v.reserved_by.clone(), false),
        ("created_at", Some(text(&v.created_at)), false),
        ("finished_at", v.finished_at.as_ref().map(text), false),
    ];
    let mut out = String::new();
    for (key, value, cut) in rows {
        if let Some(value) = value {
            let _ = writeln!(out, "{key:<13} {value}{}", cut_mark(cut));
        }
    }
    (out, 0)
}

/// `chom jobs list`.
pub fn jobs(v: &api::jobs::Jobs) -> (String, u8) {
    let mut out: String = v.jobs.iter().map(|j| job_line(j) + "\n").collect();
    if v.jobs.is_empty() {
        out.push_str("no jobs\n");
    }
    (out, 0)
}

/// `chom jobs kill-stuck`.
pub fn killed(v: &api::jobs::Killed) -> (String, u8) {
    (
        format!(
            "{} job(s) reserved longer than {} moved to failed_jobs\n",
            v.killed.len(),
            v.older_than
        ),
        0,
    )
}

/// `chom queue stats`.
pub fn queue_stats(v: &api::queue::QueueStatsReply) -> (String, u8) {
    let header = format!(
        "{:<10} {:>8} {:>8} {:>8} {:>10} {:>8}\n",
        "queue", "ready", "delayed", "running", "completed", "failed"
    );
    let out = table(header, &v.queues, |q| {
        format!(
            "{:<10} {} {} {} {} {}{}",
            q.queue,
            q.ready,
            q.delayed,
            q.reserved,
            q.completed,
            q.failed,
            if q.paused { "  (paused)" } else { "" }
        )
    });
    (out, 0)
}

/// `chom queue pause|resume`.
pub fn paused(v: &api::queue::Paused) -> (String, u8) {
    let what = if v.paused {
        "paused: no node claims from it until resumed"
    } else {
        "resumed"
    };
    (format!("queue {} {what}\n", v.queue), 0)
}

/// `chom failed list`.
pub fn failed(v: &api::failed::Failed) -> (String, u8) {
    let mut out = table(String::new(), &v.failed, |f| {
        format!(
            "{}  {}  {:<9} {:<16} job {} after {} attempt(s): {}{}",
            f.id,
            text(&f.failed_at),
            f.queue,
            f.kind,
            f.job_id,
            f.attempts,
            f.exception,
            cut_mark(f.exception_truncated)
        )
    });
    if v.failed.is_empty() {
        out.push_str("no failed jobs\n");
    }
    (out, 0)
}

/// `chom failed retry`.
pub fn retried(v: &api::failed::Retried) -> (String, u8) {
    (format!("{} failed job(s) enqueued again\n", v.retried), 0)
}

/// `chom failed prune`.
pub fn pruned(v: &api::failed::Pruned) -> (String, u8) {
    (
        format!(
            "{} failed job(s) older than {} deleted\n",
            v.pruned, v.older_than
        ),
        0,
    )
}

/// `chom failed analyze`.
pub fn analyze(v: &api::failed::Analysis) -> (String, u8) {
    let header = format!(
        "failures in the last {} by kind (flagged at {} or more)\n",
        v.window, v.threshold
    );
    let mut out = table(header, &v.kinds, |k| {
        format!(
            "  {:<20} {}{}  last: {}",
            k.kind,
            k.count,
            if k.flagged { "  FLAGGED" } else { "" },
            k.last_error
        )
    });
    if v.kinds.is_empty() {
        out.push_str("  none\n");
    }
    (out, 0)
}

// === fleet ===

/// `chom vps list`.
pub fn vps_list(v: &api::vps::Servers) -> (String, u8) {
    if v.vps.is_empty() {
        return (
            "no servers (add one with `chom vps add ID HOST`)\n".to_owned(),
            0,
        );
    }
    let header = format!(
        "{:<20} {:<30} {:<10} {:<8} {:<9} {:<8} {:<12} HOST KEY\n",
        "ID", "ADDRESS", "USER", "TENANT", "MAX SITES", "SOURCE", "ACTOR"
    );
    let out = table(header, &v.vps, |r| {
        let s = &r.server;
        format!(
            "{:<20} {:<30} {:<10} {:<8} {:<9} {:<8} {:<12} {}",
            s.id,
            format!("{}:{}", s.host, s.port),
            or_dash(s.user.as_deref()),
            s.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            s.max_sites
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
            s.source,
            r.actor,
            s.host_key.as_deref().unwrap_or("known_hosts"),
        )
    });
    (out, 0)
}

/// `chom vps add`.
pub fn vps_added(v: &api::vps::Added) -> (String, u8) {
    let owner = v
        .vps
        .tenant_id
        .map_or_else(String::new, |t| format!(" for tenant {t}"));
    (
        format!("added vps {}{owner}; its actor is running\n", v.vps.id),
        0,
    )
}

/// `chom vps remove`.
pub fn vps_removed(v: &api::vps::Removed) -> (String, u8) {
    (format!("removed vps {}\n", v.removed), 0)
}

fn breaker_line(i: &ServerBreaker) -> String {
    let session = if i.connected { "yes" } else { "no" };
    breaker_row(&i.vps, &i.breaker, session)
}

/// One row of `chom breaker list`: name, state, failures, time left open, session, reason.
fn breaker_row(name: &str, b: &chom_core::breaker::BreakerInfo, session: &str) -> String {
    let left = b
        .open_remaining_ms
        .map(|ms| format!("{}s", ms.div_ceil(1000)))
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<20} {:<12} {:<9} {:<9} {:<9} {}",
        name,
        b.state.as_str(),
        b.failures.to_string(),
        left,
        session,
        or_dash(b.reason.as_deref()),
    )
}

/// `chom breaker list`: the servers' breakers, then the node's others (`observability`).
pub fn breakers(v: &api::breaker::Breakers) -> (String, u8) {
    let mut out = if v.breakers.is_empty() {
        "no servers\n".to_owned()
    } else {
        let header = format!(
            "{:<20} {:<12} {:<9} {:<9} {:<9} REASON\n",
            "VPS", "STATE", "FAILURES", "OPEN FOR", "SESSION"
        );
        table(header, &v.breakers, breaker_line)
    };
    if !v.services.is_empty() {
        let header = format!(
            "\n{:<20} {:<12} {:<9} {:<9} {:<9} REASON\n",
            "SERVICE", "STATE", "FAILURES", "OPEN FOR", "-"
        );
        out.push_str(&table(header, &v.services, |s| {
            breaker_row(&s.service, &s.breaker, "-")
        }));
    }
    (out, 0)
}

/// `chom breaker reset|open|close`.
pub fn breaker(v: &ServerBreaker) -> (String, u8) {
    (breaker_line(v) + "\n", 0)
}

/// `chom alerts`: severity, name, since when, summary.
pub fn alerts(v: &api::alerts::Alerts) -> (String, u8) {
    if v.alerts.is_empty() {
        return ("no active alerts\n".to_owned(), 0);
    }
    let header = format!(
        "{:<10} {:<32} {:<21} SUMMARY\n",
        "SEVERITY", "ALERT", "SINCE"
    );
    let out = table(header, &v.alerts, |a| {
        format!(
            "{:<10} {:<32} {:<21} {}",
            or_dash(a.severity.as_deref()),
            a.alertname,
            a.starts_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            or_dash(a.annotations.get("summary").map(String::as_str))
        )
    });
    (out, 0)
}

/// `chom tenants list`.
pub fn tenants(v: &api::tenants::Tenants) -> (String, u8) {
    let header = format!("{:<8} {:<30} {:<12} STATUS\n", "ID", "NAME", "TIER");
    let out = table(header, &v.tenants, |t| {
        format!(
            "{} {:<30} {:<12} {}",
            t.id,
            t.name,
            t.tier.as_str(),
            t.status
        )
    });
    (out, 0)
}

/// `chom tenants add`.
pub fn tenant_added(v: &Tenant) -> (String, u8) {
    (format!("{}\n", v.id), 0)
}

/// `chom tenants suspend` / `resume`.
pub fn tenant_status(v: &Tenant) -> (String, u8) {
    (format!("tenant {} ({}) is {}\n", v.id, v.name, v.status), 0)
}

/// `chom tenants token`: the token alone on the last line, so `| tail -n1` takes it.
pub fn token_issued(v: &api::tenants::Issued) -> (String, u8) {
    (
        format!(
            "token {} of tenant {} (shown only now; the node keeps only its SHA-256):\n{}\n",
            v.id, v.tenant, v.token
        ),
        0,
    )
}

/// `chom ui user add`.
pub fn ui_user_added(v: &api::ui::UserAdded) -> (String, u8) {
    (
        format!(
            "operator {} added; their password (shown only now; the node keeps only its Argon2id hash):\n{}\n",
            v.name, v.password
        ),
        0,
    )
}

/// `chom ui user remove`: exit 1 when there was no such operator.
pub fn ui_user_removed(v: &api::ui::UserRemoved) -> (String, u8) {
    if v.removed {
        (
            format!("operator {} removed; their sessions ended\n", v.name),
            0,
        )
    } else {
        (format!("no operator named {}\n", v.name), 1)
    }
}

/// `chom tenants tokens`.
pub fn tokens(v: &api::tenants::TokenList) -> (String, u8) {
    let header = format!(
        "{:<8} {:<24} {:<20} {:<20} REVOKED\n",
        "ID", "NAME", "CREATED", "LAST USED"
    );
    let when = |t: Option<&chrono::DateTime<chrono::Utc>>| match t {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => "-".to_owned(),
    };
    let out = table(header, &v.tokens, |t| {
        format!(
            "{:<8} {:<24} {:<20} {:<20} {}",
            t.id,
            t.name,
            when(Some(&t.created_at)),
            when(t.last_used_at.as_ref()),
            when(t.revoked_at.as_ref()),
        )
    });
    (out, 0)
}

/// `chom tenants revoke`.
pub fn token_revoked(v: &api::tenants::Revoked) -> (String, u8) {
    (format!("token {} revoked\n", v.id), 0)
}

/// `chom sites list`.
pub fn sites(v: &api::sites::Sites) -> (String, u8) {
    let header = format!(
        "{:<8} {:<8} {:<16} {:<32} {:<10} {:<8} REASON\n",
        "ID", "TENANT", "VPS", "DOMAIN", "TYPE", "STATUS"
    );
    let out = table(header, &v.sites, |s| {
        format!(
            "{} {} {:<16} {:<32} {:<10} {:<8} {}",
            s.id,
            s.tenant_id,
            s.vps_id,
            s.domain,
            s.site_type,
            s.status.as_str(),
            or_dash(s.failure_reason.as_deref()),
        )
    });
    (out, 0)
}

/// `chom sites add`.
pub fn site_added(v: &api::sites::Created) -> (String, u8) {
    let job = match v.job {
        Some(id) => format!("; provisioning job {id}"),
        None => String::new(),
    };
    (format!("site {} ({}){job}\n", v.site.id, v.site.domain), 0)
}

/// `chom sites provision`.
pub fn provisioning(v: &api::sites::Provisioning) -> (String, u8) {
    (format!("provisioning job {}\n", v.job), 0)
}

/// A short duration for people: `38 µs`, `6.9 ms`, `2.1 s`.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

/// `chom metrics query`: one line per series (`name{label="value"} value`), under a first line
/// saying so when the answer came from the cache.
pub fn metrics_answer(v: &api::metrics::Answer) -> (String, u8) {
    let mut out = String::new();
    if v.cached {
        let _ = writeln!(
            out,
            "# cached answer from {}: {}",
            or_dash(v.cached_at.as_deref()),
            or_dash(v.warning.as_deref())
        );
    }
    let result = v.data.get("result").unwrap_or(&Value::Null);
    match v.data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            for series in result.as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{} {}",
                    series_name(&series["metric"]),
                    sample(&series["value"])
                );
            }
        }
        Some("matrix") => {
            for series in result.as_array().into_iter().flatten() {
                let values: Vec<String> = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(sample)
                    .collect();
                let _ = writeln!(
                    out,
                    "{} {}",
                    series_name(&series["metric"]),
                    values.join(" ")
                );
            }
        }
        // scalar and string: one [time, value] pair.
        _ => {
            let _ = writeln!(out, "{}", sample(result));
        }
    }
    if out.is_empty() || (v.cached && out.lines().count() == 1) {
        out.push_str("no series\n");
    }
    (out, 0)
}

/// `name{label="value",...}` of a series' labels (`{}` when it has none).
fn series_name(metric: &Value) -> String {
    let Some(labels) = metric.as_object() else {
        return "{}".to_owned();
    };
    let name = labels.get("__name__").and_then(Value::as_str).unwrap_or("");
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or("").to_owned())))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// The value of a `[time, "value"]` pair (the pair itself if it is not one).
fn sample(pair: &Value) -> String {
    match pair.as_array().map(Vec::as_slice) {
        Some([_, Value::String(value)]) => value.clone(),
        _ => pair.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// A reply as the CLI decodes it: control characters escaped first.
    fn reply<T: DeserializeOwned>(doc: &Value) -> T {
        serde_json::from_value(escape_strings(doc)).unwrap()
    }

    fn job_doc(extra: Value) -> Value {
        let mut doc = json!({ "id": 7, "kind": "noop", "state": "failed", "queue": "default",
            "attempts": 1, "max_attempts": null, "timeout_ms": null, "unique_key": null,
            "payload": "{}", "payload_truncated": false, "last_error": null,
            "last_error_truncated": false, "reserved_at": null, "reserved_by": null,
            "available_at": "2024-05-01T10:00:00.123456Z", "created_at": "2024-05-01T10:00:00Z",
            "finished_at": null });
        if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
            doc.extend(extra);
        }
        doc
    }

    #[test]
    fn control_characters_in_stored_text_are_shown_escaped() {
        let doc = json!({ "tenants": [
            { "id": 1, "name": "evil\u{1b}[2J\u{1b}[31mred\nfake line", "tier": "pro", "status": "active" }
        ]});
        let (text, _) = tenants(&reply(&doc));
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("evil\\u{1b}[2J"), "{text:?}");
        // Header plus one row: the newline in the name did not make a line of its own.
        assert_eq!(text.lines().count(), 2, "{text:?}");

        let job = job_doc(json!({ "last_error": "boom\r\u{1b}[1A" }));
        let (text, _) = super::job(&reply(&job));
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        // Keys too (health check names are keys), and numbers are left alone.
        let doc = escape_strings(&json!({ "a\u{7}": 1 }));
        assert_eq!(doc, json!({ "a\\u{7}": 1 }));
    }

    #[test]
    fn tokens_are_listed_by_name_and_times_and_a_new_one_comes_last() {
        let doc = json!({ "tokens": [
            { "id": 3, "tenant_id": 1, "name": "ci\u{1b}[2J", "created_at": "2026-01-02T03:04:05.123Z",
              "last_used_at": null, "revoked_at": "2026-01-03T00:00:00Z" }
        ]});
        let (text, _) = tokens(&reply(&doc));
        let row = format!(
            "3        {:<24} 2026-01-02T03:04:05Z -                    2026-01-03T00:00:00Z",
            "ci\\u{1b}[2J"
        );
        assert_eq!(text.lines().nth(1), Some(row.as_str()), "{text}");
        let issued = json!({ "token": "chom_00", "id": 3, "tenant": 1 });
        let (text, _) = token_issued(&reply(&issued));
        assert_eq!(text.lines().last(), Some("chom_00"));
    }

    #[test]
    fn texts_the_node_cut_short_are_marked() {
        let job = job_doc(json!({ "payload": "{\"a\":", "payload_truncated": true,
            "last_error": "boom", "last_error_truncated": false }));
        let (text, _) = super::job(&reply(&job));
        assert!(text.contains("payload       {\"a\": …(cut)"), "{text}");
        assert!(text.contains("last_error    boom\n"), "{text}");
        let list = json!({ "jobs": [
            job_doc(json!({ "last_error": "bo", "last_error_truncated": true }))
        ]});
        let (list, _) = jobs(&reply(&list));
        assert!(list.contains("last error: bo …(cut)"), "{list}");
        let (dead, _) = failed(&reply(&json!({ "failed": [
            { "id": 1, "uuid": "u", "connection": "database", "payload": "{}",
              "failed_at": "2024-05-01T10:00:00Z", "queue": "q", "kind": "k", "job_id": 7,
              "attempts": 1, "exception": "e", "exception_truncated": true }
        ]})));
        assert!(dead.contains(": e …(cut)"), "{dead}");
    }

    #[test]
    fn fields_are_shown_as_the_document_has_them() {
        // Times as their RFC 3339 text, absent values left out, numbers bare.
        let (text, _) = super::job(&reply(&job_doc(json!({ "max_attempts": 4 }))));
        assert_eq!(
            text,
            "id            7\nkind          noop\nqueue         default\nstate         failed\n\
             attempts      1\nmax_attempts  4\npayload       {}\n\
             available_at  2024-05-01T10:00:00.123456Z\ncreated_at    2024-05-01T10:00:00Z\n"
        );
        let (line, _) = jobs(&reply(&json!({ "jobs": [job_doc(json!({}))] })));
        assert_eq!(line, "7  failed    default   noop             attempts 1\n");
        let (text, _) = restart(&reply(
            &json!({ "path": "store", "state": null, "restart_count": null }),
        ));
        assert_eq!(text, "restarted store (now -, restart count null)\n");
    }

    #[test]
    fn metrics_answers_print_one_line_per_series_and_say_when_cached() {
        let answer: api::metrics::Answer = serde_json::from_value(json!({
            "_cached": true,
            "cached_at": "2026-12-03T06:00:00+00:00",
            "_warning": "the observability host is unreachable",
            "resultType": "vector",
            "result": [
                {"metric": {"__name__": "up", "job": "chom"}, "value": [1.5, "1"]},
                {"metric": {}, "value": [1.5, "0"]},
            ],
        }))
        .unwrap();
        let (text, code) = metrics_answer(&answer);
        assert_eq!(code, 0);
        assert_eq!(
            text,
            "# cached answer from 2026-12-03T06:00:00+00:00: the observability host is unreachable\n\
             up{job=\"chom\"} 1\n{} 0\n"
        );
        let scalar: api::metrics::Answer = serde_json::from_value(json!({
            "_cached": false, "resultType": "scalar", "result": [1.5, "2"],
        }))
        .unwrap();
        assert_eq!(metrics_answer(&scalar).0, "2\n");
        let empty: api::metrics::Answer = serde_json::from_value(json!({
            "_cached": false, "resultType": "vector", "result": [],
        }))
        .unwrap();
        assert_eq!(metrics_answer(&empty).0, "no series\n");
    }
}
