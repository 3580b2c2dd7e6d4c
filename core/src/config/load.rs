//! From a TOML table to a [`Config`], collecting every error instead of stopping at the first.
//!
//! serde stops at the first bad field, so each key is first tried on its own (a one-key table
//! deserialized into the section struct, whose other fields default); a key that fails is
//! reported with its full path and dropped, and the section is then built from the good keys.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::error::Errors;
use super::{Config, JobPolicyConfig, VpsConfig};

/// Generates the list of fixed sections and the two functions that dispatch on a section name.
macro_rules! fixed_sections {
    ($($name:ident: $ty:ty),* $(,)?) => {
        /// The `[section]` tables with a fixed set of keys (everything but `vps` and `jobs`).
        pub(super) const FIXED_SECTIONS: &[&str] = &[$(stringify!($name)),*];

        /// Loads the fixed section `name` (one of `FIXED_SECTIONS`) into `config`.
        fn load_fixed(config: &mut Config, name: &str, table: Table, errors: &mut Errors) {
            match name {
                $(stringify!($name) => {
                    if let Some(section) = entries::<$ty>(name, table, errors) {
                        config.$name = section;
                    }
                })*
                _ => {}
            }
        }

        /// True when `value` is acceptable for `key` in the fixed section `section`.
        pub(super) fn fits_fixed(section: &str, key: &str, value: &Value) -> bool {
            match section {
                $(stringify!($name) => probe::<$ty>(key, value).is_ok(),)*
                _ => false,
            }
        }
    };
}

fixed_sections! {
    node: super::NodeConfig,
    database: super::DatabaseConfig,
    cache: super::CacheConfig,
    http: super::HttpConfig,
    api: super::ApiConfig,
    ui: super::UiConfig,
    admin: super::AdminConfig,
    supervision: super::SupervisionConfig,
    queue: super::QueueConfig,
    ssh: super::SshConfig,
    breaker: super::BreakerConfig,
    health: super::HealthConfig,
    memory: super::MemoryConfig,
    observability: super::ObservabilityConfig,
    log: super::LogConfig,
}

/// Every top-level name, in the order of [`Config`]'s fields (the order errors are listed in).
pub(super) const SECTION_ORDER: &[&str] = &[
    "node",
    "database",
    "cache",
    "http",
    "api",
    "ui",
    "admin",
    "supervision",
    "queue",
    "jobs",
    "ssh",
    "breaker",
    "vps",
    "health",
    "memory",
    "observability",
    "log",
];

/// Builds the config from `root`; whatever fails keeps its default and is reported in `errors`.
pub(super) fn load(root: Table, errors: &mut Errors) -> Config {
    let mut config = Config::default();
    for (name, value) in root {
        let path = key_path("", &name);
        if FIXED_SECTIONS.contains(&name.as_str()) {
            match value {
                Value::Table(table) => load_fixed(&mut config, &name, table, errors),
                _ => errors.push(path, "expected a table"),
            }
            continue;
        }
        match (name.as_str(), value) {
            ("jobs", Value::Table(table)) => config.jobs = jobs(table, errors),
            ("jobs", _) => errors.push(path, "expected a table of [jobs.<kind>] tables"),
            ("vps", Value::Array(entries)) => config.vps = vps(entries, errors),
            ("vps", _) => errors.push(path, "expected [[vps]] entries (an array of tables)"),
            (_, Value::Table(_)) => {
                errors.push(path, unknown("section", &name, &top_level_names()));
            }
            _ => errors.push(path, unknown("key", &name, &top_level_names())),
        }
    }
    config
}

fn vps(list: Vec<Value>, errors: &mut Errors) -> Vec<VpsConfig> {
    let mut servers = Vec::with_capacity(list.len());
    for (i, entry) in list.into_iter().enumerate() {
        let path = format!("vps[{i}]");
        let parsed = match entry {
            Value::Table(table) => entries::<VpsConfig>(&path, table, errors),
            _ => {
                errors.push(path.as_str(), "expected a table");
                None
            }
        };
        // Keep the index of every later entry equal to its position in the file.
        servers.push(parsed.unwrap_or_else(|| VpsConfig::new("", "")));
    }
    servers
}

