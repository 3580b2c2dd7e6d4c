//! Three nodes, one fleet (issue #15): three built nodes on one PostgreSQL database and one
//! Redis, serving one server through a real sshd whose fake vpsmanager records every command
//! (so overlaps on the server are measured where they happen, not inferred).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chom_testkit::Sshd;
use common::*;
use serde_json::{Value, json};

/// Three nodes on one database and Redis, with `[[vps]]` naming one server on `sshd`.
struct Cluster {
    db: PgDb,
    sshd: Sshd,
    vps: String,
    tag: String,
    more: String,
    workers: u32,
    nodes: Vec<Option<Node>>,
    side: TempDir,
}

impl Cluster {
    /// A cluster whose nodes have `workers` workers and `more` config.
    fn start(tag: &str, workers: u32, more: &str) -> Cluster {
        let mut cluster = Cluster {
            db: PgDb::create(tag),
            sshd: Sshd::start(),
            // Unique: slot tables and breaker records in the shared Redis are per server.
            vps: format!("{tag}-{}", rand_suffix().to_lowercase()),
            tag: tag.to_owned(),
            more: more.to_owned(),
            workers,
            nodes: vec![None, None, None],
            side: TempDir::new(&format!("{tag}-side")),
        };
        for i in 0..3 {
            cluster.start_node(i);
        }
        for i in 0..3 {
            cluster.node(i).wait_ready();
        }
        cluster
    }

    fn name(&self, i: usize) -> String {
        format!("{}-n{}", self.tag, i + 1)
    }

    fn start_node(&mut self, i: usize) {
        let extra = format!(
            "{pg}\n[cache]\nurl = \"{redis}\"\n{ssh}connect_timeout = \"2s\"\ncommand_timeout = \"20s\"\nqueue_timeout = \"30s\"\nretry_base = \"100ms\"\nkeepalive_interval = \"1s\"\n[[vps]]\nid = \"{vps}\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            pg = pg_node_extra(&self.db.url, &self.name(i), self.workers, &self.more),
            redis = redis_url(),
            ssh = ssh_section(&self.sshd),
            vps = self.vps,
            port = self.sshd.port(),
        );
        let tag = format!("{}-{}", self.name(i), rand_suffix().to_lowercase());
        self.nodes[i] = Some(Node::start(&tag, &extra, &[("CHOM_DEBUG_HOOKS", "1")]));
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    /// `vps.exec` jobs of `site:list` on the server, inserted straight into the database.
    fn insert_execs(&self, n: u32) -> Vec<i64> {
        (0..n)
            .map(|_| insert_job(&self.db.url, &exec_payload(&self.vps)))
            .collect()
    }

    /// The server's breaker on node `i`.
    fn breaker(&self, i: usize) -> Value {
        let r = self.node(i).rpc("breaker.list", json!({}));
        r["result"]["breakers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["vps"] == self.vps.as_str())
            .map(|b| b["breaker"].clone())
            .unwrap_or(Value::Null)
    }

    /// A counter of `chom_ssh_commands_total` for the server, summed over the nodes.
    fn commands(&self, outcome: &str) -> f64 {
        (0..3).map(|i| self.node_commands(i, outcome)).sum()
    }

    fn node_commands(&self, i: usize, outcome: &str) -> f64 {
        let series = format!(
            "chom_ssh_commands_total{{outcome=\"{outcome}\",vps=\"{}\"}}",
            self.vps
        );
        metric(&self.node(i).get("/metrics").1, &series).unwrap_or(0.0)
    }

    /// Holders of the server's slot leases in Redis, by node instance id.
    fn lease_holders(&self) -> Vec<String> {
        let key = format!("chom:slots:vps:{}", self.vps);
        let out = Command::new("redis-cli")
            .args(["-u", &redis_url(), "ZRANGE", &key, "0", "-1"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|m| m.rsplit_once(':').map(|(instance, _)| instance.to_owned()))
            .collect()
    }

    /// Instance id -> node index, from `cluster.nodes`.
    fn instances(&self) -> HashMap<String, usize> {
        let r = self.node(0).rpc("cluster.nodes", json!({}));
        let mut map = HashMap::new();
        for n in r["result"]["nodes"].as_array().into_iter().flatten() {
            if let (Some(name), Some(instance)) = (n["name"].as_str(), n["instance"].as_str())
                && let Some(i) = (0..3).find(|i| self.name(*i) == name)
            {
                map.insert(instance.to_owned(), i);
            }
        }
        map
    }

    /// Wait until every job of `ids` completed; fails naming those that did not.
    fn wait_completed(&self, ids: &[i64], limit: Duration) {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT count(*) FROM jobs WHERE id IN ({list}) AND state = 'completed'");
        let n = ids.len() as i64;
        wait_for(limit, &format!("{n} jobs completed"), || {
            (pg_i64(&self.db.url, &sql) == n).then_some(())
        });
    }
}

fn exec_payload(vps: &str) -> Value {
    json!({ "vps": vps, "command": "site:list", "args": [] })
}

fn insert_job(url: &str, payload: &Value) -> i64 {
    let kind = if payload.get("vps").is_some() {
        "vps.exec"
    } else {
        "debug.record"
    };
    let payload = payload.to_string().replace('\'', "''");
    pg_i64(
        url,
        &format!(
            "INSERT INTO jobs (queue, kind, payload) VALUES ('default', '{kind}', '{payload}') RETURNING id"
        ),
    )
}

/// A job inserted every `every` into the database (the nodes come and go; the database
/// stays), each acknowledged by its id.
struct Stream {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    acked: Arc<Mutex<Vec<i64>>>,
}

impl Stream {
    fn start(url: &str, payload: Value, every: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, acked, url) = (stop.clone(), acked.clone(), url.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let id = insert_job(&url, &payload);
                    acked.lock().unwrap().push(id);
                    // Pacing of the stream, not synchronization.
                    std::thread::sleep(every);
                }
            })
        };
        Stream {
            stop,
            handle: Some(handle),
            acked,
        }
    }

    /// Stop and return every acknowledged id.
    fn finish(&mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish();
    }
}

