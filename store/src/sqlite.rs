//! SQLite (WAL) implementation of [`Store`], the embedded default.
//!
//! Timestamps in `jobs`, `failed_jobs` and `queue_pauses` are INTEGER unix milliseconds,
//! taken from this process's clock (one host: the database is a local file). Writes that
//! span several statements run under `BEGIN IMMEDIATE`, which takes SQLite's single write
//! lock up front: two claimers can never interleave, and a deferred transaction's
//! read-then-write upgrade (which fails with SQLITE_BUSY without waiting) cannot happen.
//! Batches are passed as one JSON array parameter and unpacked with `json_each`, so a batch
//! costs a few statements whatever its size.
//!
//! A writing statement is never read with `fetch_one`/`fetch_optional`: those stop stepping
//! after the first row and reset the statement, and in autocommit mode the commit happens at
//! that reset, where its failure (SQLITE_FULL on a full disk) is lost; the caller would get
//! an id that was never stored. Writes either run to completion (`execute`, `fetch_all`) or
//! inside a transaction whose COMMIT result is checked.

use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chom_core::config::DatabaseConfig;
use chom_core::job::{
    Completion, Enqueued, FailedJob, Job, JobFilter, KindFailures, NewJob, QueueStats,
};
use chom_core::limits;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::Row;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqliteRow, SqliteSynchronous,
};

use super::rows::{self, Counts, Shape, SplitBatch};
use super::{Backend, ClusterNode, NodeRecord, Store, StoreError};

/// A lazily opened SQLite pool in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Create the file's directory if needed and build the pool without opening a connection.
    pub fn open(path: &Path, cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL lets readers run while the single writer commits; NORMAL is durable in WAL
            // mode except against power loss of the last transaction, SQLite's recommendation.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = super::pool_options(cfg).connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and later store methods).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Take SQLite's write lock at BEGIN (see the module doc).
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// Now, as stored: unix milliseconds.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A timestamp parameter as stored: unix milliseconds.
fn time_param(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

// === SQL ===

/// The columns of [`rows::JOB_COLUMN_NAMES`] in SQLite's spelling. Numbers and timestamps go
/// through CAST so that a value another program stored as REAL or TEXT reads as a number
/// instead of failing the whole query (the decoders then clamp it into range); long texts are
/// cut as `shape` says.
fn job_columns(shape: Shape) -> String {
    let (payload, payload_bytes) = TEXT.column("payload", shape.payload_bytes());
    let (error, error_bytes) = TEXT.column("last_error", shape.error_bytes());
    format!(
        "id, queue, kind, {payload}, {payload_bytes}, CAST(attempts AS INTEGER) AS attempts, \
         CAST(max_attempts AS INTEGER) AS max_attempts, \
         CAST(timeout_ms AS INTEGER) AS timeout_ms, state, unique_key, {error}, {error_bytes}, \
         CAST(reserved_at AS INTEGER) AS reserved_at, reserved_by, \
         CAST(available_at AS INTEGER) AS available_at, \
         CAST(created_at AS INTEGER) AS created_at, CAST(finished_at AS INTEGER) AS finished_at"
    )
}

/// How SQLite spells a long text column (`substr` counts characters; the `length` of the
/// BLOB counts bytes whatever another program stored).
const TEXT: rows::TextSql = rows::TextSql {
    no_length: "NULL",
    prefix: |column, max| format!("substr({column}, 1, {max})"),
    byte_length: |column| format!("length(CAST({column} AS BLOB))"),
};

/// With a unique key held by a pending/reserved job, the partial unique index makes this
/// insert nothing.
const ENQUEUE: &str = "
    INSERT INTO jobs
        (queue, kind, payload, max_attempts, timeout_ms, unique_key, available_at, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT DO NOTHING
    RETURNING id";

const UNIQUE_HOLDER: &str = "
    SELECT id, queue FROM jobs WHERE unique_key = ?1 AND state IN ('pending', 'reserved')";

/// One queue's share of a claim (run per queue in priority order inside one IMMEDIATE
/// transaction); the subquery reads `jobs_claim_idx`.
static CLAIM_QUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs
         SET state = 'reserved', reserved_at = ?1, reserved_by = ?2, attempts = attempts + 1
         WHERE id IN (
             SELECT id FROM jobs
             WHERE state = 'pending' AND queue = ?3 AND available_at <= ?1
             ORDER BY available_at, id
             LIMIT ?4)
         RETURNING {}",
        job_columns(Shape::Full)
    )
});