fn jobs(table: Table, errors: &mut Errors) -> std::collections::BTreeMap<String, JobPolicyConfig> {
    let mut jobs = std::collections::BTreeMap::new();
    for (kind, value) in table {
        let path = key_path("jobs", &kind);
        match value {
            Value::Table(table) => {
                if let Some(policy) = entries::<JobPolicyConfig>(&path, table, errors) {
                    jobs.insert(kind, policy);
                }
            }
            _ => errors.push(path, "expected a table of job policy overrides"),
        }
    }
    jobs
}

/// Deserializes the table at `path` key by key, reporting every bad key, then as a whole.
fn entries<T: DeserializeOwned>(path: &str, table: Table, errors: &mut Errors) -> Option<T> {
    let known = known_keys(path);
    let mut good = Table::new();
    for (key, value) in table {
        let Err(error) = probe::<T>(&key, &value) else {
            good.insert(key, value);
            continue;
        };
        let (inner, message) = describe(&error, path, &known);
        match &value {
            // serde stops at the first bad element: try each alone to report them all.
            Value::Array(items) if inner.starts_with(&format!("{key}[")) => {
                for (i, item) in items.iter().enumerate() {
                    if let Err(error) = probe::<T>(&key, &Value::Array(vec![item.clone()])) {
                        let (inner, message) = describe(&error, path, &known);
                        let rest = inner.strip_prefix(&format!("{key}[0]")).unwrap_or_default();
                        errors.push(format!("{}[{i}]{rest}", key_path(path, &key)), message);
                    }
                }
            }
            // The inner path starts at `key` for bad values; unknown keys have none.
            _ if inner.is_empty() => errors.push(key_path(path, &key), message),
            _ => errors.push(format!("{path}.{inner}"), message),
        }
    }
    match deserialize::<T>(Value::Table(good)) {
        Ok(section) => Some(section),
        Err(error) => {
            // Unreachable with per-key defaults, but never lose an error.
            let (_, message) = describe(&error, path, &[]);
            errors.push(path, message);
            None
        }
    }
}

/// The default value of `section.key` in a fixed section, if there is such a key.
pub(super) fn default_value(section: &str, key: &str) -> Option<Value> {
    match Value::try_from(Config::default()).ok()? {
        Value::Table(mut root) => match root.remove(section)? {
            Value::Table(mut table) => table.remove(key),
            _ => None,
        },
        _ => None,
    }
}

type PathError = serde_path_to_error::Error<toml::de::Error>;

fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, PathError> {
    serde_path_to_error::deserialize(value)
}

/// Tries `key = value` alone as `T`, every other field at its default.
fn probe<T: DeserializeOwned>(key: &str, value: &Value) -> Result<(), PathError> {
    let mut one = Table::new();
    one.insert(key.to_owned(), value.clone());
    deserialize::<T>(Value::Table(one)).map(drop)
}

/// The inner key path of `error` (`backoff[1]`, or empty) and a readable message; `section`
/// is the path of the table whose keys `known` lists.
fn describe(error: &PathError, section: &str, known: &[String]) -> (String, String) {
    let mut inner = String::new();
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => inner.push_str(&format!("[{index}]")),
            Segment::Map { key } => inner = key_path(&inner, key),
            Segment::Enum { variant } => inner = key_path(&inner, variant),
            Segment::Unknown => inner = key_path(&inner, "?"),
        }
    }
    let message = error.inner().message();
    let message = match message.strip_prefix("unknown field `") {
        Some(rest) => {
            let name = rest.split('`').next().unwrap_or_default();
            // serde's path ends at the unknown key. In the section itself the caller names
            // the key; in a nested table (`[api.rate_limits]`) the path says which, and the
            // suggestions come from that table.
            let parent = inner
                .strip_suffix(&key_path("", name))
                .map(|p| p.trim_end_matches('.').to_owned())
                .unwrap_or_default();
            if parent.is_empty() {
                inner.clear();
                unknown("key", name, known)
            } else {
                unknown("key", name, &known_keys(&key_path(section, &parent)))
            }
        }
        None => polish(message),
    };
    (inner, message)
}

