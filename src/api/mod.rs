//! The admin API, defined once: one typed request and one typed reply per method (SPEC.md
//! "Admin RPC"), shared by the node (`methods`, `fleet_methods`), the client (`cli`) and the
//! human printers (`output`).
//!
//! Each method is a request type implementing [`Method`]: its wire name, its reply type, the
//! client's timeout and the checks that need nothing but the request itself (bounds, formats).
//! Checks that need the node (a known queue or job kind, a running server) stay in the
//! handler. Requests reject unknown fields; a wrong or unknown parameter is answered with
//! -32602 naming it ([`decode`]).
//!
//! The files follow the method names' prefixes: `node` (status, tree, restart, health,
//! shutdown), `jobs`, `queue`, `failed`, `vps`, `breaker`, `tenants`, `sites`, `alerts`, and
//! `debug` (test hooks, answered only with `CHOM_DEBUG_HOOKS=1`).
//!
//! Adding a method: its request and reply types and `impl Method` in the file of its prefix;
//! `impl Handle` for the request and one routing line (`methods.rs`, or `fleet_methods.rs`
//! for the fleet); a printer in `output.rs` and a subcommand in `cli.rs` when operators call
//! it; a line in SPEC.md "Admin RPC". Wire names and types are SPEC.md's: a reply field once
//! published keeps its name and type.

/// Declares a method's request type: the struct, refusing unknown fields by construction, and
/// its [`Method`] impl with the wire name and reply type, plus the `timeout` or `validate`
/// given after `impl`:
///
/// ```text
/// request! {
///     /// `queue.pause`: stop claiming from a queue.
///     Pause("queue.pause") -> Paused {
///         /// One of `queue.queues`.
///         pub queue: String,
///     }
///     impl {
///         fn validate(&self) -> Result<(), RpcError> { .. }
///     }
/// }
/// ```
macro_rules! request {
    (
        $(#[$meta:meta])*
        $name:ident($wire:literal) -> $reply:ty { $($field:tt)* }
        $(impl { $($item:tt)* })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $($field)* }

        impl $crate::api::Method for $name {
            const NAME: &'static str = $wire;
            type Reply = $reply;
            $($($item)*)?
        }
    };
}

/// Declares a method's reply type (what the node sends, what the client decodes).
macro_rules! reply {
    ($(#[$meta:meta])* $name:ident { $($field:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        pub struct $name { $($field)* }
    };
}

pub mod alerts;
pub mod breaker;
pub mod cluster;
pub mod debug;
pub mod failed;
pub mod jobs;
pub mod metrics;
pub mod node;
pub mod queue;
pub mod sites;
pub mod tenants;
pub mod ui;
pub mod vps;

use std::time::Duration;

use chom_core::config::{NAME_RULE, is_name};
use chom_core::limits::{self, LimitError, MAX_ID_CHARS, escape_control};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::rpc::protocol::RpcError;

/// How long the client waits for an answer unless a method says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One admin RPC method, implemented by its request type.
pub trait Method: Serialize + DeserializeOwned + Send + 'static {
    /// The method's name on the wire (`jobs.enqueue`).
    const NAME: &'static str;
    /// What the node answers.
    type Reply: Serialize + DeserializeOwned + Send;

    /// How long the client waits for the answer.
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    /// The checks that need only the request: bounds and formats (chom_core::limits), with
    /// messages naming the parameter. Run by [`decode`] before any handler sees the request.
    fn validate(&self) -> Result<(), RpcError> {
        Ok(())
    }
}

/// The longest decode error message sent back: serde quotes the value it refused, and a
/// refused value may be a megabyte.
const MAX_ERROR_CHARS: usize = 300;

/// The typed, validated request of method `M` from JSON-RPC `params`: absent, `null` and `[]`
/// mean no parameters; other arrays (by-position parameters) are refused, since every
/// parameter has a name. A missing, unknown or mistyped field is -32602 naming it.
pub fn decode<M: Method>(params: Value) -> Result<M, RpcError> {
    let params = match params {
        Value::Null => Value::Object(serde_json::Map::new()),
        Value::Array(items) if items.is_empty() => Value::Object(serde_json::Map::new()),
        Value::Array(_) => {
            return Err(RpcError::invalid_params(format!(
                "{} takes named parameters (an object), not an array",
                M::NAME
            )));
        }
        other => other,
    };
    let request: M = serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde names an unknown or missing field itself, not the type of a wrong value.
        let message = if path == "." || message.contains(&format!("`{path}`")) {
            message
        } else {
            format!("`{path}`: {message}")
        };
        RpcError::invalid_params(cut(&message))
    })?;
    request.validate()?;
    Ok(request)
}

/// At most [`MAX_ERROR_CHARS`] characters of `message`, marked when cut.
fn cut(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_owned(),
    }
}

/// `Ok` when `holds`, else -32602 with `message` (which names the parameter).
pub fn ensure(holds: bool, message: &'static str) -> Result<(), RpcError> {
    if holds {
        Ok(())
    } else {
        Err(RpcError::invalid_params(message))
    }
}

