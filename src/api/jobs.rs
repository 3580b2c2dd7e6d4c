//! Jobs: `jobs.enqueue`, `jobs.enqueue_many`, `jobs.show`, `jobs.list`, `jobs.kill_stuck`.

use chom_core::job::{Job, JobState};
use chom_core::limits::{self, MAX_ATTEMPTS, MAX_DURATION, MAX_ENQUEUE_BATCH, MAX_JOB_TIMEOUT};
use serde_json::Value;

use super::{HumanDuration, Id, check_duration, check_limit, echo, ensure, invalid};
use crate::rpc::protocol::RpcError;

request! {
    /// `jobs.enqueue`: add a job; a job with the same live `unique_key` is returned instead.
    Enqueue("jobs.enqueue") -> Enqueued {
        /// The job kind (`noop`, `vps.exec`, `site.provision`).
        pub kind: String,
        /// The payload: a string is JSON text (and must parse), anything else is the payload
        /// itself; absent = `{}`.
        pub payload: Option<Value>,
        /// Queue; absent = the kind's policy.
        pub queue: Option<String>,
        /// Not claimable before this long from now (at most 10 years).
        pub delay: Option<HumanDuration>,
        /// Attempts before the job fails for good (1 to 1000); absent = the kind's policy.
        pub max_attempts: Option<u64>,
        /// Time limit of one attempt (more than zero, at most a week); absent = the kind's policy.
        pub timeout: Option<HumanDuration>,
        /// While a pending/reserved job has this key, return it instead of adding another.
        pub unique_key: Option<String>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            limits::check_text("kind", &self.kind, limits::MAX_ID_CHARS).map_err(invalid)?;
            self.check_payload()?;
            if let Some(n) = self.max_attempts {
                limits::check_count("max_attempts", n, 1, MAX_ATTEMPTS.into()).map_err(invalid)?;
            }
            check_duration("timeout", self.timeout, MAX_JOB_TIMEOUT)?;
            ensure(
                !self.timeout.is_some_and(|t| t.0.is_zero()),
                "`timeout` must be greater than zero",
            )?;
            // Bounded like every duration (the store turns it into a timestamp, saturating).
            check_duration("delay", self.delay, MAX_DURATION)?;
            if let Some(key) = &self.unique_key {
                limits::check_text("unique_key", key, limits::MAX_UNIQUE_KEY_CHARS).map_err(invalid)?;
            }
            Ok(())
        }
    }
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

    /// `max_attempts` after [`Method::validate`](super::Method::validate)(super::Method::validate).
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

request! {
    /// `jobs.enqueue_many`: add a batch of jobs in one transaction: all of them or none. Each
    /// element takes `jobs.enqueue`'s parameters and is enqueued as that method would.
    EnqueueMany("jobs.enqueue_many") -> EnqueuedMany {
        /// 1 to 5,000 jobs.
        pub jobs: Vec<Enqueue>,
    }
    impl {
        fn timeout(&self) -> std::time::Duration {
            // The store gives a batch the time of its bulk operations (1 minute).
            std::time::Duration::from_secs(90)
        }

        fn validate(&self) -> Result<(), RpcError> {
            let n = self.jobs.len();
            if !(1..=MAX_ENQUEUE_BATCH).contains(&n) {
                return Err(RpcError::invalid_params(format!(
                    "`jobs` must hold 1 to {MAX_ENQUEUE_BATCH} jobs, got {n}"
                )));
            }
            for (i, job) in self.jobs.iter().enumerate() {
                super::Method::validate(job).map_err(|mut e| {
                    e.message = format!("jobs[{i}]: {}", e.message);
                    e
                })?;
            }
            Ok(())
        }
    }
}

reply! {
    /// The answer to `jobs.enqueue_many`.
    EnqueuedMany {
        /// The jobs' ids in the request's order (an existing job's id where its unique key
        /// was held).
        pub ids: Vec<i64>,
    }
}

request! {
    /// `jobs.show`: one job.
    Show("jobs.show") -> Job {
        /// Job id.
        pub id: Id,
    }
}

request! {
    /// `jobs.list`: jobs, newest first.
    List("jobs.list") -> Jobs {
        /// Only this queue (any sane name: rows another program inserted name their own).
        pub queue: Option<String>,
        /// Only this state: pending, reserved, completed, failed.
        pub state: Option<String>,
        /// At most this many (1 to 1000, default 50).
        pub limit: Option<u64>,
    }
    impl {
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
}

impl List {
    /// `state` after [`Method::validate`](super::Method::validate)(super::Method::validate).
    pub fn job_state(&self) -> Option<JobState> {
        self.state.as_deref().and_then(JobState::parse)
    }
}

reply! {
    /// The answer to `jobs.list`.
    Jobs {
        /// Newest first; payloads and errors cut to a preview.
        pub jobs: Vec<Job>,
    }
}

request! {
    /// `jobs.kill_stuck`: move jobs reserved longer than `older_than` to the dead letters.
    KillStuck("jobs.kill_stuck") -> Killed {
        /// Age limit (at most 10 years); absent = `queue.stuck_after`.
        pub older_than: Option<HumanDuration>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_duration("older_than", self.older_than, MAX_DURATION)
        }
    }
}

reply! {
    /// The answer to `jobs.kill_stuck`.
    Killed {
        /// The jobs moved.
        pub killed: Vec<i64>,
        /// The age limit applied (humantime).
        pub older_than: String,
    }
}
