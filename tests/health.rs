//! The health actor: cached `/health`, `?fresh=true`, and remediation with restart-loop
//! protection against a real (private) PostgreSQL that is stopped and started again.

mod common;

use std::time::Duration;

use common::pg::PrivatePg;
use common::*;
use serde_json::Value;

fn health(node: &Node, path: &str) -> (u16, Value) {
    let (code, body) = node.get(path);
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[test]
fn health_is_served_from_the_cache_unless_fresh_is_asked() {
    let node = Node::start("health-cache", "[health]\ninterval = \"1h\"\n", &[]);
    node.wait_ready();
    // The first report is made at start; with an interval of an hour, later requests within
    // the cache's life get that same report (same timestamp) without running the checks.
    let first = wait_for(Duration::from_secs(30), "a cached report", || {
        let (_, a) = health(&node, "/health");
        let (_, b) = health(&node, "/health");
        (a["timestamp"] == b["timestamp"]).then_some(a)
    });
    let (code, fresh) = health(&node, "/health?fresh=true");
    assert_eq!(code, 200, "{fresh}");
    assert_ne!(fresh["timestamp"], first["timestamp"]);
    let (_, again) = health(&node, "/health");
    assert_eq!(again["timestamp"], first["timestamp"]);
    for check in ["database", "cache", "disk", "supervision", "queue", "fleet"] {
        assert!(
            first["checks"][check]["status"].is_string(),
            "{check}: {first}"
        );
    }
    let tree = node.rpc("tree", serde_json::json!({}))["result"].clone();
    assert_eq!(tree_child(&tree, "monitors/health")["state"], "running");
}

#[test]
fn a_failing_database_gets_the_store_restarted_until_remediation_is_exhausted() {
    let pg = PrivatePg::start();
    let url = pg.url("postgres");
    let extra = format!(
        "[database]\nurl = \"{url}\"\nconnect_timeout = \"500ms\"\n\
         [health]\ninterval = \"300ms\"\ncheck_timeout = \"1s\"\nfailures_before_restart = 3\n\
         max_remediations = 2\nremediation_window = \"10m\"\nrecovery_cycles = 2\n"
    );
    let node = Node::start("health-remedy", &extra, &[]);
    node.wait_ready();
    let store_restarts = |node: &Node| {
        let tree = node.rpc("tree", serde_json::json!({}))["result"].clone();
        tree_child(&tree, "store")["restart_count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(store_restarts(&node), 0);
    pg.stop();
    // Two remediations (store restarted twice), then exhausted.
    let report = wait_for(Duration::from_secs(60), "remediation exhausted", || {
        let (_, h) = health(&node, "/health");
        h["checks"]["database"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("remediation exhausted"))
            .then_some(h)
    });
    assert_eq!(report["status"], "unhealthy", "{report}");
    assert_eq!(store_restarts(&node), 2);
    let page = node.get("/metrics").1;
    assert_eq!(
        metric(
            &page,
            "chom_health_remediations_total{check=\"database\",outcome=\"restarted\"}"
        ),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            "chom_health_remediations_total{check=\"database\",outcome=\"exhausted\"}"
        ),
        Some(1.0),
        "{page}"
    );
    // No more restarts while exhausted, however long it fails: let ten more health rounds
    // run (each a new report timestamp), enough for three more remediations.
    let mut rounds = std::collections::HashSet::new();
    wait_for(Duration::from_secs(30), "ten more health rounds", || {
        let (_, h) = health(&node, "/health");
        rounds.insert(h["timestamp"].as_str().unwrap_or_default().to_owned());
        (rounds.len() > 10).then_some(())
    });
    assert_eq!(store_restarts(&node), 2);
    assert!(node.log_text().contains("remediation exhausted"));

    pg.start_again();
    wait_for(Duration::from_secs(60), "database check to recover", || {
        let (_, h) = health(&node, "/health");
        (h["checks"]["database"]["status"] == "ok").then_some(())
    });
    // Re-arming needs `recovery_cycles` (2) passing rounds; the first "ok" is only one.
    wait_for(Duration::from_secs(10), "remediation armed again", || {
        node.log_text()
            .contains("remediation armed again")
            .then_some(())
    });
    node.assert_running();
}

/// A TCP server that accepts connections and never answers.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// A TCP server answering every request with 200.
fn healthy_server() -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 22\r\nconnection: close\r\n\r\nPrometheus is Healthy.",
            );
        }
    });
    port
}

#[test]
fn an_unanswering_prometheus_is_a_cached_warning_never_unhealthy() {
    let port = silent_server();
    let extra = format!(
        "[observability]\nprometheus_url = \"http://127.0.0.1:{port}\"\ntimeout = \"500ms\"\ncache_ttl = \"30s\"\n"
    );
    let node = Node::start("health-obs", &extra, &[]);
    node.wait_ready();
    let started = std::time::Instant::now();
    let (code, h) = health(&node, "/health?fresh=true");
    let took = started.elapsed();
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["checks"]["observability"]["status"], "warning", "{h}");
    assert!(
        h["checks"]["observability"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{h}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Within the TTL the result is reused: no second 500 ms wait.
    let started = std::time::Instant::now();
    let (_, again) = health(&node, "/health?fresh=true");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(again["checks"]["observability"]["cached"], true, "{again}");
}

#[test]
fn a_healthy_prometheus_is_ok() {
    let port = healthy_server();
    let extra = format!("[observability]\nprometheus_url = \"http://127.0.0.1:{port}/\"\n");
    let node = Node::start("health-obs-ok", &extra, &[]);
    node.wait_ready();
    let (code, h) = health(&node, "/health?fresh=true");
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["checks"]["observability"]["status"], "ok", "{h}");
}

