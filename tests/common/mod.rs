//! Shared harness for end-to-end tests: runs the built `chom` binary as a real process with
//! its own temp dir, config, admin socket and HTTP port, and talks to it like an operator does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod pg;

/// The binary under test.
pub const CHOM: &str = env!("CARGO_BIN_EXE_chom");

/// A unique scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "chom-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{nanos:x}{n}")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub use chom_testkit::wait_for;

/// A config for a node living entirely inside `dir`; `extra` is appended (TOML).
pub fn config_in(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("chom.toml");
    let text = format!(
        r#"[node]
name = "test-node"
data_dir = "{data}"
shutdown_timeout = "10s"

[database]
url = "sqlite://{data}/chom.db"

[http]
listen = "127.0.0.1:0"

[api]
listen = "127.0.0.1:0"

[ui]
listen = "127.0.0.1:0"

[admin]
socket = "{data}/chom.sock"

[log]
level = "info,chom=debug"
{extra}
"#,
        data = dir.join("var").display(),
    );
    // A later section header in `extra` may repeat one above; merge by letting extra win.
    let text = merge_sections(&text);
    std::fs::write(&path, text).unwrap();
    path
}

/// Merge repeated `[section]` tables (later keys win) so tests can override the base config.
/// Each header-delimited chunk is parsed as a TOML document of its own and deep-merged.
fn merge_sections(text: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut doc = toml::Table::new();
    let mut chunk = String::new();
    for line in text.lines().chain(std::iter::once("[end-of-test-config]")) {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") && !chunk.trim().is_empty() {
            let parsed: toml::Table = toml::from_str(&chunk)
                .unwrap_or_else(|e| panic!("test config chunk {chunk:?}: {e}"));
            merge(&mut doc, parsed);
            chunk.clear();
        }
        if t != "[end-of-test-config]" {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    toml::to_string(&doc).unwrap()
}

/// The `[ssh]` section of a node whose servers are `sshd`: its user, key, known_hosts and the
/// fake vpsmanager as the command prefix (more `[ssh]` keys may follow it).
pub fn ssh_section(sshd: &chom_testkit::Sshd) -> String {
    format!(
        "[ssh]\nuser = \"{}\"\nprivate_key = \"{}\"\nknown_hosts = \"{}\"\ncommand_prefix = \"{}\"\n",
        sshd.user(),
        sshd.ed25519_key().display(),
        sshd.known_hosts().display(),
        sshd.fake().path().display(),
    )
}

/// `chom ARGS` against `node`: (exit code, stdout, stderr).
pub fn cli(node: &Node, args: &[&str]) -> (Option<i32>, String, String) {
    let out = chom(Some(&node.config), args, &[]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `chom ARGS` against `node`, which must succeed; its stdout.
pub fn cli_ok(node: &Node, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(node, args);
    assert_eq!(code, Some(0), "chom {args:?}: {stdout}{stderr}");
    stdout
}

/// Send one raw HTTP/1.1 request (`Connection: close`) to `addr` and read the whole answer:
/// (status, raw answer).
pub fn http_exchange(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, raw)
}

/// `s` percent-encoded for a URL's query (everything but unreserved characters).
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Run `chom ARGS` to completion with a config and extra env.
pub fn chom(config: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(CHOM);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .env_remove("CHOM_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run chom")
}

/// A running `chom node`.
pub struct Node {
    pub dir: TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Node {
    /// Start a node with `extra` config (TOML) and env.
    pub fn start(tag: &str, extra: &str, env: &[(&str, &str)]) -> Node {
        let dir = TempDir::new(tag);
        let config = config_in(dir.path(), extra);
        Self::start_with(dir, config, env)
    }

    pub fn start_with(dir: TempDir, config: PathBuf, env: &[(&str, &str)]) -> Node {
        Self::start_via(&[], dir, config, env)
    }

    /// Start the node under `wrapper` (e.g. `["prlimit", "--nofile=1024:1024", "--"]`).
    pub fn start_via(
        wrapper: &[&str],
        dir: TempDir,
        config: PathBuf,
        env: &[(&str, &str)],
    ) -> Node {
        let log = dir.path().join(format!("node-{}.log", rand_suffix()));
        let socket = dir.path().join("var/chom.sock");
        let child = spawn_node_via(wrapper, &config, &log, env);
        Node {
            dir,
            config,
            child: Some(child),
            log,
            socket,
        }
    }

    /// One admin RPC; panics on transport errors, returns the JSON-RPC response object.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        rpc(&self.socket, method, params)
            .unwrap_or_else(|e| panic!("rpc {method}: {e}\nlog:\n{}", self.log_text()))
    }

    /// Wait until the admin socket answers `status`.
    pub fn wait_serving(&self) -> Value {
        wait_for(Duration::from_secs(60), "admin socket to answer", || {
            self.assert_running();
            rpc(&self.socket, "status", json!({}))
                .ok()
                .and_then(|r| r.get("result").cloned())
        })
    }

    /// Wait until `status` says ready.
    pub fn wait_ready(&self) -> Value {
        wait_for(Duration::from_secs(60), "node to be ready", || {
            self.assert_running();
            let r = rpc(&self.socket, "status", json!({})).ok()?;
            (r["result"]["ready"] == true).then(|| r["result"].clone())
        })
    }

    /// The actual HTTP address (the config asks for port 0).
    pub fn http_addr(&self) -> String {
        let status = self.wait_serving();
        status["http"]
            .as_str()
            .expect("status reports http address")
            .to_owned()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http_addr(), path)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `sig` and wait for the process to exit with `code` within `within`.
    pub fn signal_exits(&mut self, sig: rustix::process::Signal, code: i32, within: Duration) {
        let sent = Instant::now();
        self.signal(sig);
        let status = self.wait_exit(within + Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "{}", self.log_text());
        let took = sent.elapsed();
        assert!(took < within, "exit after {sig:?} took {took:?}");
    }

    pub fn assert_running(&self) {
        if let Some(child) = &self.child {
            // try_wait needs &mut; read the process state instead (an exited, unreaped child is
            // a zombie, which kill(pid, 0) would still report as alive).
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            let alive = matches!(state, Some(c) if c != 'Z' && c != 'X');
            assert!(alive, "node exited early; log:\n{}", self.log_text());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn spawn_node(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    spawn_node_via(&[], config, log, env)
}

/// [`spawn_node`] through `wrapper`, a command that execs the node it is given (e.g.
/// `prlimit --nofile=1024:1024 --`), so the child is still the node itself.
pub fn spawn_node_via(wrapper: &[&str], config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log_file = std::fs::File::create(log).unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(CHOM);
            cmd
        }
        None => Command::new(CHOM),
    };
    cmd.arg("--config")
        .arg(config)
        .arg("node")
        .env_remove("CHOM_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn chom node")
}

/// One JSON-RPC call over the admin socket.
pub fn rpc(socket: &Path, method: &str, params: Value) -> std::io::Result<Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    reader.read_line(&mut out)?;
    serde_json::from_str(&out)
        .map_err(|e| std::io::Error::other(format!("bad response {out:?}: {e}")))
}

/// Minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// [`http_get`] for a server that may be between listeners or gone: the error instead of a
/// panic.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // axum answers small bodies with Content-Length, so no chunked decoding is needed.
    Ok((status, body))
}

/// Parse `name{labels} value` from a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The PostgreSQL server tests use (scripts/test exports it).
pub fn pg_url() -> String {
    std::env::var("CHOM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    std::env::var("CHOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh PostgreSQL database for one test, dropped on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl PgDb {
    pub fn create(tag: &str) -> PgDb {
        let admin_url = pg_url();
        let name = format!("chom_{tag}_{}", rand_suffix());
        pg_exec(&admin_url, &format!("CREATE DATABASE {name}"));
        let base = admin_url.rsplit_once('/').unwrap().0;
        PgDb {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }
}

/// The setting of the queue tests on PostgreSQL: a fresh database, a side file that
/// `debug.record` jobs append their executions to, and nodes started on that database.
pub struct PgRig {
    /// The database.
    pub db: PgDb,
    /// Where `debug.record` jobs write (one line per execution).
    pub file: PathBuf,
    tag: String,
    _side: TempDir,
}

impl PgRig {
    /// A fresh database and side directory named after `tag`.
    pub fn new(tag: &str) -> PgRig {
        let side = TempDir::new(&format!("{tag}-side"));
        PgRig {
            db: PgDb::create(tag),
            file: side.path().join("executions"),
            tag: tag.to_owned(),
            _side: side,
        }
    }

    /// [`PgRig::start`], then wait until the node is ready.
    pub fn ready(&self, name: &str, workers: u32, more: &str) -> Node {
        let node = self.start(name, workers, more);
        node.wait_ready();
        node
    }

    /// Start node `name` on the database with `workers` workers, `more` config and the debug
    /// hooks on; the caller waits for it to be ready (so several nodes start at once).
    pub fn start(&self, name: &str, workers: u32, more: &str) -> Node {
        Node::start(
            &format!("{}-{name}", self.tag),
            &pg_node_extra(&self.db.url, name, workers, more),
            &[("CHOM_DEBUG_HOOKS", "1")],
        )
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        pg_exec(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

pub fn pg_exec(url: &str, sql: &str) {
    let url = url.to_owned();
    let sql = sql.to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!("connect to test PostgreSQL {url}: {e} (run scripts/test, which starts it)")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// Run `fut` to completion on a runtime of its own (these helpers are called from plain
/// `#[test]` threads).
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

/// The first column of `row` as an integer, or a panic naming `sql`.
fn int_column<R: sqlx::Row>(row: &R, sql: &str) -> i64
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get::<i64, _>(0)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One integer from a query (e.g. a count).
/// Wait until `n` rows of `jobs` match `filter` (an SQL condition); with `alive`, that node
/// must stay up meanwhile, so a crash fails the test at once rather than at the deadline. The
/// deadline (3 minutes) only catches a hang: no test times its queue with it.
pub fn wait_jobs(url: &str, filter: &str, n: i64, alive: Option<&Node>) {
    let sql = format!("SELECT count(*) FROM jobs WHERE {filter}");
    let limit = Duration::from_secs(180);
    wait_for(limit, &format!("{n} jobs where {filter}"), || {
        if let Some(node) = alive {
            node.assert_running();
        }
        (pg_i64(url, &sql) == n).then_some(())
    });
}

pub fn pg_i64(url: &str, sql: &str) -> i64 {
    block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        int_column(&row, sql)
    })
}

/// One number from a SQLite database file (`SELECT count(*) ...`), read beside the node.
pub fn sqlite_i64(file: &Path, sql: &str) -> i64 {
    block_on(async {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(file)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = int_column(&row, sql);
        let _ = conn.close().await;
        n
    })
}

/// The lines of a `debug.record` side file as (job id, node) pairs.
pub fn executions(path: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.to_owned()))
        })
        .collect()
}

/// The lines of a `debug.record` side file as (job id, start in Unix microseconds) pairs.
pub fn executions_with_start(path: &Path) -> Vec<(i64, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// Config for a node on PostgreSQL `url` named `name` with `workers` workers.
pub fn pg_node_extra(url: &str, name: &str, workers: u32, more: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\n[database]\nurl = \"{url}\"\nmax_connections = 20\n[queue]\nworkers = {workers}\npoll_interval = \"200ms\"\n{more}"
    )
}

/// Every actor report in a `tree` result, depth first.
/// The row of `queue` in a `queue.stats` result's `queues` array.
pub fn queue_row(queues: &Value, queue: &str) -> Value {
    let rows = queues
        .as_array()
        .unwrap_or_else(|| panic!("no queues: {queues}"));
    let row = rows.iter().find(|q| q["queue"] == queue);
    row.unwrap_or_else(|| panic!("no queue {queue}: {queues}"))
        .clone()
}

pub fn tree_nodes(tree: &Value) -> Vec<Value> {
    fn go(children: &Value, out: &mut Vec<Value>) {
        for c in children.as_array().into_iter().flatten() {
            out.push(c.clone());
            if let Some(sub) = c.get("children") {
                go(&sub["children"], out);
            }
        }
    }
    let mut out = Vec::new();
    go(&tree["children"], &mut out);
    out
}

/// The report of the actor at `path` in a `tree` result.
pub fn tree_child(tree: &Value, path: &str) -> Value {
    tree_nodes(tree)
        .into_iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {tree}"))
}

/// From a `debug.record` side file: how many executions were recorded, and the distinct job
/// ids (sorted).
pub fn executed_ids(path: &Path) -> (usize, Vec<i64>) {
    let mut ids: Vec<i64> = executions(path).into_iter().map(|(id, _)| id).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    (total, ids)
}

/// Whether `chom queue stats` says `queue` is paused.
pub fn queue_paused(node: &Node, queue: &str) -> bool {
    let stats: Value = serde_json::from_str(&cli_ok(node, &["queue", "stats", "--json"])).unwrap();
    stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .expect("queue listed")["paused"]
        == true
}

impl Node {
    /// Enqueue a job of `kind` with `payload`; returns its id (panics with the reply if refused).
    pub fn enqueue(&self, kind: &str, payload: Value) -> i64 {
        let r = self.rpc("jobs.enqueue", json!({ "kind": kind, "payload": payload }));
        r["result"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("enqueue {kind}: {r}"))
    }

    /// Wait until job `id` is in `state`; returns its `jobs.show` document.
    pub fn wait_job_state(&self, id: i64, state: &str, limit: Duration) -> Value {
        wait_for(limit, &format!("job {id} to be {state}"), || {
            let job = self.rpc("jobs.show", json!({ "id": id }))["result"].clone();
            (job["state"] == state).then_some(job)
        })
    }
}
