//! The configuration sections and their code defaults.
//!
//! Every default value of the configuration is named here, in the `Default` impls (and the
//! per-field default functions of [`VpsConfig`]); `config/chom.toml` mirrors them and a test
//! keeps the two in step.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default SSH port of a `[[vps]]` entry.
pub const DEFAULT_VPS_PORT: u16 = 22;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

// === [node] ===

/// `[node]`: identity and lifecycle of this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Name of the node in logs, metrics and status; empty means "use the host name".
    pub name: String,
    /// Directory for the node's own files (SQLite database, admin socket by default).
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before remaining actors are killed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            data_dir: PathBuf::from("./var"),
            shutdown_timeout: secs(30),
        }
    }
}

// === [database] ===

/// `[database]`: the job store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded) or `postgres://...` / `postgresql://...`.
    pub url: String,
    /// Size of the connection pool.
    pub max_connections: u32,
    /// How long to wait for a pooled connection (and for the first connect).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://./var/chom.db".to_owned(),
            max_connections: 10,
            connect_timeout: secs(5),
        }
    }
}

/// Which store implementation a [`DatabaseConfig`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// Embedded SQLite database file at `path` (relative paths are relative to the working directory).
    Sqlite {
        /// The database file, taken from `sqlite://PATH` without any `?query`.
        path: PathBuf,
    },
    /// PostgreSQL; connect with [`DatabaseConfig::url`] as is.
    Postgres,
}

impl DatabaseConfig {
    /// The store this URL selects. Anything that is not `sqlite://` is PostgreSQL: a loaded
    /// [`Config`](super::Config) has been validated to be one of the two.
    pub fn kind(&self) -> DatabaseKind {
        match self.url.strip_prefix(super::validate::SQLITE_PREFIX) {
            Some(rest) => {
                let path = rest.split_once('?').map_or(rest, |(path, _)| path);
                DatabaseKind::Sqlite {
                    path: PathBuf::from(path),
                }
            }
            None => DatabaseKind::Postgres,
        }
    }
}

// === [cache] ===

/// `[cache]`: rate limits, breaker snapshots and cached observability results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `memory://` (in-process) or `redis://...` / `rediss://...`.
    pub url: String,
    /// Upper bound of one cache command, so a Redis outage never blocks a caller.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            url: "memory://".to_owned(),
            command_timeout: secs(2),
        }
    }
}

/// Which cache implementation a [`CacheConfig`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// The in-process cache (`memory://`).
    Memory,
    /// Redis; connect with [`CacheConfig::url`] as is.
    Redis,
}

impl CacheConfig {
    /// The cache this URL selects. Anything that is not `memory://` is Redis: a loaded
    /// [`Config`](super::Config) has been validated to be one of the two.
    pub fn kind(&self) -> CacheKind {
        if self.url == super::validate::MEMORY_URL {
            CacheKind::Memory
        } else {
            CacheKind::Redis
        }
    }
}

// === [http] ===

/// `[http]`: the health and metrics endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on, `IP:PORT` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Connections served at once; one more is answered 503 and closed at once, so a flood
    /// never holds more than this many file descriptors.
    pub max_connections: u32,
    /// A client must have sent a complete request head within this long of the node starting
    /// to wait for it (after accept, or after the previous answer on a kept-alive connection).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a client that
    /// stopped reading its answer or sending its request body).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_connections: 256,
            header_timeout: secs(10),
            idle_timeout: secs(60),
        }
    }
}

// === [api] ===

/// `[api]`: the tenant API (CHOM's customers and web panel): its listener, its limits and
/// the per-tier rate limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the tenant API, `IP:PORT` (separate from `http.listen`; TLS is terminated
    /// in front of it).
    pub listen: SocketAddr,
    /// Limit of one request, from its head to the last byte of the answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes; a larger one is answered 413.
    pub max_body: u64,
    /// Observability queries one tenant may have in flight at once; one more is refused, not
    /// queued.
    pub max_concurrent_queries: u32,
    /// How long one rate-limiter call to Redis may take before the node's local fallback
    /// limiter answers instead.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Prefix of the tenants' rate-limit keys in Redis (`<prefix><tenant id>`): installations
    /// that share one Redis but not one database need different prefixes.
    pub rate_limit_prefix: String,
    /// `[api.rate_limits]`: requests per minute per tenant, by tier.
    pub rate_limits: RateLimitsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)),
            request_timeout: secs(30),
            max_body: 64 * 1024,
            max_concurrent_queries: 4,
            redis_timeout: Duration::from_millis(50),
            rate_limit_prefix: "chom:rl:".to_owned(),
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

