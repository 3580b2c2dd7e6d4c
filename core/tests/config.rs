//! Loading, validating, overriding and printing the configuration, as the binary uses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chom_core::config::{
    CacheKind, Config, ConfigError, DEFAULT_TOML, DatabaseKind, JobPolicyConfig, VpsConfig,
};
use proptest::prelude::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Config {
    Config::from_toml_str(text, &[]).unwrap_or_else(|e| panic!("config should be valid:\n{e}"))
}

fn errors_with(text: &str, vars: &[(&str, &str)]) -> Vec<ConfigError> {
    match Config::from_toml_str(text, &env(vars)) {
        Ok(config) => panic!("config should be invalid: {config:#?}"),
        Err(errors) => errors.0,
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    errors_with(text, &[])
}

/// The only error of `text`, checked to be about `key`.
fn only_error(text: &str, key: &str) -> ConfigError {
    let list = errors(text);
    assert_eq!(list.len(), 1, "expected one error about {key}: {list:#?}");
    assert_eq!(list[0].key, key, "{list:#?}");
    list.into_iter().next().unwrap()
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The config file at `path`, read here (chom-core does no IO; the binary reads files).
fn from_file(path: &Path) -> Result<Config, chom_core::config::ConfigErrors> {
    let text = std::fs::read_to_string(path).unwrap();
    Config::from_file_text(path, &text, &[])
}

fn production() -> Config {
    from_file(&config_dir().join("production.example.toml")).unwrap()
}

// === the shipped files ===

#[test]
fn embedded_default_is_exactly_the_code_defaults() {
    assert_eq!(parse(DEFAULT_TOML), Config::default());
}

#[test]
fn embedded_default_is_the_file_in_config() {
    let file = std::fs::read_to_string(config_dir().join("chom.toml")).unwrap();
    assert_eq!(file, DEFAULT_TOML);
}

#[test]
fn embedded_default_lists_every_key() {
    let file: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, value) in &defaults {
        let keys = value.as_table().unwrap();
        let in_file = file[section]
            .as_table()
            .unwrap_or_else(|| panic!("[{section}] missing"));
        for key in keys.keys() {
            assert!(
                in_file.contains_key(key),
                "{section}.{key} is not in config/chom.toml"
            );
        }
        for key in in_file.keys() {
            assert!(
                keys.contains_key(key),
                "{section}.{key} in chom.toml is not a key"
            );
        }
    }
    // No jobs overrides and no servers by default: the file documents them as comments.
    assert!(DEFAULT_TOML.contains("\n# [[vps]]\n"));
    assert!(DEFAULT_TOML.contains("\n# [jobs.\"site.provision\"]\n"));
    let vps = toml::Table::try_from(VpsConfig {
        user: Some("u".into()),
        host_key: Some("SHA256:x".into()),
        ..VpsConfig::new("a", "b")
    })
    .unwrap();
    let job = toml::Table::try_from(JobPolicyConfig {
        queue: Some("high".into()),
        max_attempts: Some(1),
        timeout: Some(Duration::from_secs(1)),
        backoff: Some(vec![Duration::from_secs(1)]),
        jitter: Some(true),
    })
    .unwrap();
    for key in vps.keys().chain(job.keys()) {
        assert!(
            DEFAULT_TOML.contains(&format!("# {key} = ")),
            "{key} is not documented"
        );
    }
}

#[test]
fn embedded_default_comments_every_key() {
    // Each `key = value` line is preceded by a comment or by a key sharing its comment.
    let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            let previous = lines[i - 1];
            assert!(
                previous.starts_with('#') || previous.contains(" = "),
                "line {}: `{line}` has no comment",
                i + 1
            );
        }
    }
}