/// "unknown key", with the closest valid name when there is a plausible one, else the list.
fn unknown(what: &str, name: &str, known: &[String]) -> String {
    let best = known
        .iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("unknown {what} (did you mean `{k}`?)"),
        None if known.is_empty() => format!("unknown {what}"),
        None => format!("unknown {what} (expected one of: {})", known.join(", ")),
    }
}

/// Rewords serde's type names into what a config author understands.
fn polish(message: &str) -> String {
    message
        .replace(
            "expected a duration",
            "expected a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"",
        )
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected u64", "expected a whole number of at least 0")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
}

/// Valid keys of the table at `path`, for suggestions.
fn known_keys(path: &str) -> Vec<String> {
    let section = path.split(['.', '[']).next().unwrap_or_default();
    let sample = match section {
        // Serialize fully populated entries: `None` fields would be skipped.
        "vps" => Value::try_from(VpsConfig {
            user: Some(String::new()),
            host_key: Some(String::new()),
            ..VpsConfig::new("", "")
        }),
        "jobs" => Value::try_from(JobPolicyConfig {
            queue: Some(String::new()),
            max_attempts: Some(0),
            timeout: Some(std::time::Duration::ZERO),
            backoff: Some(Vec::new()),
            jitter: Some(false),
        }),
        // A fixed section, or a table nested in one (`api.rate_limits`).
        _ => Value::try_from(Config::default()).map(|root| {
            path.split('.')
                .try_fold(&root, |table, name| table.get(name))
                .cloned()
                .unwrap_or(Value::Table(Table::new()))
        }),
    };
    match sample {
        Ok(Value::Table(table)) => table.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn top_level_names() -> Vec<String> {
    SECTION_ORDER.iter().map(|s| (*s).to_owned()).collect()
}

/// `parent.key`, quoting `key` the way TOML would when it is not a bare key.
pub(super) fn key_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_non_bare_keys() {
        assert_eq!(key_path("", "queue"), "queue");
        assert_eq!(
            key_path("jobs", "site.provision"),
            "jobs.\"site.provision\""
        );
        assert_eq!(key_path("jobs", "noop"), "jobs.noop");
        assert_eq!(key_path("a", "x\"y"), "a.\"x\\\"y\"");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("poll_intervall", "poll_interval"), 1);
        assert_eq!(distance("workrs", "workers"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
    }

    #[test]
    fn unknown_suggests_only_close_names() {
        let known = vec!["workers".to_owned(), "queues".to_owned()];
        assert_eq!(
            unknown("key", "workrs", &known),
            "unknown key (did you mean `workers`?)"
        );
        assert_eq!(
            unknown("key", "zzzzzz", &known),
            "unknown key (expected one of: workers, queues)"
        );
    }

    #[test]
    fn known_keys_cover_optional_fields() {
        let vps = known_keys("vps[3]");
        assert_eq!(vps, ["host", "host_key", "id", "port", "user"]);
        let jobs = known_keys("jobs.\"site.provision\"");
        assert_eq!(jobs.len(), 5);
        assert!(known_keys("queue").contains(&"poll_interval".to_owned()));
    }

    #[test]
    fn fixed_sections_are_the_config_tables() {
        let Value::Table(root) = Value::try_from(Config::default()).unwrap() else {
            panic!("config serializes to a table")
        };
        // Empty `vps` and `jobs` are not serialized: the rest are the fixed sections.
        let mut names: Vec<_> = root.keys().map(String::as_str).collect();
        let mut fixed = FIXED_SECTIONS.to_vec();
        fixed.sort_unstable();
        names.sort_unstable();
        assert_eq!(names, fixed);
        let mut order: Vec<_> = SECTION_ORDER.to_vec();
        order.retain(|n| *n != "vps" && *n != "jobs");
        assert_eq!(order, FIXED_SECTIONS);
    }
}
