//! A job's (kind, payload) pair read once into a typed [`Job`].
//!
//! Payloads are read the way operators have always been able to send them: unknown fields
//! are ignored, a field of the wrong type reads as absent (a default, or the kind's "needs
//! `field`" message when it is required), and a payload that is not a JSON object reads as
//! one without fields. Only what cannot be read at all is a permanent error.

use chom_core::job::JobKind;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::JobError;
use super::debug::DebugJob;
use super::site_delete::SiteDelete;
use super::site_provision::SiteProvision;
use super::vps_exec::VpsExec;

/// A job this node can run: its kind with the kind's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `noop`: any payload.
    Noop,
    /// `vps.exec`.
    VpsExec(VpsExec),
    /// `site.provision`.
    SiteProvision(SiteProvision),
    /// `site.delete`.
    SiteDelete(SiteDelete),
    /// The `debug.*` kinds (debug hooks only).
    Debug(DebugJob),
}

impl Job {
    /// Read `payload` (JSON text) as a job of `kind`. Permanent errors, in this order: the
    /// payload is not JSON, the kind is unknown here (debug kinds need `debug_hooks`), the
    /// payload lacks what the kind needs.
    pub fn parse(kind: &str, payload: &str, debug_hooks: bool) -> Result<Job, JobError> {
        let value: Value = serde_json::from_str(payload)
            .map_err(|e| JobError::Permanent(format!("payload is not valid JSON: {e}")))?;
        let kind = JobKind::available(kind, debug_hooks)
            .ok_or_else(|| JobError::Permanent(format!("unknown job kind `{kind}`")))?;
        let fields = &Fields::of(value);
        Ok(match kind {
            JobKind::Noop => Job::Noop,
            JobKind::VpsExec => Job::VpsExec(typed(fields)?),
            JobKind::SiteProvision => Job::SiteProvision(typed(fields)?),
            JobKind::SiteDelete => Job::SiteDelete(typed(fields)?),
            JobKind::DebugRecord => Job::Debug(DebugJob::Record(typed(fields)?)),
            JobKind::DebugSleep => Job::Debug(DebugJob::Sleep(typed(fields)?)),
            JobKind::DebugFail => Job::Debug(DebugJob::Fail(typed(fields)?)),
            JobKind::DebugPanic => Job::Debug(DebugJob::Panic(typed(fields)?)),
            JobKind::DebugPanicOnce => Job::Debug(DebugJob::PanicOnce(typed(fields)?)),
        })
    }
}

/// A kind's payload struct, read from the payload's fields.
pub(super) trait Payload: Sized {
    /// The payload, or why the kind cannot run with these fields (the job's permanent error).
    fn read(fields: &Fields) -> Result<Self, String>;
}

fn typed<T: Payload>(fields: &Fields) -> Result<T, JobError> {
    T::read(fields).map_err(JobError::Permanent)
}

/// A payload's fields. A field reads as absent when it is missing, null or not of the type
/// asked for.
pub(super) struct Fields(Map<String, Value>);

impl Fields {
    /// The fields of `value` if it is an object, else none (an array is not read
    /// positionally).
    pub fn of(value: Value) -> Fields {
        match value {
            Value::Object(map) => Fields(map),
            _ => Fields(Map::new()),
        }
    }

