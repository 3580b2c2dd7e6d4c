//! Pure helpers shared by both store implementations: column conversions, batch splitting,
//! result ordering and the merge of per-queue counts. No IO here.

use std::collections::HashSet;
use std::time::Duration;

use chom_core::job::{Completion, FailedJob, Job, JobState, NewJob, QueueStats};
use chom_core::limits;
use chrono::{DateTime, Utc};

use super::StoreError;

/// The PostgreSQL NOTIFY channel the `jobs` insert trigger signals.
pub(super) const JOBS_CHANNEL: &str = "chom_jobs";

/// How often an enqueue with a unique key retries when the job holding the key finished
/// between the conflicting INSERT and the SELECT of the holder. Each retry needs another
/// completion racing it, so this is never reached in practice.
pub(super) const ENQUEUE_RACE_RETRIES: usize = 16;

/// A `state` column value the schema's CHECK should have prevented.
pub(super) fn state_column(value: &str) -> Result<JobState, sqlx::Error> {
    JobState::parse(value).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "state".to_owned(),
        source: format!("unknown job state {value:?}").into(),
    })
}

/// A counter column (attempts): negative values (only possible through hand-written SQL) read
/// as zero rather than failing the whole query.
pub(super) fn count_column(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// A stored `max_attempts` (written by another program, perhaps): zero or negative means no
/// override (the policy decides, as for NULL); above [`limits::MAX_ATTEMPTS`] it reads as that
/// maximum, so a hand-written row can neither fail a job before its first attempt nor retry
/// it for ever.
pub(super) fn max_attempts_column(value: i64) -> Option<u32> {
    (value > 0).then(|| count_column(value).min(limits::MAX_ATTEMPTS))
}

/// A stored `timeout_ms`: zero or negative means no override (the policy decides); above
/// [`limits::MAX_JOB_TIMEOUT`] it reads as that maximum.
pub(super) fn timeout_column(value: i64) -> Option<u64> {
    let max = u64::try_from(limits::MAX_JOB_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    (value > 0).then(|| u64::try_from(value).unwrap_or(u64::MAX).min(max))
}

/// Refuse a job the store would have to clamp or could not store faithfully. The admin RPC
/// checks the same bounds first with its own messages; this guards every other caller.
pub(super) fn check_new_job(job: &NewJob) -> Result<(), StoreError> {
    let invalid = |e: limits::LimitError| StoreError::Invalid(e.to_string());
    if let Some(n) = job.max_attempts {
        limits::check_count("max_attempts", n.into(), 1, limits::MAX_ATTEMPTS.into())
            .map_err(invalid)?;
    }
    if let Some(timeout) = job.timeout {
        limits::check_duration("timeout", timeout, limits::MAX_JOB_TIMEOUT).map_err(invalid)?;
    }
    limits::check_duration("delay", job.delay, limits::MAX_DURATION).map_err(invalid)?;
    if let Some(key) = &job.unique_key {
        limits::check_text("unique_key", key, limits::MAX_UNIQUE_KEY_CHARS).map_err(invalid)?;
    }
    if job.payload.len() > limits::MAX_PAYLOAD_BYTES {
        return Err(StoreError::Invalid(format!(
            "`payload` must be at most {} bytes, got {}",
            limits::MAX_PAYLOAD_BYTES,
            job.payload.len()
        )));
    }
    // PostgreSQL text cannot hold NUL (and JSON text never contains a raw one).
    if job.payload.contains('\0') {
        return Err(StoreError::Invalid(
            "`payload` must not contain NUL characters".to_owned(),
        ));
    }
    Ok(())
}

/// `max_attempts` as stored (an INTEGER column); call [`check_new_job`] first.
pub(super) fn max_attempts_param(job: &NewJob) -> Option<i32> {
    job.max_attempts
        .map(|n| i32::try_from(n.min(limits::MAX_ATTEMPTS)).unwrap_or(i32::MAX))
}

/// `timeout_ms` as stored (a BIGINT column).
pub(super) fn timeout_param(job: &NewJob) -> Option<i64> {
    job.timeout.map(duration_ms)
}

/// A duration in whole milliseconds, saturating.
pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An error text as the node stores it: at most [`limits::MAX_ERROR_BYTES`], cut at a
/// character boundary.
pub(super) fn stored_error(error: &str) -> String {
    limits::cut_at_char_boundary(error, limits::MAX_ERROR_BYTES).to_owned()
}

/// How much of the long text columns (payload, errors) a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Everything (a claim: the handler needs the whole payload).
    Full,
    /// One job (`jobs show`): the payload up to [`limits::MAX_PAYLOAD_BYTES`], the error up to
    /// [`limits::MAX_ERROR_BYTES`].
    One,
    /// A row of a listing: [`limits::PREVIEW_BYTES`] of each.
    Listing,
}

impl Shape {
    /// The most bytes of the payload returned (None: all).
    pub fn payload_bytes(self) -> Option<usize> {
        match self {
            Shape::Full => None,
            Shape::One => Some(limits::MAX_PAYLOAD_BYTES),
            Shape::Listing => Some(limits::PREVIEW_BYTES),
        }
    }

    /// The most bytes of an error text returned (None: all).
    pub fn error_bytes(self) -> Option<usize> {
        match self {
            Shape::Full => None,
            Shape::One => Some(limits::MAX_ERROR_BYTES),
            Shape::Listing => Some(limits::PREVIEW_BYTES),
        }
    }
}

/// The columns every query reading `jobs` selects, in this order (each backend spells the
/// expressions; [`Shape`] decides the text columns and the `*_bytes` lengths).
pub(super) const JOB_COLUMN_NAMES: [&str; 17] = [
    "id",
    "queue",
    "kind",
    "payload",
    "payload_bytes",
    "attempts",
    "max_attempts",
    "timeout_ms",
    "state",
    "unique_key",
    "last_error",
    "last_error_bytes",
    "reserved_at",
    "reserved_by",
    "available_at",
    "created_at",
    "finished_at",
];

/// How a backend's SQL spells the parts of a [`TextSql::column`].
pub(super) struct TextSql {
    /// A NULL length, of the type the lengths have.
    pub no_length: &'static str,
    /// The first `max` *characters* of a column.
    pub prefix: fn(column: &str, max: usize) -> String,
    /// A column's stored length in bytes.
    pub byte_length: fn(column: &str) -> String,
}

impl TextSql {
    /// A long text column and its stored length in bytes, as two select-list items: whole
    /// (length NULL), or its first `max` characters (counted in characters, so the cut never
    /// splits one; [`preview`] cuts the rest to bytes), so the full text never leaves the
    /// database.
    pub fn column(&self, column: &str, max: Option<usize>) -> (String, String) {
        match max {
            None => (
                column.to_owned(),
                format!("{} AS {column}_bytes", self.no_length),
            ),
            Some(max) => (
                format!("{} AS {column}", (self.prefix)(column, max)),
                format!("{} AS {column}_bytes", (self.byte_length)(column)),
            ),
        }
    }
}

/// A text column read as a prefix: the database sends at most `max` *characters* (SQL's
/// `substr`/`left` count characters, so the cut never splits one; at most 4 bytes each),
/// which is cut here to `max` bytes at a character boundary. `total_bytes` is the stored
/// length (NULL for [`Shape::Full`]); the flag says whether the text is incomplete.
pub(super) fn preview(
    mut text: String,
    total_bytes: Option<i64>,
    max: Option<usize>,
) -> (String, bool) {
    let Some(max) = max else {
        return (text, false);
    };
    let kept = limits::cut_at_char_boundary(&text, max).len();
    text.truncate(kept);
    let stored = total_bytes.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let truncated = stored > text.len();
    (text, truncated)
}

/// The columns of a `failed_jobs` row whose decoding differs between the backends.
pub(super) struct FailedParts {
    /// Queue name.
    pub queue: String,
    /// Job kind.
    pub kind: String,
    /// The payload preview as sent by the database.
    pub payload: String,
    /// The exception preview as sent by the database.
    pub exception: String,
    /// `attempts`, whatever its column type.
    pub attempts: i64,
    /// `failed_at`, clamped into the node's range.
    pub failed_at: DateTime<Utc>,
}

/// A row of a `failed_jobs` listing (payload and exception as previews).
pub(super) fn failed_from_row<R>(row: &R, parts: FailedParts) -> Result<FailedJob, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let max = Some(limits::PREVIEW_BYTES);
    let (payload, payload_truncated) = preview(parts.payload, row.try_get("payload_bytes")?, max);
    let (exception, exception_truncated) =
        preview(parts.exception, row.try_get("exception_bytes")?, max);
    Ok(FailedJob {
        id: row.try_get("id")?,
        uuid: row.try_get("uuid")?,
        job_id: row.try_get("job_id")?,
        connection: row.try_get("connection")?,
        queue: parts.queue,
        kind: parts.kind,
        payload,
        payload_truncated,
        exception,
        exception_truncated,
        attempts: count_column(parts.attempts),
        failed_at: parts.failed_at,
    })
}

