//! The node's configuration: TOML file (or the embedded default) plus `CHOM_*` environment
//! overrides, validated as a whole so that every problem is reported at once with its key.
//!
//! ```
//! use chom_core::config::Config;
//!
//! let env = vec![("CHOM_QUEUE_WORKERS".to_owned(), "8".to_owned())];
//! let config = Config::from_toml_str("[queue]\npoll_interval = \"250ms\"\n", &env).unwrap();
//! assert_eq!(config.queue.workers, 8);
//! assert_eq!(config.queue.poll_interval, std::time::Duration::from_millis(250));
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod env;
mod error;
mod load;
mod redact;
mod sections;
mod validate;

pub use env::{ALIASES, ENV_PREFIX};
pub use error::{ConfigError, ConfigErrors};
pub use redact::{REDACTED, redact_url};
pub use sections::*;
pub use validate::{
    API_MAX_BODY, API_MAX_CONCURRENT_QUERIES, API_RATE_LIMIT, API_REDIS_TIMEOUT,
    API_REQUEST_TIMEOUT, LOGIN_RULE, MAX_WORKERS, METRICS_QUERY_WAIT, NAME_RULE, UI_SESSION_IDLE,
    is_fingerprint, is_host, is_login_name, is_name,
};

/// The annotated default configuration, `config/chom.toml`, as printed by `chom config default`.
/// Parsing it with no environment gives exactly [`Config::default()`].
pub const DEFAULT_TOML: &str = include_str!("../../../config/chom.toml");

/// The whole configuration of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`
    pub node: NodeConfig,
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[api]`
    pub api: ApiConfig,
    /// `[ui]`
    pub ui: UiConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[supervision]`
    pub supervision: SupervisionConfig,
    /// `[queue]`
    pub queue: QueueConfig,
    /// `[jobs.<kind>]`, by job kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobPolicyConfig>,
    /// `[ssh]`
    pub ssh: SshConfig,
    /// `[breaker]`
    pub breaker: BreakerConfig,
    /// `[[vps]]`, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vps: Vec<VpsConfig>,
    /// `[health]`
    pub health: HealthConfig,
    /// `[memory]`
    pub memory: MemoryConfig,
    /// `[observability]`
    pub observability: ObservabilityConfig,
    /// `[log]`
    pub log: LogConfig,
}

impl Config {
    /// Parse TOML text plus environment overrides; every problem reported at once.
    ///
    /// `env` holds `(name, value)` pairs (pass `std::env::vars()` collected); only `CHOM_*`
    /// names are looked at, and of those only the ones naming a configuration key.
    pub fn from_toml_str(text: &str, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        let mut root: toml::Table = match toml::from_str(text) {
            Ok(root) => root,
            Err(error) => return Err(ConfigErrors(vec![syntax_error(text, &error)])),
        };
        let mut errors = error::Errors::default();
        env::apply(&mut root, env, &mut errors);
        let config = load::load(root, &mut errors);
        validate::validate(&config, &mut errors);
        errors.finish(config, load::SECTION_ORDER)
    }

    /// The config in `text`, read from the file `path`, with environment overrides: like
    /// [`Config::from_toml_str`], with whole-file errors (bad TOML) naming the file. Reading
    /// the file is the caller's (the binary's) business; this crate does no IO.
    pub fn from_file_text(
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        Self::from_toml_str(text, env).map_err(|ConfigErrors(mut list)| {
            for error in list.iter_mut().filter(|e| e.key.is_empty()) {
                error.message = format!("{}: {}", path.display(), error.message);
            }
            ConfigErrors(list)
        })
    }

    /// The keys of every shell command this configuration makes the node run
    /// (`memory.action`, `[[health.checks]] command` and `remediation`).
    pub fn command_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if !self.memory.action.trim().is_empty() {
            keys.push("memory.action".to_owned());
        }
        for (i, check) in self.health.checks.iter().enumerate() {
            if check.command.is_some() {
                keys.push(format!("health.checks[{i}].command"));
            }
            if check.remediation.is_some() {
                keys.push(format!("health.checks[{i}].remediation"));
            }
        }
        keys
    }

    /// The resolved config as TOML with secrets (passwords in `database.url` / `cache.url` /
    /// observability URLs / `[[health.checks]] url`, secret query parameters,
    /// `observability.webhook_token`) replaced by
    /// `***`; it parses back.
    pub fn to_redacted_toml(&self) -> String {
        let mut config = self.clone();
        let checks = config
            .health
            .checks
            .iter_mut()
            .filter_map(|c| c.url.as_mut());
        for url in [
            &mut config.database.url,
            &mut config.cache.url,
            &mut config.observability.prometheus_url,
            &mut config.observability.loki_url,
            &mut config.observability.alertmanager_url,
            &mut config.observability.grafana_url,
        ]
        .into_iter()
        .chain(checks)
        {
            *url = redact_url(url);
        }
        if !config.observability.webhook_token.is_empty() {
            config.observability.webhook_token = REDACTED.to_owned();
        }
        toml::to_string(&config).expect("every Config serializes to TOML")
    }
}

/// One error for text that is not TOML at all, with its line and column.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let at = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    ConfigError {
        key: String::new(),
        env: None,
        message: format!(
            "invalid TOML{}: {}",
            at.unwrap_or_default(),
            error.message().trim().replace('\n', " ")
        ),
    }
}

/// `Vec<Duration>` as a list of humantime strings (`["30s", "1m"]`).
mod duration_list {
    use std::time::Duration;

    use humantime_serde::Serde;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(Serde::from))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let list = Vec::<Serde<Duration>>::deserialize(d)?;
        Ok(list.into_iter().map(Serde::into_inner).collect())
    }

    /// `Option<Vec<Duration>>`, for per-kind overrides.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            list: &Option<Vec<Duration>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match list {
                Some(list) => super::serialize(list, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<Duration>>, D::Error> {
            let list = Option::<Vec<Serde<Duration>>>::deserialize(d)?;
            Ok(list.map(|l| l.into_iter().map(Serde::into_inner).collect()))
        }
    }
}
