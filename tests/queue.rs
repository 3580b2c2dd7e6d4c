//! End-to-end tests of the job queue: the built node against a real PostgreSQL (and SQLite),
//! with jobs that record their executions in a side file (`debug.record`).

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

mod common;

use std::time::{Duration, Instant};

use common::pg::PrivatePg;
use common::*;
use rustix::process::Signal;
use serde_json::{Value, json};

const DEBUG: &[(&str, &str)] = &[("CHOM_DEBUG_HOOKS", "1")];

/// The job's last error mentions `text`.
fn assert_last_error(job: &Value, text: &str) {
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(text),
        "last error should mention {text:?}: {job}"
    );
}

impl PgRig {
    /// `n` `debug.record` jobs on `queue` writing to the rig's side file, each sleeping `ms`.
    fn insert(&self, queue: &str, n: u32, ms: u64) {
        insert_records(&self.db.url, queue, n, &self.file, ms);
    }
}

fn insert_records(url: &str, queue: &str, n: u32, file: &std::path::Path, ms: u64) {
    pg_exec(
        url,
        &format!(
            "INSERT INTO jobs (queue, kind, payload) SELECT '{queue}', 'debug.record', '{{\"file\": \"{}\", \"ms\": {ms}}}' FROM generate_series(1, {n})",
            file.display()
        ),
    );
}

