//! The `debug.*` kinds (debug hooks on, `CHOM_DEBUG_HOOKS=1`, tests only): jobs that record,
//! sleep, fail or panic on purpose. Any of them may name a `hook_file`, where the
//! final-failure hook writes the job's last error.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use chom_core::job::JobKind;
use serde::Deserialize;

use super::payload::{Lenient, as_object};
use super::{JobEnv, JobError};

/// A debug job with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum DebugJob {
    /// `debug.record`.
    Record(Record),
    /// `debug.sleep`.
    Sleep(Sleep),
    /// `debug.fail`.
    Fail(Fail),
    /// `debug.panic`.
    Panic(Panic),
    /// `debug.panic_once`.
    PanicOnce(PanicOnce),
}

/// `debug.record`: append "id node start_unix_micros" to `file` (a side table of executions
/// for exactly-once checks and pickup-latency measurements), after sleeping `ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RecordFields")]
pub struct Record {
    /// The file appended to.
    pub file: String,
    /// Time to sleep before recording (the start time is taken before it).
    pub ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RecordFields {
    file: Lenient<String>,
    ms: Lenient<u64>,
}

impl TryFrom<RecordFields> for Record {
    type Error = String;

    fn try_from(fields: RecordFields) -> Result<Self, String> {
        Ok(Record {
            file: fields.file.required("debug.record needs `file`")?,
            ms: fields.ms.0,
        })
    }
}

/// `debug.sleep`: sleep `ms` (1000 when not given).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "SleepFields")]
pub struct Sleep {
    /// Milliseconds.
    pub ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SleepFields {
    ms: Lenient<u64>,
}

impl From<SleepFields> for Sleep {
    fn from(fields: SleepFields) -> Self {
        Sleep {
            ms: fields.ms.0.unwrap_or(1000),
        }
    }
}

/// `debug.fail`: fail with `error`, permanently when `permanent` is true.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "FailFields")]
pub struct Fail {
    /// The error ("failed on purpose" when not given).
    pub error: String,
    /// Whether the failure is permanent.
    pub permanent: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FailFields {
    error: Lenient<String>,
    permanent: Lenient<bool>,
}

impl From<FailFields> for Fail {
    fn from(fields: FailFields) -> Self {
        Fail {
            error: fields.error.0.unwrap_or_else(|| "failed on purpose".into()),
            permanent: fields.permanent.0 == Some(true),
        }
    }
}

/// `debug.panic`: panic on every attempt, a job that crashes whichever worker runs it
/// (recording its start in `file` first, when given).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "PanicFields")]
pub struct Panic {
    /// Where to record the start.
    pub file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PanicFields {
    file: Lenient<String>,
}

impl From<PanicFields> for Panic {
    fn from(fields: PanicFields) -> Self {
        Panic {
            file: fields.file.0,
        }
    }
}

/// `debug.panic_once`: panic the first time (creating `marker`), succeed afterwards.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "PanicOnceFields")]
pub struct PanicOnce {
    /// The file whose creation marks the first attempt.
    pub marker: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PanicOnceFields {
    marker: Lenient<String>,
}

impl TryFrom<PanicOnceFields> for PanicOnce {
    type Error = String;

    fn try_from(fields: PanicOnceFields) -> Result<Self, String> {
        Ok(PanicOnce {
            marker: fields.marker.required("debug.panic_once needs `marker`")?,
        })
    }
}

/// What every debug payload may carry, read apart from the kind's own fields so that the
/// hook runs even for a payload the kind refused.
#[derive(Deserialize)]
struct Hook {
    #[serde(default)]
    hook_file: Lenient<String>,
}

/// The file the final-failure hook writes for a debug job, if it names one.
pub(super) fn hook_file(kind: &str, payload: &str, debug_hooks: bool) -> Option<String> {
    JobKind::available(kind, debug_hooks).filter(|k| k.is_debug())?;
    let value = serde_json::from_str(payload).ok()?;
    serde_json::from_value::<Hook>(as_object(value))
        .ok()?
        .hook_file
        .0
}

/// Run one attempt.
pub(super) async fn run(job: DebugJob, env: &JobEnv<'_>) -> Result<(), JobError> {
    match job {
        DebugJob::Record(Record { file, ms }) => {
            let started = SystemTime::now();
            if let Some(ms) = ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            record_start(&file, env, started)
        }
        DebugJob::Sleep(Sleep { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        DebugJob::Fail(Fail { error, permanent }) => Err(if permanent {
            JobError::Permanent(error)
        } else {
            JobError::Retryable(error)
        }),
        DebugJob::Panic(Panic { file }) => {
            if let Some(path) = file {
                record_start(&path, env, SystemTime::now())?;
            }
            panic!("debug.panic: panicking on purpose (job {})", env.id)
        }
        DebugJob::PanicOnce(PanicOnce { marker }) => {
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
    }
}

/// Append "id node start_unix_micros" to `path`.
fn record_start(path: &str, env: &JobEnv<'_>, started: SystemTime) -> Result<(), JobError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_file_is_read_even_from_a_payload_the_kind_refuses() {
        let payload = r#"{"hook_file":"/tmp/h"}"#;
        // debug.record without `file` fails to parse, yet its hook still runs.
        assert_eq!(
            hook_file("debug.record", payload, true).as_deref(),
            Some("/tmp/h")
        );
        assert_eq!(hook_file("debug.record", payload, false), None);
        assert_eq!(hook_file("noop", payload, true), None);
        assert_eq!(hook_file("debug.fail", r#"{"hook_file":1}"#, true), None);
        assert_eq!(hook_file("debug.fail", "{oops", true), None);
    }
}