/// The completed and failed counts in `job_counts` (migration 0011) move in the transaction
/// that moves the rows, counted by a statement with the same condition as the one that changes
/// them, run first under the same write lock: `add_counts!(completed, failed, condition)`
/// (negative to take rows off).
macro_rules! add_counts {
    ($completed:literal, $failed:literal, $($condition:tt)+) => {
        concat!(
            "INSERT INTO job_counts (queue, completed, failed)
             SELECT queue, ", $completed, ", ", $failed, " FROM jobs WHERE ", $($condition)+,
            " GROUP BY queue
             ON CONFLICT (queue) DO UPDATE SET completed = completed + excluded.completed,
                 failed = failed + excluded.failed"
        )
    };
}

/// The rows a batch completes: still reserved by `?3`, ids in the JSON array `?1`.
macro_rules! completing {
    () => {
        "state = 'reserved' AND reserved_by = ?3 AND id IN (SELECT value FROM json_each(?1))"
    };
}

const COUNT_COMPLETED: &str = add_counts!("count(*)", "0", completing!());

const COMPLETE_COMPLETED: &str = concat!(
    "UPDATE jobs SET state = 'completed', finished_at = ?2 WHERE ",
    completing!()
);

/// `?1` is a JSON array of `[id, error, available_at_ms, refund]` (refund: a `Defer`, the attempt does not count).
const COMPLETE_RETRY: &str = "
    UPDATE jobs
    SET state = 'pending', available_at = r.available_at, last_error = r.error,
        reserved_at = NULL, reserved_by = NULL,
        attempts = CASE WHEN r.refund THEN max(jobs.attempts - 1, 0) ELSE jobs.attempts END
    FROM (SELECT value ->> 0 AS id, value ->> 1 AS error, value ->> 2 AS available_at,
                 value ->> 3 AS refund
          FROM json_each(?1)) AS r
    WHERE jobs.id = r.id AND jobs.state = 'reserved' AND jobs.reserved_by = ?2";

/// `?1` is a JSON array of `[id, error]`; run before [`COMPLETE_FAIL`], same transaction.
const COMPLETE_FAIL_DEAD: &str = "
    INSERT INTO failed_jobs
        (queue, kind, payload, exception, job_id, attempts, max_attempts, timeout_ms, failed_at)
    SELECT j.queue, j.kind, j.payload, f.error, j.id, j.attempts, j.max_attempts, j.timeout_ms, ?2
    FROM (SELECT value ->> 0 AS id, value ->> 1 AS error FROM json_each(?1)) AS f
    JOIN jobs AS j ON j.id = f.id
    WHERE j.state = 'reserved' AND j.reserved_by = ?3
    ORDER BY j.id";

/// The rows [`COMPLETE_FAIL`] fails, counted: `?1` is a JSON array of `[id, error]`.
const COUNT_FAILED: &str = add_counts!(
    "0",
    "count(*)",
    "state = 'reserved' AND reserved_by = ?3 AND id IN (SELECT value ->> 0 FROM json_each(?1))"
);

const COMPLETE_FAIL: &str = "
    UPDATE jobs SET state = 'failed', finished_at = ?2, last_error = f.error
    FROM (SELECT value ->> 0 AS id, value ->> 1 AS error FROM json_each(?1)) AS f
    WHERE jobs.id = f.id AND jobs.state = 'reserved' AND jobs.reserved_by = ?3";

