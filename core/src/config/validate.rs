//! Semantic checks of a loaded [`Config`]: what types alone cannot say (URL schemes, ranges,
//! unique ids, cross references). Keys that already failed to parse are not blamed again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::Config;
use super::error::Errors;
use super::load::key_path;
use super::redact::redact_url;
use crate::limits::{
    self, MAX_ATTEMPTS, MAX_DURATION, MAX_HOST_CHARS, MAX_ID_CHARS, MAX_JOB_TIMEOUT,
    MAX_SITES_PER_SERVER,
};

/// `database.url` prefix of the embedded SQLite store.
pub(super) const SQLITE_PREFIX: &str = "sqlite://";
/// `cache.url` of the in-process cache.
pub(super) const MEMORY_URL: &str = "memory://";
/// Upper bound of `queue.workers`.
pub const MAX_WORKERS: u32 = 1024;
/// Upper bound of `http.max_connections`: each costs a file descriptor, and the shipped unit
/// allows 65536 of them for everything the node opens.
pub const MAX_HTTP_CONNECTIONS: u32 = 16384;
/// Range of `http.header_timeout`: a head takes milliseconds; minutes only help slow-loris.
pub const HTTP_HEADER_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(300);
/// Range of `http.idle_timeout`.
pub const HTTP_IDLE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

// Upper bounds of configured durations, besides `limits::MAX_DURATION` (ages and delays) and
// `limits::MAX_JOB_TIMEOUT` (anything a job may take). Every duration key has one: a value
// of years is a typo, and unbounded ones overflow `Instant`s and timestamps further on.
/// Limit of one I/O operation or wait (connect, command, probe, shutdown).
const MAX_IO_TIMEOUT: Duration = Duration::from_secs(3600);
/// Period of a timer (polling, checks, keep-alives) and of a sliding window.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Range of `observability.log_buffer` (events; about 1 KiB each at most 16 KiB).
const LOG_BUFFER: RangeInclusive<u32> = 16..=1_000_000;
/// Upper bound of `observability.timeout`: a probe of the observability host; the admin client
/// of `metrics.query` waits [`METRICS_QUERY_WAIT`], which these two bounds keep honest.
pub const MAX_OBSERVABILITY_PROBE: Duration = Duration::from_secs(60);
/// Upper bound of `observability.query_timeout`.
pub const MAX_OBSERVABILITY_QUERY: Duration = Duration::from_secs(300);
/// The longest `metrics.query` can take on the node: a probe, the live query, a probe of a
/// query left unanswered, and the cache read.
pub const METRICS_QUERY_WAIT: Duration =
    Duration::from_secs(MAX_OBSERVABILITY_QUERY.as_secs() + 3 * MAX_OBSERVABILITY_PROBE.as_secs());
/// Range of `api.request_timeout`: an observability query alone may take up to
/// `observability.query_timeout`.
pub const API_REQUEST_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);
/// Range of `api.max_body` in bytes: the API takes small JSON documents.
pub const API_MAX_BODY: RangeInclusive<u64> = 1024..=16 * 1024 * 1024;
/// Range of `api.max_concurrent_queries` (per tenant).
pub const API_MAX_CONCURRENT_QUERIES: RangeInclusive<u32> = 1..=64;
/// Range of `api.redis_timeout`: the limiter sits in front of every request, so a slow Redis
/// must hand over to the local fallback within milliseconds, never seconds.
pub const API_REDIS_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(1);
/// Range of each `api.rate_limits` quota, in requests per minute.
pub const API_RATE_LIMIT: RangeInclusive<u32> = 1..=1_000_000;
/// Range of `ui.session_idle`: from a few minutes to a week.
pub const UI_SESSION_IDLE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600);
/// Upper bound of `database.max_connections` (PostgreSQL's own default limit is 100).
const MAX_DB_CONNECTIONS: u64 = 1000;
/// Upper bound of `ssh.max_concurrent` (channels of one session).
const MAX_SSH_CONCURRENT: u64 = 256;
/// Upper bound of `ssh.max_output`: what one command may make the node hold, per stream.
const MAX_SSH_OUTPUT: u64 = 64 * 1024 * 1024;
/// Upper bound of `ssh.retry_attempts` and `breaker.half_open_calls`.
const MAX_TRIES: u64 = 100;

