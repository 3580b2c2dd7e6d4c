//! The node and the observability host, end to end: the built node against Debian's real
//! `prometheus` and `prometheus-alertmanager` on loopback ports, with the files shipped in
//! `deploy/observability/` (addresses and intervals rewritten for a test, as each test says),
//! and a stand-in for Loki's push endpoint (Loki is not packaged for Debian; the receiver
//! decodes the wire format a real Loki accepts).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chom_testkit::{Alertmanager, LokiReceiver, Prometheus, Sshd};
use common::*;
use serde_json::{Value, json};

fn shipped(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/observability")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `text` with `from` replaced by `to`, which must occur: a shipped file that changed shape
/// fails here instead of leaving the test checking nothing.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not found in:\n{text}");
    text.replace(from, to)
}

/// Prometheus on the shipped `prometheus.yml` and rules, the node at `node` (HOST:PORT).
/// Rewritten for a test: the app host's addresses to `node`, intervals of seconds instead of
/// minutes (scrape, evaluation, SD refresh and the rule group), the rules file beside the
/// config, and no Alertmanager (alerts are read from Prometheus' own `ALERTS`).
fn shipped_prometheus(node: &str) -> Prometheus {
    let mut config = shipped("prometheus/prometheus.yml");
    for (from, to) in [
        ("app.chom.internal:8080", node),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 60s", "evaluation_interval: 1s"),
        ("refresh_interval: 60s", "refresh_interval: 1s"),
        ("rules/chom.rules.yml", "chom.rules.yml"),
        ("localhost:9093", "127.0.0.1:1"),
    ] {
        config = rewrite(&config, from, to);
    }
    let rules = rewrite(
        &shipped("prometheus/rules/chom.rules.yml"),
        "interval: 60s",
        "interval: 1s",
    );
    Prometheus::start(&config, &[("chom.rules.yml", &rules)])
}

/// `GET /api/v1/<path>?query=<q>` on Prometheus: its `data`.
fn prom_api(prom: &Prometheus, path: &str, query: Option<&str>) -> Value {
    let target = match query {
        Some(q) => format!("/api/v1/{path}?query={}", percent(q)),
        None => format!("/api/v1/{path}"),
    };
    let (code, body) = prom.daemon().get(&target).expect("prometheus answers");
    assert_eq!(code, 200, "{target}: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["data"].clone()
}

#[test]
fn prometheus_scrapes_the_node_and_its_inventory_and_a_backlog_goes_pending() {
    let port = free_port();
    let node_addr = format!("127.0.0.1:{port}");
    let prom = shipped_prometheus(&node_addr);
    let extra = format!(
        "[http]\nlisten = \"{node_addr}\"\n[observability]\nprometheus_url = \"{}\"\n",
        prom.daemon().url()
    );
    let node = Node::start("obs-scrape", &extra, &[]);
    node.wait_ready();
    // The node's own target, through the shipped job name.
    wait_for(Duration::from_secs(60), "up{job=\"chom\"} == 1", || {
        let data = prom_api(&prom, "query", Some("up{job=\"chom\"} == 1"));
        (!data["result"].as_array()?.is_empty()).then_some(())
    });
    // A server added live is scraped through HTTP SD, labelled with its server and tenant.
    let tenant = node.rpc("tenants.add", json!({ "name": "acme" }));
    let tenant_id = tenant["result"]["id"].as_i64().expect("tenant id");
    let added = node.rpc(
        "vps.add",
        json!({ "id": "web-1", "host": "127.0.0.1", "port": 22, "tenant_id": tenant_id }),
    );
    assert!(added.get("error").is_none(), "{added}");
    let target = wait_for(Duration::from_secs(60), "the SD target", || {
        let data = prom_api(&prom, "targets", None);
        data["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == "customer_servers")
            .cloned()
    });
    assert_eq!(target["labels"]["vps"], "web-1", "{target}");
    assert_eq!(
        target["labels"]["tenant_id"],
        tenant_id.to_string(),
        "{target}"
    );
    assert_eq!(target["labels"]["instance"], "127.0.0.1:9100", "{target}");
    // 150 jobs held in a paused queue: QueueBacklog (sum > 100 for 5m) becomes pending.
    let paused = node.rpc("queue.pause", json!({ "queue": "default" }));
    assert!(paused.get("error").is_none(), "{paused}");
    for _ in 0..150 {
        node.enqueue("noop", json!({}));
    }
    let pending = wait_for(Duration::from_secs(90), "QueueBacklog pending", || {
        let data = prom_api(
            &prom,
            "query",
            Some("ALERTS{alertname=\"QueueBacklog\",alertstate=\"pending\"}"),
        );
        data["result"].as_array()?.first().cloned()
    });
    assert_eq!(pending["metric"]["severity"], "warning", "{pending}");
    let backlog = prom_api(&prom, "query", Some("sum(chom_queue_size)"));
    assert_eq!(backlog["result"][0]["value"][1], "150", "{backlog}");
}

/// `chom metrics query QUERY --json` against `node`: exit status, document, and how long.
fn metrics_query(node: &Node, query: &str) -> (i32, Value, Duration, String) {
    let asked = Instant::now();
    let out = chom(
        Some(&node.config),
        &["--json", "metrics", "query", query],
        &[],
    );
    let took = asked.elapsed();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), doc, took, stderr)
}