const COMPLETE_RELEASE: &str = "
    UPDATE jobs
    SET state = 'pending', available_at = ?2, attempts = max(attempts - 1, 0),
        reserved_at = NULL, reserved_by = NULL
    WHERE state = 'reserved' AND reserved_by = ?3 AND id IN (SELECT value FROM json_each(?1))";

/// Per queue: pending and reserved jobs from the partial indexes that hold only them
/// (`jobs_claim_idx` covers the pending count), completed and failed ones from `job_counts`,
/// however many finished rows are retained. One statement, so one snapshot.
const QUEUE_COUNTS: &str = "
    SELECT queue, sum(ready) AS ready, sum(delayed) AS delayed, sum(reserved) AS reserved,
        sum(completed) AS completed, sum(failed) AS failed
    FROM (
        SELECT queue,
            count(*) FILTER (WHERE available_at <= ?1) AS ready,
            count(*) FILTER (WHERE available_at > ?1) AS delayed,
            0 AS reserved, 0 AS completed, 0 AS failed
        FROM jobs WHERE state = 'pending' GROUP BY queue
        UNION ALL
        SELECT queue, 0, 0, count(*), 0, 0 FROM jobs WHERE state = 'reserved' GROUP BY queue
        UNION ALL
        SELECT queue, 0, 0, 0, completed, failed FROM job_counts
    )
    GROUP BY queue
    HAVING sum(ready + delayed + reserved + completed + failed) > 0";

const PAUSE_QUEUE: &str = "
    INSERT INTO queue_pauses (queue, paused_at) VALUES (?1, ?2)
    ON CONFLICT (queue) DO NOTHING";

const RELEASE_NODE: &str = "
    UPDATE jobs SET state = 'pending', available_at = ?2, reserved_at = NULL, reserved_by = NULL
    WHERE state = 'reserved' AND reserved_by = ?1";

/// `nodes.seen_at` is RFC 3339 text (0001_nodes.sql): the CAST turns it into unix milliseconds
/// (julianday parses any number of fractional digits and the UTC offset).
const RESCUE_EXPIRED: &str = "
    UPDATE jobs
    SET state = 'pending', available_at = ?3, reserved_at = NULL, reserved_by = NULL
    WHERE state = 'reserved' AND reserved_at < ?1 AND reserved_by IS NOT ?2
      AND NOT EXISTS (
          SELECT 1 FROM nodes WHERE nodes.name = jobs.reserved_by
            AND CAST(ROUND((julianday(nodes.seen_at) - 2440587.5) * 86400000) AS INTEGER) > ?1)";

/// Finished rows past `?1`, taken off `job_counts` first; then the counts that reached zero.
macro_rules! pruning {
    () => {
        "state IN ('completed', 'failed') AND finished_at < ?1"
    };
}
const UNCOUNT_PRUNED: &str = add_counts!(
    "-count(*) FILTER (WHERE state = 'completed')",
    "-count(*) FILTER (WHERE state = 'failed')",
    pruning!()
);
const PRUNE_JOBS: &str = concat!("DELETE FROM jobs WHERE ", pruning!());
const PRUNE_COUNTS: &str = "DELETE FROM job_counts WHERE completed = 0 AND failed = 0";

/// `+id`: ordered by a sort of the few reserved rows found through `jobs_reserved_idx`; a plain
/// `ORDER BY id` let the planner walk the whole table in id order instead, retained finished
/// rows and all.
const KILL_STUCK_DEAD: &str = "
    INSERT INTO failed_jobs
        (queue, kind, payload, exception, job_id, attempts, max_attempts, timeout_ms, failed_at)
    SELECT queue, kind, payload, ?2, id, attempts, max_attempts, timeout_ms, ?3
    FROM jobs WHERE state = 'reserved' AND reserved_at < ?1
    ORDER BY +id";

const COUNT_KILLED: &str = add_counts!("0", "count(*)", "state = 'reserved' AND reserved_at < ?1");

const KILL_STUCK: &str = "
    UPDATE jobs SET state = 'failed', finished_at = ?3, last_error = ?2
    WHERE state = 'reserved' AND reserved_at < ?1
    RETURNING id";

