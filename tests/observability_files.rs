//! The files shipped for the observability host (`deploy/observability/`): Prometheus' and
//! Alertmanager's own tools accept them, the rule unit tests pass, and every alert carries what
//! an operator needs (severity, summary, description, a runbook link whose section exists).
//! `promtool` and `amtool` come from Debian's `prometheus` and `prometheus-alertmanager`
//! (installed by `scripts/test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/observability")
        .join(path)
}

/// Run `tool args` in `dir`; it must succeed (its output is the failure message otherwise).
fn run_ok(dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool}: {e} (install Debian's prometheus and prometheus-alertmanager)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Vec<Value> {
    let file = yaml(&deploy("prometheus/rules/chom.rules.yml"));
    let groups = file["groups"].as_sequence().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"].as_str(), Some("chom_application"));
    assert_eq!(groups[0]["interval"].as_str(), Some("60s"));
    groups[0]["rules"].as_sequence().unwrap().clone()
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = deploy("prometheus/rules");
    let checked = run_ok(&dir, "promtool", &["check", "rules", "chom.rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_ok(&dir, "promtool", &["test", "rules", "chom.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn promtool_and_amtool_accept_the_configs() {
    let checked = run_ok(
        &deploy("prometheus"),
        "promtool",
        &["check", "config", "prometheus.yml"],
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let checked = run_ok(
        &deploy("alertmanager"),
        "amtool",
        &["check-config", "alertmanager.yml"],
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
}

#[test]
fn the_plans_alerts_are_there_with_the_fixed_expressions() {
    let rules = rules();
    let expr = |name: &str| -> String {
        let rule = rules.iter().find(|r| r["alert"].as_str() == Some(name));
        let rule = rule.unwrap_or_else(|| panic!("no alert {name}"));
        rule["expr"].as_str().unwrap().to_owned()
    };
    assert_eq!(expr("QueueBacklog"), "sum(chom_queue_size) > 100");
    assert_eq!(expr("FailedJobsSpike"), "chom_failed_jobs_last_hour > 10");
    assert_eq!(expr("CircuitBreakerOpen"), "chom_circuit_breaker_open == 1");
    let failing = expr("HealthCheckFailing");
    assert!(
        failing.contains(r#"up{job="chom"} == 0"#) && failing.contains(r#"absent(up{job="chom"})"#),
        "{failing}"
    );
    expr("ChomDeadLetterSpike");
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_section() {
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"))
            .unwrap();
    // GitHub-style anchors of the runbook's second-level headings.
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let tests = std::fs::read_to_string(deploy("prometheus/rules/chom.rules.test.yml")).unwrap();
    let rules = rules();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            let text = rule["annotations"][key].as_str().unwrap_or("");
            assert!(!text.trim().is_empty(), "{name}: no {key}");
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let (page, anchor) = url.split_once('#').unwrap_or((url, ""));
        assert!(page.ends_with("docs/runbook.md"), "{name}: {url}");
        assert!(
            anchors.iter().any(|a| a == anchor),
            "{name}: the runbook has no section #{anchor}"
        );
        // Each alert is shown firing in the unit tests, and not firing in another case.
        let shown = format!("alertname: {name}\n");
        assert!(
            tests.matches(&shown).count() >= 2,
            "{name}: needs a firing and a not-firing case in chom.rules.test.yml"
        );
    }
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/chom-node.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "chom-node");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_owned();
            // One datasource, the provisioned one: a uid typo shows as an empty panel.
            assert_eq!(target["datasource"]["uid"], "chom-prometheus", "{title}");
            out.push((title, target["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_queries_parse_and_cover_what_an_operator_watches() {
    let provisioned = yaml(&deploy("grafana/provisioning/datasources/chom.yml"));
    let uids: Vec<&str> = provisioned["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|d| d["uid"].as_str())
        .collect();
    assert!(uids.contains(&"chom-prometheus"), "{uids:?}");
    let queries = dashboard_queries();
    // promtool parses PromQL when it checks rules: each query as a recording rule.
    let dir = std::env::temp_dir().join(format!("chom-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| format!("      - record: dashboard:q{i}\n        expr: {expr:?}\n"))
        .collect();
    let file = format!(
        "groups:\n  - name: dashboard\n    rules:\n{}",
        rules.concat()
    );
    std::fs::write(dir.join("dashboard.rules.yml"), file).unwrap();
    let checked = run_ok(&dir, "promtool", &["check", "rules", "dashboard.rules.yml"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let all: String = queries.iter().map(|(_, e)| e.as_str()).collect();
    for metric in [
        "chom_queue_size",
        "chom_jobs_total",
        "chom_job_duration_seconds_bucket",
        "chom_job_wait_seconds_bucket",
        "chom_circuit_breaker_open",
        "chom_health_check_status",
        "chom_actor_restarts_total",
        "chom_supervisor_escalations_total",
        "chom_memory_rss_bytes",
        "chom_ssh_commands_total",
        "chom_observability_queries_total",
        "chom_api_request_duration_seconds_bucket",
        "chom_api_requests_total",
        "chom_rate_limited_total",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }
}