#[test]
fn thirty_slow_commands_over_three_nodes_never_run_more_than_three_at_once() {
    let cluster = Cluster::start("clbulk", 6, "");
    cluster.sshd.fake().set_sleep(Duration::from_millis(300));
    let ids = cluster.insert_execs(30);
    cluster.wait_completed(&ids, Duration::from_secs(120));

    let fake = cluster.sshd.fake();
    assert_eq!(fake.calls().len(), 30);
    let overlap = fake.max_overlap();
    // Each node alone would run 3 at once (18 workers in all): only the shared slots hold
    // the three of them to 3 together.
    assert!(overlap <= 3, "{overlap} commands ran at once on the server");
    assert!(overlap >= 2, "commands never overlapped ({overlap})");
    let busy = (0..3)
        .filter(|i| cluster.node_commands(*i, "ok") > 0.0)
        .count();
    assert!(
        busy >= 2,
        "only {busy} node(s) ran commands: no sharing tested"
    );
    assert!(cluster.lease_holders().is_empty(), "leases left behind");
}

#[test]
fn a_sigkilled_nodes_slots_are_used_again_and_its_jobs_rescued() {
    // retry_after 12 s: leases live 4 s without renewal.
    let mut cluster = Cluster::start("clkill", 4, "retry_after = \"12s\"\n");
    cluster.sshd.fake().set_sleep(Duration::from_millis(1500));
    let mut stream = Stream::start(
        &cluster.db.url,
        exec_payload(&cluster.vps),
        Duration::from_millis(150),
    );
    // A node holding slots.
    let victim = wait_for(Duration::from_secs(60), "a node holding slots", || {
        let instances = cluster.instances();
        cluster
            .lease_holders()
            .iter()
            .find_map(|h| instances.get(h).copied())
    });
    let instances = cluster.instances();
    let dead: Vec<String> = instances
        .iter()
        .filter(|(_, i)| **i == victim)
        .map(|(k, _)| k.clone())
        .collect();
    let mut node = cluster.nodes[victim].take().unwrap();
    node.signal(rustix::process::Signal::KILL);
    node.wait_exit(Duration::from_secs(30));
    let killed = Instant::now();

    // Within retry_after the others hold all three slots.
    let taken_over = wait_for(Duration::from_secs(12), "the slots taken over", || {
        let holders = cluster.lease_holders();
        (holders.len() == 3 && holders.iter().all(|h| !dead.contains(h))).then(|| killed.elapsed())
    });
    eprintln!("slots of the killed node in use again after {taken_over:?}");
    let overlap = cluster.sshd.fake().max_overlap();
    assert!(overlap <= 3, "{overlap} commands ran at once on the server");

    let acked = stream.finish();
    // Every acknowledged job completes: those the dead node held are rescued.
    cluster.wait_completed(&acked, Duration::from_secs(240));
    assert!(cluster.sshd.fake().max_overlap() <= 3);
}

