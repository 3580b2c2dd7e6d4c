//! Job handlers: what each job kind does.
//!
//! A handler returns `Ok(())`, a retryable error, or a permanent one (bad payload, unknown
//! kind: retrying cannot help). A panic in a handler is a bug: it crashes the worker actor, its
//! supervisor restarts it, and the job is retried. A job turned away by its VPS (bulkhead
//! full, breaker open) is deferred: put back for later without using up an attempt.
//!
//! `vps.exec` (`{"vps": ID, "command": "site:create", "args": [...]}`) runs one `vpsmanager`
//! command; a non-zero exit is a retryable failure with the command's stderr as the reason.
//! `site.provision` (`{"site": ID}`) runs `site:create DOMAIN TYPE` on the site's server and
//! marks the site active; when its attempts run out the final-failure hook marks it failed
//! with the reason.
//!
//! With debug hooks on (`CHOM_DEBUG_HOOKS=1`, tests only) some `debug.*` kinds exist to make
//! jobs record, sleep, fail or panic on purpose.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chom_core::inventory::SiteStatus;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::backends::PublishedBackends;
use crate::fleet::{ExecError, ExecRequest, Fleet};

/// Why a job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a remote host down, a timeout).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (unparseable payload, unknown kind).
    #[error("{0}")]
    Permanent(String),
    /// The job could not start for a reason outside it (its server's bulkhead is full or its
    /// breaker is open): run it again after `after`, without counting this attempt.
    #[error("{reason}")]
    Defer {
        /// Why.
        reason: String,
        /// When to try again.
        after: Duration,
    },
}

/// What a handler may use.
pub struct JobEnv<'a> {
    /// The job's id.
    pub id: i64,
    /// The node running it.
    pub node: &'a str,
    /// Whether the debug kinds are available.
    pub debug_hooks: bool,
    /// The fleet (and, through it, the store); `None` in unit tests of the pure kinds.
    pub fleet: Option<&'a Arc<Fleet>>,
}

/// Kinds this node can run.
pub fn known_kind(kind: &str, debug_hooks: bool) -> bool {
    matches!(kind, "noop" | "vps.exec" | "site.provision")
        || (debug_hooks && kind.starts_with("debug."))
}

/// Run one attempt of a job.
pub async fn run(kind: &str, payload: &str, env: &JobEnv<'_>) -> Result<(), JobError> {
    let payload: Value = serde_json::from_str(payload)
        .map_err(|e| JobError::Permanent(format!("payload is not valid JSON: {e}")))?;
    match kind {
        "noop" => Ok(()),
        "vps.exec" => vps_exec(&payload, env).await,
        "site.provision" => site_provision(&payload, env).await,
        k if env.debug_hooks && k.starts_with("debug.") => debug(k, &payload, env).await,
        other => Err(JobError::Permanent(format!("unknown job kind `{other}`"))),
    }
}

