//! Configuration errors: one [`ConfigError`] per problem, all of them in [`ConfigErrors`].

use std::collections::BTreeMap;
use std::fmt;

/// One problem with the configuration, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full key path, e.g. `queue.poll_interval`, `vps[1].host`, `jobs."site.provision".queue`;
    /// empty for problems with the file as a whole (unreadable, not TOML).
    pub key: String,
    /// The environment variable the offending value came from, if any.
    pub env: Option<String>,
    /// What is wrong, lowercase, without trailing period.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.key, self.message)?;
        }
        if let Some(env) = &self.env {
            write!(f, " (from {env})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in the order they were found (never empty when
/// returned by the loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One line per error: `key: message` plus ` (from CHOM_X)` for environment values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// True when there are no errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The errors one by one.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Collects errors while loading, remembering which keys came from the environment.
#[derive(Debug, Default)]
pub(super) struct Errors {
    list: Vec<ConfigError>,
    /// Key path (`queue.workers`) -> environment variable that set it.
    origins: BTreeMap<String, String>,
}

impl Errors {
    /// Records that `key` was set by the environment variable `var`.
    pub(super) fn set_origin(&mut self, key: String, var: &str) {
        self.origins.insert(key, var.to_owned());
    }

    /// Adds an error about `key`, naming the environment variable the value came from.
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let env = self
            .origins
            .iter()
            .find(|(origin, _)| is_within(&key, origin))
            .map(|(_, var)| var.clone());
        self.push_raw(key, env, message.into());
    }

    /// Adds an error about an environment variable itself (it names no valid key).
    pub(super) fn push_env(&mut self, key: String, var: &str, message: impl Into<String>) {
        self.push_raw(key, Some(var.to_owned()), message.into());
    }

    /// True when an error about `key`, or about a part of it, was already added.
    pub(super) fn reported(&self, key: &str) -> bool {
        self.list
            .iter()
            .any(|e| is_within(key, &e.key) || is_within(&e.key, key))
    }

    /// Adds a semantic error about `key`, unless that key (or a part of it) already has one:
    /// a value that failed to parse kept its default, which must not be blamed a second time.
    pub(super) fn check(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        if !self.reported(&key) {
            self.push(key, message);
        }
    }

    fn push_raw(&mut self, key: String, env: Option<String>, message: String) {
        // The Display contract is one line per error.
        let message = message.replace(['\n', '\r'], " ");
        self.list.push(ConfigError { key, env, message });
    }

    /// `Ok(value)` when nothing was reported, else the errors in the order of `sections`
    /// (whole-file errors first, unknown sections last), numbers within a key compared as
    /// numbers (`vps[2]` before `vps[10]`).
    pub(super) fn finish<T>(mut self, value: T, sections: &[&str]) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            return Ok(value);
        }
        self.list.sort_by_cached_key(|e| {
            let section = e.key.split(['.', '[']).next().unwrap_or_default();
            let rank = if e.key.is_empty() {
                0
            } else {
                sections
                    .iter()
                    .position(|s| *s == section)
                    .map_or(usize::MAX, |i| i + 1)
            };
            (rank, natural(&e.key))
        });
        Err(ConfigErrors(self.list))
    }
}

/// A piece of a key, for sorting with numbers compared by value.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chunk {
    Number(u64),
    Text(String),
}

fn natural(key: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut rest = key;
    while let Some(first) = rest.chars().next() {
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        chunks.push(match chunk.parse() {
            Ok(n) if digit => Chunk::Number(n),
            _ => Chunk::Text(chunk.to_owned()),
        });
        rest = tail;
    }
    chunks
}

/// True when `key` is `outer` or a key inside it (`queue.backoff[1]` is within `queue.backoff`).
fn is_within(key: &str, outer: &str) -> bool {
    !outer.is_empty()
        && key
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_per_error_with_the_variable() {
        let errors = ConfigErrors(vec![
            ConfigError {
                key: "queue.workers".into(),
                env: Some("CHOM_QUEUE_WORKERS".into()),
                message: "must be between 1 and 1024, got 0".into(),
            },
            ConfigError {
                key: String::new(),
                env: None,
                message: "cannot read /x: no such file".into(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "queue.workers: must be between 1 and 1024, got 0 (from CHOM_QUEUE_WORKERS)\n\
             cannot read /x: no such file"
        );
    }

    #[test]
    fn errors_sort_by_section_then_naturally() {
        let mut errors = Errors::default();
        for key in [
            "zzz",
            "vps[10].id",
            "queue.workers",
            "vps[2].id",
            "",
            "node.name",
        ] {
            errors.push(key, "x");
        }
        let list = errors.finish((), &["node", "queue", "vps"]).unwrap_err();
        let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "",
                "node.name",
                "queue.workers",
                "vps[2].id",
                "vps[10].id",
                "zzz"
            ]
        );
    }

    #[test]
    fn origins_cover_nested_keys_only() {
        assert!(is_within("queue.backoff[1]", "queue.backoff"));
        assert!(is_within("queue.backoff", "queue.backoff"));
        assert!(!is_within("queue.backoffs", "queue.backoff"));
        assert!(!is_within("queue", "queue.backoff"));
        assert!(!is_within("queue", ""));
    }

    #[test]
    fn check_skips_keys_that_already_failed() {
        let mut errors = Errors::default();
        errors.push("vps[0].port", "invalid type");
        errors.check("vps[0].port", "must not be 0");
        errors.check("vps[0]", "something about the entry");
        errors.check("vps[1].port", "must not be 0");
        let keys: Vec<_> = errors.list.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["vps[0].port", "vps[1].port"]);
    }
}