fn migrate(url: &str) {
    let dir = TempDir::new("migrate");
    let out = chom(
        None,
        &["migrate"],
        &[
            ("CHOM_DATABASE_URL", url),
            ("CHOM_NODE_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn two_nodes_drain_10000_jobs_each_exactly_once() {
    let rig = PgRig::new("drain");
    let (db, file) = (&rig.db, &rig.file);
    let (a, b) = (rig.start("node-a", 8, ""), rig.start("node-b", 8, ""));
    a.wait_ready();
    b.wait_ready();
    rig.insert("default", 10_000, 0);
    wait_jobs(&db.url, "state = 'completed'", 10_000, None);
    let runs = executions(file);
    let (before, ids) = executed_ids(file);
    assert_eq!(
        before, 10_000,
        "executions recorded (duplicates mean a job ran twice)"
    );
    assert_eq!(ids.len(), 10_000);
    let by_a = runs.iter().filter(|(_, n)| n == "node-a").count();
    let by_b = runs.iter().filter(|(_, n)| n == "node-b").count();
    assert!(
        by_a > 0 && by_b > 0,
        "each node did part of the work: a={by_a} b={by_b}"
    );
    assert_eq!(pg_i64(&db.url, "SELECT count(*) FROM failed_jobs"), 0);
}

#[test]
fn sigkill_mid_run_loses_nothing() {
    let rig = PgRig::new("sigkill");
    let (db, file) = (&rig.db, &rig.file);
    let mut node = rig.ready("node-k", 16, "");
    rig.insert("default", 2_000, 10);
    wait_for(Duration::from_secs(60), "some jobs to run", || {
        (executions(file).len() >= 300).then_some(())
    });
    node.signal(Signal::KILL);
    node.wait_exit(Duration::from_secs(10));
    let running_at_kill = pg_i64(
        &db.url,
        "SELECT count(*) FROM jobs WHERE state = 'reserved'",
    );
    assert!(running_at_kill > 0, "the kill caught jobs in flight");
    // Restart the same node (same name and data dir).
    let log = node.dir.path().join("restart.log");
    let child = spawn_node(&node.config, &log, DEBUG);
    let restarted = Node {
        dir: TempDir::new("unused"),
        config: node.config.clone(),
        child: Some(child),
        log,
        socket: node.socket.clone(),
    };
    wait_jobs(&db.url, "state = 'completed'", 2_000, Some(&restarted));
    assert_eq!(
        pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state <> 'completed'"
        ),
        0,
        "none stuck"
    );
    let (total, ids) = executed_ids(file);
    assert_eq!(ids.len(), 2_000, "every job ran");
    // At-least-once: only jobs running at the kill may have run twice (each worker holds one,
    // and a completion not yet written when the process died counts as running).
    let twice = total - ids.len();
    assert!(
        twice as i64 <= running_at_kill,
        "{twice} jobs ran twice, but only {running_at_kill} were in flight"
    );
}

#[test]
fn panics_timeouts_and_bad_payloads_end_where_their_policy_says() {
    let db = PgDb::create("policy");
    let side = TempDir::new("policy-side");
    let marker = side.path().join("panicked");
    let extra = pg_node_extra(
        &db.url,
        "node-p",
        2,
        "[jobs.\"debug.sleep\"]\nmax_attempts = 3\ntimeout = \"200ms\"\nbackoff = [\"700ms\"]\n[jobs.\"debug.panic_once\"]\nbackoff = [\"100ms\"]\n",
    );
    let node = Node::start("policy", &extra, DEBUG);
    node.wait_ready();
    let enqueue = |kind: &str, payload: Value| node.enqueue(kind, payload);

    // A worker that panics mid-job is restarted and the job retried.
    let panicky = enqueue(
        "debug.panic_once",
        json!({"marker": marker.display().to_string()}),
    );
    let job = node.wait_job_state(panicky, "completed", Duration::from_secs(30));
    assert_eq!(job["attempts"], 2, "{job}");
    assert_last_error(&job, "worker crashed");
    let tree = node.rpc("tree", json!({}))["result"].clone();
    let restarts: u64 = tree_nodes(&tree)
        .iter()
        .filter(|c| c["path"].as_str().unwrap().starts_with("queue/worker:"))
        .map(|c| c["restart_count"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 1, "{tree}");

    // A job that always times out ends in failed_jobs after its attempts, with the backoff.
    let started = Instant::now();
    let slow = enqueue("debug.sleep", json!({"ms": 5000}));
    let job = node.wait_job_state(slow, "failed", Duration::from_secs(30));
    let took = started.elapsed();
    assert_eq!(job["attempts"], 3, "{job}");
    assert_last_error(&job, "timed out after 200ms");
    // 3 attempts of 200 ms and two waits of 700 ms.
    assert!(
        took >= Duration::from_millis(2000),
        "backoff not honoured: failed after {took:?}"
    );
    let failed = node.rpc("failed.list", json!({}))["result"]["failed"].clone();
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["job_id"] == slow && f["attempts"] == 3),
        "{failed}"
    );

    // A bad payload (inserted by another program) goes to failed_jobs at once.
    pg_exec(
        &db.url,
        "INSERT INTO jobs (queue, kind, payload) VALUES ('default', 'noop', 'this is not json')",
    );
    let bad_id = pg_i64(&db.url, "SELECT max(id) FROM jobs");
    let job = node.wait_job_state(bad_id, "failed", Duration::from_secs(30));
    assert_eq!(job["attempts"], 1, "{job}");
    assert_last_error(&job, "not valid JSON");

    // Retrying from the dead letters enqueues it again.
    let out = chom(
        Some(&node.config),
        &["failed", "retry", "--all", "--json"],
        &[],
    );
    let retried: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(retried["retried"], 2, "{retried}");
}

#[test]
fn postgres_stopped_for_10s_heals_and_every_job_completes() {
    let pg = PrivatePg::start();
    let url = pg.url("postgres");
    let side = TempDir::new("pgstop-side");
    let file = side.path().join("executions");
    let extra = pg_node_extra(
        &url,
        "node-o",
        4,
        "[database]\nconnect_timeout = \"1s\"\n[health]\ncheck_timeout = \"2s\"\n",
    );
    let node = Node::start("pgstop", &extra, DEBUG);
    node.wait_ready();
    insert_records(&url, "default", 600, &file, 20);
    wait_for(Duration::from_secs(60), "jobs to flow", || {
        (executions(&file).len() >= 50).then_some(())
    });
    pg.stop();
    let stopped = Instant::now();
    // Meanwhile the node stays up and /health reports the database error.
    let (code, body) = wait_for(
        Duration::from_secs(20),
        "/health to report the outage",
        || {
            node.assert_running();
            let (code, body) = node.get("/health?fresh=true");
            (code == 503).then_some((code, body))
        },
    );
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, &health["checks"]["database"]["status"]),
        (503, &json!("error")),
        "{health}"
    );
    let left = Duration::from_secs(10).saturating_sub(stopped.elapsed());
    std::thread::sleep(left); // the outage itself lasts 10 s; nothing is awaited here
    node.assert_running();
    pg.start_again();
    wait_jobs(&url, "state = 'completed'", 600, Some(&node));
    let (_, ids) = executed_ids(&file);
    assert_eq!(ids.len(), 600);
    let (code, _) = wait_for(Duration::from_secs(30), "/health to recover", || {
        let (code, body) = node.get("/health?fresh=true");
        (code == 200).then_some((code, body))
    });
    assert_eq!(code, 200);
}