/// Per-kind hook run once when a job fails for good (after its last attempt, or at once for a
/// permanent error): `site.provision` marks its site failed with the reason.
pub fn on_final_failure(
    backends: &PublishedBackends,
    debug_hooks: bool,
    kind: &str,
    payload: &str,
    error: &str,
) {
    if kind == "site.provision"
        && let Some(site) = serde_json::from_str::<Value>(payload)
            .ok()
            .and_then(|p| p.get("site").and_then(Value::as_i64))
    {
        let (backends, error) = (backends.clone(), error.to_owned());
        // The worker must not wait on the database here; a few tries, then a loud log line.
        tokio::spawn(async move { mark_site_failed(&backends, site, &error).await });
    }
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

async fn mark_site_failed(backends: &PublishedBackends, site: i64, reason: &str) {
    for attempt in 1..=5u32 {
        let result = match backends.current() {
            Some(b) => chom_store::with_timeout(
                Duration::from_secs(10),
                b.store
                    .set_site_status(site, SiteStatus::Failed, Some(reason)),
            )
            .await
            .map_err(|e| e.to_string()),
            None => Err("the store is not running".to_owned()),
        };
        match result {
            Ok(_) => {
                warn!(site, %reason, "site provisioning failed for good; site marked failed");
                return;
            }
            Err(error) if attempt == 5 => {
                error!(site, %error, %reason, "cannot mark the site failed; set it by hand");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
        }
    }
}

fn fleet<'a>(env: &'a JobEnv<'_>) -> Result<&'a Arc<Fleet>, JobError> {
    env.fleet
        .ok_or_else(|| JobError::Retryable("the fleet is not running on this node".into()))
}

/// Map a fleet error to what the job does next.
fn exec_error(error: ExecError) -> JobError {
    match error {
        ExecError::Rejected { reason, retry_in } => JobError::Defer {
            reason,
            after: retry_in,
        },
        ExecError::UnknownVps(_) | ExecError::InvalidCommand(_) | ExecError::Security(_) => {
            JobError::Permanent(error.to_string())
        }
        ExecError::Transport(_) | ExecError::Timeout(_) | ExecError::Local(_) => {
            JobError::Retryable(error.to_string())
        }
    }
}

/// A command's result as the job's outcome: exit 0 succeeds; otherwise the reason names the
/// exit status and the end of stderr (or stdout).
fn command_result(vps: &str, command: &str, output: &chom_ssh::Output) -> Result<(), JobError> {
    if output.success() {
        return Ok(());
    }
    let status = match (&output.exit_status, &output.exit_signal) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without an exit status".to_owned(),
    };
    let detail = if output.stderr.trim().is_empty() {
        output.stdout.trim()
    } else {
        output.stderr.trim()
    };
    let tail: String = {
        let chars: Vec<char> = detail.chars().collect();
        chars[chars.len().saturating_sub(500)..].iter().collect()
    };
    Err(JobError::Retryable(if tail.is_empty() {
        format!("{command} on {vps} {status}")
    } else {
        format!("{command} on {vps} {status}: {tail}")
    }))
}

async fn vps_exec(payload: &Value, env: &JobEnv<'_>) -> Result<(), JobError> {
    let vps = payload
        .get("vps")
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Permanent("vps.exec needs `vps` (a server id)".into()))?;
    let command = payload
        .get("command")
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Permanent("vps.exec needs `command` (e.g. site:create)".into()))?;
    let args = match payload.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(JobError::Permanent(
                    "vps.exec `args` must be strings, numbers or booleans".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(JobError::Permanent(
                "vps.exec `args` must be an array".into(),
            ));
        }
    };
    let output = fleet(env)?
        .exec(ExecRequest {
            vps,
            command,
            args: &args,
        })
        .await
        .map_err(exec_error)?;
    command_result(vps, command, &output)
}

async fn site_provision(payload: &Value, env: &JobEnv<'_>) -> Result<(), JobError> {
    let id = payload
        .get("site")
        .and_then(Value::as_i64)
        .ok_or_else(|| JobError::Permanent("site.provision needs `site` (a site id)".into()))?;
    let fleet = fleet(env)?;
    let backends = fleet
        .ctx
        .backends()
        .ok_or_else(|| JobError::Retryable("the store is not running".into()))?;
    let limit = Duration::from_secs(10);
    let site = chom_store::with_timeout(limit, backends.store.site(id))
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?
        .ok_or_else(|| JobError::Permanent(format!("no site {id}")))?;
    if site.status == SiteStatus::Active {
        return Ok(());
    }
    let args = [site.domain.clone(), site.site_type.clone()];
    let output = fleet
        .exec(ExecRequest {
            vps: &site.vps_id,
            command: "site:create",
            args: &args,
        })
        .await
        .map_err(exec_error)?;
    command_result(&site.vps_id, "site:create", &output)?;
    chom_store::with_timeout(
        limit,
        backends.store.set_site_status(id, SiteStatus::Active, None),
    )
    .await
    .map_err(|e| JobError::Retryable(format!("site created but not marked active: {e}")))?;
    info!(site = id, domain = %site.domain, vps = %site.vps_id, "site provisioned");
    Ok(())
}

/// Append "id node start_unix_micros" to `path`.
fn record_start(
    path: &str,
    env: &JobEnv<'_>,
    started: std::time::SystemTime,
) -> Result<(), JobError> {
    let micros = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let line = format!("{} {} {micros}\n", env.id, env.node);
    // One write(2) of a short line with O_APPEND: lines from several processes never interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| JobError::Retryable(format!("cannot append to {path}: {e}")))
}

async fn debug(kind: &str, payload: &Value, env: &JobEnv<'_>) -> Result<(), JobError> {
    let field = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    match kind {
        // Append "id node start_unix_micros" to a file: a side table of executions for
        // exactly-once checks and pickup-latency measurements.
        "debug.record" => {
            let path = field("file")
                .ok_or_else(|| JobError::Permanent("debug.record needs `file`".into()))?;
            let started = std::time::SystemTime::now();
            if let Some(ms) = payload.get("ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            record_start(&path, env, started)
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
        // Panic on every attempt: a job that crashes whichever worker runs it (recording its
        // start in `file` first, when given).
        "debug.panic" => {
            if let Some(path) = field("file") {
                record_start(&path, env, std::time::SystemTime::now())?;
            }
            panic!("debug.panic: panicking on purpose (job {})", env.id)
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
            fleet: None,
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