fn observability_breaker(node: &Node) -> Value {
    let r = node.rpc("breaker.list", json!({}));
    let services = r["result"]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    services
        .into_iter()
        .find(|s| s["service"] == "observability")
        .unwrap_or_else(|| panic!("no observability breaker in {r}"))
}

/// With Prometheus frozen: the cached answer of `live`, within about two probe timeouts;
/// nothing cached for another query is exit 1.
fn frozen_answers_come_from_the_cache(node: &Node, live: &Value) {
    let (code, cached, took, stderr) = metrics_query(node, "up");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(cached["_cached"], true, "{cached}");
    assert!(cached["cached_at"].is_string(), "{cached}");
    assert!(cached["_warning"].is_string(), "{cached}");
    assert_eq!(
        cached["result"], live["result"],
        "the cached answer is the live one"
    );
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: the query timeout (15 s), not the probe's (1 s)"
    );
    // Nothing cached for this one: exit 1, saying why.
    let (code, _, _, stderr) = metrics_query(node, "count(up)");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no cached answer"), "{stderr}");
}

#[test]
fn metrics_queries_answer_live_then_cached_then_open_the_breaker_then_live_again() {
    let prom = Prometheus::start(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        &[],
    );
    // Probe limit 1 s, query limit 15 s: a frozen host must cost the former, not the latter.
    let extra = format!(
        "[observability]\nprometheus_url = \"{}\"\ntimeout = \"1s\"\ncache_ttl = \"1s\"\nquery_timeout = \"15s\"\n\
         [breaker]\nfailure_threshold = 3\nfailure_window = \"1m\"\nopen_timeout = \"3s\"\n",
        prom.daemon().url()
    );
    let node = Node::start("obs-query", &extra, &[]);
    node.wait_ready();
    // The human form prints the series.
    let text = wait_for(
        Duration::from_secs(60),
        "a live answer with a sample",
        || {
            let human = chom(Some(&node.config), &["metrics", "query", "up"], &[]);
            let text = String::from_utf8_lossy(&human.stdout).into_owned();
            (human.status.success() && text.contains("up{")).then_some(text)
        },
    );
    assert!(text.contains("job=\"prometheus\""), "{text}");
    assert!(!text.contains("cached"), "{text}");
    let (code, live, _, stderr) = metrics_query(&node, "up");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(live["_cached"], false, "{live}");
    assert_eq!(live["resultType"], "vector", "{live}");
    assert!(live.get("cached_at").is_none(), "{live}");

    prom.daemon().freeze();
    frozen_answers_come_from_the_cache(&node, &live);
    // Each probe after the verdict expires fails: the breaker opens after its threshold.
    wait_for(
        Duration::from_secs(60),
        "the observability breaker to open",
        || {
            let (code, doc, _, stderr) = metrics_query(&node, "up");
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(doc["_cached"], true, "{doc}");
            (observability_breaker(&node)["breaker"]["state"] == "open").then_some(())
        },
    );
    let page = node.get("/metrics").1;
    assert_eq!(
        metric(
            &page,
            "chom_circuit_breaker_open{service=\"observability\"}"
        ),
        Some(1.0),
        "{page}"
    );
    // While open, no call is made: the cached answer says why.
    let (_, doc, _, _) = metrics_query(&node, "up");
    assert_eq!(doc["_cached"], true, "{doc}");
    assert!(
        doc["_warning"].as_str().unwrap().contains("breaker"),
        "{doc}"
    );

    prom.daemon().thaw();
    wait_for(Duration::from_secs(60), "live answers again", || {
        let (_, doc, _, _) = metrics_query(&node, "up");
        (doc["_cached"] == false).then_some(())
    });
    assert_eq!(observability_breaker(&node)["breaker"]["state"], "closed");
    let page = node.get("/metrics").1;
    for outcome in ["live", "cached", "failed"] {
        let n = metric(
            &page,
            &format!("chom_observability_queries_total{{outcome=\"{outcome}\"}}"),
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{outcome}: {page}");
    }
}

/// Alertmanager's active `ChomDeadLetterSpike` alerts: their `kind` labels.
fn spikes(am: &Alertmanager) -> Vec<String> {
    am.active("ChomDeadLetterSpike")
        .iter()
        .map(|a| a["labels"]["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn six_failures_of_one_kind_make_alertmanager_hold_a_dead_letter_spike() {
    let am = Alertmanager::start(
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        &[],
    );
    let extra = format!(
        "[observability]\nalertmanager_url = \"{}\"\n[queue]\npoll_interval = \"100ms\"\n",
        am.daemon().url()
    );
    let node = Node::start("obs-spike", &extra, &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    let ids: Vec<i64> = (0..6)
        .map(|_| {
            let r = node.rpc(
                "jobs.enqueue",
                json!({ "kind": "debug.fail", "payload": { "permanent": true }, "max_attempts": 1 }),
            );
            r["result"]["id"].as_i64().unwrap_or_else(|| panic!("{r}"))
        })
        .collect();
    for id in ids {
        node.wait_job_state(id, "failed", Duration::from_secs(30));
    }
    // The reaper analyses hourly by default; `chom failed analyze` runs the same analysis now.
    let analysis = node.rpc("failed.analyze", json!({}));
    assert_eq!(
        analysis["result"]["kinds"][0]["flagged"], true,
        "{analysis}"
    );
    wait_for(
        Duration::from_secs(30),
        "ChomDeadLetterSpike in Alertmanager",
        || (spikes(&am) == ["debug.fail"]).then_some(()),
    );
    // No longer at the threshold: resolved (endsAt now), so Alertmanager drops it.
    let pruned = node.rpc("failed.prune", json!({ "older_than": "0s" }));
    assert_eq!(pruned["result"]["pruned"], 6, "{pruned}");
    node.rpc("failed.analyze", json!({}));
    wait_for(Duration::from_secs(30), "the spike resolved", || {
        spikes(&am).is_empty().then_some(())
    });
}

#[test]
fn log_events_reach_loki_and_with_loki_gone_the_node_runs_on_and_counts_drops() {
    let loki = LokiReceiver::start();
    // A small buffer so that a few seconds of logs overflow it once Loki is gone.
    let extra = format!(
        "[observability]\nloki_url = \"{}\"\nlog_buffer = 16\n[queue]\npoll_interval = \"100ms\"\n",
        loki.url()
    );
    // Every crate at debug (the database driver logs each statement): plenty of events.
    let node = Node::start("obs-loki", &extra, &[("RUST_LOG", "debug")]);
    node.wait_ready();
    let (labels, line) = wait_for(Duration::from_secs(30), "`node ready` in Loki", || {
        loki.streams().into_iter().find_map(|(labels, lines)| {
            let line = lines.into_iter().find(|l| l.contains("node ready"))?;
            Some((labels, line))
        })
    });
    assert_eq!(
        labels,
        json!({ "job": "chom", "host": "test-node", "level": "info" }),
        "few labels; ids belong in the line"
    );
    let event: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["message"], "node ready", "{event}");

    loki.stop();
    // Work goes on and logs (debug level in tests) until the buffer overflows.
    let ids: Vec<i64> = (0..40).map(|_| node.enqueue("noop", json!({}))).collect();
    for id in ids {
        node.wait_job_state(id, "completed", Duration::from_secs(30));
    }
    wait_for(
        Duration::from_secs(60),
        "dropped log events counted",
        || {
            let page = node.get("/metrics").1;
            metric(&page, "chom_log_events_dropped_total")
                .filter(|n| *n > 0.0)
                .map(|_| ())
        },
    );
    node.assert_running();
    let (code, _) = node.get("/health/live");
    assert_eq!(code, 200);
}

const WEBHOOK_TOKEN: &str = "test-token-0123456789abcdef";

/// Alertmanager's webhook call with one firing alert named `alertname`: (status, body).
fn post_alert(node: &Node, alertname: &str) -> (u16, String) {
    let body = json!({
        "version": "4",
        "groupKey": "{}",
        "status": "firing",
        "receiver": "chom-node",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": alertname, "severity": "warning" },
            "annotations": { "summary": "posted by the test" },
            "startsAt": "2026-01-02T03:04:05Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "0123456789abcdef",
        }],
    })
    .to_string();
    let addr = node.http_addr();
    let head = format!(
        "POST /webhooks/alertmanager HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(&addr, &head)
}

/// One tenant API request (`GET /api/v1/sites` with a new tenant's token): status and raw
/// answer.
fn tenant_api_request(node: &Node) -> (u16, String) {
    let tenant = node.rpc("tenants.add", json!({ "name": "api-workload" }));
    let tenant = tenant["result"]["id"].as_i64().expect("tenant id");
    let issued = node.rpc("tenants.token", json!({ "tenant": tenant }));
    let token = issued["result"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let addr = node.wait_serving()["api"]
        .as_str()
        .expect("status reports the api address")
        .to_owned();
    let head = format!(
        "GET /api/v1/sites HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    http_exchange(&addr, &head)
}

/// Every metric name in `text` (rules or dashboard): `chom_*` and `process_*` words.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("chom_") || w.starts_with("process_"))
        .map(|w| {
            // Histogram series are exported with these suffixes.
            w.trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum")
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_exists_after_a_short_workload() {
    let sshd = Sshd::start();
    let loki = LokiReceiver::start();
    let extra = format!(
        r#"
[queue]
poll_interval = "100ms"
{ssh}
connect_timeout = "2s"
[observability]
prometheus_url = "http://127.0.0.1:{closed}"
loki_url = "{loki}"
timeout = "500ms"
webhook_token = "{token}"
[memory]
max_rss = 4000000000
"#,
        token = WEBHOOK_TOKEN,
        ssh = ssh_section(&sshd),
        closed = free_port(),
        loki = loki.url(),
    );
    let node = Node::start("obs-names", &extra, &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    let added = node.rpc(
        "vps.add",
        json!({ "id": "web-1", "host": "127.0.0.1", "port": sshd.port() }),
    );
    assert!(added.get("error").is_none(), "{added}");
    // The workload: a job that runs a command over SSH, one that completes, one that fails
    // for good, an analysis of the dead letters, and a health round (which probes the
    // observability host, down here).
    let exec = node.enqueue(
        "vps.exec",
        json!({ "vps": "web-1", "command": "site:list", "args": [] }),
    );
    let noop = node.enqueue("noop", json!({}));
    let fail = node.rpc(
        "jobs.enqueue",
        json!({ "kind": "debug.fail", "payload": { "permanent": true }, "max_attempts": 1 }),
    );
    let fail = fail["result"]["id"].as_i64().unwrap();
    node.wait_job_state(exec, "completed", Duration::from_secs(30));
    node.wait_job_state(noop, "completed", Duration::from_secs(30));
    node.wait_job_state(fail, "failed", Duration::from_secs(30));
    node.rpc("failed.analyze", json!({}));
    node.rpc("health", json!({}));
    let (code, answer) = post_alert(&node, "QueueBacklog");
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = tenant_api_request(&node);
    assert_eq!(code, 200, "{answer}");

    let mut named = metric_names(&shipped("prometheus/rules/chom.rules.yml"));
    named.extend(metric_names(&shipped("grafana/dashboards/chom-node.json")));
    named.sort();
    named.dedup();
    // The rule group's name is not a metric.
    named.retain(|n| n != "chom_application");
    assert!(named.len() > 20, "{named:?}");
    // Polled: the reaper's gauges come on its next tick.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = node.get("/metrics").1;
        let missing = missing_metrics(&named, &page);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "named by the rules or the dashboard but not exported: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names of `named` that no series of the exposition `page` has (a histogram's name
/// counts as present through its `_bucket`, `_count` and `_sum` series).
fn missing_metrics<'a>(named: &'a [String], page: &str) -> Vec<&'a str> {
    let exported: Vec<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    named
        .iter()
        .map(String::as_str)
        .filter(|n| {
            !exported.iter().any(|e| {
                *e == *n
                    || e.strip_prefix(n)
                        .is_some_and(|s| ["_bucket", "_count", "_sum"].contains(&s))
            })
        })
        .collect()
}