/// [`preview`] of a nullable column.
pub(super) fn opt_preview(
    text: Option<String>,
    total_bytes: Option<i64>,
    max: Option<usize>,
) -> (Option<String>, bool) {
    match text {
        Some(text) => {
            let (text, truncated) = preview(text, total_bytes, max);
            (Some(text), truncated)
        }
        None => (None, false),
    }
}

/// Sort claimed jobs into claim order: queue priority, then oldest due, then id (RETURNING
/// gives rows in no particular order).
pub(super) fn sort_claimed(jobs: &mut [Job], queues: &[String]) {
    let rank = |queue: &str| {
        queues
            .iter()
            .position(|q| q == queue)
            .unwrap_or(queues.len())
    };
    jobs.sort_by(|a, b| {
        (rank(&a.queue), a.available_at, a.id).cmp(&(rank(&b.queue), b.available_at, b.id))
    });
}

/// A completion batch split by variant, in the column-array shape both implementations bind.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SplitBatch {
    pub completed: Vec<i64>,
    pub retry_ids: Vec<i64>,
    pub retry_errors: Vec<String>,
    pub retry_at: Vec<DateTime<Utc>>,
    /// Per retry row: give the attempt back (a `Defer`).
    pub retry_refund: Vec<bool>,
    pub fail_ids: Vec<i64>,
    pub fail_errors: Vec<String>,
    pub released: Vec<i64>,
}

