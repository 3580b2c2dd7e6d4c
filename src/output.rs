//! Human output of the admin commands. Each renderer takes the RPC result (the same document
//! `--json` prints) and returns the text and the exit status.

use std::fmt::Write as _;

use chom_supervisors::{ChildReport, SupervisorReport};
use serde_json::Value;

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
        let _ = writeln!(
            out,
            "memory: {:.1} MiB resident",
            rss as f64 / (1024.0 * 1024.0)
        );
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