    /// Field `name` as a `T`, if it is one.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let value = self.0.get(name).filter(|value| !value.is_null())?;
        T::deserialize(value).ok()
    }

    /// Field `name` as a `T`, or `message` as the error.
    pub fn required<T: DeserializeOwned>(&self, name: &str, message: &str) -> Result<T, String> {
        self.get(name).ok_or_else(|| message.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::debug::{Fail, Panic, PanicOnce, Record, Sleep};
    use super::*;

    fn permanent(kind: &str, payload: &str, debug: bool) -> String {
        match Job::parse(kind, payload, debug) {
            Err(JobError::Permanent(message)) => message,
            other => panic!("{kind} {payload}: expected a permanent error, got {other:?}"),
        }
    }

    #[test]
    fn the_payload_is_checked_before_the_kind() {
        assert!(permanent("nope", "{oops", false).starts_with("payload is not valid JSON: "));
        assert_eq!(permanent("nope", "{}", false), "unknown job kind `nope`");
        assert_eq!(
            permanent("debug.sleep", "{}", false),
            "unknown job kind `debug.sleep`"
        );
        assert_eq!(
            permanent("debug.nope", "{}", true),
            "unknown job kind `debug.nope`"
        );
    }

    #[test]
    fn noop_takes_any_json() {
        for payload in ["{}", "[]", "null", "3", "{\"blob\":\"x\"}"] {
            assert_eq!(
                Job::parse("noop", payload, false),
                Ok(Job::Noop),
                "{payload}"
            );
        }
    }

    #[test]
    fn vps_exec_fields_and_their_messages() {
        let job = Job::parse(
            "vps.exec",
            r#"{"vps":"web-1","command":"site:create","args":["a",2,true,1.5],"extra":1}"#,
            false,
        );
        assert_eq!(
            job,
            Ok(Job::VpsExec(VpsExec {
                vps: "web-1".into(),
                command: "site:create".into(),
                args: vec!["a".into(), "2".into(), "true".into(), "1.5".into()],
            }))
        );
        let no_args = Job::parse(
            "vps.exec",
            r#"{"vps":"v","command":"c","args":null}"#,
            false,
        );
        assert!(matches!(no_args, Ok(Job::VpsExec(p)) if p.args.is_empty()));
        let needs_vps = "vps.exec needs `vps` (a server id)";
        // Checked in the order vps, command, args, whatever the order of the fields.
        assert_eq!(permanent("vps.exec", r#"{"args":5}"#, false), needs_vps);
        assert_eq!(
            permanent("vps.exec", r#"{"vps":7,"command":"c"}"#, false),
            needs_vps
        );
        // An array is not read positionally.
        assert_eq!(permanent("vps.exec", r#"["web-1","c"]"#, false), needs_vps);
        assert_eq!(
            permanent("vps.exec", r#"{"vps":"v","args":5}"#, false),
            "vps.exec needs `command` (e.g. site:create)"
        );
        assert_eq!(
            permanent("vps.exec", r#"{"vps":"v","command":"c","args":"a"}"#, false),
            "vps.exec `args` must be an array"
        );
        assert_eq!(
            permanent(
                "vps.exec",
                r#"{"vps":"v","command":"c","args":[{}]}"#,
                false
            ),
            "vps.exec `args` must be strings, numbers or booleans"
        );
    }

    #[test]
    fn site_provision_needs_an_integer_site() {
        assert_eq!(
            Job::parse("site.provision", r#"{"site":42}"#, false),
            Ok(Job::SiteProvision(SiteProvision { site: 42 }))
        );
        for payload in [r#"{"site":"42"}"#, r#"{"site":4.5}"#, "{}", "[42]"] {
            assert_eq!(
                permanent("site.provision", payload, false),
                "site.provision needs `site` (a site id)",
                "{payload}"
            );
        }
    }

    #[test]
    fn debug_payloads_read_leniently() {
        assert_eq!(
            Job::parse("debug.sleep", r#"{"ms":"5"}"#, true),
            Ok(Job::Debug(DebugJob::Sleep(Sleep { ms: 1000 })))
        );
        assert_eq!(
            Job::parse("debug.sleep", r#"{"ms":5}"#, true),
            Ok(Job::Debug(DebugJob::Sleep(Sleep { ms: 5 })))
        );
        assert_eq!(
            Job::parse("debug.record", r#"{"file":"/f","ms":-1}"#, true),
            Ok(Job::Debug(DebugJob::Record(Record {
                file: "/f".into(),
                ms: None
            })))
        );
        assert_eq!(
            permanent("debug.record", r#"{"file":3}"#, true),
            "debug.record needs `file`"
        );
        assert_eq!(
            permanent("debug.panic_once", "{}", true),
            "debug.panic_once needs `marker`"
        );
        assert_eq!(
            Job::parse("debug.panic_once", r#"{"marker":"/m"}"#, true),
            Ok(Job::Debug(DebugJob::PanicOnce(PanicOnce {
                marker: "/m".into()
            })))
        );
        assert_eq!(
            Job::parse("debug.fail", r#"{"permanent":"yes","error":"e"}"#, true),
            Ok(Job::Debug(DebugJob::Fail(Fail {
                error: "e".into(),
                permanent: false,
            })))
        );
        assert_eq!(
            Job::parse("debug.fail", "[]", true),
            Ok(Job::Debug(DebugJob::Fail(Fail {
                error: "failed on purpose".into(),
                permanent: false,
            })))
        );
        assert_eq!(
            Job::parse("debug.panic", r#"{"file":"/p"}"#, true),
            Ok(Job::Debug(DebugJob::Panic(Panic {
                file: Some("/p".into())
            })))
        );
    }
}
