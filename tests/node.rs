//! End-to-end tests of `chom node` as a process: systemd notifications, the admin socket,
//! restarts, escalation to exit 70, `/health`, and start-up exclusivity.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rustix::process::Signal;
use serde_json::{Value, json};

/// Collects every datagram the node sends to NOTIFY_SOCKET, with arrival times.
struct NotifySocket {
    path: std::path::PathBuf,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), msg)).is_err() {
                    return;
                }
            }
        });
        NotifySocket { path, rx }
    }

    /// Wait for a datagram containing the line `want`; returns its arrival time.
    fn expect(&self, want: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, msg)) if msg.lines().any(|l| l == want) => return at,
                Ok(_) => {}
                Err(_) => panic!("no {want} within {limit:?}"),
            }
        }
    }

    /// Every datagram received until `until`.
    fn collect_until(&self, until: Instant) -> Vec<(Instant, String)> {
        let mut out = Vec::new();
        while let Ok(m) = self
            .rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            out.push(m);
        }
        out
    }
}

fn watchdogs(msgs: &[(Instant, String)]) -> Vec<Instant> {
    msgs.iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn systemd_ready_watchdog_stops_while_tree_unresponsive_and_stopping_on_sigterm() {
    let dir = TempDir::new("notify");
    let notify = NotifySocket::bind(dir.path());
    let config = config_in(dir.path(), "");
    let notify_path = notify.path.display().to_string();
    // 400 ms watchdog period: a ping every 200 ms.
    let mut node = Node::start_with(
        dir,
        config,
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", "400000"),
            ("CHOM_DEBUG_HOOKS", "1"),
        ],
    );
    notify.expect("READY=1", Duration::from_secs(60));
    // WATCHDOG=1 keeps arriving.
    let window = notify.collect_until(Instant::now() + Duration::from_secs(2));
    let pings = watchdogs(&window);
    assert!(
        pings.len() >= 5,
        "expected steady WATCHDOG=1, got {} in 2s: {window:?}",
        pings.len()
    );
    // STATUS= carries the summary.
    assert!(
        window.iter().any(|(_, m)| m
            .lines()
            .any(|l| l.starts_with("STATUS=ready; 3/3 workers; 0 open breakers; queue "))),
        "no STATUS= summary: {window:?}"
    );

    // Make the root supervisor's mailbox unresponsive for 3 s.
    let stalled_at = Instant::now();
    let r = node.rpc("debug.stall", json!({"path": "", "duration": "3s"}));
    assert!(r.get("result").is_some(), "{r}");
    let during = notify.collect_until(stalled_at + Duration::from_millis(2500));
    let late: Vec<_> = watchdogs(&during)
        .into_iter()
        .filter(|t| *t > stalled_at + Duration::from_millis(500))
        .collect();
    assert!(
        late.is_empty(),
        "WATCHDOG=1 sent while the tree was unresponsive: {during:?}"
    );
    // ... and resumes once it answers again.
    notify.expect("WATCHDOG=1", Duration::from_secs(5));

    node.signal(Signal::TERM);
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let status = node.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", node.log_text());
}

