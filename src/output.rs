//! Human output of the admin commands. Each renderer takes the RPC result (the same document
//! `--json` prints) and returns the text and the exit status.

use std::fmt::Write as _;

use chom_core::limits::escape_control;
use chom_supervisors::{ChildReport, SupervisorReport};
use serde_json::Value;

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

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// `chom status`.
pub fn status(v: &Value) -> (String, u8) {
    let mut out = String::new();
    let uptime = std::time::Duration::from_secs(v["uptime_secs"].as_u64().unwrap_or(0));
    let ready = if v["ready"].as_bool() == Some(true) {
        "ready"
    } else {
        "starting (migrations pending)"
    };
    let _ = writeln!(
        out,
        "chom {} on {} (pid {}), up {}, {ready}",
        str_of(v, "version"),
        str_of(v, "node"),
        v["pid"],
        humantime::format_duration(uptime)
    );
    let _ = writeln!(
        out,
        "database: {}, cache: {}",
        str_of(v, "database"),
        str_of(v, "cache")
    );
    let tree = &v["tree"];
    let _ = writeln!(
        out,
        "tree: {}/{} actors running, {} restarts",
        tree["running"], tree["actors"], tree["restarts"]
    );
    if let Some(down) = tree["not_running"].as_array().filter(|d| !d.is_empty()) {
        let names: Vec<&str> = down.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "not running: {}", names.join(", "));
    }
    if let Some(rss) = v["memory_rss_bytes"].as_u64() {
        let m = &v["memory"];
        let pressure = match (m["pressure_percent"].as_f64(), m["basis"].as_str()) {
            (Some(p), Some(basis)) => format!(
                ", {p:.1}% of the {basis} limit (acts at {}%)",
                m["threshold_percent"]
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "memory: {:.1} MiB resident{pressure}",
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(open) = v["open_breakers"].as_array().filter(|o| !o.is_empty()) {
        let names: Vec<&str> = open.iter().filter_map(|b| b["vps"].as_str()).collect();
        let _ = writeln!(out, "open breakers: {}", names.join(", "));
    }
    (out, 0)
}

/// `chom tree`.
pub fn tree(v: &Value) -> (String, u8) {
    let report: SupervisorReport = match serde_json::from_value(v.clone()) {
        Ok(r) => r,
        Err(e) => return (format!("unreadable tree: {e}\n"), 1),
    };
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
            child.state, child.restart_count
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
pub fn restart(v: &Value) -> (String, u8) {
    (
        format!(
            "restarted {} (now {}, restart count {})\n",
            str_of(v, "path"),
            str_of(v, "state"),
            v["restart_count"]
        ),
        0,
    )
}

/// `chom health`: exit 1 when unhealthy, so scripts can use it as a probe.
pub fn health(v: &Value) -> (String, u8) {
    let mut out = format!("{} at {}\n", str_of(v, "status"), str_of(v, "timestamp"));
    if let Some(checks) = v["checks"].as_object() {
        for (name, check) in checks {
            let mut details: Vec<String> = check
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "status" && *k != "message")
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect();
            if let Some(m) = check["message"].as_str() {
                details.insert(0, m.to_owned());
            }
            let _ = writeln!(
                out,
                "  {name:<14} {:<8} {}",
                str_of(check, "status"),
                details.join("  ")
            );
        }
    }
    let code = if str_of(v, "status") == "unhealthy" {
        1
    } else {
        0
    };
    (out, code)
}

/// `chom shutdown`.
pub fn shutdown(_: &Value) -> (String, u8) {
    ("node is shutting down\n".to_owned(), 0)
}

// === jobs, queues, dead letters ===

/// `chom jobs enqueue`: the id alone, so scripts can capture it.
pub fn enqueued(v: &Value) -> (String, u8) {
    (format!("{}\n", v["id"]), 0)
}

fn job_line(j: &Value) -> String {
    format!(
        "{:>8}  {:<9} {:<9} {:<16} attempts {}{}",
        j["id"],
        str_of(j, "state"),
        str_of(j, "queue"),
        str_of(j, "kind"),
        j["attempts"],
        j["last_error"]
            .as_str()
            .map(|e| format!("  last error: {e}{}", cut_mark(j, "last_error_truncated")))
            .unwrap_or_default()
    )
}

/// "…" after a text the node cut short (a listing's preview), so a reader knows there is more
/// (`chom jobs show` has the whole).
fn cut_mark(v: &Value, flag: &str) -> &'static str {
    if v[flag] == true { " …(cut)" } else { "" }
}

/// `chom jobs show`.
pub fn job(v: &Value) -> (String, u8) {
    let mut out = String::new();
    for key in [
        "id",
        "kind",
        "queue",
        "state",
        "attempts",
        "max_attempts",
        "timeout_ms",
        "unique_key",
        "payload",
        "last_error",
        "available_at",
        "reserved_at",
        "reserved_by",
        "created_at",
        "finished_at",
    ] {
        let value = &v[key];
        if !value.is_null() {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let mark = match key {
                "payload" => cut_mark(v, "payload_truncated"),
                "last_error" => cut_mark(v, "last_error_truncated"),
                _ => "",
            };
            let _ = writeln!(out, "{key:<13} {text}{mark}");
        }
    }
    (out, 0)
}

/// `chom jobs list`.
pub fn jobs(v: &Value) -> (String, u8) {
    let list = v["jobs"].as_array().cloned().unwrap_or_default();
    let mut out: String = list.iter().map(|j| job_line(j) + "\n").collect();
    if list.is_empty() {
        out.push_str("no jobs\n");
    }
    (out, 0)
}

/// `chom jobs kill-stuck`.
pub fn killed(v: &Value) -> (String, u8) {
    let n = v["killed"].as_array().map_or(0, Vec::len);
    (
        format!(
            "{n} job(s) reserved longer than {} moved to failed_jobs\n",
            str_of(v, "older_than")
        ),
        0,
    )
}

/// `chom queue stats`.
pub fn queue_stats(v: &Value) -> (String, u8) {
    let mut out = format!(
        "{:<10} {:>8} {:>8} {:>8} {:>10} {:>8}\n",
        "queue", "ready", "delayed", "running", "completed", "failed"
    );
    for q in v["queues"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>8} {:>8} {:>10} {:>8}{}",
            str_of(q, "queue"),
            q["ready"],
            q["delayed"],
            q["reserved"],
            q["completed"],
            q["failed"],
            if q["paused"] == true {
                "  (paused)"
            } else {
                ""
            }
        );
    }
    (out, 0)
}