#[test]
fn strict_priority_across_the_five_queues() {
    let db = PgDb::create("priority");
    migrate(&db.url);
    let side = TempDir::new("priority-side");
    let file = side.path().join("executions");
    let queues = ["batch", "low", "default", "high", "critical"];
    for q in queues {
        insert_records(&db.url, q, 40, &file, 2);
    }
    let node = Node::start("priority", &pg_node_extra(&db.url, "node-q", 4, ""), DEBUG);
    node.wait_ready();
    wait_jobs(&db.url, "state = 'completed'", 200, None);
    let order: Vec<i64> = executions(&file).into_iter().map(|(id, _)| id).collect();
    // Ids were inserted queue by queue: batch 1-40, low 41-80, default 81-120, high 121-160, critical 161-200.
    let first_id = pg_i64(&db.url, "SELECT min(id) FROM jobs");
    let queue_of = |id: i64| queues[((id - first_id) / 40) as usize];
    let rank = |q: &str| {
        ["critical", "high", "default", "low", "batch"]
            .iter()
            .position(|x| *x == q)
            .unwrap()
    };
    let last_critical = order
        .iter()
        .rposition(|id| queue_of(*id) == "critical")
        .unwrap();
    let first_low = order.iter().position(|id| queue_of(*id) == "low").unwrap();
    assert!(
        last_critical < first_low,
        "a low job started while critical jobs were due: {order:?}"
    );
    // Execution follows priority: ranks never go back by more than one claim batch (4 workers).
    let ranks: Vec<usize> = order.iter().map(|id| rank(queue_of(*id))).collect();
    for (i, r) in ranks.iter().enumerate() {
        let later_higher = ranks[i..].iter().skip(4).any(|x| x < r);
        assert!(
            !later_higher,
            "priority inversion at position {i}: {ranks:?}"
        );
    }
}