/// Adds every semantic problem of `config` to `errors`.
pub(super) fn validate(config: &Config, errors: &mut Errors) {
    let mut v = Checker { errors };
    node(config, &mut v);
    stores(config, &mut v);
    http(config, &mut v);
    api(config, &mut v);
    ui(config, &mut v);
    supervision(config, &mut v);
    queue(config, &mut v);
    jobs(config, &mut v);
    ssh(config, &mut v);
    breaker(config, &mut v);
    vps(config, &mut v);
    health(config, &mut v);
    memory(config, &mut v);
    observability(config, &mut v);
    log(config, &mut v);
}

struct Checker<'a> {
    errors: &'a mut Errors,
}

impl Checker<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.check(key, message);
    }

    // A zero interval would make a timer spin (tokio's `interval` even panics on it), and a
    // zero timeout fails every operation: both are always mistakes.
    /// Fails `key` unless one of the other keys a cross-check compared it with already failed
    /// (its value is then a stand-in default, and the comparison means nothing).
    fn fail_against(
        &mut self,
        others: &[&str],
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        if !others.iter().any(|other| self.errors.reported(other)) {
            self.fail(key, message);
        }
    }

    fn positive(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.fail(key, "must be greater than zero");
        }
    }

    /// Greater than zero and at most `max`.
    fn span(&mut self, key: &str, value: Duration, max: Duration) {
        self.positive(key, value);
        self.at_most(key, value, max);
    }

    fn at_most(&mut self, key: &str, value: Duration, max: Duration) {
        if value > max {
            self.fail(
                key,
                format!(
                    "must be at most {}, got {}",
                    limits::show_duration(max),
                    limits::show_duration(value)
                ),
            );
        }
    }

    /// Every entry of a list of delays at most `max`.
    fn delays(&mut self, key: &str, list: &[Duration], max: Duration) {
        for (i, d) in list.iter().enumerate() {
            self.at_most(&format!("{key}[{i}]"), *d, max);
        }
    }

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.fail(key, format!("must be at least {min}, got {value}"));
        }
    }

    fn between(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.fail(key, format!("must be between {min} and {max}, got {value}"));
        }
    }

    fn not_empty(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(key, "must not be empty");
        }
    }
}

fn node(c: &Config, v: &mut Checker<'_>) {
    // Empty means the host name; a set name is shown in logs, metrics and `chom cluster`.
    if !c.node.name.is_empty()
        && let Err(e) = limits::check_text("node.name", &c.node.name, MAX_ID_CHARS)
        && let limits::LimitError::BadText { message, .. } = e
    {
        v.fail("node.name", message);
    }
    v.not_empty("node.data_dir", &c.node.data_dir.to_string_lossy());
    v.span(
        "node.shutdown_timeout",
        c.node.shutdown_timeout,
        MAX_IO_TIMEOUT,
    );
    v.not_empty("admin.socket", &c.admin.socket.to_string_lossy());
    if let Some(other) = socket_collision(c) {
        v.fail(
            "admin.socket",
            format!("is the same path as {other}; the socket needs a path of its own"),
        );
    }
}

/// The configured file `admin.socket` would stand on, if any (compared lexically: `./a/b`
/// and `a//b` are the same path). The node never replaces anything but a socket, so such a
/// config could not start; better said by `config check`.
fn socket_collision(c: &Config) -> Option<String> {
    use std::path::{Component, Path, PathBuf};
    fn norm(p: &Path) -> PathBuf {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }
    let socket = norm(&c.admin.socket);
    let mut taken: Vec<(String, PathBuf)> = vec![
        ("node.data_dir".into(), c.node.data_dir.clone()),
        (
            "the data dir's lock file".into(),
            c.node.data_dir.join("chom.lock"),
        ),
        ("ssh.private_key".into(), c.ssh.private_key.clone()),
        ("ssh.known_hosts".into(), c.ssh.known_hosts.clone()),
    ];
    if let super::DatabaseKind::Sqlite { path } = c.database.kind() {
        for suffix in ["", "-wal", "-shm", "-journal", ".node.lock"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            taken.push((format!("the database file{suffix}"), PathBuf::from(name)));
        }
    }
    taken
        .into_iter()
        .find(|(_, path)| !path.as_os_str().is_empty() && norm(path) == socket)
        .map(|(what, path)| format!("{what} ({})", path.display()))
}

