//! Jobs as the queue sees them: what is enqueued, what is stored, how an attempt ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Lifecycle state of a row in `jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be claimed (possibly delayed until `available_at`).
    Pending,
    /// Claimed by a node (`reserved_by`), running or about to run.
    Reserved,
    /// Finished successfully; kept for `queue.retention`.
    Completed,
    /// Out of attempts or permanently failed; a copy is in `failed_jobs`.
    Failed,
}

impl JobState {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Reserved => "reserved",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// Parse the `state` column.
    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "pending" => Some(JobState::Pending),
            "reserved" => Some(JobState::Reserved),
            "completed" => Some(JobState::Completed),
            "failed" => Some(JobState::Failed),
            _ => None,
        }
    }
}

/// The job kinds this node knows. The name (`vps.exec`) is what is stored in `jobs.kind`,
/// sent by `jobs.enqueue` and used as the key of a `[jobs."<kind>"]` policy table; it is
/// spelled only in [`JobKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Does nothing (queue plumbing and benchmarks).
    Noop,
    /// Runs one `vpsmanager` command on a server.
    VpsExec,
    /// Creates a site on its server and marks it active.
    SiteProvision,
    /// Deletes a site from its server, then its row.
    SiteDelete,
    /// Debug hooks only: appends "id node start" to a file.
    DebugRecord,
    /// Debug hooks only: sleeps.
    DebugSleep,
    /// Debug hooks only: fails (retryable or permanent).
    DebugFail,
    /// Debug hooks only: panics on every attempt.
    DebugPanic,
    /// Debug hooks only: panics on the first attempt, succeeds afterwards.
    DebugPanicOnce,
}

impl JobKind {
    /// Every kind; the name lookups derive from this list.
    pub const ALL: [JobKind; 9] = [
        JobKind::Noop,
        JobKind::VpsExec,
        JobKind::SiteProvision,
        JobKind::SiteDelete,
        JobKind::DebugRecord,
        JobKind::DebugSleep,
        JobKind::DebugFail,
        JobKind::DebugPanic,
        JobKind::DebugPanicOnce,
    ];

    /// The kind's name on the wire and in the database.
    pub const fn name(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::VpsExec => "vps.exec",
            JobKind::SiteProvision => "site.provision",
            JobKind::SiteDelete => "site.delete",
            JobKind::DebugRecord => "debug.record",
            JobKind::DebugSleep => "debug.sleep",
            JobKind::DebugFail => "debug.fail",
            JobKind::DebugPanic => "debug.panic",
            JobKind::DebugPanicOnce => "debug.panic_once",
        }
    }

    /// The kind named `name`, whether or not this node may run it.
    pub fn from_name(name: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind named `name` if a node with debug hooks `debug_hooks` runs it.
    pub fn available(name: &str, debug_hooks: bool) -> Option<JobKind> {
        JobKind::from_name(name).filter(|k| debug_hooks || !k.is_debug())
    }

    /// Whether the kind exists only with debug hooks on (tests).
    pub const fn is_debug(self) -> bool {
        matches!(
            self,
            JobKind::DebugRecord
                | JobKind::DebugSleep
                | JobKind::DebugFail
                | JobKind::DebugPanic
                | JobKind::DebugPanicOnce
        )
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The job kind (`noop`, `vps.exec`, ...), which picks the handler and the retry policy.
    pub kind: String,
    /// The queue (`critical`, `high`, `default`, `low`, `batch`).
    pub queue: String,
    /// The payload, JSON text. Stored as given: a payload the handler cannot parse fails the
    /// job permanently with a readable reason, it is never rejected silently.
    pub payload: String,
    /// Attempts allowed; `None` = the kind's policy decides when the job runs.
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt; `None` = the kind's policy.
    pub timeout: Option<Duration>,
    /// Not claimable before now + delay.
    pub delay: Duration,
    /// While a pending or reserved job with this key exists, enqueueing another returns it.
    pub unique_key: Option<String>,
}

/// A row of `jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Primary key.
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// Job kind.
    pub kind: String,
    /// JSON text as enqueued; in a listing only its first
    /// [`PREVIEW_BYTES`](crate::limits::PREVIEW_BYTES), in `jobs show` at most
    /// [`MAX_PAYLOAD_BYTES`](crate::limits::MAX_PAYLOAD_BYTES) (see `payload_truncated`).
    pub payload: String,
    /// True when `payload` is only the beginning of the stored payload.
    #[serde(default)]
    pub payload_truncated: bool,
    /// Attempts started so far (incremented when claimed).
    pub attempts: u32,
    /// Per-job override of the policy's attempts.
    pub max_attempts: Option<u32>,
    /// Per-job override of the policy's timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Lifecycle state.
    pub state: JobState,
    /// Deduplication key.
    pub unique_key: Option<String>,
    /// The error of the last failed attempt (in a listing only its first
    /// [`PREVIEW_BYTES`](crate::limits::PREVIEW_BYTES); see `last_error_truncated`).
    pub last_error: Option<String>,
    /// True when `last_error` is only the beginning of the stored error.
    #[serde(default)]
    pub last_error_truncated: bool,
    /// When the current reservation was made.
    pub reserved_at: Option<DateTime<Utc>>,
    /// Which node holds the reservation.
    pub reserved_by: Option<String>,
    /// Not claimable before this.
    pub available_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it completed or failed for good.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The job's id (the existing job's when deduplicated).
    pub id: i64,
    /// True when a pending/reserved job with the same unique key was returned instead.
    pub existing: bool,
    /// The job's queue: the existing job's when deduplicated (it may differ from the queue
    /// asked for).
    pub queue: String,
}

