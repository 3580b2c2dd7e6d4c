//! Job handlers: what each job kind does.
//!
//! A handler returns `Ok(())`, a retryable error, or a permanent one (bad payload, unknown
//! kind: retrying cannot help). A panic in a handler is a bug: it crashes the worker actor, its
//! supervisor restarts it, and the job is retried. `vps.exec` and `site.provision` arrive with
//! the fleet.
//!
//! With debug hooks on (`CHOM_DEBUG_HOOKS=1`, tests only) some `debug.*` kinds exist to make
//! jobs record, sleep, fail or panic on purpose.

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

/// Why a job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a remote host down, a timeout).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (unparseable payload, unknown kind).
    #[error("{0}")]
    Permanent(String),
}

/// What a handler may use.
pub struct JobEnv<'a> {
    /// The job's id.
    pub id: i64,
    /// The node running it.
    pub node: &'a str,
    /// Whether the debug kinds are available.
    pub debug_hooks: bool,
}

/// Kinds this node can run.
pub fn known_kind(kind: &str, debug_hooks: bool) -> bool {
    matches!(kind, "noop") || (debug_hooks && kind.starts_with("debug."))
}

/// Run one attempt of a job.
pub async fn run(kind: &str, payload: &str, env: &JobEnv<'_>) -> Result<(), JobError> {
    let payload: Value = serde_json::from_str(payload)
        .map_err(|e| JobError::Permanent(format!("payload is not valid JSON: {e}")))?;
    match kind {
        "noop" => Ok(()),
        k if env.debug_hooks && k.starts_with("debug.") => debug(k, &payload, env).await,
        other => Err(JobError::Permanent(format!("unknown job kind `{other}`"))),
    }
}

/// Per-kind hook run once when a job fails for good (after its last attempt, or at once for a
/// permanent error). `site.provision` will mark its site failed here.
pub fn on_final_failure(kind: &str, payload: &str, error: &str, debug_hooks: bool) {
    if debug_hooks && kind.starts_with("debug.") {
        // Tests observe the hook through a file named in the payload.
        let hook_file = serde_json::from_str::<Value>(payload).ok().and_then(|p| {
            p.get("hook_file")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(path) = hook_file {
            let _ = std::fs::write(path, error);
        }
    }
}

async fn debug(kind: &str, payload: &Value, env: &JobEnv<'_>) -> Result<(), JobError> {
    let field = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    match kind {
        // Append "id node start_unix_micros" to a file: a side table of executions for
        // exactly-once checks and pickup-latency measurements.
        "debug.record" => {
            let path = field("file")
                .ok_or_else(|| JobError::Permanent("debug.record needs `file`".into()))?;
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            if let Some(ms) = payload.get("ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let line = format!("{} {} {micros}\n", env.id, env.node);
            // One write(2) of a short line with O_APPEND: lines from several processes never interleave.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| JobError::Retryable(format!("cannot append to {path}: {e}")))
        }
        "debug.sleep" => {
            let ms = payload.get("ms").and_then(Value::as_u64).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        "debug.fail" => {
            let message = field("error").unwrap_or_else(|| "failed on purpose".into());
            if payload.get("permanent").and_then(Value::as_bool) == Some(true) {
                Err(JobError::Permanent(message))
            } else {
                Err(JobError::Retryable(message))
            }
        }
        // Panic the first time (creating `marker`), succeed afterwards.
        "debug.panic_once" => {
            let marker = field("marker")
                .ok_or_else(|| JobError::Permanent("debug.panic_once needs `marker`".into()))?;
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
            {
                panic!("debug.panic_once: panicking on purpose (job {})", env.id);
            }
            Ok(())
        }
        other => Err(JobError::Permanent(format!("unknown job kind `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(debug: bool) -> JobEnv<'static> {
        JobEnv {
            id: 1,
            node: "n",
            debug_hooks: debug,
        }
    }

    #[tokio::test]
    async fn bad_payload_and_unknown_kind_are_permanent() {
        assert!(
            matches!(run("noop", "{oops", &env(false)).await, Err(JobError::Permanent(m)) if m.contains("not valid JSON"))
        );
        assert!(
            matches!(run("nope", "{}", &env(false)).await, Err(JobError::Permanent(m)) if m.contains("unknown job kind"))
        );
        assert_eq!(run("noop", "{}", &env(false)).await, Ok(()));
        // Debug kinds do not exist without debug hooks.
        assert!(matches!(
            run("debug.sleep", "{}", &env(false)).await,
            Err(JobError::Permanent(_))
        ));
        assert!(matches!(
            run("debug.fail", "{\"permanent\":true}", &env(true)).await,
            Err(JobError::Permanent(_))
        ));
        assert!(matches!(
            run("debug.fail", "{}", &env(true)).await,
            Err(JobError::Retryable(_))
        ));
    }
}