#[test]
fn pause_stops_claims_on_every_node_until_resumed() {
    let rig = PgRig::new("pause");
    let db = &rig.db;
    let (a, b) = (rig.start("node-a", 2, ""), rig.start("node-b", 2, ""));
    a.wait_ready();
    b.wait_ready();
    let out = chom(Some(&a.config), &["queue", "pause", "default"], &[]);
    assert!(out.status.success(), "{out:?}");
    // Both nodes re-read the paused set within their poll interval (200 ms here).
    for node in [&a, &b] {
        wait_for(
            Duration::from_secs(10),
            "the node to stop claiming from default",
            || {
                let claiming = node.rpc("status", json!({}))["result"]["claiming"].clone();
                (!claiming.as_array()?.contains(&json!("default"))).then_some(())
            },
        );
    }
    rig.insert("default", 20, 0);
    rig.insert("critical", 20, 0);
    wait_jobs(
        &db.url,
        "queue = 'critical' AND state = 'completed'",
        20,
        None,
    );
    // Two more poll rounds on both nodes: default stays untouched.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            pg_i64(
                &db.url,
                "SELECT count(*) FROM jobs WHERE queue = 'default' AND state <> 'pending'"
            ),
            0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = b.rpc("queue.stats", json!({}))["result"]["queues"].clone();
    let default = queue_row(&stats, "default");
    assert_eq!(
        (default["paused"].as_bool(), default["ready"].as_u64()),
        (Some(true), Some(20)),
        "{stats}"
    );
    let out = chom(Some(&b.config), &["queue", "resume", "default"], &[]);
    assert!(out.status.success(), "{out:?}");
    wait_jobs(
        &db.url,
        "queue = 'default' AND state = 'completed'",
        20,
        None,
    );
}