fn restarts_metric(node: &Node, actor: &str) -> f64 {
    let (code, page) = node.get("/metrics");
    assert_eq!(code, 200);
    metric(
        &page,
        &format!("chom_actor_restarts_total{{actor=\"{actor}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn restart_of_a_leaf_actor_counts_once_and_it_serves_again() {
    let node = Node::start("restart", "", &[]);
    node.wait_ready();
    for (path, check) in [("store", "/health"), ("edge/http", "/health/live")] {
        let before = tree_child(&node.rpc("tree", json!({}))["result"], path);
        let metric_before = restarts_metric(&node, path);

        let out = chom(Some(&node.config), &["restart", path, "--json"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["path"], path);

        let after = tree_child(&node.rpc("tree", json!({}))["result"], path);
        assert_eq!(
            after["restart_count"].as_u64(),
            Some(before["restart_count"].as_u64().unwrap() + 1),
            "{after}"
        );
        assert_eq!(after["state"], "running");
        assert_eq!(restarts_metric(&node, path), metric_before + 1.0);
        // It serves again: the store answers the database check, http answers requests.
        let (code, body) = wait_for(Duration::from_secs(10), "actor to serve again", || {
            let (code, body) = node.get(check);
            (code == 200).then_some((code, body))
        });
        assert_eq!(code, 200, "{body}");
        if check == "/health" {
            let health: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(health["checks"]["database"]["status"], "ok", "{health}");
        }
    }
    // The human form of `chom tree` shows the counts too.
    let out = chom(Some(&node.config), &["tree"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("store") && text.contains("restarts 1"),
        "{text}"
    );
}

#[test]
fn a_child_failing_forever_escalates_through_its_subtree_and_the_root_exits_70() {
    let extra = r#"
[supervision]
max_restarts = 2
period = "60s"
backoff_min = "10ms"
backoff_max = "50ms"
"#;
    let mut node = Node::start("escalate", extra, &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    let r = node.rpc(
        "debug.fault",
        json!({"path": "monitors/watchdog", "fault": "fail_forever"}),
    );
    assert!(r.get("result").is_some(), "{r}");
    let status = node.wait_exit(Duration::from_secs(60));
    let log = node.log_text();
    assert_eq!(status.code(), Some(70), "log:\n{log}");
    // The chain: the watchdog restarted under monitors, monitors escalated, the root restarted
    // the monitors subtree, and finally the root gave up.
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("log lacks {needle:?}:\n{log}"))
    };
    let watchdog_restart = pos("actor=\"monitors/watchdog\"");
    let monitors_escalated = pos("supervisor=\"monitors\"");
    let root_gave_up = pos("supervisor=\"root\"");
    assert!(
        watchdog_restart < monitors_escalated && monitors_escalated < root_gave_up,
        "{log}"
    );
    // The last line carries the whole chain, innermost failure included.
    let last = log
        .lines()
        .find(|l| l.contains("root supervisor gave up; exiting"))
        .unwrap_or_else(|| panic!("no exit line:\n{log}"));
    assert!(
        last.contains("chain=more than 2 restarts in 60s, last monitors:")
            && last.contains("monitors/watchdog: injected start failure"),
        "{last}"
    );
}

#[test]
fn health_is_503_with_database_error_on_closed_postgres_port_while_live_stays_200() {
    let extra = r#"
[database]
url = "postgres://postgres@127.0.0.1:1/chom"
connect_timeout = "1s"
"#;
    let node = Node::start("pgdown", extra, &[]);
    node.wait_serving();
    let (code, body) = node.get("/health");
    assert_eq!(code, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["checks"]["database"]["status"], "error", "{health}");
    assert_eq!(node.get("/health/live").0, 200);
    assert_eq!(node.get("/health/ready").0, 503);
    // `chom health` exits 1 on an unhealthy node, with the database error shown.
    let out = chom(Some(&node.config), &["health"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("database"),
        "{out:?}"
    );
}

#[test]
fn health_is_200_and_healthy_on_sqlite() {
    let node = Node::start("sqlite", "", &[]);
    node.wait_ready();
    let (code, body) = node.get("/health");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    for check in ["database", "cache", "disk", "supervision"] {
        assert_eq!(health["checks"][check]["status"], "ok", "{check}: {health}");
    }
    assert!(health["checks"]["database"]["latency_ms"].is_number());
    assert!(health["checks"]["disk"]["used_percent"].is_number());
    assert!(health["timestamp"].as_str().unwrap().contains('T'));
    assert_eq!(node.get("/health/ready").0, 200);
}

#[test]
fn healthy_on_postgres_and_redis() {
    let db = PgDb::create("health");
    let extra = format!(
        "[database]\nurl = \"{}\"\n[cache]\nurl = \"{}\"\n",
        db.url,
        redis_url()
    );
    let node = Node::start("pgredis", &extra, &[]);
    let status = node.wait_ready();
    assert_eq!(status["database"], "postgres");
    assert_eq!(status["cache"], "redis");
    let (code, body) = node.get("/health");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["checks"]["database"]["status"], "ok", "{health}");
    assert_eq!(health["checks"]["cache"]["status"], "ok", "{health}");
    drop(node);
}

#[test]
fn metrics_page_has_the_spec_names_and_no_otel_noise() {
    let node = Node::start("metrics", "", &[]);
    node.wait_ready();
    // A health run populates chom_health_check_status.
    assert_eq!(node.get("/health").0, 200);
    let (code, page) = node.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metric(&page, "chom_memory_rss_bytes").unwrap() > 1e6,
        "{page}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric(&page, &format!("chom_build_info{{version=\"{version}\"}}")),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "chom_health_check_status{check=\"database\"}"),
        Some(0.0),
        "{page}"
    );
    assert!(
        !page.contains("otel_scope") && !page.contains("target_info"),
        "{page}"
    );
}

#[test]
fn malformed_rpc_gets_a_jsonrpc_error_and_the_socket_keeps_serving() {
    let node = Node::start("rpc", "", &[]);
    node.wait_serving();
    let mut bad = BufReader::new(UnixStream::connect(&node.socket).unwrap());
    // One line out, one reply back, on the same connection.
    let mut exchange = |request: &[u8]| -> Value {
        bad.get_mut().write_all(request).unwrap();
        let mut line = String::new();
        bad.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let err = exchange(b"this is not json\n");
    assert_eq!(err["error"]["code"], -32700, "{err}");
    // Another client is served meanwhile, and so is the same connection afterwards.
    assert!(node.rpc("status", json!({}))["result"]["version"].is_string());
    let unknown = exchange(b"{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":7}\n");
    assert_eq!(
        (unknown["error"]["code"].as_i64(), unknown["id"].as_i64()),
        (Some(-32601), Some(7))
    );
    let invalid =
        exchange(b"{\"jsonrpc\":\"2.0\",\"method\":\"restart\",\"params\":{},\"id\":8}\n");
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
    // An oversized line (> 1 MiB) closes only that connection.
    let mut big = UnixStream::connect(&node.socket).unwrap();
    let blob = vec![b'a'; 1024 * 1024 + 10];
    let _ = big.write_all(&blob);
    assert!(node.rpc("status", json!({}))["result"].is_object());
    // Debug hooks are off unless asked for.
    assert_eq!(
        node.rpc("debug.stall", json!({"duration": "1s"}))["error"]["code"],
        -32601
    );
}

#[test]
fn a_second_node_is_refused_and_a_stale_socket_is_replaced() {
    let mut first = Node::start("exclusive", "", &[]);
    first.wait_serving();
    // Same config (same data dir and socket): refused with a clear message.
    let out = {
        let log = first.dir.path().join("second.log");
        let mut second = spawn_node(&first.config, &log, &[]);
        let status = wait_for(Duration::from_secs(30), "second node to exit", || {
            second.try_wait().unwrap()
        });
        (status, std::fs::read_to_string(&log).unwrap())
    };
    assert_eq!(out.0.code(), Some(1), "{}", out.1);
    assert!(out.1.contains("another chom node"), "{}", out.1);
    first.assert_running();

    // SIGKILL leaves the socket file behind; the next node replaces it.
    first.signal(Signal::KILL);
    first.wait_exit(Duration::from_secs(10));
    assert!(
        first.socket.exists(),
        "a killed node leaves its socket file"
    );
    let log = first.dir.path().join("third.log");
    let third = spawn_node(&first.config, &log, &[]);
    let node = Node {
        dir: TempDir::new("unused"),
        config: first.config.clone(),
        child: Some(third),
        log,
        socket: first.socket.clone(),
    };
    node.wait_serving();
    assert!(
        node.log_text().contains("stale admin socket"),
        "{}",
        node.log_text()
    );
    let mode = std::fs::metadata(&node.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o660);
}

/// Run a node with `config` (and env) that is expected to refuse to start: its exit status
/// and log.
fn refused_start(
    config: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let log = dir.join(format!("refused-{}.log", rand_suffix()));
    let mut child = spawn_node(config, &log, env);
    let status = wait_for(Duration::from_secs(30), "the node to exit", || {
        child.try_wait().unwrap()
    });
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn an_admin_socket_path_naming_a_regular_file_is_refused_and_the_file_kept() {
    // First a node creates its database; then admin.socket is pointed at that very file.
    let mut node = Node::start("socket-file", "", &[]);
    node.wait_ready();
    node.rpc("jobs.enqueue", json!({ "kind": "noop" }));
    node.rpc("shutdown", json!({}));
    assert_eq!(node.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let db = node.dir.path().join("var/chom.db");
    let before = std::fs::metadata(&db).expect("database file").len();
    assert!(before > 0);
    let notes = node.dir.path().join("var/notes.txt");
    std::fs::write(&notes, "keep me").unwrap();
    // Pointed at the database itself, the config is refused before anything is touched (78);
    // at any other file that is not a socket, the node refuses (1) and the file stays.
    let cases = [
        (&db, 78, ["admin.socket", "the database file"]),
        (&notes, 1, ["is not a socket", "regular file"]),
    ];
    for (path, want, says) in cases {
        let env = [("CHOM_ADMIN_SOCKET", path.to_str().unwrap())];
        let (code, log) = refused_start(&node.config, node.dir.path(), &env);
        assert_eq!(code, Some(want), "{}: {log}", path.display());
        assert!(says.iter().all(|s| log.contains(s)), "{log}");
    }
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me");
    assert_eq!(
        std::fs::metadata(&db).expect("database kept").len(),
        before,
        "the database file is untouched"
    );
    // And the node still starts on its own socket, with its jobs.
    let dir = std::mem::replace(&mut node.dir, TempDir::new("unused"));
    let again = Node::start_with(dir, node.config.clone(), &[]);
    again.wait_ready();
    let jobs = again.rpc("jobs.list", json!({}));
    assert_eq!(
        jobs["result"]["jobs"].as_array().map(Vec::len),
        Some(1),
        "{jobs}"
    );
}

#[test]
fn two_data_dirs_sharing_one_sqlite_file_are_refused() {
    let first = Node::start("sqlite-shared", "", &[]);
    first.wait_ready();
    let db = first.dir.path().join("var/chom.db");
    // A second node with its own data dir, socket and name, on the first one's database file.
    let dir = TempDir::new("sqlite-shared-b");
    let config = config_in(
        dir.path(),
        &format!(
            "[node]\nname = \"other\"\n[database]\nurl = \"sqlite://{}\"\n",
            db.display()
        ),
    );
    let (code, log) = refused_start(&config, dir.path(), &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("is using the database file") && log.contains(&first.pid().to_string()),
        "{log}"
    );
    first.assert_running();
}

#[test]
fn a_second_live_node_with_the_same_name_on_postgres_is_refused_and_its_jobs_kept() {
    let db = PgDb::create("samename");
    let extra = pg_node_extra(&db.url, "", 2, "");
    let first = Node::start("samename-a", &extra, &[("CHOM_DEBUG_HOOKS", "1")]);
    first.wait_ready();
    let side = first.dir.path().join("executions");
    // debug.record writes its line when it ends: 4 s of running to be refused in.
    let id = first.enqueue("debug.record", json!({ "file": side, "ms": 4000 }));
    first.wait_job_state(id, "reserved", Duration::from_secs(30));
    // Same default name (the host name), another data dir: refused while the first lives.
    let dir = TempDir::new("samename-b");
    let config = config_in(dir.path(), &extra);
    let (code, log) = refused_start(&config, dir.path(), &[("CHOM_DEBUG_HOOKS", "1")]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("another live chom node named")
            && log.contains(&format!("pid={}", first.pid())),
        "the refusal names the holder: {log}"
    );
    // The first node's job stayed its own: it ends there, having run once.
    first.wait_job_state(id, "completed", Duration::from_secs(30));
    assert_eq!(executed_ids(&side).0, 1, "the job ran once");
    first.assert_running();
}

#[test]
fn admin_shutdown_is_graceful() {
    let mut node = Node::start("shutdown", "", &[]);
    node.wait_ready();
    let out = chom(Some(&node.config), &["shutdown"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        node.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        node.log_text()
    );
    assert!(!node.socket.exists(), "socket removed on a clean exit");
}

#[test]
fn client_commands_exit_69_without_a_node_and_json_prints_one_document() {
    let dir = TempDir::new("noclient");
    let config = config_in(dir.path(), "");
    for cmd in ["status", "tree", "health", "shutdown"] {
        let out = chom(Some(&config), &[cmd, "--json"], &[]);
        assert_eq!(out.status.code(), Some(69), "{cmd}: {out:?}");
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert!(
            doc["error"].as_str().unwrap().contains("not reachable"),
            "{doc}"
        );
    }
    let out = chom(Some(&config), &["restart"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn a_second_signal_exits_at_once_during_a_slow_shutdown() {
    let mut node = Node::start("twosignals", "", &[("CHOM_DEBUG_HOOKS", "1")]);
    node.wait_ready();
    // A root busy for 30 s cannot stop before node.shutdown_timeout (10 s in tests).
    let r = node.rpc("debug.stall", json!({"path": "", "duration": "30s"}));
    assert!(r.get("result").is_some(), "{r}");
    node.signal(Signal::TERM);
    wait_for(Duration::from_secs(10), "shutdown to begin", || {
        node.log_text().contains("shutting down").then_some(())
    });
    node.signal_exits(Signal::INT, 1, Duration::from_secs(3));
    assert!(
        node.log_text().contains("second signal"),
        "{}",
        node.log_text()
    );
}