/// Copy failed_jobs rows back into jobs (attempts 0, no unique key) at `?1` = now; the
/// filter is `id = ?2` (one) or `true` (all). The DELETE with the same filter follows in the same
/// IMMEDIATE transaction.
macro_rules! retry_failed_sql {
    ($filter:literal) => {
        concat!(
            "INSERT INTO jobs (queue, kind, payload, max_attempts, timeout_ms, available_at, created_at)
             SELECT queue, kind, payload, max_attempts, timeout_ms, ?1, ?1
             FROM failed_jobs WHERE ",
            $filter,
            " ORDER BY id
             RETURNING id"
        )
    };
}
const RETRY_FAILED_ONE: &str = retry_failed_sql!("id = ?2");
const RETRY_FAILED_ALL: &str = retry_failed_sql!("true");
const DELETE_FAILED_ONE: &str = "DELETE FROM failed_jobs WHERE id = ?1";
const DELETE_FAILED_ALL: &str = "DELETE FROM failed_jobs";

/// The columns of a failed_jobs listing: payload and exception cut to a preview.
static FAILED_LISTING: LazyLock<String> = LazyLock::new(|| {
    let (payload, payload_bytes) = TEXT.column("payload", Some(limits::PREVIEW_BYTES));
    let (exception, exception_bytes) = TEXT.column("exception", Some(limits::PREVIEW_BYTES));
    format!(
        "SELECT id, uuid, job_id, connection, queue, kind, {payload}, {payload_bytes}, \
         {exception}, {exception_bytes}, CAST(attempts AS INTEGER) AS attempts, \
         CAST(failed_at AS INTEGER) AS failed_at \
         FROM failed_jobs ORDER BY failed_at DESC, id DESC LIMIT ?1"
    )
});

/// Per kind: how many failures since `?1` and the newest one's error (its first
/// [`limits::PREVIEW_BYTES`] characters; the decoder cuts them to bytes).
const FAILURES_BY_KIND: &str = "
    SELECT f.kind, count(*) AS failures,
        (SELECT substr(l.exception, 1, 2048) FROM failed_jobs AS l
         WHERE l.kind = f.kind AND l.failed_at >= ?1
         ORDER BY l.failed_at DESC, l.id DESC LIMIT 1) AS last_error
    FROM failed_jobs AS f WHERE f.failed_at >= ?1
    GROUP BY f.kind ORDER BY failures DESC, f.kind";

/// The health probe's write: one row of `health_probe` (migration 0004), rewritten.
const PROBE_WRITE: &str = "
    INSERT INTO health_probe (id, probed_at) VALUES (1, ?1)
    ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at";

const _: () = assert!(
    limits::PREVIEW_BYTES == 2048,
    "FAILURES_BY_KIND spells it out"
);

// === row decoding ===

/// A timestamp column (unix milliseconds, CAST in the query), clamped into
/// [`limits::min_time`]..=[`limits::max_time`]: a row another program wrote with an absurd
/// time never fails a listing or a claim.
fn time_column(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    Ok(limits::time_from_millis(row.try_get(column)?))
}

fn opt_time_column(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(limits::time_from_millis))
}

/// A text column as text whatever another program stored there: a
/// BLOB, or bytes that are not UTF-8 (which a cut preview can also produce from a BLOB), read
/// with U+FFFD for the bad bytes instead of failing the query. A claim that failed on one such
/// row would fail for good, and take every job of its queue with it.
fn text_column_value(row: &SqliteRow, column: &str) -> Result<String, sqlx::Error> {
    Ok(lossy_text(row.try_get(column)?))
}

stats_decoders!(SqliteRow);

fn opt_text_column_value(row: &SqliteRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(row.try_get::<Option<Vec<u8>>, _>(column)?.map(lossy_text))
}