fn stores(c: &Config, v: &mut Checker<'_>) {
    if let Err(message) = database_url(&c.database.url) {
        v.fail("database.url", message);
    }
    v.between(
        "database.max_connections",
        c.database.max_connections.into(),
        1,
        MAX_DB_CONNECTIONS,
    );
    v.span(
        "database.connect_timeout",
        c.database.connect_timeout,
        MAX_IO_TIMEOUT,
    );
    if let Err(message) = cache_url(&c.cache.url) {
        v.fail("cache.url", message);
    }
    v.span(
        "cache.command_timeout",
        c.cache.command_timeout,
        MAX_IO_TIMEOUT,
    );
}

fn http(c: &Config, v: &mut Checker<'_>) {
    let h = &c.http;
    v.between(
        "http.max_connections",
        h.max_connections.into(),
        1,
        MAX_HTTP_CONNECTIONS.into(),
    );
    duration_in(
        v,
        "http.header_timeout",
        h.header_timeout,
        HTTP_HEADER_TIMEOUT,
    );
    duration_in(v, "http.idle_timeout", h.idle_timeout, HTTP_IDLE_TIMEOUT);
}

fn api(c: &Config, v: &mut Checker<'_>) {
    let a = &c.api;
    duration_in(
        v,
        "api.request_timeout",
        a.request_timeout,
        API_REQUEST_TIMEOUT,
    );
    v.between(
        "api.max_body",
        a.max_body,
        *API_MAX_BODY.start(),
        *API_MAX_BODY.end(),
    );
    v.between(
        "api.max_concurrent_queries",
        a.max_concurrent_queries.into(),
        (*API_MAX_CONCURRENT_QUERIES.start()).into(),
        (*API_MAX_CONCURRENT_QUERIES.end()).into(),
    );
    duration_in(v, "api.redis_timeout", a.redis_timeout, API_REDIS_TIMEOUT);
    let prefix = &a.rate_limit_prefix;
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        v.fail(
            "api.rate_limit_prefix",
            "must be 1 to 64 visible ASCII characters".to_owned(),
        );
    }
    let limits = &a.rate_limits;
    for (tier, quota) in [
        ("starter", limits.starter),
        ("pro", limits.pro),
        ("enterprise", limits.enterprise),
    ] {
        v.between(
            &format!("api.rate_limits.{tier}"),
            quota.into(),
            (*API_RATE_LIMIT.start()).into(),
            (*API_RATE_LIMIT.end()).into(),
        );
    }
    if a.listen == c.http.listen && a.listen.port() != 0 {
        v.fail_against(
            &["http.listen"],
            "api.listen",
            "is the same address as http.listen; the tenant API needs a port of its own",
        );
    }
}

fn ui(c: &Config, v: &mut Checker<'_>) {
    duration_in(v, "ui.session_idle", c.ui.session_idle, UI_SESSION_IDLE);
    let listen = c.ui.listen;
    if listen.port() != 0 {
        for (other, key) in [(c.http.listen, "http.listen"), (c.api.listen, "api.listen")] {
            if listen == other {
                v.fail_against(
                    &[key],
                    "ui.listen",
                    format!("is the same address as {key}; the console needs a port of its own"),
                );
            }
        }
    }
}

/// Fails `key` unless `value` lies in `range`, naming the range in humantime units.
fn duration_in(v: &mut Checker<'_>, key: &str, value: Duration, range: RangeInclusive<Duration>) {
    if !range.contains(&value) {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        v.fail(
            key,
            format!(
                "must be between {} and {}, got {}",
                show(*range.start()),
                show(*range.end()),
                show(value)
            ),
        );
    }
}

fn database_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix(SQLITE_PREFIX) {
        let path = rest.split_once('?').map_or(rest, |(path, _)| path);
        return if path.is_empty() {
            Err("sqlite:// needs a file path, e.g. sqlite://./var/chom.db".to_owned())
        } else {
            Ok(())
        };
    }
    match scheme(url) {
        Some("postgres" | "postgresql") => parse_url(url).map(drop),
        Some(other) => Err(format!(
            "unsupported scheme `{other}` (expected sqlite://PATH, postgres:// or postgresql://)"
        )),
        None => Err("expected a URL: sqlite://PATH, postgres://... or postgresql://...".to_owned()),
    }
}

