//! The `debug.*` kinds (debug hooks on, `CHOM_DEBUG_HOOKS=1`, tests only): jobs that record,
//! sleep, fail or panic on purpose. Any of them may name a `hook_file`, where the
//! final-failure hook writes the job's last error.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use chom_core::job::JobKind;

use super::payload::{Fields, Payload};
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
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The file appended to.
    pub file: String,
    /// Time to sleep before recording (the start time is taken before it).
    pub ms: Option<u64>,
}

impl Payload for Record {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(Record {
            file: fields.required("file", "debug.record needs `file`")?,
            ms: fields.get("ms"),
        })
    }
}

/// `debug.sleep`: sleep `ms` (1000 when not given).
#[derive(Debug, Clone, PartialEq)]
pub struct Sleep {
    /// Milliseconds.
    pub ms: u64,
}

impl Payload for Sleep {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(Sleep {
            ms: fields.get("ms").unwrap_or(1000),
        })
    }
}

/// `debug.fail`: fail with `error`, permanently when `permanent` is true.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    /// The error ("failed on purpose" when not given).
    pub error: String,
    /// Whether the failure is permanent.
    pub permanent: bool,
}

impl Payload for Fail {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(Fail {
            error: fields
                .get("error")
                .unwrap_or_else(|| "failed on purpose".into()),
            permanent: fields.get("permanent") == Some(true),
        })
    }
}

/// `debug.panic`: panic on every attempt, a job that crashes whichever worker runs it
/// (recording its start in `file` first, when given).
#[derive(Debug, Clone, PartialEq)]
pub struct Panic {
    /// Where to record the start.
    pub file: Option<String>,
}

impl Payload for Panic {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(Panic {
            file: fields.get("file"),
        })
    }
}

/// `debug.panic_once`: panic the first time (creating `marker`), succeed afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct PanicOnce {
    /// The file whose creation marks the first attempt.
    pub marker: String,
}

impl Payload for PanicOnce {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(PanicOnce {
            marker: fields.required("marker", "debug.panic_once needs `marker`")?,
        })
    }
}

/// The file the final-failure hook writes for a debug job, if it names one (`hook_file`,
/// which every debug payload may carry). Read apart from the kind's own fields, so that the
/// hook runs even for a payload the kind refused.
pub(super) fn hook_file(kind: &str, payload: &str, debug_hooks: bool) -> Option<String> {
    JobKind::available(kind, debug_hooks).filter(|k| k.is_debug())?;
    let value = serde_json::from_str(payload).ok()?;
    Fields::of(value).get("hook_file")
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