#[test]
fn every_example_in_config_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            from_file(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[test]
fn production_example_values() {
    let config = production();
    assert_eq!(config.database.kind(), DatabaseKind::Postgres);
    assert_eq!(
        config.database.url,
        "postgres://chom:CHANGE_ME@127.0.0.1:5432/chom"
    );
    assert_eq!(config.cache.kind(), CacheKind::Redis);
    assert_eq!(config.node.data_dir, Path::new("/var/lib/chom"));
    assert_eq!(config.admin.socket, Path::new("/run/chom/chom.sock"));
    assert_eq!(
        config.ssh.private_key,
        Path::new("/etc/chom/ssh/id_ed25519")
    );
    assert_eq!(config.observability.prometheus_url, "http://127.0.0.1:9090");
    assert_eq!(config.vps.len(), 2);
    assert_eq!(config.vps[0].port, 22);
    assert_eq!(config.vps[0].user_or(&config.ssh.user), "chom");
    assert_eq!(config.vps[1].port, 2222);
    assert_eq!(config.vps[1].user_or(&config.ssh.user), "deploy");
    let provision = &config.jobs["site.provision"];
    assert_eq!(provision.queue.as_deref(), Some("high"));
    assert_eq!(provision.max_attempts, Some(5));
    assert_eq!(provision.timeout, Some(Duration::from_secs(300)));
    assert_eq!(provision.backoff, None);
    // Keys not in the file keep their defaults.
    assert_eq!(config.queue.backoff, Config::default().queue.backoff);
}

#[test]
fn defaults_follow_the_operations_plan() {
    let c = Config::default();
    assert_eq!(c.queue.workers, 3);
    assert_eq!(
        c.queue.queues,
        ["critical", "high", "default", "low", "batch"]
    );
    assert_eq!(c.queue.max_attempts, 3);
    assert_eq!(c.queue.backoff, [30, 60, 180].map(Duration::from_secs));
    assert_eq!(c.queue.timeout, Duration::from_secs(180));
    assert_eq!(c.queue.retry_after, Duration::from_secs(180));
    assert_eq!(c.queue.max_jobs_per_worker, 1000);
    assert_eq!(c.queue.max_worker_time, Duration::from_secs(3600));
    assert_eq!(c.queue.stuck_after, Duration::from_secs(3600));
    assert_eq!(c.ssh.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.ssh.command_timeout, Duration::from_secs(120));
    assert_eq!(c.ssh.max_concurrent, 3);
    assert_eq!(c.ssh.retry_attempts, 3);
    assert_eq!(c.breaker.failure_threshold, 5);
    assert_eq!(c.breaker.failure_window, Duration::from_secs(300));
    assert_eq!(c.breaker.open_timeout, Duration::from_secs(60));
    assert_eq!(c.breaker.half_open_calls, 1);
    assert_eq!(c.health.failures_before_restart, 3);
    assert_eq!(c.memory.threshold_percent, 95);
    assert_eq!(c.memory.consecutive, 2);
    assert_eq!(
        c.database.kind(),
        DatabaseKind::Sqlite {
            path: "./var/chom.db".into()
        }
    );
    assert_eq!(c.cache.kind(), CacheKind::Memory);
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.socket, Path::new("./var/chom.sock"));
}

#[test]
fn sqlite_path_drops_the_query() {
    let c = parse("[database]\nurl = \"sqlite:///var/lib/chom/chom.db?mode=rwc\"\n");
    assert_eq!(
        c.database.kind(),
        DatabaseKind::Sqlite {
            path: "/var/lib/chom/chom.db".into()
        }
    );
}

// === one error per kind of mistake ===

#[test]
fn unknown_key_in_a_section() {
    let e = only_error("[queue]\npoll_intervall = \"1s\"\n", "queue.poll_intervall");
    assert_eq!(e.message, "unknown key (did you mean `poll_interval`?)");
    assert_eq!(e.env, None);
    let e = only_error("[queue]\nzzz = 1\n", "queue.zzz");
    assert!(
        e.message.starts_with("unknown key (expected one of: "),
        "{e}"
    );
    assert!(e.message.contains("poll_interval"), "{e}");
}

#[test]
fn unknown_section_and_top_level_key() {
    let e = only_error("[queues]\nworkers = 3\n", "queues");
    assert_eq!(e.message, "unknown section (did you mean `queue`?)");
    let e = only_error("workers = 3\n", "workers");
    assert!(e.message.starts_with("unknown key"), "{e}");
    let e = only_error("[vps]\nid = \"a\"\n", "vps");
    assert!(e.message.contains("[[vps]]"), "{e}");
    only_error("queue = 3\n", "queue");
}

#[test]
fn unknown_key_in_vps_entry_and_jobs_table() {
    let text = r#"
[[vps]]
id = "a"
host = "h"

[[vps]]
id = "b"
host = "h"
hostkey = "SHA256:x"

[jobs."site.provision"]
queue = "high"
attempts = 5
"#;
    let list = errors(text);
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    // Listed in the order of the sections of Config: [jobs] comes before [[vps]].
    assert_eq!(
        keys,
        ["jobs.\"site.provision\".attempts", "vps[1].hostkey"],
        "{list:#?}"
    );
    assert_eq!(
        list[0].message,
        "unknown key (did you mean `max_attempts`?)"
    );
    assert_eq!(list[1].message, "unknown key (did you mean `host_key`?)");
}

#[test]
fn bad_duration() {
    let e = only_error("[queue]\nretry_after = \"soon\"\n", "queue.retry_after");
    assert!(
        e.message.contains("\"soon\"") && e.message.contains("duration"),
        "{e}"
    );
    let e = only_error("[ssh]\nconnect_timeout = 10\n", "ssh.connect_timeout");
    assert!(e.message.contains("duration"), "{e}");
    let e = only_error(
        "[queue]\nbackoff = [\"1s\", \"2 parsecs\"]\n",
        "queue.backoff[1]",
    );
    assert!(e.message.contains("duration"), "{e}");
    only_error("[jobs.noop]\nbackoff = [\"x\"]\n", "jobs.noop.backoff[0]");
    only_error("[jobs.noop]\ntimeout = \"-1s\"\n", "jobs.noop.timeout");
}