fn cache_url(url: &str) -> Result<(), String> {
    if url == MEMORY_URL {
        return Ok(());
    }
    match scheme(url) {
        Some("memory") => Err("the in-process cache is exactly memory://".to_owned()),
        Some("redis" | "rediss") => {
            let parsed = parse_url(url)?;
            match parsed.host_str() {
                Some(host) if !host.is_empty() => Ok(()),
                _ => Err("redis URL needs a host, e.g. redis://127.0.0.1:6379/0".to_owned()),
            }
        }
        Some(other) => Err(format!(
            "unsupported scheme `{other}` (expected memory://, redis:// or rediss://)"
        )),
        None => Err("expected a URL: memory://, redis://... or rediss://...".to_owned()),
    }
}

/// The scheme of `url` (before `://`), when it has a plausible one.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

fn parse_url(url: &str) -> Result<url::Url, String> {
    // The url crate's messages never include the URL, so a password cannot leak through them.
    url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))
}

fn supervision(c: &Config, v: &mut Checker<'_>) {
    let s = &c.supervision;
    v.span("supervision.period", s.period, MAX_INTERVAL);
    v.at_most("supervision.backoff_min", s.backoff_min, MAX_IO_TIMEOUT);
    v.at_most("supervision.backoff_max", s.backoff_max, MAX_IO_TIMEOUT);
    v.at_most("supervision.backoff_reset", s.backoff_reset, MAX_INTERVAL);
    if !(0.0..=1.0).contains(&s.backoff_jitter) {
        v.fail(
            "supervision.backoff_jitter",
            format!("must be between 0 and 1, got {}", s.backoff_jitter),
        );
    }
    if s.backoff_min > s.backoff_max {
        v.fail_against(
            &["supervision.backoff_max"],
            "supervision.backoff_min",
            "must not be greater than supervision.backoff_max",
        );
    }
}

fn queue(c: &Config, v: &mut Checker<'_>) {
    let q = &c.queue;
    v.between("queue.workers", q.workers.into(), 1, MAX_WORKERS.into());
    if q.queues.is_empty() {
        v.fail("queue.queues", "must list at least one queue");
    }
    let mut seen = BTreeMap::new();
    for (i, name) in q.queues.iter().enumerate() {
        let key = format!("queue.queues[{i}]");
        if !is_name(name) {
            v.fail(
                key,
                format!(
                    "`{}` is not a valid queue name ({NAME_RULE}, at most {MAX_ID_CHARS} characters)",
                    name.escape_debug()
                ),
            );
        } else if let Some(first) = seen.insert(name.as_str(), i) {
            v.fail(
                key,
                format!("duplicate queue `{name}` (also queue.queues[{first}])"),
            );
        }
    }
    v.span("queue.poll_interval", q.poll_interval, MAX_IO_TIMEOUT);
    v.span("queue.retry_after", q.retry_after, MAX_DURATION);
    v.span("queue.timeout", q.timeout, MAX_JOB_TIMEOUT);
    v.between(
        "queue.max_attempts",
        q.max_attempts.into(),
        1,
        MAX_ATTEMPTS.into(),
    );
    if q.backoff.is_empty() {
        v.fail("queue.backoff", "must list at least one delay");
    }
    v.delays("queue.backoff", &q.backoff, MAX_DURATION);
    v.at_most("queue.retention", q.retention, MAX_DURATION);
    v.span("queue.stuck_after", q.stuck_after, MAX_DURATION);
    v.span(
        "queue.stuck_check_interval",
        q.stuck_check_interval,
        MAX_INTERVAL,
    );
    v.span("queue.analyze_interval", q.analyze_interval, MAX_INTERVAL);
    v.at_least("queue.analyze_threshold", q.analyze_threshold.into(), 1);
    v.at_least("queue.max_jobs_per_worker", q.max_jobs_per_worker.into(), 1);
    v.span("queue.max_worker_time", q.max_worker_time, MAX_JOB_TIMEOUT);
}

fn jobs(c: &Config, v: &mut Checker<'_>) {
    for (kind, policy) in &c.jobs {
        let path = key_path("jobs", kind);
        if kind.trim().is_empty() {
            v.fail(path.as_str(), "job kind must not be empty");
        } else if let Err(limits::LimitError::BadText { message, .. }) =
            limits::check_text("kind", kind, MAX_ID_CHARS)
        {
            v.fail(path.as_str(), format!("job kind {message}"));
        }
        if let Some(queue) = &policy.queue
            && !c.queue.queues.contains(queue)
        {
            v.fail_against(
                &["queue.queues"],
                format!("{path}.queue"),
                format!(
                    "unknown queue `{queue}` (queue.queues has: {})",
                    c.queue.queues.join(", ")
                ),
            );
        }
        if let Some(attempts) = policy.max_attempts {
            v.between(
                &format!("{path}.max_attempts"),
                attempts.into(),
                1,
                MAX_ATTEMPTS.into(),
            );
        }
        if let Some(timeout) = policy.timeout {
            v.span(&format!("{path}.timeout"), timeout, MAX_JOB_TIMEOUT);
        }
        if let Some(backoff) = &policy.backoff {
            if backoff.is_empty() {
                v.fail(format!("{path}.backoff"), "must list at least one delay");
            }
            v.delays(&format!("{path}.backoff"), backoff, MAX_DURATION);
        }
    }
}

