//! The node's doors under floods, end to end with the built binary: HTTP connections and
//! slow-loris heads cannot exhaust the node's file descriptors or starve the admin socket and
//! the database, and idle admin connections cannot lock the operator out.
//!
//! What the node guarantees, and these tests check: under a flood of idle HTTP connections
//! the node holds at most `http.max_connections` of them (more are answered 503 and closed at
//! once), the admin socket answers and jobs are stored and completed; connections that have
//! not sent a complete request head are closed after `http.header_timeout`, after which HTTP
//! answers again; 64+ admin connections sending only empty lines leave `chom status` working.
//!
//! Nodes run under `prlimit --nofile=...`, i.e. with the limits a systemd unit without
//! `LimitNOFILE` would give them (prlimit sets the limit and execs the node: no unsafe code).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Start a node from `extra` config under `prlimit --nofile=SOFT:HARD`.
fn start_limited(tag: &str, extra: &str, soft: u64, hard: u64) -> Node {
    let dir = TempDir::new(tag);
    let config = config_in(dir.path(), extra);
    let nofile = format!("--nofile={soft}:{hard}");
    Node::start_via(&["prlimit", &nofile, "--"], dir, config, &[])
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// True when the peer closed `s` (EOF or reset) before `limit`; an HTTP answer (e.g. 503 or
/// 408) before the close is read and ignored.
fn closed_by_peer(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return true,
            Err(_) => return false,
        }
    }
}

fn enqueue_and_complete(node: &Node) {
    let out = chom(Some(&node.config), &["jobs", "enqueue", "noop"], &[]);
    assert!(
        out.status.success(),
        "enqueue during the flood: {out:?}\nlog:\n{}",
        node.log_text()
    );
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    node.wait_job_state(id, "completed", Duration::from_secs(20));
}

#[test]
fn an_http_flood_leaves_the_admin_socket_and_the_database_usable() {
    let node = start_limited(
        "edge-flood",
        "[http]\nheader_timeout = \"10s\"\n[queue]\npoll_interval = \"100ms\"\n",
        1024,
        1024,
    );
    node.wait_ready();
    let addr = node.http_addr();
    let baseline = open_fds(node.pid());

    // More connections than the node has file descriptors, all idle.
    let flood: Vec<TcpStream> = (0..1100)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Over the limit, a connection is answered 503 and closed at once.
    let mut probe = TcpStream::connect(&addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let mut answer = String::new();
    let _ = probe.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "connection over the limit got {answer:?}"
    );

    let held = open_fds(node.pid());
    assert!(
        held <= baseline + 256 + 48,
        "node holds {held} fds (baseline {baseline}); http.max_connections is 256"
    );
    let status = chom(Some(&node.config), &["status"], &[]);
    assert!(
        status.status.success(),
        "chom status during the flood: {status:?}\nlog:\n{}",
        node.log_text()
    );
    enqueue_and_complete(&node);

    // The idle connections sent no request head: closed after header_timeout, and HTTP
    // answers again.
    let started = Instant::now();
    let (code, body) = wait_for(
        Duration::from_secs(25),
        "/health/live to answer after the flood",
        || match try_http_get(&addr, "/health/live") {
            Ok((200, body)) => Some((200, body)),
            _ => None,
        },
    );
    assert_eq!((code, body.contains("ok")), (200, true));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        !node.log_text().contains("Too many open files"),
        "{}",
        node.log_text()
    );
    drop(flood);
}

#[test]
fn slow_loris_heads_are_closed_after_the_header_timeout() {
    let node = start_limited(
        "edge-loris",
        "[http]\nheader_timeout = \"1s\"\n",
        1024,
        1024,
    );
    node.wait_ready();
    let addr = node.http_addr();
    let started = Instant::now();
    let mut loris: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    for (i, s) in loris.iter_mut().enumerate() {
        let left = Duration::from_secs(6).saturating_sub(started.elapsed());
        assert!(
            closed_by_peer(s, left),
            "slow-loris connection {i} still open {:?} after it started (header_timeout 1s)",
            started.elapsed()
        );
    }
    let (code, _) = http_get(&addr, "/health/live");
    assert_eq!(code, 200);
}