#[test]
fn bad_url_schemes() {
    let e = only_error("[database]\nurl = \"mysql://x\"\n", "database.url");
    assert!(e.message.contains("`mysql`"), "{e}");
    only_error("[database]\nurl = \"./var/chom.db\"\n", "database.url");
    only_error("[database]\nurl = \"sqlite://\"\n", "database.url");
    let e = only_error("[cache]\nurl = \"memcached://x\"\n", "cache.url");
    assert!(e.message.contains("`memcached`"), "{e}");
    only_error(
        "[observability]\nloki_url = \"ftp://loki\"\n",
        "observability.loki_url",
    );
    only_error(
        "[observability]\ngrafana_url = \"localhost:3000\"\n",
        "observability.grafana_url",
    );
    parse(
        "[database]\nurl = \"postgresql://chom@db/chom\"\n[cache]\nurl = \"rediss://:pw@cache:6380/1\"\n",
    );
}

#[test]
fn bad_socket_addr() {
    let e = only_error("[http]\nlisten = \"localhost\"\n", "http.listen");
    assert!(e.message.contains("socket address"), "{e}");
    only_error("[http]\nlisten = \"127.0.0.1:99999\"\n", "http.listen");
    assert_eq!(
        parse("[http]\nlisten = \"[::1]:0\"\n").http.listen.port(),
        0
    );
}

#[test]
fn out_of_range() {
    let e = only_error("[queue]\nworkers = 0\n", "queue.workers");
    assert_eq!(e.message, "must be between 1 and 1024, got 0");
    only_error("[queue]\nworkers = 1025\n", "queue.workers");
    only_error("[queue]\nworkers = -1\n", "queue.workers");
    only_error(
        "[memory]\nthreshold_percent = 101\n",
        "memory.threshold_percent",
    );
    let e = only_error(
        "[memory]\nthreshold_percent = 300\n",
        "memory.threshold_percent",
    );
    assert!(e.message.contains("0 to 255"), "{e}");
    only_error(
        "[health]\ndisk_warning_percent = 0\n",
        "health.disk_warning_percent",
    );
    only_error(
        "[supervision]\nbackoff_jitter = 1.5\n",
        "supervision.backoff_jitter",
    );
    only_error(
        "[supervision]\nbackoff_min = \"1m\"\nbackoff_max = \"1s\"\n",
        "supervision.backoff_min",
    );
    only_error("[queue]\npoll_interval = \"0s\"\n", "queue.poll_interval");
    only_error("[queue]\nbackoff = []\n", "queue.backoff");
    only_error("[queue]\nqueues = []\n", "queue.queues");
    only_error(
        "[queue]\nqueues = [\"a\", \"b\", \"a\"]\n",
        "queue.queues[2]",
    );
    only_error("[queue]\nqueues = [\"High\"]\n", "queue.queues[0]");
    only_error("[breaker]\nmax_open = \"1s\"\n", "breaker.max_open");
    only_error("[log]\nformat = \"yaml\"\n", "log.format");
    only_error("[log]\nlevel = \"verbose\"\n", "log.level");
    parse("[log]\nlevel = \"warn,chom::queue=trace\"\n");
    only_error(
        "[[vps]]\nid = \"a\"\nhost = \"h\"\nport = 0\n",
        "vps[0].port",
    );
    only_error(
        "[[vps]]\nid = \"a\"\nhost = \"h\"\nport = 70000\n",
        "vps[0].port",
    );
}

#[test]
fn wrong_types() {
    let e = only_error("[queue]\nworkers = \"three\"\n", "queue.workers");
    assert!(e.message.contains("invalid type"), "{e}");
    only_error("[queue]\njitter = \"yes\"\n", "queue.jitter");
    only_error("[queue]\nqueues = \"high\"\n", "queue.queues");
    only_error("[queue]\nqueues = [\"a\", 2]\n", "queue.queues[1]");
    only_error("vps = [1]\n", "vps[0]");
    only_error("[jobs]\nnoop = 1\n", "jobs.noop");
}

#[test]
fn vps_entries() {
    let text = r#"
[[vps]]
id = "web-1"
host = "10.0.0.1"

[[vps]]
id = "web-1"
host = "10.0.0.2"

[[vps]]
host = "10.0.0.3:22"

[[vps]]
id = "Web 4"
host = "h4"
host_key = "MD5:00"
"#;
    let list = errors(text);
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "vps[1].id",
            "vps[2].host",
            "vps[2].id",
            "vps[3].host_key",
            "vps[3].id"
        ],
        "{list:#?}"
    );
    assert!(
        list[0].message.contains("duplicate id `web-1`"),
        "{:?}",
        list[0]
    );
    assert!(
        list[1].message.contains("put the port in `port`"),
        "{:?}",
        list[1]
    );
    assert_eq!(list[2].message, "required");
}