/// An input outside the node's bounds, as the -32602 that names the parameter.
pub fn invalid(e: LimitError) -> RpcError {
    RpcError::invalid_params(e.to_string())
}

/// At most 64 characters of `s`, for echoing a refused value back.
pub fn truncated(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

/// A refused value for an error message: cut short and with control characters escaped.
pub fn echo(s: &str) -> std::borrow::Cow<'_, str> {
    escape_control(truncated(s))
}

/// A database id: a positive integer that fits the id columns (BIGINT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Id(i64);

impl Id {
    /// An id the command line already bounded to `1..` (clap's range).
    pub fn checked(id: i64) -> Id {
        Id::try_from(id).expect("clap bounds ids to 1..")
    }

    /// The id as stored.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Id {
    type Error = String;
    fn try_from(id: i64) -> Result<Id, String> {
        if id > 0 {
            Ok(Id(id))
        } else {
            Err(format!("must be a positive integer id, got {id}"))
        }
    }
}

impl From<Id> for i64 {
    fn from(id: Id) -> i64 {
        id.0
    }
}

/// A duration on the wire: humantime text (`"30s"`, `"7days"`), as every duration in SPEC.md.
/// Only its syntax is checked here; each request bounds its own durations in `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Check an optional duration parameter against `max`.
pub fn check_duration(what: &str, d: Option<HumanDuration>, max: Duration) -> Result<(), RpcError> {
    match d {
        Some(HumanDuration(d)) => limits::check_duration(what, d, max)
            .map(|_| ())
            .map_err(invalid),
        None => Ok(()),
    }
}

/// An optional listing limit: 1 to `limits::MAX_LIST_LIMIT`.
pub fn check_limit(limit: Option<u64>) -> Result<(), RpcError> {
    match limit {
        Some(n) => limits::check_count("limit", n, 1, limits::MAX_LIST_LIMIT.into())
            .map(|_| ())
            .map_err(invalid),
        None => Ok(()),
    }
}

/// A listing limit after [`check_limit`]: 50 when absent.
pub fn list_limit(limit: Option<u64>) -> u32 {
    limit.map_or(50, |n| {
        u32::try_from(n.min(limits::MAX_LIST_LIMIT.into())).expect("bounded by MAX_LIST_LIMIT")
    })
}

/// A server id parameter: a name of at most `MAX_ID_CHARS` characters.
pub fn check_vps_id(what: &str, id: &str) -> Result<(), RpcError> {
    if is_name(id) {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!(
            "`{what}`: `{}` is not a valid vps id ({NAME_RULE}, at most {MAX_ID_CHARS} characters)",
            echo(id)
        )))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rpc::protocol::INVALID_PARAMS;

    fn refused<M: Method>(params: Value) -> String {
        match decode::<M>(params.clone()) {
            Ok(_) => panic!("{} accepted {params}", M::NAME),
            Err(e) => {
                assert_eq!(e.code, INVALID_PARAMS, "{e}");
                e.message
            }
        }
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let m = refused::<jobs::Enqueue>(json!({"kind": "noop", "bogus": 1}));
        assert!(m.starts_with("unknown field `bogus`"), "{m}");
        let m = refused::<jobs::Enqueue>(json!({"kind": "noop", "max_attempts": "x"}));
        assert!(m.starts_with("`max_attempts`:"), "{m}");
        let m = refused::<jobs::Show>(json!({"id": 0}));
        assert!(m.starts_with("`id`: must be a positive integer id"), "{m}");
        let m = refused::<node::Restart>(json!({}));
        assert!(m.contains("`path`"), "{m}");
        let m = refused::<node::Status>(json!({"verbose": true}));
        assert!(m.contains("verbose"), "{m}");
    }

    #[test]
    fn no_params_null_and_empty_arrays_mean_no_parameters() {
        for params in [json!({}), Value::Null, json!([])] {
            decode::<node::Status>(params.clone()).unwrap();
            decode::<jobs::List>(params).unwrap();
        }
        let m = refused::<jobs::List>(json!([5]));
        assert!(m.contains("named parameters"), "{m}");
    }

    #[test]
    fn a_refused_value_is_not_echoed_whole() {
        let huge = "x".repeat(100_000);
        let m = refused::<jobs::Enqueue>(json!({"kind": "noop", "max_attempts": huge}));
        assert!(m.chars().count() <= MAX_ERROR_CHARS + 1, "{}", m.len());
        assert!(m.starts_with("`max_attempts`:"), "{m}");
    }

    #[test]
    fn requests_round_trip_through_their_wire_form() {
        let request = jobs::Enqueue {
            kind: "noop".into(),
            payload: Some(json!("{\"a\":1}")),
            queue: None,
            delay: Some(HumanDuration(Duration::from_secs(90))),
            max_attempts: Some(3),
            timeout: None,
            unique_key: Some("k".into()),
        };
        let wire = serde_json::to_value(&request).unwrap();
        assert_eq!(wire.get("delay"), Some(&json!("1m 30s")));
        let back: jobs::Enqueue = decode(wire).unwrap();
        assert_eq!(back, request);
    }
}