fn ssh(c: &Config, v: &mut Checker<'_>) {
    let s = &c.ssh;
    if !is_login_name(&s.user) {
        v.fail(
            "ssh.user",
            format!("`{}` {LOGIN_RULE}", s.user.escape_debug()),
        );
    }
    v.not_empty("ssh.private_key", &s.private_key.to_string_lossy());
    v.not_empty("ssh.known_hosts", &s.known_hosts.to_string_lossy());
    v.span("ssh.connect_timeout", s.connect_timeout, MAX_IO_TIMEOUT);
    v.span("ssh.command_timeout", s.command_timeout, MAX_JOB_TIMEOUT);
    v.between(
        "ssh.max_concurrent",
        s.max_concurrent.into(),
        1,
        MAX_SSH_CONCURRENT,
    );
    v.span("ssh.queue_timeout", s.queue_timeout, MAX_IO_TIMEOUT);
    v.at_most(
        "ssh.keepalive_interval",
        s.keepalive_interval,
        MAX_IO_TIMEOUT,
    );
    v.at_most("ssh.retry_base", s.retry_base, MAX_IO_TIMEOUT);
    v.between("ssh.max_output", s.max_output, 1, MAX_SSH_OUTPUT);
    for (i, command) in s.idempotent_commands.iter().enumerate() {
        v.not_empty(&format!("ssh.idempotent_commands[{i}]"), command);
    }
    v.between("ssh.retry_attempts", s.retry_attempts.into(), 1, MAX_TRIES);
}

fn breaker(c: &Config, v: &mut Checker<'_>) {
    let b = &c.breaker;
    v.at_least("breaker.failure_threshold", b.failure_threshold.into(), 1);
    v.span("breaker.failure_window", b.failure_window, MAX_INTERVAL);
    v.span("breaker.open_timeout", b.open_timeout, MAX_INTERVAL);
    v.at_most("breaker.max_open", b.max_open, MAX_INTERVAL);
    if b.max_open < b.open_timeout {
        v.fail_against(
            &["breaker.open_timeout"],
            "breaker.max_open",
            "must not be less than breaker.open_timeout",
        );
    }
    v.between(
        "breaker.half_open_calls",
        b.half_open_calls.into(),
        1,
        MAX_TRIES,
    );
}