#[test]
fn memory_pressure_recycles_the_workers_then_restarts_the_node_with_status_75() {
    // RSS is measured against memory.max_rss: 400 MB, acting at 50%.
    let dir = TempDir::new("memory-action");
    let marker = dir.path().join("action-ran");
    let extra = format!(
        "[memory]\ninterval = \"200ms\"\nthreshold_percent = 50\nconsecutive = 2\nmax_rss = 400000000\naction = \"sleep 2 && touch {}\"\n[queue]\nworkers = 3\n",
        marker.display()
    );
    let mut node = Node::start("memory", &extra, &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    let status = node.rpc("status", serde_json::json!({}))["result"].clone();
    assert_eq!(status["memory"]["basis"], "max_rss", "{status}");
    assert!(
        status["memory"]["pressure_percent"].as_f64().unwrap() < 50.0,
        "{status}"
    );
    let r = node.rpc(
        "debug.inflate",
        serde_json::json!({ "bytes": 250_000_000u64 }),
    );
    assert!(r.get("error").is_none(), "{r}");
    // First the workers are recycled (planned replacements, not failures) ...
    wait_for(Duration::from_secs(30), "workers recycled", || {
        let log = node.log_text();
        log.contains("recycling the workers").then_some(())
    });
    // ... then, still above, the node drains and exits asking for a restart.
    let exit = node.wait_exit(Duration::from_secs(60));
    assert_eq!(exit.code(), Some(75), "log:\n{}", node.log_text());
    let log = node.log_text();
    assert!(log.contains("draining and exiting"), "{log}");
    // The operator's action ran with the recycle, and the exit waited for it to finish (it
    // takes longer than the drain).
    assert!(marker.exists(), "memory.action did not finish: {log}");
}

#[test]
fn operator_checks_run_and_their_remediation_heals_them() {
    let dir = TempDir::new("opcheck");
    let flag = dir.path().join("php-fpm.running");
    let extra = format!(
        "[health]\ninterval = \"200ms\"\nfailures_before_restart = 3\n\
         [[health.checks]]\nname = \"php-fpm\"\ncommand = \"test -f {flag}\"\nremediation = \"touch {flag}\"\n\
         [[health.checks]]\nname = \"site\"\nurl = \"http://127.0.0.1:{port}/\"\n",
        flag = flag.display(),
        port = healthy_server(),
    );
    let node = Node::start("health-opcheck", &extra, &[]);
    node.wait_ready();
    let (_, first) = health(&node, "/health?fresh=true");
    assert_eq!(first["checks"]["php-fpm"]["status"], "error", "{first}");
    assert_eq!(first["checks"]["site"]["status"], "ok", "{first}");
    assert_eq!(first["status"], "degraded", "{first}");
    // Three failures, then `touch` heals it.
    wait_for(
        Duration::from_secs(30),
        "remediation to heal the check",
        || {
            let (_, h) = health(&node, "/health");
            (h["checks"]["php-fpm"]["status"] == "ok").then_some(())
        },
    );
    assert!(flag.exists());
    let page = node.get("/metrics").1;
    assert_eq!(
        metric(
            &page,
            "chom_health_remediations_total{check=\"php-fpm\",outcome=\"command\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "chom_health_check_status{check=\"php-fpm\"}"),
        Some(0.0)
    );
}

#[test]
fn bad_operator_checks_are_refused_with_their_key() {
    let dir = TempDir::new("opcheck-bad");
    let config = config_in(
        dir.path(),
        "[[health.checks]]\nname = \"database\"\ncommand = \"true\"\n\
         [[health.checks]]\nname = \"x\"\ncommand = \"true\"\nurl = \"http://a/\"\n\
         [[health.checks]]\nname = \"y\"\nurl = \"ftp://a/\"\n",
    );
    let out = chom(Some(&config), &["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "health.checks[0].name",
        "built-in",
        "health.checks[1].command",
        "exactly one",
        "health.checks[2].url",
    ] {
        assert!(err.contains(needle), "{needle} missing in {err}");
    }
}

/// A host without CA certificates (no `ca-certificates` package): reqwest cannot load a trust
/// store, which used to panic the node at start. It runs; plain http:// works, and each
/// https:// use says what is missing and how to fix it (SSL_CERT_FILE and SSL_CERT_DIR set
/// replace the system's store, here with nothing).
#[test]
fn without_ca_certificates_the_node_runs_and_https_names_the_fix() {
    let dir = TempDir::new("no-ca");
    let empty = dir.path().join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let extra = format!(
        "[observability]\nprometheus_url = \"https://127.0.0.1:{silent}/\"\ntimeout = \"500ms\"\n\
         [[health.checks]]\nname = \"tls-site\"\nurl = \"https://127.0.0.1:{silent}/\"\n\
         [[health.checks]]\nname = \"plain-site\"\nurl = \"http://127.0.0.1:{healthy}/\"\n",
        silent = silent_server(),
        healthy = healthy_server(),
    );
    let config = config_in(dir.path(), &extra);
    let bundle = empty.join("ca-certificates.crt");
    let (file, certs) = (bundle.to_str().unwrap(), empty.to_str().unwrap());
    let node = Node::start_with(
        dir,
        config,
        &[("SSL_CERT_FILE", file), ("SSL_CERT_DIR", certs)],
    );
    node.wait_ready();
    let (_, h) = health(&node, "/health?fresh=true");
    assert_eq!(h["checks"]["plain-site"]["status"], "ok", "{h}");
    for (check, status) in [("tls-site", "error"), ("observability", "warning")] {
        assert_eq!(h["checks"][check]["status"], status, "{h}");
        let message = h["checks"][check]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("No CA certificates") && message.contains("ca-certificates package"),
            "{check}: {h}"
        );
    }
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("https:// requests fail"), "{log}");
}