#[test]
fn idle_admin_connections_sending_empty_lines_do_not_lock_the_operator_out() {
    let node = Node::start("edge-admin", "", &[]);
    node.wait_ready();
    let baseline = open_fds(node.pid());
    let mut idle: Vec<UnixStream> = (0..70)
        .map(|_| UnixStream::connect(&node.socket).unwrap())
        .collect();
    // The node's other descriptors come and go (pool connections, health probes), so the
    // baseline may hold a few that close meanwhile: allow for them.
    const SLACK: usize = 8;
    wait_for(
        Duration::from_secs(10),
        "the node to hold its 64 admin connections",
        || (open_fds(node.pid()) + SLACK >= baseline + 64).then_some(()),
    );
    for s in &mut idle {
        // An empty line is no request; it must not count as activity.
        let _ = s.write_all(b"\n");
    }
    for _ in 0..3 {
        let out = chom(Some(&node.config), &["status"], &[]);
        assert!(
            out.status.success(),
            "chom status with 70 idle admin connections: {out:?}"
        );
        for s in &mut idle {
            let _ = s.write_all(b"\n");
        }
    }
    // And a plain RPC still works beside them.
    let status = rpc(&node.socket, "status", json!({})).unwrap();
    assert!(status["result"]["ready"] == Value::Bool(true), "{status}");
    // Evicted connections were closed by the node (EOF), not left hanging.
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut line = String::new();
            // A close with our empty lines still unread reaches us as a reset.
            match BufReader::new(*s).read_line(&mut line) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(closed >= 6, "only {closed} idle connections were closed");
}

#[test]
fn the_node_raises_its_soft_open_file_limit_to_the_hard_one() {
    let node = start_limited("edge-nofile", "", 512, 4096);
    node.wait_serving();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    wait_for(Duration::from_secs(5), "the limit in the log", || {
        node.log_text().contains("open-file limit").then_some(())
    });
}

#[test]
fn concurrent_fresh_health_requests_share_one_run_of_the_checks() {
    let dir = TempDir::new("edge-fresh");
    let runs = dir.path().join("runs.log");
    let extra = format!(
        "[health]\ninterval = \"1h\"\n[[health.checks]]\nname = \"probe\"\ncommand = \"echo run >> {}; sleep 0.3\"\n",
        runs.display()
    );
    let config = config_in(dir.path(), &extra);
    let node = Node::start_with(dir, config, &[]);
    node.wait_ready();
    let addr = node.http_addr();
    let count = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = count();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/health?fresh=true").0)
        })
        .collect();
    for request in burst {
        assert_eq!(request.join().unwrap(), 200);
    }
    // One run for the first request, one for those that queued behind it, and perhaps the
    // health actor's own: never one per request.
    let ran = count() - before;
    assert!(
        (1..=3).contains(&ran),
        "{ran} runs of the operator check for 20 concurrent requests"
    );
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn a_batch_of_listings_over_huge_payloads_stays_small() {
    // The reproduction: 40 jobs with 900 KB payloads, then one 3 KB line asking for
    // 40 listings of them (it used to answer 720 MB and take 1.4 GB of memory).
    let node = Node::start("huge-listing", "", &[]);
    node.wait_ready();
    node.rpc("queue.pause", json!({ "queue": "default" }));
    let big = "x".repeat(900_000);
    for _ in 0..40 {
        let r = node.rpc(
            "jobs.enqueue",
            json!({ "kind": "noop", "payload": { "blob": big } }),
        );
        assert!(r["result"]["id"].is_i64(), "{r}");
    }
    let before = rss(node.pid());
    let calls: Vec<Value> = (0..40)
        .map(|i| json!({ "jsonrpc": "2.0", "id": i, "method": "jobs.list", "params": { "limit": 1000 } }))
        .collect();
    let mut line = serde_json::to_vec(&calls).unwrap();
    assert!(line.len() < 4096);
    line.push(b'\n');
    let mut stream = UnixStream::connect(&node.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(&line).unwrap();
    let mut answer = Vec::new();
    BufReader::new(&mut stream)
        .take(64 << 20)
        .read_until(b'\n', &mut answer)
        .unwrap();
    let grown = rss(node.pid()).saturating_sub(before);
    assert!(
        answer.len() <= 8 << 20,
        "answer line of {} bytes",
        answer.len()
    );
    let answers: Vec<Value> = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answers.len(), 40);
    // Every listing answered, with previews that say they were cut.
    for a in &answers {
        let jobs = a["result"]["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{a}"));
        assert_eq!(jobs.len(), 40);
        assert!(jobs.iter().all(
            |j| j["payload_truncated"] == true && j["payload"].as_str().unwrap().len() <= 2048
        ));
    }
    assert!(
        grown < 200 << 20,
        "the node grew by {grown} bytes answering one batch"
    );
    // The whole payload is still there for the one job asked for.
    let id = answers[0]["result"]["jobs"][0]["id"].clone();
    let one = node.rpc("jobs.show", json!({ "id": id }));
    assert!(
        one["result"]["payload"].as_str().unwrap().len() > 900_000,
        "jobs show gives the whole payload"
    );
}