/// `chom queue pause|resume`.
pub fn paused(v: &Value) -> (String, u8) {
    let what = if v["paused"] == true {
        "paused: no node claims from it until resumed"
    } else {
        "resumed"
    };
    (format!("queue {} {what}\n", str_of(v, "queue")), 0)
}

/// `chom failed list`.
pub fn failed(v: &Value) -> (String, u8) {
    let list = v["failed"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    for f in &list {
        let _ = writeln!(
            out,
            "{:>8}  {}  {:<9} {:<16} job {} after {} attempt(s): {}{}",
            f["id"],
            str_of(f, "failed_at"),
            str_of(f, "queue"),
            str_of(f, "kind"),
            f["job_id"],
            f["attempts"],
            str_of(f, "exception"),
            cut_mark(f, "exception_truncated")
        );
    }
    if list.is_empty() {
        out.push_str("no failed jobs\n");
    }
    (out, 0)
}

/// `chom failed retry`.
pub fn retried(v: &Value) -> (String, u8) {
    (
        format!("{} failed job(s) enqueued again\n", v["retried"]),
        0,
    )
}

/// `chom failed prune`.
pub fn pruned(v: &Value) -> (String, u8) {
    (
        format!(
            "{} failed job(s) older than {} deleted\n",
            v["pruned"],
            str_of(v, "older_than")
        ),
        0,
    )
}

/// `chom failed analyze`.
pub fn analyze(v: &Value) -> (String, u8) {
    let mut out = format!(
        "failures in the last {} by kind (flagged at {} or more)\n",
        str_of(v, "window"),
        v["threshold"]
    );
    let kinds = v["kinds"].as_array().cloned().unwrap_or_default();
    for k in &kinds {
        let _ = writeln!(
            out,
            "  {:<20} {:>6}{}  last: {}",
            str_of(k, "kind"),
            k["count"],
            if k["flagged"] == true {
                "  FLAGGED"
            } else {
                ""
            },
            str_of(k, "last_error")
        );
    }
    if kinds.is_empty() {
        out.push_str("  none\n");
    }
    (out, 0)
}

// === fleet ===

fn opt(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `chom vps list`.
pub fn vps_list(v: &Value) -> (String, u8) {
    let mut out = String::new();
    let rows = v["vps"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return (
            "no servers (add one with `chom vps add ID HOST`)\n".to_owned(),
            0,
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:<30} {:<10} {:<8} {:<12} HOST KEY",
        "ID", "ADDRESS", "USER", "SOURCE", "ACTOR"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<20} {:<30} {:<10} {:<8} {:<12} {}",
            str_of(&r, "id"),
            format!("{}:{}", str_of(&r, "host"), r["port"]),
            opt(&r, "user"),
            str_of(&r, "source"),
            str_of(&r, "actor"),
            r.get("host_key")
                .and_then(Value::as_str)
                .unwrap_or("known_hosts"),
        );
    }
    (out, 0)
}

/// `chom vps add`.
pub fn vps_added(v: &Value) -> (String, u8) {
    (
        format!(
            "added vps {}; its actor is running\n",
            str_of(&v["vps"], "id")
        ),
        0,
    )
}