#[test]
fn job_queue_must_be_a_configured_queue() {
    let e = only_error(
        "[jobs.\"site.provision\"]\nqueue = \"urgent\"\n",
        "jobs.\"site.provision\".queue",
    );
    assert!(e.message.contains("unknown queue `urgent`"), "{e}");
    // The check uses the configured queue list, not the default one.
    parse(
        "[queue]\nqueues = [\"urgent\", \"default\"]\n[jobs.\"site.provision\"]\nqueue = \"urgent\"\n",
    );
    only_error("[jobs.noop]\nmax_attempts = 0\n", "jobs.noop.max_attempts");
    // A broken queue list is reported once, not once more for each job naming a queue.
    only_error(
        "[queue]\nqueues = \"urgent\"\n[jobs.noop]\nqueue = \"urgent\"\n",
        "queue.queues",
    );
    only_error(
        "[breaker]\nopen_timeout = \"1 fortnight\"\nmax_open = \"1s\"\n",
        "breaker.open_timeout",
    );
}

#[test]
fn not_toml_names_the_line_and_the_file() {
    let list = errors("[queue]\nworkers = = 3\n");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].key, "");
    assert!(
        list[0].message.starts_with("invalid TOML at line 2"),
        "{:?}",
        list[0]
    );
    let file = Path::new("/etc/chom/chom.toml");
    let errors = Config::from_file_text(file, "[queue]\nworkers = = 3\n", &[]).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors.0[0]
            .message
            .starts_with("/etc/chom/chom.toml: invalid TOML at line 2"),
        "{errors}"
    );
}

// === all at once ===

#[test]
fn every_error_is_reported_at_once() {
    let text = r#"
[queue]
workers = 3
poll_intervall = "1s"
retry_after = "soon"

[database]
url = "mysql://x"
"#;
    let list = errors(text);
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["database.url", "queue.poll_intervall", "queue.retry_after"],
        "{list:#?}"
    );
}

#[test]
fn many_errors_across_sections() {
    let text = r#"
[queue]
workers = 0
backoff = ["1s", "x", "y"]
[ssh]
max_concurrent = "lots"
colour = "blue"
[http]
listen = "nowhere"
[observability]
prometheus_url = "gopher://p"
[[vps]]
id = "a"
host = "h"
[[vps]]
id = "a"
host = "h"
[jobs.noop]
queue = "nope"
[extra]
"#;
    let list = errors(text);
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "http.listen",
            "queue.backoff[1]",
            "queue.backoff[2]",
            "queue.workers",
            "jobs.noop.queue",
            "ssh.colour",
            "ssh.max_concurrent",
            "vps[1].id",
            "observability.prometheus_url",
            "extra",
        ],
        "{list:#?}"
    );
    // Good keys next to bad ones still count: one error for the list, not "empty list" too.
    assert!(
        list.iter()
            .all(|e| !e.message.is_empty() && !e.message.ends_with('.'))
    );
}