fn vps(c: &Config, v: &mut Checker<'_>) {
    let mut seen = BTreeMap::new();
    for (i, server) in c.vps.iter().enumerate() {
        let key = |field: &str| format!("vps[{i}].{field}");
        if server.id.is_empty() {
            v.fail(key("id"), "required");
        } else if !is_name(&server.id) {
            v.fail(
                key("id"),
                format!(
                    "`{}` is not a valid id ({NAME_RULE})",
                    server.id.escape_debug()
                ),
            );
        } else if let Some(first) = seen.insert(server.id.as_str(), i) {
            v.fail(
                key("id"),
                format!("duplicate id `{}` (also vps[{first}])", server.id),
            );
        }
        if server.host.is_empty() {
            v.fail(key("host"), "required");
        } else if !is_host(&server.host) {
            v.fail(
                key("host"),
                format!(
                    "`{}` is not a host name or IP address of at most {MAX_HOST_CHARS} characters (put the port in `port`)",
                    server.host.escape_debug()
                ),
            );
        }
        if server.port == 0 {
            v.fail(key("port"), "must be between 1 and 65535, got 0");
        }
        if let Some(user) = &server.user
            && !is_login_name(user)
        {
            v.fail(
                key("user"),
                format!("`{}` {LOGIN_RULE}", user.escape_debug()),
            );
        }
        if let Some(fingerprint) = &server.host_key
            && !is_fingerprint(fingerprint)
        {
            v.fail(
                key("host_key"),
                "expected a SHA256 fingerprint such as SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            );
        }
        if let Some(max) = server.max_sites
            && !(1..=MAX_SITES_PER_SERVER).contains(&max)
        {
            v.fail(
                key("max_sites"),
                format!("must be between 1 and {MAX_SITES_PER_SERVER}, got {max}"),
            );
        }
    }
}

fn health(c: &Config, v: &mut Checker<'_>) {
    let h = &c.health;
    v.span("health.interval", h.interval, MAX_INTERVAL);
    v.at_least(
        "health.failures_before_restart",
        h.failures_before_restart.into(),
        1,
    );
    v.span(
        "health.remediation_window",
        h.remediation_window,
        MAX_JOB_TIMEOUT,
    );
    v.at_least("health.recovery_cycles", h.recovery_cycles.into(), 1);
    v.between(
        "health.disk_warning_percent",
        h.disk_warning_percent.into(),
        1,
        100,
    );
    v.span("health.check_timeout", h.check_timeout, MAX_IO_TIMEOUT);
    let mut seen = BTreeMap::new();
    for (i, check) in h.checks.iter().enumerate() {
        health_check(i, check, &mut seen, v);
    }
}

/// One `[[health.checks]]` entry; `seen` maps the names so far to their index.
fn health_check<'c>(
    i: usize,
    check: &'c crate::config::HealthCheckConfig,
    seen: &mut BTreeMap<&'c str, usize>,
    v: &mut Checker<'_>,
) {
    const BUILT_IN: &[&str] = &[
        "database",
        "cache",
        "disk",
        "supervision",
        "queue",
        "fleet",
        "observability",
    ];
    let key = |field: &str| format!("health.checks[{i}].{field}");
    if check.name.is_empty() {
        v.fail(key("name"), "required");
    } else if !is_name(&check.name) {
        v.fail(
            key("name"),
            format!(
                "`{}` is not a valid name ({NAME_RULE}, at most {MAX_ID_CHARS} characters)",
                check.name.escape_debug()
            ),
        );
    } else if BUILT_IN.contains(&check.name.as_str()) {
        v.fail(key("name"), format!("`{}` is a built-in check", check.name));
    } else if let Some(first) = seen.insert(check.name.as_str(), i) {
        v.fail(
            key("name"),
            format!(
                "duplicate name `{}` (also health.checks[{first}])",
                check.name
            ),
        );
    }
    match (&check.command, &check.url) {
        (Some(_), Some(_)) | (None, None) => {
            v.fail(key("command"), "give exactly one of `command` or `url`")
        }
        (Some(cmd), None) if cmd.trim().is_empty() => v.fail(key("command"), "empty"),
        (None, Some(url)) => match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            // Redacted: a rejected URL may still carry a password or a token.
            _ => v.fail(
                key("url"),
                format!("`{}` is not an http(s) URL", redact_url(url)),
            ),
        },
        _ => {}
    }
    if check
        .remediation
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        v.fail(
            key("remediation"),
            "empty (leave it out for no remediation)",
        );
    }
}

fn memory(c: &Config, v: &mut Checker<'_>) {
    let m = &c.memory;
    v.span("memory.interval", m.interval, MAX_INTERVAL);
    v.between(
        "memory.threshold_percent",
        m.threshold_percent.into(),
        1,
        100,
    );
    v.at_least("memory.consecutive", m.consecutive.into(), 1);
}

fn observability(c: &Config, v: &mut Checker<'_>) {
    let o = &c.observability;
    for (key, url) in [
        ("observability.prometheus_url", &o.prometheus_url),
        ("observability.loki_url", &o.loki_url),
        ("observability.alertmanager_url", &o.alertmanager_url),
        ("observability.grafana_url", &o.grafana_url),
    ] {
        if let Err(message) = http_url(url) {
            v.fail(key, message);
        }
    }
    v.span("observability.timeout", o.timeout, MAX_OBSERVABILITY_PROBE);
    v.at_most("observability.cache_ttl", o.cache_ttl, MAX_INTERVAL);
    v.span(
        "observability.query_timeout",
        o.query_timeout,
        MAX_OBSERVABILITY_QUERY,
    );
    v.span("observability.result_ttl", o.result_ttl, MAX_INTERVAL);
    if !LOG_BUFFER.contains(&o.log_buffer) {
        v.fail(
            "observability.log_buffer",
            format!(
                "must be between {} and {} events, got {}",
                LOG_BUFFER.start(),
                LOG_BUFFER.end(),
                o.log_buffer
            ),
        );
    }
    if let Err(message) = webhook_token(&o.webhook_token) {
        v.fail("observability.webhook_token", message);
    }
}