/// `chom vps remove`.
pub fn vps_removed(v: &Value) -> (String, u8) {
    (format!("removed vps {}\n", str_of(v, "removed")), 0)
}

fn breaker_line(out: &mut String, i: &Value) {
    let b = &i["breaker"];
    let left = b
        .get("open_remaining_ms")
        .and_then(Value::as_u64)
        .map(|ms| format!("{}s", ms.div_ceil(1000)))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<9} {:<9} {:<9} {}",
        str_of(i, "vps"),
        str_of(b, "state"),
        opt(b, "failures"),
        left,
        if i["connected"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        opt(b, "reason"),
    );
}

/// `chom breaker list`.
pub fn breakers(v: &Value) -> (String, u8) {
    let rows = v["breakers"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return ("no servers\n".to_owned(), 0);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<9} {:<9} {:<9} REASON",
        "VPS", "STATE", "FAILURES", "OPEN FOR", "SESSION"
    );
    for r in &rows {
        breaker_line(&mut out, r);
    }
    (out, 0)
}

/// `chom breaker reset|open|close`.
pub fn breaker(v: &Value) -> (String, u8) {
    let mut out = String::new();
    breaker_line(&mut out, v);
    (out, 0)
}

/// `chom tenants list`.
pub fn tenants(v: &Value) -> (String, u8) {
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:<30} {:<12} STATUS", "ID", "NAME", "TIER");
    for t in v["tenants"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            out,
            "{:<8} {:<30} {:<12} {}",
            t["id"],
            str_of(&t, "name"),
            str_of(&t, "tier"),
            str_of(&t, "status")
        );
    }
    (out, 0)
}

/// `chom tenants add`.
pub fn tenant_added(v: &Value) -> (String, u8) {
    (format!("{}\n", v["id"]), 0)
}

/// `chom sites list`.
pub fn sites(v: &Value) -> (String, u8) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<16} {:<32} {:<10} {:<8} REASON",
        "ID", "TENANT", "VPS", "DOMAIN", "TYPE", "STATUS"
    );
    for s in v["sites"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<16} {:<32} {:<10} {:<8} {}",
            s["id"],
            s["tenant_id"],
            str_of(&s, "vps_id"),
            str_of(&s, "domain"),
            str_of(&s, "type"),
            str_of(&s, "status"),
            opt(&s, "failure_reason"),
        );
    }
    (out, 0)
}

/// `chom sites add`.
pub fn site_added(v: &Value) -> (String, u8) {
    let site = &v["site"];
    let job = match v.get("job").and_then(Value::as_i64) {
        Some(id) => format!("; provisioning job {id}"),
        None => String::new(),
    };
    (
        format!("site {} ({}){job}\n", site["id"], str_of(site, "domain")),
        0,
    )
}

/// `chom sites provision`.
pub fn provisioning(v: &Value) -> (String, u8) {
    (format!("provisioning job {}\n", v["job"]), 0)
}

/// A short duration for people: `38 µs`, `6.9 ms`, `2.1 s`.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_in_stored_text_are_shown_escaped() {
        let doc = json!({ "tenants": [
            { "id": 1, "name": "evil\u{1b}[2J\u{1b}[31mred\nfake line", "tier": "pro", "status": "active" }
        ]});
        let (text, _) = tenants(&escape_strings(&doc));
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("evil\\u{1b}[2J"), "{text:?}");
        // Header plus one row: the newline in the name did not make a line of its own.
        assert_eq!(text.lines().count(), 2, "{text:?}");

        let job = json!({ "id": 7, "kind": "noop", "last_error": "boom\r\u{1b}[1A" });
        let (text, _) = super::job(&escape_strings(&job));
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        // Keys too (health check names are keys), and numbers are left alone.
        let doc = escape_strings(&json!({ "a\u{7}": 1 }));
        assert_eq!(doc, json!({ "a\\u{7}": 1 }));
    }

    #[test]
    fn texts_the_node_cut_short_are_marked() {
        let job = json!({ "id": 7, "kind": "noop", "state": "failed", "queue": "default",
            "attempts": 1, "payload": "{\"a\":", "payload_truncated": true,
            "last_error": "boom", "last_error_truncated": false });
        let (text, _) = super::job(&job);
        assert!(text.contains("payload       {\"a\": …(cut)"), "{text}");
        assert!(text.contains("last_error    boom\n"), "{text}");
        let (list, _) = jobs(&json!({ "jobs": [
            { "id": 7, "state": "failed", "queue": "default", "kind": "noop", "attempts": 1,
              "last_error": "bo", "last_error_truncated": true }
        ]}));
        assert!(list.contains("last error: bo …(cut)"), "{list}");
        let (dead, _) = failed(&json!({ "failed": [
            { "id": 1, "failed_at": "t", "queue": "q", "kind": "k", "job_id": 7, "attempts": 1,
              "exception": "e", "exception_truncated": true }
        ]}));
        assert!(dead.contains(": e …(cut)"), "{dead}");
    }
}
