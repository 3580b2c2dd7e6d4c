//! Environment overrides, applied to the parsed TOML table before it is loaded.
//!
//! `CHOM_<SECTION>_<KEY>` sets any key of a fixed section (`CHOM_QUEUE_POLL_INTERVAL=250ms`);
//! [`ALIASES`] are the shorter names SPEC.md promises. The environment is passed in, never read
//! here, so tests are hermetic.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::error::Errors;
use super::load::{FIXED_SECTIONS, default_value, fits_fixed, key_path};

/// Prefix of every variable the configuration looks at.
pub const ENV_PREFIX: &str = "CHOM_";

/// Short variable names and the `(section, key)` they set. The generic
/// `CHOM_<SECTION>_<KEY>` name of the same key wins when both are set.
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("CHOM_PROMETHEUS_URL", "observability", "prometheus_url"),
    ("CHOM_LOKI_URL", "observability", "loki_url"),
    ("CHOM_ALERTMANAGER_URL", "observability", "alertmanager_url"),
    ("CHOM_GRAFANA_URL", "observability", "grafana_url"),
    ("CHOM_SSH_KEY_PATH", "ssh", "private_key"),
];

/// What one variable means for the configuration.
enum Target {
    /// Sets `section.key`.
    Key(&'static str, String),
    /// Not a configuration variable (`CHOM_CONFIG`, `CHOM_DEBUG_HOOKS`, ...).
    Ignore,
    /// Looks like a configuration variable but cannot be one.
    Reject(&'static str, &'static str),
}

fn target(var: &str) -> Target {
    if let Some((_, section, key)) = ALIASES.iter().find(|(name, _, _)| *name == var) {
        return Target::Key(section, (*key).to_owned());
    }
    let Some((section, key)) = var
        .strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.split_once('_'))
    else {
        return Target::Ignore;
    };
    let section = section.to_ascii_lowercase();
    match FIXED_SECTIONS.iter().find(|s| **s == section) {
        Some(_) if key.is_empty() => Target::Reject("", "names a section but no key"),
        Some(s) => Target::Key(s, key.to_ascii_lowercase()),
        None if section == "vps" => {
            Target::Reject("vps", "[[vps]] entries cannot be set from the environment")
        }
        None if section == "jobs" => Target::Reject(
            "jobs",
            "[jobs.<kind>] overrides cannot be set from the environment",
        ),
        None => Target::Ignore,
    }
}

/// Applies every `CHOM_*` override in `env` to `root`, recording where each value came from.
pub(super) fn apply(root: &mut Table, env: &[(String, String)], errors: &mut Errors) {
    // Last occurrence of a name wins, as in a shell; then a fixed order so that the generic
    // name of a key reliably overrides its alias.
    let vars: BTreeMap<&str, &str> = env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut targets: Vec<(bool, &str, &str, &'static str, String)> = Vec::new();
    for (var, raw) in vars {
        match target(var) {
            Target::Key(section, key) => {
                let is_alias = ALIASES.iter().any(|(name, _, _)| *name == var);
                targets.push((!is_alias, var, raw, section, key));
            }
            Target::Ignore => {}
            Target::Reject(key, message) => {
                let key = if key.is_empty() {
                    var.trim_start_matches(ENV_PREFIX)
                        .trim_end_matches('_')
                        .to_ascii_lowercase()
                } else {
                    key.to_owned()
                };
                errors.push_env(key, var, message);
            }
        }
    }
    targets.sort_by_key(|(generic, ..)| *generic);
    for (_, var, raw, section, key) in targets {
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        // A section that is not a table is reported by the loader; nothing to override.
        let Value::Table(table) = entry else { continue };
        table.insert(key.clone(), coerce(section, &key, raw));
        errors.set_origin(key_path(section, &key), var);
    }
}

/// The TOML value an environment string stands for: for a list key, TOML (`["a", "b"]`) or
/// comma-separated items (`CHOM_QUEUE_BACKOFF=1s,5s`); otherwise the string itself when the
/// key takes one (so `CHOM_NODE_NAME=123` stays a name), else what it parses to as a TOML
/// value (`8`, `true`, `0.5`). When nothing fits, the most plausible reading is kept so the
/// loader reports why.
fn coerce(section: &str, key: &str, raw: &str) -> Value {
    let literal = Value::String(raw.to_owned());
    let parsed = parse_value(raw);
    if matches!(default_value(section, key), Some(Value::Array(_))) {
        if raw.trim_start().starts_with('[') {
            return parsed.unwrap_or(literal);
        }
        return Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        );
    }
    if fits_fixed(section, key, &literal) {
        return literal;
    }
    match parsed {
        Some(value) if fits_fixed(section, key, &value) => value,
        Some(value) if !value.is_str() => value,
        _ => literal,
    }
}