/// `[api.rate_limits]`: requests per minute a tenant of each tier may make, shared by every
/// node using the same Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// `false` turns limiting off (a benchmark's baseline, a trusted deployment): no request
    /// is counted or refused and answers carry no `RateLimit` headers.
    pub enabled: bool,
    /// Tier `starter`.
    pub starter: u32,
    /// Tier `pro`.
    pub pro: u32,
    /// Tier `enterprise`.
    pub enterprise: u32,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            starter: 100,
            pro: 500,
            enterprise: 2000,
        }
    }
}

impl RateLimitsConfig {
    /// The requests per minute of `tier`.
    pub fn quota(&self, tier: crate::inventory::Tier) -> u32 {
        use crate::inventory::Tier;
        match tier {
            Tier::Starter => self.starter,
            Tier::Pro => self.pro,
            Tier::Enterprise => self.enterprise,
        }
    }
}

// === [ui] ===

/// `[ui]`: the operator web console (SPEC.md "Operator web console"): its listener and its
/// sessions. Operators are `chom ui user add NAME`; see README "Web console".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Address of the console, `IP:PORT`; loopback by default, reached through nginx or an
    /// SSH tunnel.
    pub listen: SocketAddr,
    /// A session unused for this long is over (the operator signs in again).
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// Mark the session cookie `Secure` (only sent over HTTPS): set it when the console is
    /// reached through a TLS-terminating proxy; leave it off for `ssh -L` over plain HTTP.
    pub secure_cookie: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8082)),
            session_idle: Duration::from_secs(12 * 3600),
            secure_cookie: false,
        }
    }
}

// === [admin] ===

/// `[admin]`: the admin RPC socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Path of the Unix socket the node serves admin JSON-RPC on.
    pub socket: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("./var/chom.sock"),
        }
    }
}

// === [supervision] ===

/// `[supervision]`: restart intensity and restart backoff of every supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts a supervisor tolerates within `period` before it gives up and escalates.
    pub max_restarts: u32,
    /// Sliding window for `max_restarts`.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Delay before the first delayed restart; doubles per consecutive failure.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Cap of the restart delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Random extra fraction of each delay, 0.0 to 1.0 (0.2 = up to 20% longer).
    pub backoff_jitter: f64,
    /// A child that ran at least this long before failing starts its backoff from scratch.
    #[serde(with = "humantime_serde")]
    pub backoff_reset: Duration,
    /// Consecutive failures restarted at once, before any backoff delay applies.
    pub immediate_restarts: u32,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            period: secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: secs(30),
            backoff_jitter: 0.2,
            backoff_reset: secs(30),
            immediate_restarts: 1,
        }
    }
}

// === [queue] ===

/// `[queue]`: workers and the default job policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Number of job workers (1 to 1024).
    pub workers: u32,
    /// Queue names in priority order: a worker always claims from the first non-empty one.
    pub queues: Vec<String>,
    /// How often an idle worker looks for new jobs.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Visibility timeout: a job reserved this long without finishing is handed out again.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Default limit of one job attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Default number of attempts (the first one included) before a job goes to `failed_jobs`.
    pub max_attempts: u32,
    /// Delay before retry n (the last entry repeats for later retries).
    #[serde(with = "super::duration_list")]
    pub backoff: Vec<Duration>,
    /// Randomise retry delays (full jitter) so failing jobs do not retry in lockstep.
    pub jitter: bool,
    /// How long finished jobs are kept before they are pruned.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A job reserved longer than this is stuck (`chom jobs kill-stuck` default, stuck check).
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// How often the node looks for stuck jobs.
    #[serde(with = "humantime_serde")]
    pub stuck_check_interval: Duration,
    /// How often failed jobs are analysed for recurring errors.
    #[serde(with = "humantime_serde")]
    pub analyze_interval: Duration,
    /// Occurrences of the same error (per analysis) that make it a recurring failure.
    pub analyze_threshold: u32,
    /// A worker is recycled after this many jobs.
    pub max_jobs_per_worker: u32,
    /// A worker is recycled after running this long.
    #[serde(with = "humantime_serde")]
    pub max_worker_time: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            workers: 3,
            queues: ["critical", "high", "default", "low", "batch"]
                .map(String::from)
                .to_vec(),
            poll_interval: secs(1),
            retry_after: secs(180),
            timeout: secs(180),
            max_attempts: 3,
            backoff: vec![secs(30), secs(60), secs(180)],
            jitter: false,
            retention: secs(24 * 3600),
            stuck_after: secs(3600),
            stuck_check_interval: mins(15),
            analyze_interval: secs(3600),
            analyze_threshold: 5,
            max_jobs_per_worker: 1000,
            max_worker_time: secs(3600),
        }
    }
}

