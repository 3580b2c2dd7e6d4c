//! Jobs: `jobs.enqueue`, `jobs.show`, `jobs.list`, `jobs.kill_stuck`.

use chom_core::job::{Job, JobState};
use chom_core::limits::{self, MAX_ATTEMPTS, MAX_DURATION, MAX_JOB_TIMEOUT};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{HumanDuration, Id, Method, check_duration, check_limit, echo, invalid};
use crate::rpc::protocol::RpcError;

/// `jobs.enqueue`: add a job; a job with the same live `unique_key` is returned instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enqueue {
    /// The job kind (`noop`, `vps.exec`, `site.provision`).
    pub kind: String,
    /// The payload: a string is JSON text (and must parse), anything else is the payload
    /// itself; absent = `{}`.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Queue; absent = the kind's policy.
    #[serde(default)]
    pub queue: Option<String>,
    /// Not claimable before this long from now (at most 10 years).
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    /// Attempts before the job fails for good (1 to 1000); absent = the kind's policy.
    #[serde(default)]
    pub max_attempts: Option<u64>,
    /// Time limit of one attempt (more than zero, at most a week); absent = the kind's policy.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// While a pending/reserved job has this key, return it instead of adding another.
    #[serde(default)]
    pub unique_key: Option<String>,
}

impl Enqueue {
    /// The payload as stored: JSON text.
    pub fn payload_text(&self) -> String {
        match &self.payload {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// `max_attempts` after [`Method::validate`].
    pub fn attempts(&self) -> Option<u32> {
        self.max_attempts
            .map(|n| u32::try_from(n).expect("bounded by MAX_ATTEMPTS"))
    }

    fn check_payload(&self) -> Result<(), RpcError> {
        if let Some(Value::String(text)) = &self.payload {
            serde_json::from_str::<Value>(text)
                .map_err(|e| RpcError::invalid_params(format!("payload is not valid JSON: {e}")))?;
        }
        let bytes = self.payload_text().len();
        if bytes > limits::MAX_PAYLOAD_BYTES {
            return Err(RpcError::invalid_params(format!(
                "`payload` must be at most {} bytes, got {bytes}",
                limits::MAX_PAYLOAD_BYTES
            )));
        }
        Ok(())
    }
}

/// The answer to `jobs.enqueue`.
pub use chom_core::job::Enqueued;

impl Method for Enqueue {
    const NAME: &'static str = "jobs.enqueue";
    type Reply = Enqueued;

    fn validate(&self) -> Result<(), RpcError> {
        limits::check_text("kind", &self.kind, limits::MAX_ID_CHARS).map_err(invalid)?;
        self.check_payload()?;
        if let Some(n) = self.max_attempts {
            limits::check_count("max_attempts", n, 1, MAX_ATTEMPTS.into()).map_err(invalid)?;
        }
        check_duration("timeout", self.timeout, MAX_JOB_TIMEOUT)?;
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(RpcError::invalid_params(
                "`timeout` must be greater than zero",
            ));
        }
        // Bounded like every duration (the store turns it into a timestamp, saturating).
        check_duration("delay", self.delay, MAX_DURATION)?;
        if let Some(key) = &self.unique_key {
            limits::check_text("unique_key", key, limits::MAX_UNIQUE_KEY_CHARS).map_err(invalid)?;
        }
        Ok(())
    }
}

/// `jobs.show`: one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Show {
    /// Job id.
    pub id: Id,
}

impl Method for Show {
    const NAME: &'static str = "jobs.show";
    type Reply = Job;
}

/// `jobs.list`: jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Only this queue (any sane name: rows another program inserted name their own).
    #[serde(default)]
    pub queue: Option<String>,
    /// Only this state: pending, reserved, completed, failed.
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many (1 to 1000, default 50).
    #[serde(default)]
    pub limit: Option<u64>,
}

impl List {
    /// `state` after [`Method::validate`].
    pub fn job_state(&self) -> Option<JobState> {
        self.state.as_deref().and_then(JobState::parse)
    }
}

/// The answer to `jobs.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jobs {
    /// Newest first; payloads and errors cut to a preview.
    pub jobs: Vec<Job>,
}

impl Method for List {
    const NAME: &'static str = "jobs.list";
    type Reply = Jobs;

    fn validate(&self) -> Result<(), RpcError> {
        if let Some(s) = &self.state
            && JobState::parse(s).is_none()
        {
            return Err(RpcError::invalid_params(format!(
                "unknown state `{}` (pending, reserved, completed, failed)",
                echo(s)
            )));
        }
        if let Some(queue) = &self.queue {
            limits::check_text("queue", queue, limits::MAX_ID_CHARS).map_err(invalid)?;
        }
        check_limit(self.limit)
    }
}

/// `jobs.kill_stuck`: move jobs reserved longer than `older_than` to the dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillStuck {
    /// Age limit (at most 10 years); absent = `queue.stuck_after`.
    #[serde(default)]
    pub older_than: Option<HumanDuration>,
}

/// The answer to `jobs.kill_stuck`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Killed {
    /// The jobs moved.
    pub killed: Vec<i64>,
    /// The age limit applied (humantime).
    pub older_than: String,
}

impl Method for KillStuck {
    const NAME: &'static str = "jobs.kill_stuck";
    type Reply = Killed;

    fn validate(&self) -> Result<(), RpcError> {
        check_duration("older_than", self.older_than, MAX_DURATION)
    }
}