#[test]
fn display_is_one_line_per_error() {
    let err = Config::from_toml_str(
        "[queue]\nworkers = 0\n[log]\nformat = \"xml\"\n",
        &env(&[("CHOM_QUEUE_TIMEOUT", "0s")]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains("queue.workers: must be between 1 and 1024, got 0"),
        "{text}"
    );
    assert!(
        text.contains("queue.timeout: must be greater than zero (from CHOM_QUEUE_TIMEOUT)"),
        "{text}"
    );
    let _: &dyn std::error::Error = &err;
}

// === environment ===

#[test]
fn env_overrides_the_file_with_type_coercion() {
    let vars = [
        ("CHOM_QUEUE_WORKERS", "8"),
        ("CHOM_QUEUE_POLL_INTERVAL", "250ms"),
        ("CHOM_QUEUE_JITTER", "true"),
        ("CHOM_QUEUE_QUEUES", r#"["a", "b"]"#),
        ("CHOM_QUEUE_BACKOFF", "1s,5s"),
        ("CHOM_SUPERVISION_BACKOFF_JITTER", "0.5"),
        ("CHOM_NODE_NAME", "42"),
        ("CHOM_DATABASE_URL", "postgres://u:p@db/chom"),
        ("CHOM_CACHE_URL", "redis://127.0.0.1:6379/0"),
        ("CHOM_HTTP_LISTEN", "0.0.0.0:9000"),
        ("CHOM_ADMIN_SOCKET", "/run/chom/x.sock"),
        ("CHOM_SSH_USER", "ops"),
        ("CHOM_SSH_IDEMPOTENT_COMMANDS", "site:list"),
        ("CHOM_LOG_LEVEL", "debug"),
    ];
    let c = Config::from_toml_str(
        "[queue]\nworkers = 2\n[node]\nname = \"file\"\n",
        &env(&vars),
    )
    .unwrap();
    assert_eq!(c.queue.workers, 8);
    assert_eq!(c.queue.poll_interval, Duration::from_millis(250));
    assert!(c.queue.jitter);
    assert_eq!(c.queue.queues, ["a", "b"]);
    assert_eq!(c.queue.backoff, [1, 5].map(Duration::from_secs));
    assert_eq!(c.supervision.backoff_jitter, 0.5);
    assert_eq!(c.node.name, "42");
    assert_eq!(c.database.kind(), DatabaseKind::Postgres);
    assert_eq!(c.cache.kind(), CacheKind::Redis);
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.admin.socket, Path::new("/run/chom/x.sock"));
    assert_eq!(c.ssh.user, "ops");
    assert_eq!(c.ssh.idempotent_commands, ["site:list"]);
    assert_eq!(c.log.level, "debug");
}

#[test]
fn env_aliases() {
    let vars = [
        ("CHOM_PROMETHEUS_URL", "http://p:9090"),
        ("CHOM_LOKI_URL", "http://l:3100"),
        ("CHOM_ALERTMANAGER_URL", "http://a:9093"),
        ("CHOM_GRAFANA_URL", "https://g"),
        ("CHOM_SSH_KEY_PATH", "/keys/id"),
    ];
    let c = Config::from_toml_str("", &env(&vars)).unwrap();
    assert_eq!(c.observability.prometheus_url, "http://p:9090");
    assert_eq!(c.observability.loki_url, "http://l:3100");
    assert_eq!(c.observability.alertmanager_url, "http://a:9093");
    assert_eq!(c.observability.grafana_url, "https://g");
    assert_eq!(c.ssh.private_key, Path::new("/keys/id"));
    // The generic name wins over the alias, whatever the order.
    let both = env(&[
        ("CHOM_SSH_PRIVATE_KEY", "/generic"),
        ("CHOM_SSH_KEY_PATH", "/alias"),
    ]);
    assert_eq!(
        Config::from_toml_str("", &both).unwrap().ssh.private_key,
        Path::new("/generic")
    );
    // An error from an alias names the alias.
    let list = errors_with("", &[("CHOM_LOKI_URL", "loki:3100")]);
    assert_eq!(list[0].key, "observability.loki_url");
    assert_eq!(list[0].env.as_deref(), Some("CHOM_LOKI_URL"));
}

#[test]
fn env_errors_name_the_variable() {
    let list = errors_with("", &[("CHOM_QUEUE_WORKRS", "8")]);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].key, "queue.workrs");
    assert_eq!(list[0].env.as_deref(), Some("CHOM_QUEUE_WORKRS"));
    assert_eq!(list[0].message, "unknown key (did you mean `workers`?)");

    let list = errors_with(
        "[http]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("CHOM_HTTP_LISTEN", "nowhere"),
            ("CHOM_QUEUE_WORKERS", "-1"),
            ("CHOM_QUEUE_BACKOFF", "1s,never"),
        ],
    );
    let named: Vec<_> = list
        .iter()
        .map(|e| (e.key.as_str(), e.env.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            ("http.listen", Some("CHOM_HTTP_LISTEN")),
            ("queue.backoff[1]", Some("CHOM_QUEUE_BACKOFF")),
            ("queue.workers", Some("CHOM_QUEUE_WORKERS")),
        ],
        "{list:#?}"
    );
    assert!(list[2].message.contains("-1"), "{:?}", list[2]);
    // Semantic errors on env values name the variable too.
    let list = errors_with("", &[("CHOM_DATABASE_URL", "mysql://x")]);
    assert_eq!(list[0].env.as_deref(), Some("CHOM_DATABASE_URL"));
    // A file error is not blamed on the environment.
    let list = errors_with("[queue]\nworkers = 0\n", &[("CHOM_QUEUE_TIMEOUT", "5s")]);
    assert_eq!(list[0].env, None);
}

#[test]
fn env_outside_the_config_is_ignored_or_rejected() {
    let vars = [
        ("CHOM_CONFIG", "/etc/chom/chom.toml"),
        ("CHOM_DEBUG_HOOKS", "1"),
        ("CHOM_LOG", "whatever"),
        ("CHOM_TEST_PG_URL", "postgres://x"),
        ("PATH", "/usr/bin"),
        ("QUEUE_WORKERS", "0"),
    ];
    assert_eq!(
        Config::from_toml_str("", &env(&vars)).unwrap(),
        Config::default()
    );
    let list = errors_with("", &[("CHOM_VPS_HOST", "x")]);
    assert_eq!(list[0].env.as_deref(), Some("CHOM_VPS_HOST"));
}

// === printing ===