// === [jobs.<kind>] ===

/// `[jobs.<kind>]`: overrides of the job policy for one job kind; unset fields keep the
/// kind's built-in policy, or else the `[queue]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobPolicyConfig {
    /// Queue the kind is enqueued on when the caller names none; one of `queue.queues`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Attempts (the first one included) before the job goes to `failed_jobs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Limit of one attempt.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Delays between attempts (the last entry repeats).
    #[serde(
        with = "super::duration_list::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Vec<Duration>>,
    /// Randomise retry delays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

// === [ssh] ===

/// `[ssh]`: how the node reaches the VPS fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Remote user, unless a `[[vps]]` entry names its own.
    pub user: String,
    /// Private key file used to authenticate.
    pub private_key: PathBuf,
    /// known_hosts file host keys are checked against (unless a VPS pins `host_key`).
    pub known_hosts: PathBuf,
    /// Prepended to every remote command; empty runs commands as given.
    pub command_prefix: String,
    /// Limit of TCP connect plus SSH handshake and authentication.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit of one remote command.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Operations running at once on one VPS; more wait in line.
    pub max_concurrent: u32,
    /// How long an operation may wait for one of the `max_concurrent` slots.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Bytes of stdout and of stderr kept per command; the rest is cut off.
    pub max_output: u64,
    /// Commands (e.g. `site:list`) safe to re-run after a transport failure mid-command.
    pub idempotent_commands: Vec<String>,
    /// SSH keep-alive interval that detects dead sessions; `0s` disables keep-alives.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Attempts (the first one included) on transport failures, with exponential backoff.
    pub retry_attempts: u32,
    /// Base delay of that backoff (doubled per retry, full jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            user: "chom".to_owned(),
            private_key: PathBuf::from("/etc/chom/ssh/id_ed25519"),
            known_hosts: PathBuf::from("/etc/chom/ssh/known_hosts"),
            command_prefix: "sudo /opt/vpsmanager/bin/vpsmanager".to_owned(),
            connect_timeout: secs(10),
            command_timeout: secs(120),
            max_concurrent: 3,
            queue_timeout: secs(30),
            max_output: 1024 * 1024,
            idempotent_commands: Vec::new(),
            keepalive_interval: secs(15),
            retry_attempts: 3,
            retry_base: secs(1),
        }
    }
}

// === [breaker] ===

/// `[breaker]`: the circuit breaker in front of each VPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Transport failures within `failure_window` that open the breaker.
    pub failure_threshold: u32,
    /// Sliding window for `failure_threshold`.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// How long the breaker stays open before it lets trial calls through.
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
    /// Cap of the open period when it grows after failed trial calls.
    #[serde(with = "humantime_serde")]
    pub max_open: Duration,
    /// Trial calls allowed while half-open; all must succeed to close it.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_window: mins(5),
            open_timeout: secs(60),
            max_open: mins(10),
            half_open_calls: 1,
        }
    }
}

// === [[vps]] ===

/// One `[[vps]]` entry: a server of the fleet. `id` and `host` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpsConfig {
    /// Stable identifier, unique, matching `^[a-z0-9][a-z0-9._-]*$`.
    // Defaulted to "" so a missing id is reported by validation along with every other problem.
    #[serde(default)]
    pub id: String,
    /// Host name or IP address.
    #[serde(default)]
    pub host: String,
    /// SSH port.
    #[serde(default = "default_vps_port")]
    pub port: u16,
    /// Remote user; `None` means `ssh.user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Pinned host key fingerprint (`SHA256:...`); `None` means check `ssh.known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// At most this many sites on the server (1 to 100,000); `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sites: Option<u32>,
}

fn default_vps_port() -> u16 {
    DEFAULT_VPS_PORT
}

impl VpsConfig {
    /// A server at `host` with every optional field at its default.
    pub fn new(id: impl Into<String>, host: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            host: host.into(),
            port: DEFAULT_VPS_PORT,
            user: None,
            host_key: None,
            max_sites: None,
        }
    }

    /// The remote user: this entry's own, else `default` (pass `ssh.user`).
    pub fn user_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(default)
    }
}