#[test]
fn a_dead_server_opens_the_breaker_on_every_node_with_one_trial_per_period() {
    let breaker = "[breaker]\nfailure_threshold = 2\nopen_timeout = \"2s\"\nmax_open = \"4s\"\n";
    let cluster = Cluster::start("clbreak", 3, breaker);
    let mut stream = Stream::start(
        &cluster.db.url,
        exec_payload(&cluster.vps),
        Duration::from_millis(100),
    );
    wait_for(Duration::from_secs(60), "commands on every node", || {
        (0..3)
            .all(|i| cluster.node_commands(i, "ok") > 0.0)
            .then_some(())
    });
    cluster.sshd.kill();

    // Open on one node, then on all within a second.
    let first = wait_for(Duration::from_secs(60), "a breaker open", || {
        (0..3)
            .any(|i| cluster.breaker(i)["state"] == "open")
            .then(Instant::now)
    });
    let all = wait_for(Duration::from_secs(10), "the breaker open on all", || {
        (0..3)
            .all(|i| cluster.breaker(i)["state"] == "open")
            .then(|| first.elapsed())
    });
    eprintln!("open on all three {all:?} after the first");
    assert!(all < Duration::from_secs(1), "open on all after {all:?}");

    // While open, every node turns jobs away without touching the network, and each open
    // period ends with one trial call across the cluster: from trips n to n + 2, two
    // transport failures in all (one per node per period without the trial token).
    let trips = |n: u64| {
        (0..3).all(|i| {
            let b = cluster.breaker(i);
            b["state"] == "open" && b["trips"].as_u64() == Some(n)
        })
    };
    let (n, before) = wait_for(
        Duration::from_secs(30),
        "all open at one trip count",
        || {
            let n = cluster.breaker(0)["trips"].as_u64()?;
            trips(n).then(|| (n, cluster.commands("transport_failed")))
        },
    );
    wait_for(Duration::from_secs(60), "two more trips on all", || {
        trips(n + 2).then_some(())
    });
    let after = cluster.commands("transport_failed");
    assert_eq!(after - before, 2.0, "trial calls in two open periods");
    for i in 0..3 {
        assert!(
            cluster.node_commands(i, "rejected") > 0.0,
            "node {i} rejected nothing"
        );
    }

    // Back: one trial closes it for all, and every job completes.
    cluster.sshd.restart();
    wait_for(Duration::from_secs(60), "closed on all", || {
        (0..3)
            .all(|i| cluster.breaker(i)["state"] == "closed")
            .then_some(())
    });
    let acked = stream.finish();
    cluster.wait_completed(&acked, Duration::from_secs(180));
}

#[test]
fn a_rolling_restart_under_a_steady_stream_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start("clroll", 4, "");
    let side: PathBuf = cluster.side.path().join("executions");
    let mut stream = Stream::start(
        &cluster.db.url,
        json!({ "file": side, "ms": 100 }),
        Duration::from_millis(30),
    );
    for i in 0..3 {
        let mut node = cluster.nodes[i].take().unwrap();
        node.signal(rustix::process::Signal::TERM);
        assert!(
            node.wait_exit(Duration::from_secs(60)).success(),
            "node {i} did not stop cleanly"
        );
        cluster.start_node(i);
        cluster.node(i).wait_ready();
    }
    let acked = stream.finish();
    assert!(acked.len() >= 10, "a thin stream: {}", acked.len());
    cluster.wait_completed(&acked, Duration::from_secs(180));
    let runs = executions(&side);
    let mut count: HashMap<i64, usize> = HashMap::new();
    for (id, _) in &runs {
        *count.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs run twice: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|id| !count.contains_key(id)).collect();
    assert!(missing.is_empty(), "completed without running: {missing:?}");
}