/// A bearer token: empty (off), or 16 to 256 visible ASCII characters (what fits an HTTP
/// header unquoted; short ones are guessable).
fn webhook_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Ok(());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters (no spaces or control characters)".into());
    }
    match token.len() {
        16..=256 => Ok(()),
        n => Err(format!("must be 16 to 256 characters long, not {n}")),
    }
}

fn http_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    match scheme(url) {
        Some("http" | "https") => match parse_url(url)?.host_str() {
            Some(host) if !host.is_empty() => Ok(()),
            _ => Err("URL needs a host".to_owned()),
        },
        Some(other) => Err(format!(
            "unsupported scheme `{other}` (expected http:// or https://, or empty for none)"
        )),
        None => Err("expected an http:// or https:// URL, or empty for none".to_owned()),
    }
}

fn log(c: &Config, v: &mut Checker<'_>) {
    if !is_log_level(&c.log.level) {
        v.fail(
            "log.level",
            format!(
                "`{}` is not a level (trace, debug, info, warn, error, off) or a filter such as info,chom=debug",
                c.log.level.escape_debug()
            ),
        );
    }
    if !matches!(c.log.format.as_str(), "text" | "json") {
        v.fail(
            "log.format",
            format!(
                "expected `text` or `json`, got `{}`",
                c.log.format.escape_debug()
            ),
        );
    }
}

/// Plain levels are checked; anything with `target=level` directives is left to `EnvFilter`.
fn is_log_level(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if level.contains('=') {
        return true;
    }
    let mut parts = level
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    parts.peek().is_some() && parts.all(|p| LEVELS.contains(&p.to_ascii_lowercase().as_str()))
}

/// How ids and queue names may be spelled (for error messages).
pub const NAME_RULE: &str =
    "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit";