fn lossy_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn job_from_row(row: &SqliteRow, shape: Shape) -> Result<Job, sqlx::Error> {
    let (payload, payload_truncated) = rows::preview(
        text_column_value(row, "payload")?,
        row.try_get("payload_bytes")?,
        shape.payload_bytes(),
    );
    let (last_error, last_error_truncated) = rows::opt_preview(
        opt_text_column_value(row, "last_error")?,
        row.try_get("last_error_bytes")?,
        shape.error_bytes(),
    );
    Ok(Job {
        id: row.try_get("id")?,
        queue: text_column_value(row, "queue")?,
        kind: text_column_value(row, "kind")?,
        payload,
        payload_truncated,
        attempts: rows::count_column(row.try_get("attempts")?),
        max_attempts: row
            .try_get::<Option<i64>, _>("max_attempts")?
            .and_then(rows::max_attempts_column),
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .and_then(rows::timeout_column),
        state: rows::state_column(row.try_get("state")?)?,
        unique_key: opt_text_column_value(row, "unique_key")?,
        last_error,
        last_error_truncated,
        reserved_at: opt_time_column(row, "reserved_at")?,
        reserved_by: opt_text_column_value(row, "reserved_by")?,
        available_at: time_column(row, "available_at")?,
        created_at: time_column(row, "created_at")?,
        finished_at: opt_time_column(row, "finished_at")?,
    })
}

fn failed_from_row(row: &SqliteRow) -> Result<FailedJob, sqlx::Error> {
    let parts = rows::FailedParts {
        queue: text_column_value(row, "queue")?,
        kind: text_column_value(row, "kind")?,
        payload: text_column_value(row, "payload")?,
        exception: text_column_value(row, "exception")?,
        attempts: row.try_get("attempts")?,
        failed_at: time_column(row, "failed_at")?,
    };
    rows::failed_from_row(row, parts)
}