#[test]
fn cli_enqueue_show_list_unique_key_and_delay_on_sqlite() {
    let node = Node::start("cli-queue", "[queue]\npoll_interval = \"100ms\"\n", &[]);
    node.wait_ready();
    let run = |args: &[&str]| {
        let out = chom(Some(&node.config), args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let id: i64 = run(&["jobs", "enqueue", "noop", "--payload", "{\"a\":1}"])
        .trim()
        .parse()
        .unwrap();
    let job = wait_for(Duration::from_secs(10), "noop to complete", || {
        let v: Value =
            serde_json::from_str(&run(&["jobs", "show", &id.to_string(), "--json"])).unwrap();
        (v["state"] == "completed").then_some(v)
    });
    assert_eq!(job["payload"], "{\"a\":1}");
    // Unique key: a second enqueue while the first is pending returns the same id.
    let first: Value = serde_json::from_str(&run(&[
        "jobs",
        "enqueue",
        "noop",
        "--delay",
        "1h",
        "--unique-key",
        "k1",
        "--json",
    ]))
    .unwrap();
    let second: Value = serde_json::from_str(&run(&[
        "jobs",
        "enqueue",
        "noop",
        "--unique-key",
        "k1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["existing"], true);
    // The delayed job is listed as pending and not run.
    let list: Value =
        serde_json::from_str(&run(&["jobs", "list", "--state", "pending", "--json"])).unwrap();
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == first["id"]),
        "{list}"
    );
    let stats: Value = serde_json::from_str(&run(&["queue", "stats", "--json"])).unwrap();
    let default = queue_row(&stats["queues"], "default");
    assert_eq!(default["delayed"], 1, "{stats}");
    // Bad input gets clear errors.
    let out = chom(
        Some(&node.config),
        &["jobs", "enqueue", "noop", "--payload", "{oops"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid JSON"),
        "{out:?}"
    );
    let out = chom(
        Some(&node.config),
        &["jobs", "enqueue", "noop", "--queue", "urgent"],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown queue"),
        "{out:?}"
    );
    let out = chom(Some(&node.config), &["jobs", "show", "999999"], &[]);
    assert_eq!(out.status.code(), Some(1));
    // Metrics and health include the queue.
    let (_, page) = node.get("/metrics");
    assert!(
        metric(
            &page,
            "chom_jobs_total{kind=\"noop\",outcome=\"completed\",queue=\"default\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{page}"
    );
    // Fresh: the cached report may predate the delayed job (it is made every health.interval).
    let (_, body) = node.get("/health?fresh=true");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["checks"]["queue"]["status"], "ok", "{health}");
    assert!(
        health["checks"]["queue"]["queue_size"].as_u64().unwrap() >= 1,
        "{health}"
    );
}

#[test]
fn jobs_running_at_the_shutdown_timeout_are_released_for_retry() {
    let rig = PgRig::new("shutdown");
    let db = &rig.db;
    let mut node = rig.ready("node-s", 1, "[node]\nshutdown_timeout = \"1s\"\n");
    let id = node.enqueue("debug.sleep", json!({"ms": 30000}));
    node.wait_job_state(id, "reserved", Duration::from_secs(10));
    node.signal_exits(Signal::TERM, 0, Duration::from_secs(10));
    // Back to pending with its attempt counted, no longer held by the node.
    assert_eq!(
        pg_i64(
            &db.url,
            &format!(
                "SELECT count(*) FROM jobs WHERE id = {id} AND state = 'pending' AND reserved_by IS NULL AND attempts = 1"
            )
        ),
        1
    );
    assert!(
        node.log_text()
            .contains("released jobs still running at the shutdown timeout"),
        "{}",
        node.log_text()
    );
}

#[test]
fn workers_recycle_after_max_jobs_without_counting_as_failures() {
    let node = Node::start(
        "recycle",
        "[queue]\nworkers = 1\nmax_jobs_per_worker = 3\npoll_interval = \"100ms\"\n",
        &[],
    );
    node.wait_ready();
    for _ in 0..10 {
        assert!(node.rpc("jobs.enqueue", json!({"kind": "noop"}))["result"]["id"].is_i64());
    }
    wait_for(Duration::from_secs(30), "10 jobs completed", || {
        let stats = node.rpc("queue.stats", json!({}))["result"]["queues"].clone();
        let done: u64 = stats
            .as_array()?
            .iter()
            .map(|q| q["completed"].as_u64().unwrap_or(0))
            .sum();
        (done == 10).then_some(())
    });
    let tree = node.rpc("tree", json!({}))["result"].clone();
    let worker = tree_nodes(&tree)
        .into_iter()
        .find(|c| c["path"] == "queue/worker:1")
        .unwrap();
    assert!(worker["recycles"].as_u64().unwrap() >= 3, "{worker}");
    assert_eq!(worker["restart_count"], 0, "{worker}");
    assert_eq!(worker["state"], "running");
}

#[test]
fn stuck_jobs_are_killed_with_the_reason_and_stay_failed() {
    let rig = PgRig::new("stuck");
    let node = rig.ready("node-t", 1, "");
    let id = node.enqueue("debug.sleep", json!({"ms": 1500}));
    node.wait_job_state(id, "reserved", Duration::from_secs(10));
    let out = chom(
        Some(&node.config),
        &["jobs", "kill-stuck", "--older-than", "1ms", "--json"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let killed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(killed["killed"], json!([id]));
    let failed = node.rpc("failed.list", json!({}))["result"]["failed"].clone();
    assert_eq!(failed[0]["exception"], "killed after timeout", "{failed}");
    // When the handler finally returns, its result does not resurrect the job. A noop enqueued
    // afterwards completes only after that result went through the same completer.
    wait_for(
        Duration::from_secs(10),
        "the killed job's handler to return",
        || {
            let (_, page) = node.get("/metrics");
            metric(
                &page,
                "chom_jobs_total{kind=\"debug.sleep\",outcome=\"completed\",queue=\"default\"}",
            )
            .map(|_| ())
        },
    );
    let later = node.enqueue("noop", Value::Null);
    node.wait_job_state(later, "completed", Duration::from_secs(10));
    let job = node.rpc("jobs.show", json!({"id": id}))["result"].clone();
    assert_eq!(job["state"], "failed", "{job}");
}

#[test]
fn a_dead_nodes_jobs_are_rescued_by_another_node() {
    let rig = PgRig::new("rescue");
    let db = &rig.db;
    let mut a = rig.ready("node-a", 4, "");
    rig.insert("default", 40, 3000);
    wait_for(Duration::from_secs(20), "node a to hold jobs", || {
        (pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state = 'reserved' AND reserved_by = 'node-a'",
        ) >= 4)
            .then_some(())
    });
    a.signal(Signal::KILL);
    a.wait_exit(Duration::from_secs(10));
    // Node b never restarts node a; it takes a's jobs once a stops heartbeating for retry_after.
    let b = rig.ready("node-b", 8, "[queue]\nretry_after = \"6s\"\n");
    wait_jobs(&db.url, "state = 'completed'", 40, Some(&b));
    // The reaper logs after its rescue commits; its jobs may complete before that line.
    wait_for(Duration::from_secs(10), "the rescue logged", || {
        b.log_text()
            .contains("rescued jobs reserved by a node that stopped heartbeating")
            .then_some(())
    });
}

#[test]
fn graceful_shutdown_gives_back_claimed_jobs_without_using_an_attempt() {
    let rig = PgRig::new("graceful");
    let db = &rig.db;
    let mut node = rig.ready("node-g", 1, "");
    for _ in 0..5 {
        node.rpc(
            "jobs.enqueue",
            json!({"kind": "debug.sleep", "payload": {"ms": 700}}),
        );
    }
    // One job running and one claimed into the ready buffer, not started.
    wait_jobs(&db.url, "state = 'reserved'", 2, None);
    node.signal(Signal::TERM);
    assert_eq!(
        node.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        node.log_text()
    );
    // The running job finished; every other job is pending again with no attempt used.
    assert!(
        pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state = 'completed'"
        ) >= 1,
        "{}",
        node.log_text()
    );
    assert_eq!(
        pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state = 'reserved'"
        ),
        0
    );
    assert_eq!(
        pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state = 'pending' AND attempts > 0"
        ),
        0,
        "a claimed but never started job lost an attempt"
    );
    assert_eq!(
        pg_i64(&db.url, "SELECT count(*) FROM jobs WHERE state = 'pending'"),
        5 - pg_i64(
            &db.url,
            "SELECT count(*) FROM jobs WHERE state = 'completed'"
        )
    );
}

/// `chom jobs enqueue --batch ARGS` against `node` with `input` on stdin: (exit code,
/// stdout, stderr).
fn enqueue_batch(node: &Node, args: &[&str], input: String) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(CHOM)
        .arg("--config")
        .arg(&node.config)
        .args(args)
        .args(["jobs", "enqueue", "--batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The CLI may stop reading at a bad line: a broken pipe is expected then.
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn job_count(rig: &PgRig) -> i64 {
    pg_i64(&rig.db.url, "SELECT count(*) FROM jobs")
}

#[test]
fn batch_enqueue_from_stdin_keeps_order_and_stores_each_chunk_whole() {
    let rig = PgRig::new("batch_enqueue");
    let node = rig.ready("batch", 4, "");
    let line = |i: usize| match i {
        // Lines 10 and 20 share a unique key (one chunk, one transaction): one job.
        10 | 20 => format!(
            "{{\"kind\": \"noop\", \"payload\": {{\"i\": {i}}}, \"unique_key\": \"dup\"}}\n"
        ),
        _ => format!("{{\"kind\": \"noop\", \"payload\": {{\"i\": {i}}}}}\n"),
    };
    let input: String = (1..=2_500).map(line).collect();
    let (code, out, err) = enqueue_batch(&node, &[], input + "\n");
    assert_eq!(code, Some(0), "{err}");
    let ids: Vec<i64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 2_500, "one id per input line");
    assert_eq!(ids[19], ids[9], "the held key answers its holder");
    let mut distinct = ids.clone();
    distinct.remove(19);
    // Within a chunk (one transaction) ids follow the input; two chunks in flight may take
    // theirs from the sequence in either order, so across chunks they are only distinct.
    for start in (0..ids.len()).step_by(1_000) {
        let chunk: Vec<i64> = (start..(start + 1_000).min(ids.len()))
            .filter(|&i| i != 19)
            .map(|i| ids[i])
            .collect();
        assert!(chunk.windows(2).all(|w| w[0] < w[1]), "ids in input order");
    }
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 2_499, "every other id distinct");
    let last = *ids.last().unwrap();
    wait_for(Duration::from_secs(60), "the batch to run", || {
        (node.rpc("jobs.show", json!({ "id": last }))["result"]["state"] == "completed")
            .then_some(())
    });
    assert_eq!(job_count(&rig), 2_499);

    // A bad line stops the run before its chunk: the first chunk (1,000 lines) is stored,
    // nothing after it.
    let mut input: String = (1..=1_500)
        .map(line)
        .collect::<String>()
        .replace("\"unique_key\": \"dup\"", "\"unique_key\": \"dup2\"");
    input.insert_str(
        input.match_indices('\n').nth(1_198).unwrap().0 + 1,
        "{\"kind\": 5}\n",
    );
    let (code, out, err) = enqueue_batch(&node, &[], input);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 1200"), "{err}");
    assert_eq!(out.lines().count(), 1_000);
    assert_eq!(
        job_count(&rig),
        2_499 + 999,
        "the first chunk only (its own dup key once)"
    );

    // The node refuses a chunk holding an unknown kind: none of that chunk is stored.
    let input = format!("{}{{\"kind\": \"no.such.kind\"}}\n", line(1));
    let (code, out, err) = enqueue_batch(&node, &["--json"], input);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("lines 1-2") && err.contains("jobs[1]") && err.contains("unknown job kind"),
        "{err}"
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ids"], json!([]), "{doc}");
    assert_eq!(job_count(&rig), 2_499 + 999);

    let (code, out, err) = enqueue_batch(&node, &["--json"], line(1) + &line(2));
    assert_eq!(code, Some(0), "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ids"].as_array().map(Vec::len), Some(2), "{doc}");
}

#[test]
fn cluster_lists_the_live_nodes_with_their_running_jobs() {
    let rig = PgRig::new("cluster_nodes");
    let (a, b) = (rig.start("a", 2, ""), rig.start("b", 2, ""));
    a.wait_ready();
    b.wait_ready();
    let nodes = |node: &Node| -> Vec<Value> {
        let doc: Value = serde_json::from_str(&cli_ok(node, &["--json", "cluster"])).unwrap();
        doc["nodes"].as_array().unwrap().clone()
    };
    let listed = nodes(&a);
    let names: Vec<&str> = listed.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "{listed:?}");
    assert_ne!(listed[0]["instance"], listed[1]["instance"]);
    for n in &listed {
        assert_eq!(n["instance"].as_str().map(str::len), Some(16), "{n}");
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"), "{n}");
        assert!(
            n["seen_at"].is_string() && n["started_at"].is_string(),
            "{n}"
        );
    }
    // Slow jobs: the heartbeats report as many running as the database holds reserved.
    rig.insert("default", 4, 20_000);
    wait_for(Duration::from_secs(30), "the running jobs reported", || {
        let running: u64 = nodes(&b)
            .iter()
            .map(|n| n["jobs_running"].as_u64().unwrap())
            .sum();
        let reserved = pg_i64(
            &rig.db.url,
            "SELECT count(*) FROM jobs WHERE state = 'reserved'",
        );
        (running > 0 && i64::try_from(running) == Ok(reserved)).then_some(())
    });
    let text = cli_ok(&b, &["cluster"]);
    assert!(
        text.starts_with("NAME") && text.contains("a ") && text.contains("b "),
        "{text}"
    );
    // `chom status` counts them.
    wait_for(Duration::from_secs(30), "status to count two nodes", || {
        cli_ok(&a, &["status"])
            .contains("cluster: 2 live nodes")
            .then_some(())
    });
    // A node gone silent leaves the list once its heartbeat is 15 s old.
    b.signal(Signal::KILL);
    wait_for(Duration::from_secs(40), "b to leave the list", || {
        let names: Vec<String> = nodes(&a)
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        (names == ["a"]).then_some(())
    });
}