/// `^[a-z0-9][a-z0-9._-]*$`, at most [`MAX_ID_CHARS`] characters: ids and queue names end up
/// in metric labels and actor paths.
pub fn is_name(name: &str) -> bool {
    name.len() <= MAX_ID_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// A host name (at most [`MAX_HOST_CHARS`] characters) or an IP address (no port, no spaces).
pub fn is_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (host.len() <= MAX_HOST_CHARS
            && host.starts_with(|c: char| c.is_ascii_alphanumeric())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
}

/// What a remote user may look like (for error messages).
pub const LOGIN_RULE: &str = "is not a login name (lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters)";

/// A POSIX login name, `^[a-z_][a-z0-9_-]{0,31}$`: the remote user is passed to SSH, so it
/// may never look like an option (`-oProxyCommand=...`) or hold a newline.
pub fn is_login_name(user: &str) -> bool {
    user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// `SHA256:` followed by unpadded or padded base64, as `ssh-keygen -l` prints it (a SHA-256
/// digest is 43 characters of base64, 44 padded).
pub fn is_fingerprint(value: &str) -> bool {
    value.strip_prefix("SHA256:").is_some_and(|b64| {
        !b64.is_empty()
            && b64.len() <= 44
            && b64
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_socket_on_another_configured_path_is_refused() {
        for (db, socket, named) in [
            ("sqlite://var/chom.db", "./var/chom.db", "the database file"),
            (
                "sqlite://var/chom.db",
                "var/chom.db-wal",
                "the database file-wal",
            ),
            ("sqlite:///srv/x.db", "/srv/x.db", "the database file"),
            ("sqlite://var/chom.db", "var/chom.lock", "lock file"),
        ] {
            let text = format!("[database]\nurl = \"{db}\"\n[admin]\nsocket = \"{socket}\"\n");
            let errors = Config::from_toml_str(&text, &[]).unwrap_err().to_string();
            assert!(
                errors.contains("admin.socket") && errors.contains(named),
                "{socket}: {errors}"
            );
        }
        let fine =
            "[database]\nurl = \"sqlite://var/chom.db\"\n[admin]\nsocket = \"var/chom.sock\"\n";
        assert!(Config::from_toml_str(fine, &[]).is_ok());
    }

    #[test]
    fn http_limits_are_range_checked() {
        let text =
            "[http]\nmax_connections = 0\nheader_timeout = \"10ms\"\nidle_timeout = \"2h\"\n";
        let errors = Config::from_toml_str(text, &[]).unwrap_err();
        let found: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect();
        assert_eq!(
            found,
            [
                "http.header_timeout: must be between 100ms and 5m, got 10ms",
                "http.idle_timeout: must be between 1s and 1h, got 2h",
                "http.max_connections: must be between 1 and 16384, got 0",
            ]
        );
        let edges =
            "[http]\nmax_connections = 16384\nheader_timeout = \"100ms\"\nidle_timeout = \"1h\"\n";
        Config::from_toml_str(edges, &[]).expect("the ends of each range are valid");
    }

    #[test]
    fn a_server_capacity_is_range_checked() {
        let vps = |max: &str| {
            format!("[[vps]]\nid = \"web-1\"\nhost = \"10.0.0.1\"\nmax_sites = {max}\n")
        };
        for bad in ["0", "100001"] {
            let errors = Config::from_toml_str(&vps(bad), &[])
                .unwrap_err()
                .to_string();
            assert!(
                errors.contains("vps[0].max_sites") && errors.contains("between 1 and 100000"),
                "{bad}: {errors}"
            );
        }
        assert!(Config::from_toml_str(&vps("-1"), &[]).is_err());
        for fine in ["1", "100000"] {
            let config = Config::from_toml_str(&vps(fine), &[]).expect(fine);
            assert_eq!(config.vps[0].max_sites, fine.parse().ok());
        }
    }

    #[test]
    fn database_urls() {
        assert!(database_url("sqlite://./var/chom.db").is_ok());
        assert!(database_url("sqlite:///abs/chom.db?mode=rwc").is_ok());
        assert!(database_url("postgres://chom:pw@127.0.0.1:5432/chom").is_ok());
        assert!(database_url("postgresql:///chom?host=/run/postgresql").is_ok());
        assert!(database_url("sqlite://").unwrap_err().contains("file path"));
        assert!(database_url("mysql://x").unwrap_err().contains("`mysql`"));
        assert!(database_url("chom.db").is_err());
    }

    #[test]
    fn cache_urls() {
        assert!(cache_url("memory://").is_ok());
        assert!(cache_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(cache_url("rediss://:secret@cache.example:6380").is_ok());
        assert!(cache_url("memory://x").is_err());
        assert!(cache_url("redis://").is_err());
        assert!(
            cache_url("memcached://x")
                .unwrap_err()
                .contains("`memcached`")
        );
    }

    #[test]
    fn http_urls() {
        assert!(http_url("").is_ok());
        assert!(http_url("http://127.0.0.1:9090").is_ok());
        assert!(http_url("https://grafana.example/").is_ok());
        assert!(http_url("ftp://x").is_err());
        assert!(http_url("localhost:9090").is_err());
        assert!(http_url("http://").is_err());
    }

    #[test]
    fn names_hosts_fingerprints_levels() {
        assert!(is_name("web-1.fra_2"));
        assert!(!is_name("Web1") && !is_name("-x") && !is_name("") && !is_name("a b"));
        assert!(is_host("10.0.0.7") && is_host("::1") && is_host("vps7.example.com"));
        assert!(!is_host("10.0.0.7:22") && !is_host("a b") && !is_host("user@host"));
        assert!(is_name(&"a".repeat(MAX_ID_CHARS)) && !is_name(&"a".repeat(MAX_ID_CHARS + 1)));
        assert!(is_host(&"h".repeat(MAX_HOST_CHARS)) && !is_host(&"h".repeat(MAX_HOST_CHARS + 1)));
        for user in ["chom", "_svc", "deploy-2", "a", &"u".repeat(32)] {
            assert!(is_login_name(user), "{user}");
        }
        for user in [
            "",
            "-oProxyCommand=x",
            "root\nx",
            "Root",
            "1abc",
            "a b",
            "a;b",
            &"u".repeat(33),
        ] {
            assert!(!is_login_name(user), "{user}");
        }
        assert!(is_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
        ));
        assert!(
            !is_fingerprint("SHA256:")
                && !is_fingerprint("MD5:aa:bb")
                && !is_fingerprint("SHA256:a b")
        );
        assert!(is_log_level("info") && is_log_level("WARN") && is_log_level("info,chom=debug"));
        assert!(is_log_level("warn,error"));
        assert!(!is_log_level("verbose") && !is_log_level("") && !is_log_level(" , "));
    }
}
