//! Pure helpers shared by both store implementations: column conversions, batch splitting,
//! result ordering and the merge of per-queue counts. No IO here.

use std::collections::HashSet;
use std::time::Duration;

use chom_core::job::{Completion, Job, JobState, NewJob, QueueStats};
use chrono::{DateTime, Utc};

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

/// `max_attempts` as stored (an INTEGER column).
pub(super) fn max_attempts_param(job: &NewJob) -> Option<i32> {
    job.max_attempts
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// `timeout_ms` as stored (a BIGINT column).
pub(super) fn timeout_param(job: &NewJob) -> Option<i64> {
    job.timeout.map(duration_ms)
}

/// A duration in whole milliseconds, saturating.
pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds (the SQLite timestamp representation) to a timestamp.
pub(super) fn millis_to_time(ms: i64, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("timestamp {ms} ms out of range").into(),
    })
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
                    split.retry_errors.push(error.clone());
                    split.retry_at.push(*available_at);
                    split
                        .retry_refund
                        .push(matches!(completion, Completion::Defer { .. }));
                }
                Completion::Fail { id, error } => {
                    split.fail_ids.push(*id);
                    split.fail_errors.push(error.clone());
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
            attempts: 1,
            max_attempts: None,
            timeout_ms: None,
            state: JobState::Reserved,
            unique_key: None,
            last_error: None,
            reserved_at: None,
            reserved_by: None,
            available_at: at,
            created_at: at,
            finished_at: None,
        }
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