#[test]
fn redaction_hides_passwords_and_keeps_the_rest() {
    let vars = [
        (
            "CHOM_DATABASE_URL",
            "postgres://chom:hunter2@db:5432/chom?sslmode=require",
        ),
        ("CHOM_CACHE_URL", "rediss://:swordfish@cache:6380/0"),
        (
            "CHOM_GRAFANA_URL",
            "https://admin:opensesame@grafana.example",
        ),
    ];
    let config = Config::from_toml_str(DEFAULT_TOML, &env(&vars)).unwrap();
    let text = config.to_redacted_toml();
    for secret in ["hunter2", "swordfish", "opensesame"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(
        text.contains("postgres://chom:***@db:5432/chom?sslmode=require"),
        "{text}"
    );
    assert!(text.contains("rediss://:***@cache:6380/0"), "{text}");
    assert!(text.contains("https://admin:***@grafana.example"), "{text}");
    // Parses back, and only the secrets differ.
    let back = Config::from_toml_str(&text, &[]).unwrap();
    let mut expected = config.clone();
    expected.database.url = "postgres://chom:***@db:5432/chom?sslmode=require".into();
    expected.cache.url = "rediss://:***@cache:6380/0".into();
    expected.observability.grafana_url = "https://admin:***@grafana.example".into();
    assert_eq!(back, expected);
}

#[test]
fn redacted_production_example_parses_back() {
    let config = production();
    let text = config.to_redacted_toml();
    assert!(!text.contains("CHANGE_ME"), "{text}");
    let back = Config::from_toml_str(&text, &[]).unwrap();
    assert_eq!(back.vps, config.vps);
    assert_eq!(back.jobs, config.jobs);
}

#[test]
fn round_trip_through_toml() {
    for config in [Config::default(), production()] {
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text), config, "{text}");
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    // humantime prints nanosecond precision, so any value survives; keep it below ~300 years.
    (1u64..10_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

/// Durations the config accepts for a key bounded at `max_secs` (the bounds are inclusive).
fn duration_up_to(max_secs: u64) -> impl Strategy<Value = Duration> {
    (1u64..max_secs, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

proptest! {
    #[test]
    fn durations_round_trip_through_humantime(d in duration()) {
        let text = humantime::format_duration(d).to_string();
        prop_assert_eq!(humantime::parse_duration(&text).unwrap(), d);
    }

    #[test]
    fn configs_round_trip(
        workers in 1u32..=1024,
        poll in duration_up_to(3600),
        backoff in proptest::collection::vec(duration_up_to(3650 * 86400), 1..5),
        jitter in 0.0f64..=1.0,
        port in 1u16..,
        threshold in 1u8..=100,
        attempts in proptest::option::of(1u32..100),
    ) {
        let mut config = Config::default();
        config.queue.workers = workers;
        config.queue.poll_interval = poll;
        config.queue.backoff = backoff.clone();
        config.supervision.backoff_jitter = jitter;
        config.memory.threshold_percent = threshold;
        config.vps.push(VpsConfig { port, ..VpsConfig::new("web-1", "10.0.0.1") });
        config.jobs.insert("site.provision".into(), JobPolicyConfig {
            max_attempts: attempts,
            backoff: Some(backoff),
            ..JobPolicyConfig::default()
        });
        let text = config.to_redacted_toml();
        prop_assert_eq!(Config::from_toml_str(&text, &[]).unwrap(), config);
    }

    #[test]
    fn env_durations_override(d in duration_up_to(3650 * 86400)) {
        let text = humantime::format_duration(d).to_string();
        let config = Config::from_toml_str("", &env(&[("CHOM_QUEUE_RETRY_AFTER", &text)])).unwrap();
        prop_assert_eq!(config.queue.retry_after, d);
    }
}

// === input bounds (issue 10) ===

/// Every `(key path, TOML value)` of a table whose value is a humantime duration, recursively.
fn duration_keys(prefix: &str, table: &toml::Table, out: &mut Vec<(String, bool)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(s) if humantime::parse_duration(s).is_ok() => {
                out.push((path, false));
            }
            toml::Value::Array(items)
                if !items.is_empty()
                    && items.iter().all(|i| {
                        i.as_str()
                            .is_some_and(|s| humantime::parse_duration(s).is_ok())
                    }) =>
            {
                out.push((path, true));
            }
            toml::Value::Table(inner) => duration_keys(&path, inner, out),
            _ => {}
        }
    }
}

#[test]
fn every_duration_key_has_an_upper_bound() {
    // The keys come from the defaults, so a duration key added later is covered too.
    let mut config = Config::default();
    config.jobs.insert(
        "noop".into(),
        JobPolicyConfig {
            timeout: Some(Duration::from_secs(1)),
            backoff: Some(vec![Duration::from_secs(1)]),
            ..JobPolicyConfig::default()
        },
    );
    let table: toml::Table = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    let mut keys = Vec::new();
    duration_keys("", &table, &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    for (path, is_list) in keys {
        let (section, key) = path.rsplit_once('.').unwrap();
        let value = if is_list {
            "[\"10000000years\"]"
        } else {
            "\"10000000years\""
        };
        let expected = if is_list {
            format!("{path}[0]")
        } else {
            path.clone()
        };
        let list = errors(&format!("[{section}]\n{key} = {value}\n"));
        assert!(
            list.iter().any(|e| e.key == expected
                && (e.message.contains("must be at most")
                    || e.message.contains("must be between"))),
            "{path} accepts 10000000years: {list:#?}"
        );
    }
    // Within the bounds the same keys are fine: the production example and 10 years of retention.
    parse("[queue]\nretention = \"3650days\"\nstuck_after = \"30days\"\n");
}

#[test]
fn attempts_are_refused_outside_their_range_not_clamped() {
    let e = only_error("[queue]\nmax_attempts = 1001\n", "queue.max_attempts");
    assert_eq!(e.message, "must be between 1 and 1000, got 1001");
    only_error("[queue]\nmax_attempts = 0\n", "queue.max_attempts");
    only_error(
        "[jobs.noop]\nmax_attempts = 5000000\n",
        "jobs.noop.max_attempts",
    );
    parse("[jobs.noop]\nmax_attempts = 1000\n");
}

#[test]
fn remote_users_must_be_login_names() {
    let e = only_error(
        "[[vps]]\nid = \"a\"\nhost = \"h\"\nuser = \"-oProxyCommand=touch /tmp/x\"\n",
        "vps[0].user",
    );
    assert!(e.message.contains("not a login name"), "{e}");
    only_error(
        "[[vps]]\nid = \"a\"\nhost = \"h\"\nuser = \"root\\nx\"\n",
        "vps[0].user",
    );
    only_error("[ssh]\nuser = \"-lroot\"\n", "ssh.user");
    only_error("[ssh]\nuser = \"\"\n", "ssh.user");
    parse("[ssh]\nuser = \"deploy_2\"\n[[vps]]\nid = \"a\"\nhost = \"h\"\nuser = \"_svc\"\n");
    // Ids and hosts are bounded too.
    only_error(
        &format!("[[vps]]\nid = \"{}\"\nhost = \"h\"\n", "a".repeat(65)),
        "vps[0].id",
    );
    only_error(
        &format!("[[vps]]\nid = \"a\"\nhost = \"{}\"\n", "h".repeat(254)),
        "vps[0].host",
    );
}

#[test]
fn health_check_urls_never_print_their_secrets() {
    let text = "[[health.checks]]\nname = \"shop\"\nurl = \"https://admin:pw@shop.example/?token=t0k3n&x=1\"\n";
    let redacted = parse(text).to_redacted_toml();
    assert!(
        !redacted.contains("pw@") && !redacted.contains("t0k3n"),
        "{redacted}"
    );
    assert!(
        redacted.contains("https://admin:***@shop.example/?token=***&x=1"),
        "{redacted}"
    );
    // Nor does the error about a URL that is not http(s).
    let e = only_error(
        "[[health.checks]]\nname = \"shop\"\nurl = \"ftp://admin:pw@shop.example/?sig=s1g\"\n",
        "health.checks[0].url",
    );
    assert!(
        !e.message.contains("pw@") && !e.message.contains("s1g"),
        "{e}"
    );
}

#[test]
fn counts_and_names_have_upper_bounds() {
    only_error(
        "[database]\nmax_connections = 100000\n",
        "database.max_connections",
    );
    only_error("[ssh]\nmax_output = 1099511627776\n", "ssh.max_output");
    only_error("[ssh]\nmax_concurrent = 100000\n", "ssh.max_concurrent");
    only_error("[ssh]\nretry_attempts = 100000\n", "ssh.retry_attempts");
    only_error(
        "[breaker]\nhalf_open_calls = 100000\n",
        "breaker.half_open_calls",
    );
    only_error("[node]\nname = \"a\\u001b[31mb\"\n", "node.name");
    only_error(
        &format!("[node]\nname = \"{}\"\n", "n".repeat(65)),
        "node.name",
    );
    only_error(
        &format!("[queue]\nqueues = [\"{}\"]\n", "q".repeat(65)),
        "queue.queues[0]",
    );
}

#[test]
fn webhook_tokens_are_checked_and_never_printed() {
    let e = only_error(
        "[observability]\nwebhook_token = \"short\"\n",
        "observability.webhook_token",
    );
    assert!(e.message.contains("16 to 256"), "{e}");
    let e = only_error(
        "[observability]\nwebhook_token = \"has a space in it, sixteen+\"\n",
        "observability.webhook_token",
    );
    assert!(e.message.contains("visible ASCII"), "{e}");
    let secret = "s3cr3t-t0ken-0123456789";
    let config = parse(&format!("[observability]\nwebhook_token = \"{secret}\"\n"));
    assert_eq!(config.observability.webhook_token, secret);
    let shown = config.to_redacted_toml();
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("webhook_token = \"***\""), "{shown}");
    // Empty (off) stays empty, so an operator sees it is not set.
    assert!(
        Config::default()
            .to_redacted_toml()
            .contains("webhook_token = \"\"")
    );
}

// === [api] (issue 13) ===

#[test]
fn api_defaults_follow_the_issue() {
    let a = Config::default().api;
    assert_eq!(a.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(a.request_timeout, Duration::from_secs(30));
    assert_eq!(a.max_body, 64 * 1024);
    assert_eq!(a.max_concurrent_queries, 4);
    assert_eq!(a.redis_timeout, Duration::from_millis(50));
    use chom_core::inventory::Tier;
    let quotas = [Tier::Starter, Tier::Pro, Tier::Enterprise].map(|t| a.rate_limits.quota(t));
    assert_eq!(quotas, [100, 500, 2000]);
}

#[test]
fn api_keys_are_read_from_the_file_and_the_environment() {
    let text = "[api]\nlisten = \"0.0.0.0:9443\"\nmax_body = 1024\n\
                [api.rate_limits]\nstarter = 1\npro = 7\nenterprise = 1000000\n";
    let c = Config::from_toml_str(
        text,
        &env(&[
            ("CHOM_API_LISTEN", "127.0.0.1:18081"),
            ("CHOM_API_REDIS_TIMEOUT", "1ms"),
            ("CHOM_API_MAX_CONCURRENT_QUERIES", "64"),
        ]),
    )
    .unwrap();
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:18081");
    assert_eq!(c.api.redis_timeout, Duration::from_millis(1));
    assert_eq!(c.api.max_concurrent_queries, 64);
    assert_eq!(c.api.max_body, 1024);
    assert_eq!(
        (
            c.api.rate_limits.starter,
            c.api.rate_limits.pro,
            c.api.rate_limits.enterprise
        ),
        (1, 7, 1_000_000)
    );
    let e = errors_with("", &[("CHOM_API_LISTEN", "localhost")]);
    assert_eq!(e[0].key, "api.listen");
    assert_eq!(e[0].env.as_deref(), Some("CHOM_API_LISTEN"));
}

#[test]
fn api_values_outside_their_ranges_are_refused_not_clamped() {
    for (text, key) in [
        (
            "[api]\nrequest_timeout = \"500ms\"\n",
            "api.request_timeout",
        ),
        ("[api]\nrequest_timeout = \"11m\"\n", "api.request_timeout"),
        ("[api]\nmax_body = 1023\n", "api.max_body"),
        ("[api]\nmax_body = 16777217\n", "api.max_body"),
        (
            "[api]\nmax_concurrent_queries = 0\n",
            "api.max_concurrent_queries",
        ),
        (
            "[api]\nmax_concurrent_queries = 65\n",
            "api.max_concurrent_queries",
        ),
        ("[api]\nredis_timeout = \"0s\"\n", "api.redis_timeout"),
        ("[api]\nredis_timeout = \"2s\"\n", "api.redis_timeout"),
        (
            "[api.rate_limits]\nstarter = 0\n",
            "api.rate_limits.starter",
        ),
        ("[api.rate_limits]\npro = 1000001\n", "api.rate_limits.pro"),
        (
            "[api.rate_limits]\nenterprise = -1\n",
            "api.rate_limits.enterprise",
        ),
        (
            "[api.rate_limits]\nstarter = \"lots\"\n",
            "api.rate_limits.starter",
        ),
        ("[api]\nlisten = \"127.0.0.1:8080\"\n", "api.listen"),
    ] {
        only_error(text, key);
    }
    let e = only_error("[api]\nmax_body = 1023\n", "api.max_body");
    assert_eq!(e.message, "must be between 1024 and 16777216, got 1023");
    parse(
        "[api]\nrequest_timeout = \"10m\"\nmax_body = 16777216\nredis_timeout = \"1s\"\n\
         [api.rate_limits]\nstarter = 1\npro = 1000000\n",
    );
    // Two port-0 listeners pick different free ports.
    parse("[http]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n");
}

#[test]
fn api_unknown_keys_are_errors() {
    let e = only_error("[api]\nlisen = \"127.0.0.1:1\"\n", "api.lisen");
    assert_eq!(e.message, "unknown key (did you mean `listen`?)");
    let e = only_error("[api.rate_limits]\ngold = 5\n", "api.rate_limits.gold");
    assert!(e.message.starts_with("unknown key"), "{e}");
    assert!(e.message.contains("starter"), "{e}");
    only_error("[api]\nrate_limits = 5\n", "api.rate_limits");
}