// === [health] ===

/// `[health]`: periodic health checks and self-healing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often every health check runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive failed checks of a component before it is remediated (restarted).
    pub failures_before_restart: u32,
    /// Remediations of one component within `remediation_window` before the node stops trying.
    pub max_remediations: u32,
    /// Sliding window for `max_remediations`.
    #[serde(with = "humantime_serde")]
    pub remediation_window: Duration,
    /// Consecutive passing checks before a component counts as recovered.
    pub recovery_cycles: u32,
    /// Waiting jobs above which the queue check warns.
    pub queue_backlog: u64,
    /// Jobs failed within the last hour above which the queue check warns.
    pub failed_last_hour_warning: u64,
    /// Disk usage of `node.data_dir` (percent, 1 to 100) above which the disk check warns.
    pub disk_warning_percent: u8,
    /// Limit of one health check; a check that takes longer is an error.
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Operator checks (`[[health.checks]]`): a command or an HTTP URL, with an optional
    /// remediation command, e.g. `systemctl is-active php8.2-fpm` / `systemctl restart php8.2-fpm`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HealthCheckConfig>,
}

/// One `[[health.checks]]` entry: `name` and exactly one of `command` or `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Name shown in /health and in metric labels (lowercase, like ids).
    #[serde(default)]
    pub name: String,
    /// Passes when this `/bin/sh -c` command exits 0 within `health.check_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Passes when a GET of this URL answers 2xx within `health.check_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Run (`/bin/sh -c`) after `health.failures_before_restart` consecutive failures, with the
    /// same restart-loop protection as the node's own remediations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: secs(30),
            failures_before_restart: 3,
            max_remediations: 3,
            remediation_window: mins(30),
            recovery_cycles: 3,
            queue_backlog: 100,
            failed_last_hour_warning: 20,
            disk_warning_percent: 90,
            check_timeout: secs(5),
            checks: Vec::new(),
        }
    }
}

// === [memory] ===

/// `[memory]`: the memory watchdog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// How often memory use is sampled.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Memory use (percent of the limit, 1 to 100) that counts as too high.
    pub threshold_percent: u8,
    /// Consecutive samples above the threshold before the watchdog acts.
    pub consecutive: u32,
    /// Resident memory (bytes) to treat as the node's limit when it runs without a cgroup
    /// `memory.max` (outside systemd's `MemoryMax=`); 0 = none (then host memory is watched).
    pub max_rss: u64,
    /// Optional `/bin/sh -c` command run when memory crosses the threshold, beside recycling
    /// the workers (the operations plan's PHP-FPM restart); empty = none.
    pub action: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            interval: secs(15),
            threshold_percent: 95,
            consecutive: 2,
            max_rss: 0,
            action: String::new(),
        }
    }
}

// === [observability] ===

/// `[observability]`: the monitoring stack the node queries; an empty URL means "not configured".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Prometheus base URL (`http://` or `https://`), or empty.
    pub prometheus_url: String,
    /// Loki base URL, or empty.
    pub loki_url: String,
    /// Alertmanager base URL, or empty.
    pub alertmanager_url: String,
    /// Grafana base URL, or empty.
    pub grafana_url: String,
    /// Limit of the reachability probe (and of an alert push or a log batch).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a reachability verdict is trusted before the next probe.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Limit of one PromQL query to Prometheus.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// How long a successful query result is kept, and served flagged as cached while the
    /// observability host is unreachable.
    #[serde(with = "humantime_serde")]
    pub result_ttl: Duration,
    /// Bearer token Alertmanager must send to `POST /webhooks/alertmanager`; empty = the
    /// webhook is off (404). A secret: redacted by `chom config check`.
    pub webhook_token: String,
    /// Log events kept for Loki while it is slow or gone; more are dropped and counted
    /// (`chom_log_events_dropped_total`), so logging never waits on the network.
    pub log_buffer: u32,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            prometheus_url: String::new(),
            loki_url: String::new(),
            alertmanager_url: String::new(),
            grafana_url: String::new(),
            timeout: secs(2),
            cache_ttl: secs(30),
            query_timeout: secs(15),
            result_ttl: secs(300),
            webhook_token: String::new(),
            log_buffer: 10_000,
        }
    }
}

// === [log] ===

/// `[log]`: logging to stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or a tracing `EnvFilter`
    /// directive such as `info,chom=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}
