//! `vps.exec` (`{"vps": ID, "command": "site:create", "args": [...]}`): one `vpsmanager`
//! command on a server; a non-zero exit is a retryable failure with the command's stderr as
//! the reason.

use serde_json::Value;

use super::payload::{Fields, Payload};
use super::{JobEnv, JobError, fleet};
use crate::fleet::ExecRequest;

/// The payload of `vps.exec`.
#[derive(Debug, Clone, PartialEq)]
pub struct VpsExec {
    /// Server id.
    pub vps: String,
    /// Command name (`site:create`).
    pub command: String,
    /// Arguments; numbers and booleans are sent as their JSON text.
    pub args: Vec<String>,
}

impl Payload for VpsExec {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(VpsExec {
            vps: fields.required("vps", "vps.exec needs `vps` (a server id)")?,
            command: fields.required("command", "vps.exec needs `command` (e.g. site:create)")?,
            args: args(fields.get("args"))?,
        })
    }
}

/// `args` as command-line words: absent or null is none.
fn args(value: Option<Value>) -> Result<Vec<String>, String> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("vps.exec `args` must be an array".into()),
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err("vps.exec `args` must be strings, numbers or booleans".into()),
        })
        .collect()
}

/// Run the command.
pub(super) async fn run(job: &VpsExec, env: &JobEnv<'_>) -> Result<(), JobError> {
    let output = fleet(env)?
        .exec(ExecRequest {
            vps: &job.vps,
            command: &job.command,
            args: &job.args,
        })
        .await?;
    command_result(&job.vps, &job.command, &output)
}

/// A command's result as the job's outcome: exit 0 succeeds; otherwise the reason names the
/// exit status and the end of stderr (or stdout).
pub(super) fn command_result(
    vps: &str,
    command: &str,
    output: &chom_ssh::Output,
) -> Result<(), JobError> {
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