/// A batch parameter as a JSON array (serde_json does the quoting of error texts).
fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing vectors of integers, strings and tuples of them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// Every timestamp is this process's clock (see the module doc): a statement that needs
/// "now" takes it as its last parameter, bound here.
fn bind_now(query: Query<'_, Sqlite, SqliteArguments>) -> Query<'_, Sqlite, SqliteArguments> {
    query.bind(now_ms())
}

// === impl Store ===

store_impl!(
    SqliteStore,
    db = Sqlite,
    backend = Backend::Sqlite,
    migrations = "migrations/sqlite",
    begin = BEGIN_IMMEDIATE
);

/// The operations whose SQLite statements differ from PostgreSQL's in more than spelling: the
/// time comes from this process's clock, and a write of several statements runs in one
/// `BEGIN IMMEDIATE` transaction where PostgreSQL has one statement.
impl SqliteStore {
    async fn upsert_node(&self, node: &NodeRecord) -> sqlx::Result<()> {
        let now = chrono::Utc::now().to_rfc3339();
        sqlx::query(
            "INSERT INTO nodes (name, hostname, pid, version, started_at, seen_at, instance, jobs_running)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 0)
             ON CONFLICT (name) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid,
                 version = excluded.version, started_at = excluded.started_at,
                 seen_at = excluded.seen_at, instance = excluded.instance, jobs_running = 0",
        )
        .bind(&node.name)
        .bind(&node.hostname)
        .bind(i64::from(node.pid))
        .bind(&node.version)
        .bind(now)
        .bind(&node.instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_nodes(&self, live_since: DateTime<Utc>) -> sqlx::Result<Vec<ClusterNode>> {
        // `nodes` keeps RFC 3339 text: read as unix milliseconds, as RESCUE_EXPIRED compares it,
        // so `time_column` decodes it like every other time.
        let rows = sqlx::query(
            "SELECT name, instance, hostname, pid, version, jobs_running,
                 CAST(ROUND((julianday(started_at) - 2440587.5) * 86400000) AS INTEGER) AS started,
                 CAST(ROUND((julianday(seen_at) - 2440587.5) * 86400000) AS INTEGER) AS seen
             FROM nodes
             WHERE CAST(ROUND((julianday(seen_at) - 2440587.5) * 86400000) AS INTEGER) > ?1
             ORDER BY name",
        )
        .bind(live_since.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClusterNode {
                    name: row.try_get(0)?,
                    instance: row.try_get(1)?,
                    hostname: row.try_get(2)?,
                    pid: row.try_get(3)?,
                    version: row.try_get(4)?,
                    jobs_running: u64::try_from(row.try_get::<i64, _>(5)?).unwrap_or(0),
                    started_at: time_column(row, "started")?,
                    seen_at: time_column(row, "seen")?,
                })
            })
            .collect()
    }

    async fn insert_job(&self, job: &NewJob) -> sqlx::Result<Enqueued> {
        // One IMMEDIATE transaction: the holder of a unique key cannot change between the
        // INSERT that found it and the SELECT that reads it, and the acknowledgement waits
        // for a COMMIT whose failure (a full disk) is reported.
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        let enqueued = insert_one(&mut tx, job, now_ms()).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// A batch under one write lock and one COMMIT, each job as [`insert_job`](Self::insert_job)
    /// does it (SQLite runs statements in process: one per row costs no round trip).
    async fn insert_jobs(&self, jobs: &[NewJob]) -> sqlx::Result<Vec<Enqueued>> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        let now = now_ms();
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            answers.push(insert_one(&mut tx, job, now).await?);
        }
        tx.commit().await?;
        Ok(answers)
    }

    /// One statement per queue, in priority order, under one write lock.
    async fn reserve(&self, node: &str, queues: &[String], limit: u32) -> sqlx::Result<Vec<Job>> {
        let limit = limit as usize;
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        let now = now_ms();
        let mut jobs = Vec::new();
        for queue in queues {
            let remaining = limit - jobs.len();
            if remaining == 0 {
                break;
            }
            let claim = sqlx::query(sqlx::AssertSqlSafe(CLAIM_QUEUE.as_str()))
                .bind(now)
                .bind(node)
                .bind(queue)
                .bind(i64::try_from(remaining).unwrap_or(i64::MAX));
            jobs.extend(fetch_jobs(&mut *tx, claim, Shape::Full).await?);
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// One statement per kind of completion present, under one write lock.
    /// Every statement touches only rows still `reserved` by `node` (see PostgreSQL's
    /// `COMPLETE`).
    async fn apply_completions(&self, node: &str, split: &SplitBatch) -> sqlx::Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        update_ids(&mut tx, COUNT_COMPLETED, &split.completed, now, node).await?;
        update_ids(&mut tx, COMPLETE_COMPLETED, &split.completed, now, node).await?;
        if !split.retry_ids.is_empty() {
            let retries: Vec<(i64, &str, i64, bool)> = split
                .retry_ids
                .iter()
                .zip(&split.retry_errors)
                .zip(&split.retry_at)
                .zip(&split.retry_refund)
                .map(|(((id, error), at), refund)| (*id, error.as_str(), time_param(*at), *refund))
                .collect();
            sqlx::query(COMPLETE_RETRY)
                .bind(json(&retries))
                .bind(node)
                .execute(&mut *tx)
                .await?;
        }
        if !split.fail_ids.is_empty() {
            let fails: Vec<(i64, &str)> = split
                .fail_ids
                .iter()
                .zip(&split.fail_errors)
                .map(|(id, error)| (*id, error.as_str()))
                .collect();
            let fails = json(&fails);
            for statement in [COUNT_FAILED, COMPLETE_FAIL_DEAD, COMPLETE_FAIL] {
                sqlx::query(statement)
                    .bind(&fails)
                    .bind(now)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        update_ids(&mut tx, COMPLETE_RELEASE, &split.released, now, node).await?;
        tx.commit().await
    }

    /// The count, the failed_jobs INSERT and the UPDATE, under one write lock.
    async fn fail_stuck(&self, cutoff: DateTime<Utc>, reason: &str) -> sqlx::Result<Vec<i64>> {
        let now = now_ms();
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        sqlx::query(COUNT_KILLED)
            .bind(time_param(cutoff))
            .execute(&mut *tx)
            .await?;
        sqlx::query(KILL_STUCK_DEAD)
            .bind(time_param(cutoff))
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> = sqlx::query_scalar(KILL_STUCK)
            .bind(time_param(cutoff))
            .bind(reason)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn touch_node(
        &self,
        node: &str,
        live_since: DateTime<Utc>,
        running: u64,
    ) -> sqlx::Result<u64> {
        // Same RFC 3339 text as register_node writes; compared as unix milliseconds, as in
        // RESCUE_EXPIRED.
        sqlx::query("UPDATE nodes SET seen_at = ?2, jobs_running = ?3 WHERE name = ?1")
            .bind(node)
            .bind(Utc::now().to_rfc3339())
            .bind(i64::try_from(running).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM nodes
             WHERE CAST(ROUND((julianday(seen_at) - 2440587.5) * 86400000) AS INTEGER) > ?1",
        )
        .bind(live_since.timestamp_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(live).unwrap_or(0))
    }

    /// The rows taken off `job_counts`, deleted, and the emptied counts dropped, under one
    /// write lock.
    async fn prune_finished(&self, cutoff: i64) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        sqlx::query(UNCOUNT_PRUNED)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        let pruned = sqlx::query(PRUNE_JOBS)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(PRUNE_COUNTS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pruned)
    }

    /// The INSERT and the DELETE, under one write lock.
    async fn requeue_failed(&self, id: Option<i64>) -> sqlx::Result<Vec<i64>> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await?;
        let (insert, delete) = match id {
            Some(_) => (RETRY_FAILED_ONE, DELETE_FAILED_ONE),
            None => (RETRY_FAILED_ALL, DELETE_FAILED_ALL),
        };
        let mut insert = sqlx::query_scalar(insert).bind(now_ms());
        let mut delete = sqlx::query(delete);
        if let Some(id) = id {
            insert = insert.bind(id);
            delete = delete.bind(id);
        }
        let ids: Vec<i64> = insert.fetch_all(&mut *tx).await?;
        delete.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn job_notifications(&self) -> sqlx::Result<Option<BoxStream<'static, ()>>> {
        // SQLite has no notifications: the dispatcher polls.
        Ok(None)
    }
}

/// One of the completion statements that take a JSON array of ids as `?1` and now as `?2`;
/// nothing to run for no ids.
async fn update_ids(
    tx: &mut SqliteConnection,
    sql: &'static str,
    ids: &[i64],
    now: i64,
    node: &str,
) -> sqlx::Result<()> {
    if !ids.is_empty() {
        sqlx::query(sql)
            .bind(json(&ids))
            .bind(now)
            .bind(node)
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// One job inside the caller's IMMEDIATE transaction: inserted, or the unfinished job
/// holding its unique key.
async fn insert_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job: &NewJob,
    now: i64,
) -> sqlx::Result<Enqueued> {
    let inserted = enqueue_query(job)
        .bind(now.saturating_add(rows::duration_ms(job.delay)))
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let enqueued = match (inserted.first(), &job.unique_key) {
        (Some(&id), _) => Enqueued {
            id,
            existing: false,
            queue: job.queue.clone(),
        },
        (None, Some(key)) => {
            let holder: Vec<(i64, String)> = sqlx::query_as(UNIQUE_HOLDER)
                .bind(key)
                .fetch_all(&mut **tx)
                .await?;
            let Some((id, queue)) = holder.into_iter().next() else {
                // The conflict was the key's; under the write lock its holder is there.
                return Err(sqlx::Error::RowNotFound);
            };
            Enqueued {
                id,
                existing: true,
                queue,
            }
        }
        // Without a unique key only the primary key can conflict, which AUTOINCREMENT
        // never does; treat it as the database error it would be.
        (None, None) => return Err(sqlx::Error::RowNotFound),
    };
    Ok(enqueued)
}