/// What to do with a reserved job after an attempt (written in batches by the completer).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Success: state completed, finished_at now.
    Completed {
        /// Job id.
        id: i64,
    },
    /// Attempt failed, more remain: back to pending at `available_at`, with the error.
    Retry {
        /// Job id.
        id: i64,
        /// The attempt's error.
        error: String,
        /// When it may run again.
        available_at: DateTime<Utc>,
    },
    /// Failed for good: state failed, and a `failed_jobs` row with the error as `exception`.
    Fail {
        /// Job id.
        id: i64,
        /// The final error.
        error: String,
    },
    /// Give the job back without it counting as an attempt (claimed but never started, or a
    /// bulkhead rejection): back to pending now, `attempts` decremented.
    Release {
        /// Job id.
        id: i64,
    },
    /// The attempt could not start for a reason outside the job (too many operations on its
    /// VPS, its circuit breaker open): back to pending at `available_at` with `error` as the
    /// last error, `attempts` decremented (the attempt does not count).
    Defer {
        /// Job id.
        id: i64,
        /// Why it could not run now.
        error: String,
        /// When it may run again.
        available_at: DateTime<Utc>,
    },
}

impl Completion {
    /// The job this completion is about.
    pub fn id(&self) -> i64 {
        match self {
            Completion::Completed { id }
            | Completion::Retry { id, .. }
            | Completion::Fail { id, .. }
            | Completion::Release { id }
            | Completion::Defer { id, .. } => *id,
        }
    }
}

/// Filter for `chom jobs list`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// Per-queue counts for `chom queue stats` and `chom_queue_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Pending and due now.
    pub ready: u64,
    /// Pending but delayed into the future.
    pub delayed: u64,
    /// Reserved (running).
    pub reserved: u64,
    /// Completed and not yet pruned.
    pub completed: u64,
    /// Failed and not yet pruned.
    pub failed: u64,
    /// Whether claims from this queue are paused.
    pub paused: bool,
}

impl QueueStats {
    /// Jobs waiting (due or delayed) or running: what `chom_queue_size` and the queue health
    /// check report.
    pub fn size(&self) -> u64 {
        self.ready + self.delayed + self.reserved
    }
}

/// A row of `failed_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedJob {
    /// Primary key of the failed_jobs row.
    pub id: i64,
    /// Unique id (Laravel's column).
    pub uuid: String,
    /// The `jobs` row it came from.
    pub job_id: i64,
    /// Always "database" (Laravel's column).
    pub connection: String,
    /// Queue name.
    pub queue: String,
    /// Job kind.
    pub kind: String,
    /// JSON text; in a listing only its first [`PREVIEW_BYTES`](crate::limits::PREVIEW_BYTES)
    /// (see `payload_truncated`).
    pub payload: String,
    /// True when `payload` is only the beginning of the stored payload.
    #[serde(default)]
    pub payload_truncated: bool,
    /// The final error; in a listing only its first
    /// [`PREVIEW_BYTES`](crate::limits::PREVIEW_BYTES) (see `exception_truncated`).
    pub exception: String,
    /// True when `exception` is only the beginning of the stored error.
    #[serde(default)]
    pub exception_truncated: bool,
    /// Attempts made.
    pub attempts: u32,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
}

/// One kind's failures for `chom failed analyze`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindFailures {
    /// Job kind.
    pub kind: String,
    /// Failures in the window.
    pub count: u64,
    /// The most recent error.
    pub last_error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for kind in JobKind::ALL {
            assert_eq!(JobKind::from_name(kind.name()), Some(kind));
            assert!(seen.insert(kind.name()), "{kind} named twice");
        }
        assert_eq!(JobKind::from_name("nope"), None);
        assert_eq!(JobKind::from_name("debug.nope"), None);
    }

    #[test]
    fn debug_kinds_are_the_debug_names_and_need_debug_hooks() {
        for kind in JobKind::ALL {
            assert_eq!(kind.is_debug(), kind.name().starts_with("debug."), "{kind}");
            assert_eq!(JobKind::available(kind.name(), true), Some(kind));
            assert_eq!(
                JobKind::available(kind.name(), false).is_some(),
                !kind.is_debug(),
                "{kind}"
            );
        }
    }
}