/// `raw` read as a single TOML value, if it is one.
fn parse_value(raw: &str) -> Option<Value> {
    // A newline could smuggle in further keys.
    if raw.contains(['\n', '\r']) {
        return None;
    }
    let mut table: Table = toml::from_str(&format!("v = {raw}")).ok()?;
    if table.len() != 1 {
        return None;
    }
    table.remove("v")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_follows_the_field_type() {
        assert_eq!(coerce("queue", "workers", "8"), Value::Integer(8));
        assert_eq!(coerce("queue", "jitter", "true"), Value::Boolean(true));
        assert_eq!(
            coerce("supervision", "backoff_jitter", "0.5"),
            Value::Float(0.5)
        );
        assert_eq!(coerce("node", "name", "123"), Value::String("123".into()));
        assert_eq!(
            coerce("queue", "poll_interval", "250ms"),
            Value::String("250ms".into())
        );
        let list = |items: &[&str]| {
            Value::Array(items.iter().map(|s| Value::String((*s).into())).collect())
        };
        assert_eq!(
            coerce("queue", "queues", r#"["a", "b"]"#),
            list(&["a", "b"])
        );
        assert_eq!(coerce("queue", "backoff", "1s, 5s"), list(&["1s", "5s"]));
        assert_eq!(
            coerce("ssh", "idempotent_commands", "site:list"),
            list(&["site:list"])
        );
        assert_eq!(coerce("ssh", "idempotent_commands", ""), list(&[]));
        // Nothing fits: keep the parsed number so the error says "integer -1".
        assert_eq!(coerce("queue", "workers", "-1"), Value::Integer(-1));
        assert_eq!(
            coerce("queue", "workers", "many"),
            Value::String("many".into())
        );
    }

    #[test]
    fn parse_value_rejects_smuggled_keys() {
        assert_eq!(parse_value("1\nx = 2"), None);
        assert_eq!(parse_value("1 # comment"), Some(Value::Integer(1)));
        assert_eq!(parse_value("postgres://x"), None);
    }

    #[test]
    fn targets() {
        assert!(
            matches!(target("CHOM_QUEUE_POLL_INTERVAL"), Target::Key("queue", k) if k == "poll_interval")
        );
        assert!(matches!(target("CHOM_SSH_KEY_PATH"), Target::Key("ssh", k) if k == "private_key"));
        assert!(
            matches!(target("CHOM_GRAFANA_URL"), Target::Key("observability", k) if k == "grafana_url")
        );
        for ignored in [
            "CHOM_CONFIG",
            "CHOM_DEBUG_HOOKS",
            "CHOM_LOG",
            "CHOM_TEST_PG_URL",
            "PATH",
        ] {
            assert!(matches!(target(ignored), Target::Ignore), "{ignored}");
        }
        assert!(matches!(target("CHOM_QUEUE_"), Target::Reject(..)));
        assert!(matches!(target("CHOM_VPS_HOST"), Target::Reject("vps", _)));
    }
}
