//! Alertmanager's webhook into the node (`POST /webhooks/alertmanager`), `chom alerts` and the
//! `alerts` health check, against a real Alertmanager running the shipped
//! `deploy/observability/alertmanager/alertmanager.yml`.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "test-webhook-token-0123456789";
const WEBHOOK: &str = "/webhooks/alertmanager";

/// A node with the webhook on, listening on `port` (fixed, so that a restarted node is found
/// at the address Alertmanager was given), health checks every 300 ms.
fn node_with_webhook(tag: &str, port: u16) -> Node {
    let extra = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\
         [observability]\nwebhook_token = \"{TOKEN}\"\n\
         [health]\ninterval = \"300ms\"\n"
    );
    let node = Node::start(tag, &extra, &[]);
    node.wait_ready();
    node
}

/// The shipped Alertmanager config, pointed at `node_addr` with the token read from
/// `token_file`. The grouping waits are shortened (10s -> 100ms, 1m -> 1s) so that a test
/// sees a notification and its resolution within seconds; routes and receivers are as shipped.
fn shipped_config(node_addr: &str, token_file: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/observability/alertmanager/alertmanager.yml");
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in [
        ("app.chom.internal:8080", node_addr.to_owned()),
        (
            "/etc/prometheus/chom-webhook-token",
            token_file.display().to_string(),
        ),
        ("group_wait: 10s", "group_wait: 100ms".to_owned()),
        ("group_interval: 1m", "group_interval: 1s".to_owned()),
    ] {
        assert!(text.contains(from), "the shipped config has no `{from}`");
        text = text.replace(from, &to);
    }
    text
}