impl SplitBatch {
    /// Split `batch`; an id seen twice keeps its first completion only (one attempt has one
    /// outcome; this also keeps a duplicate Fail from writing two failed_jobs rows).
    pub fn new(batch: &[Completion]) -> Self {
        let mut seen = HashSet::with_capacity(batch.len());
        let mut split = SplitBatch::default();
        for completion in batch {
            if !seen.insert(completion.id()) {
                continue;
            }
            match completion {
                Completion::Completed { id } => split.completed.push(*id),
                Completion::Retry {
                    id,
                    error,
                    available_at,
                }
                | Completion::Defer {
                    id,
                    error,
                    available_at,
                } => {
                    split.retry_ids.push(*id);
                    split.retry_errors.push(stored_error(error));
                    split.retry_at.push(*available_at);
                    split
                        .retry_refund
                        .push(matches!(completion, Completion::Defer { .. }));
                }
                Completion::Fail { id, error } => {
                    split.fail_ids.push(*id);
                    split.fail_errors.push(stored_error(error));
                }
                Completion::Release { id } => split.released.push(*id),
            }
        }
        split
    }
}

/// Counts of one queue as read from `jobs`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub ready: u64,
    pub delayed: u64,
    pub reserved: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A count column (`count(*)` is BIGINT) as u64.
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Merge per-queue counts with the configured queues and the pauses: every configured queue
/// first in its configured order (zeros when it has no rows), then every other queue that has
/// rows or is paused, by name.
pub(super) fn merge_stats(
    queues: &[String],
    mut counted: Vec<(String, Counts)>,
    paused: &[String],
) -> Vec<QueueStats> {
    counted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<String> = Vec::with_capacity(queues.len());
    for q in queues {
        if !names.contains(q) {
            names.push(q.clone());
        }
    }
    let mut extra: Vec<String> = counted
        .iter()
        .map(|(q, _)| q.clone())
        .chain(paused.iter().cloned())
        .filter(|q| !queues.contains(q))
        .collect();
    extra.sort();
    extra.dedup();
    names.extend(extra);
    names
        .into_iter()
        .map(|queue| {
            let c = counted
                .iter()
                .find(|(q, _)| *q == queue)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            QueueStats {
                paused: paused.contains(&queue),
                queue,
                ready: c.ready,
                delayed: c.delayed,
                reserved: c.reserved,
                completed: c.completed,
                failed: c.failed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, queue: &str, at_ms: i64) -> Job {
        let at = DateTime::from_timestamp_millis(at_ms).unwrap();
        Job {
            id,
            queue: queue.to_owned(),
            kind: "noop".to_owned(),
            payload: "{}".to_owned(),
            payload_truncated: false,
            attempts: 1,
            max_attempts: None,
            timeout_ms: None,
            state: JobState::Reserved,
            unique_key: None,
            last_error: None,
            last_error_truncated: false,
            reserved_at: None,
            reserved_by: None,
            available_at: at,
            created_at: at,
            finished_at: None,
        }
    }

    #[test]
    fn previews_cut_at_a_character_boundary_and_say_so() {
        // The database sent 3 characters (6 bytes) of a 40-byte text; 5 bytes are kept.
        assert_eq!(
            preview("ééé".to_owned(), Some(40), Some(5)),
            ("éé".to_owned(), true)
        );
        assert_eq!(
            preview("abc".to_owned(), Some(3), Some(5)),
            ("abc".to_owned(), false)
        );
        // Exactly at the limit is complete.
        assert_eq!(
            preview("abcde".to_owned(), Some(5), Some(5)),
            ("abcde".to_owned(), false)
        );
        assert_eq!(preview("x".repeat(10), None, None), ("x".repeat(10), false));
        assert_eq!(opt_preview(None, None, Some(5)), (None, false));
    }

    #[test]
    fn odd_stored_overrides_read_as_sane_values() {
        assert_eq!(max_attempts_column(-3), None);
        assert_eq!(max_attempts_column(0), None);
        assert_eq!(max_attempts_column(5), Some(5));
        assert_eq!(max_attempts_column(i64::MAX), Some(limits::MAX_ATTEMPTS));
        assert_eq!(timeout_column(-1), None);
        assert_eq!(timeout_column(1_500), Some(1_500));
        assert_eq!(
            timeout_column(i64::MAX),
            Some(limits::MAX_JOB_TIMEOUT.as_millis() as u64)
        );
        assert_eq!(count_column(-7), 0);
    }

    #[test]
    fn out_of_range_jobs_are_refused_not_clamped() {
        let ok = NewJob {
            kind: "noop".into(),
            queue: "default".into(),
            payload: "{}".into(),
            max_attempts: Some(limits::MAX_ATTEMPTS),
            timeout: Some(limits::MAX_JOB_TIMEOUT),
            delay: limits::MAX_DURATION,
            unique_key: Some("k".into()),
        };
        assert!(check_new_job(&ok).is_ok());
        let refused = |job: NewJob, what: &str| match check_new_job(&job) {
            Err(StoreError::Invalid(message)) => assert!(message.contains(what), "{message}"),
            other => panic!("{what}: expected Invalid, got {other:?}"),
        };
        refused(
            NewJob {
                max_attempts: Some(u32::MAX),
                ..ok.clone()
            },
            "max_attempts",
        );
        refused(
            NewJob {
                max_attempts: Some(0),
                ..ok.clone()
            },
            "max_attempts",
        );
        refused(
            NewJob {
                timeout: Some(limits::MAX_JOB_TIMEOUT * 2),
                ..ok.clone()
            },
            "timeout",
        );
        refused(
            NewJob {
                delay: limits::MAX_DURATION * 2,
                ..ok.clone()
            },
            "delay",
        );
        refused(
            NewJob {
                unique_key: Some("k".repeat(500_000)),
                ..ok.clone()
            },
            "unique_key",
        );
        refused(
            NewJob {
                unique_key: Some("a\0b".into()),
                ..ok.clone()
            },
            "unique_key",
        );
        refused(
            NewJob {
                payload: "\"\0\"".into(),
                ..ok.clone()
            },
            "payload",
        );
        refused(
            NewJob {
                payload: "x".repeat(limits::MAX_PAYLOAD_BYTES + 1),
                ..ok
            },
            "payload",
        );
    }

    #[test]
    fn stored_errors_are_capped() {
        let long = "é".repeat(limits::MAX_ERROR_BYTES);
        let split = SplitBatch::new(&[Completion::Fail {
            id: 1,
            error: long.clone(),
        }]);
        assert!(split.fail_errors[0].len() <= limits::MAX_ERROR_BYTES);
        assert!(long.starts_with(&split.fail_errors[0]));
        assert_eq!(stored_error("short"), "short");
    }

    #[test]
    fn claimed_jobs_sort_by_priority_then_due_then_id() {
        let queues = vec!["high".to_owned(), "low".to_owned()];
        let mut jobs = vec![
            job(1, "low", 0),
            job(5, "high", 20),
            job(3, "high", 10),
            job(2, "high", 10),
        ];
        sort_claimed(&mut jobs, &queues);
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![2, 3, 5, 1]);
    }

    #[test]
    fn split_keeps_first_completion_of_an_id() {
        let at = DateTime::from_timestamp_millis(1_000).unwrap();
        let split = SplitBatch::new(&[
            Completion::Fail {
                id: 1,
                error: "boom".into(),
            },
            Completion::Completed { id: 1 },
            Completion::Retry {
                id: 2,
                error: "again".into(),
                available_at: at,
            },
            Completion::Release { id: 3 },
            Completion::Completed { id: 4 },
            Completion::Defer {
                id: 5,
                error: "busy".into(),
                available_at: at,
            },
        ]);
        assert_eq!(
            split,
            SplitBatch {
                completed: vec![4],
                retry_ids: vec![2, 5],
                retry_errors: vec!["again".into(), "busy".into()],
                retry_at: vec![at, at],
                retry_refund: vec![false, true],
                fail_ids: vec![1],
                fail_errors: vec!["boom".into()],
                released: vec![3],
            }
        );
    }

    #[test]
    fn stats_list_configured_queues_first_then_others_by_name() {
        let queues = vec!["high".to_owned(), "default".to_owned()];
        let counted = vec![
            (
                "zeta".to_owned(),
                Counts {
                    ready: 1,
                    ..Counts::default()
                },
            ),
            (
                "default".to_owned(),
                Counts {
                    failed: 2,
                    ..Counts::default()
                },
            ),
        ];
        let stats = merge_stats(&queues, counted, &["alpha".to_owned(), "high".to_owned()]);
        let names: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
        assert_eq!(names, vec!["high", "default", "alpha", "zeta"]);
        assert!(stats[0].paused && stats[2].paused && !stats[1].paused);
        assert_eq!(stats[1].failed, 2);
        assert_eq!(stats[0].ready + stats[0].failed, 0);
        assert_eq!(stats[3].ready, 1);
    }
}