/// `chom alerts --json` (or the human table) against the node's socket.
fn chom_alerts(node: &Node, json: bool) -> (i32, String) {
    let socket = node.socket.to_str().unwrap();
    let mut args = vec!["--socket", socket, "alerts"];
    if json {
        args.push("--json");
    }
    let out = chom(None, &args, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The active alerts as `chom alerts --json` prints them.
fn active(node: &Node) -> Vec<Value> {
    let (code, out) = chom_alerts(node, true);
    assert_eq!(code, 0, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    doc["alerts"].as_array().unwrap().clone()
}

/// The `alerts` check of the node's `/health` (`path` may ask for a fresh run), with the
/// HTTP status.
fn alerts_check(node: &Node, path: &str) -> (u16, Value) {
    let (code, body) = node.get(path);
    let doc: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, doc["checks"]["alerts"].clone())
}

/// POST `body` to the node's webhook with `authorization` (if any): (status, body).
fn post(addr: &str, authorization: Option<&str>, body: &str) -> (u16, String) {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    exchange(addr, &head, body.as_bytes())
}

/// Send `head` then `body` (the server may answer and close before reading it all) and read
/// the answer: (status, body).
fn exchange(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// A webhook v4 body with one alert.
fn payload(status: &str, fingerprint: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"DirectPost\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "chom-node",
        "groupLabels": {"alertname": "DirectPost"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "DirectPost", "severity": "warning"},
            "annotations": {"summary": "posted by the test"},
            "startsAt": "2026-01-02T03:04:05Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
    })
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[test]
fn alertmanager_delivers_alerts_until_resolved_and_they_survive_a_restart() {
    let port = free_port();
    let mut node = node_with_webhook("alerts-am", port);
    let addr = format!("127.0.0.1:{port}");
    let token_file = node.dir.path().join("webhook-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let am = chom_testkit::Alertmanager::start(&shipped_config(&addr, &token_file), &[]);

    // One critical alert, as Prometheus would post it.
    let started = Utc::now() - chrono::Duration::minutes(1);
    let labels =
        json!({"alertname": "ChomTestCritical", "severity": "critical", "service": "chom"});
    let annotations = json!({
        "summary": "a critical test alert",
        "description": "raised by tests/alerts.rs",
        "runbook_url": "https://example.invalid/runbook#chomtestcritical",
    });
    let fire = json!([{
        "labels": labels, "annotations": annotations,
        "startsAt": rfc3339(started), "generatorURL": "http://prometheus.invalid/graph",
    }]);
    let (code, body) = am
        .daemon()
        .post_json("/api/v2/alerts", &fire.to_string())
        .expect("alertmanager answers");
    assert_eq!(code, 200, "{body}");

    let alerts = wait_for(
        Duration::from_secs(30),
        "the alert in `chom alerts`",
        || {
            let alerts = active(&node);
            (!alerts.is_empty()).then_some(alerts)
        },
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["alertname"], "ChomTestCritical");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"], labels);
    assert_eq!(a["annotations"], annotations);
    assert_eq!(
        a["starts_at"].as_str().map(|s| &s[..19]),
        Some(&rfc3339(started)[..19])
    );
    assert!(!a["fingerprint"].as_str().unwrap().is_empty(), "{a}");
    let (code, table) = chom_alerts(&node, false);
    assert_eq!(code, 0);
    let line = table.lines().nth(1).unwrap_or_default();
    for part in [
        "critical",
        "ChomTestCritical",
        "a critical test alert",
        &rfc3339(started)[..16],
    ] {
        assert!(line.contains(part), "no {part:?} in {table:?}");
    }

    let (code, check) = wait_for(Duration::from_secs(30), "the alerts check to warn", || {
        let (code, check) = alerts_check(&node, "/health");
        (check["status"] == "warning").then_some((code, check))
    });
    assert_eq!(code, 200, "a warning never makes the node unhealthy");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains("ChomTestCritical"),
        "{check}"
    );
    assert_eq!(check["active"], 1, "{check}");
    let page = node.get("/metrics").1;
    let firing = "chom_alerts_received_total{alertname=\"ChomTestCritical\",status=\"firing\"}";
    assert!(metric(&page, firing).is_some_and(|n| n >= 1.0), "{page}");

    // Stored, not held in memory: a restarted node still has it (Alertmanager sends nothing
    // new meanwhile: its repeat_interval is 4h).
    node.signal(rustix::process::Signal::TERM);
    assert_eq!(node.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let log = node.dir.path().join("node-restarted.log");
    node.child = Some(spawn_node(&node.config, &log, &[]));
    node.log = log;
    node.wait_ready();
    let after = active(&node);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["fingerprint"], a["fingerprint"]);

    // Resolved (an end in the past): Alertmanager sends the resolution, the node forgets it.
    let resolve = json!([{
        "labels": labels, "annotations": annotations,
        "startsAt": rfc3339(started), "endsAt": rfc3339(Utc::now() - chrono::Duration::seconds(1)),
        "generatorURL": "http://prometheus.invalid/graph",
    }]);
    let (code, body) = am
        .daemon()
        .post_json("/api/v2/alerts", &resolve.to_string())
        .expect("alertmanager answers");
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(30), "the alert to be gone", || {
        active(&node).is_empty().then_some(())
    });
    let (_, table) = chom_alerts(&node, false);
    assert_eq!(table, "no active alerts\n");
    let check = wait_for(Duration::from_secs(30), "the alerts check to be ok", || {
        let (_, check) = alerts_check(&node, "/health");
        (check["status"] == "ok").then_some(check)
    });
    assert_eq!(check["active"], 0, "{check}");
    let page = node.get("/metrics").1;
    let resolved = "chom_alerts_received_total{alertname=\"ChomTestCritical\",status=\"resolved\"}";
    assert!(metric(&page, resolved).is_some_and(|n| n >= 1.0), "{page}");
    assert!(
        !node.log_text().contains(TOKEN),
        "the token is never logged"
    );
}

#[test]
fn the_webhook_refuses_wrong_tokens_bad_payloads_and_large_bodies() {
    let node = node_with_webhook("alerts-refuse", free_port());
    let addr = node.http_addr();
    let good = payload("firing", "0123456789abcdef").to_string();
    let bearer = format!("Bearer {TOKEN}");

    for authorization in [
        None,
        Some("Bearer wrong-token-0123456789xx".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ] {
        let (code, body) = post(&addr, authorization.as_deref(), &good);
        assert_eq!(code, 401, "{authorization:?}: {body}");
    }
    let mut bad_version = payload("firing", "aa");
    bad_version["version"] = json!("3");
    let mut no_fingerprint = payload("firing", "aa");
    no_fingerprint["alerts"][0]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let mut no_alertname = payload("firing", "aa");
    no_alertname["alerts"][0]["labels"] = json!({"severity": "critical"});
    let mut bad_status = payload("firing", "aa");
    bad_status["alerts"][0]["status"] = json!("pending");
    for (body, field) in [
        ("not json".to_owned(), "expected"),
        (bad_version.to_string(), "version"),
        (no_fingerprint.to_string(), "fingerprint"),
        (no_alertname.to_string(), "alerts[0].labels.alertname"),
        (bad_status.to_string(), "alerts[0].status"),
    ] {
        let (code, answer) = post(&addr, Some(&bearer), &body);
        assert_eq!(code, 400, "{field}: {answer}");
        let doc: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
        let message = doc["error"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    // Over 1 MiB: refused without reading it (the head announces it).
    let big = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: {bearer}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        1024 * 1024 + 1
    );
    let (code, answer) = exchange(&addr, &big, &[b' '; 64 * 1024]);
    assert_eq!(code, 413, "{answer}");
    // Nothing of that was stored or counted.
    assert!(active(&node).is_empty());
    let page = node.get("/metrics").1;
    assert!(!page.contains("chom_alerts_received_total{"), "{page}");

    // The right token and a good payload are stored, and a resolution deletes.
    let (code, answer) = post(&addr, Some(&bearer), &good);
    assert_eq!((code, answer.as_str()), (200, r#"{"stored":1}"#));
    let alerts = active(&node);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["alertname"], "DirectPost");
    assert_eq!(alerts[0]["severity"], "warning");
    assert_eq!(alerts[0]["ends_at"], Value::Null);
    let (code, _) = post(
        &addr,
        Some(&bearer),
        &payload("resolved", "0123456789abcdef").to_string(),
    );
    assert_eq!(code, 200);
    assert!(active(&node).is_empty());
    assert!(
        !node.log_text().contains(TOKEN),
        "the token is never logged"
    );
}

#[test]
fn the_webhook_is_off_without_a_token() {
    let node = Node::start("alerts-off", "", &[]);
    node.wait_ready();
    let addr = node.http_addr();
    let body = payload("firing", "aa").to_string();
    let (code, _) = post(&addr, Some(&format!("Bearer {TOKEN}")), &body);
    assert_eq!(code, 404);
    let (code, _) = post(&addr, None, &body);
    assert_eq!(code, 404);
    let (_, check) = alerts_check(&node, "/health?fresh=true");
    assert_eq!(check["status"], "ok", "{check}");
}

#[test]
fn the_webhook_answers_503_while_the_database_is_unreachable() {
    // Nothing listens on port 1: the store runs, migrations never apply.
    let extra = format!(
        "[database]\nurl = \"postgres://chom@127.0.0.1:1/chom\"\nconnect_timeout = \"200ms\"\n\
         [observability]\nwebhook_token = \"{TOKEN}\"\n"
    );
    let node = Node::start("alerts-nodb", &extra, &[]);
    let addr = node.http_addr();
    let (code, answer) = post(
        &addr,
        Some(&format!("Bearer {TOKEN}")),
        &payload("firing", "aa").to_string(),
    );
    assert_eq!(code, 503, "Alertmanager retries a 503: {answer}");
    // The alerts check warns; the database check is what makes the node unhealthy.
    let (_, check) = alerts_check(&node, "/health?fresh=true");
    assert_eq!(check["status"], "warning", "{check}");
}
