//! PostgreSQL implementation of [`Store`].
//!
//! Every timestamp is taken from the database clock (`now()`), so several nodes sharing the
//! database agree on what is due. Hot paths are one statement each: a claim is one
//! `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)` covering every queue, a completion
//! batch is one statement of data-modifying CTEs whatever its size.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chom_core::config::DatabaseConfig;
use chom_core::job::{
    Completion, Enqueued, FailedJob, Job, JobFilter, KindFailures, NewJob, QueueStats,
};
use chom_core::limits;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgListener, PgPool, PgRow, Postgres};
use sqlx::query::Query;

use super::rows::{self, Counts, Shape, SplitBatch};
use super::{Backend, ClusterNode, NodeRecord, Store, StoreError};

/// A lazily connected PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Build the pool without connecting.
    pub fn open(url: &str, cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let pool = super::pool_options(cfg)
            .connect_lazy(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and later store methods).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

// === SQL ===

/// The columns of [`rows::JOB_COLUMN_NAMES`] in PostgreSQL's spelling (read by position in
/// [`job_from_row`]). Timestamps are clamped into [`limits::min_time`]..=[`limits::max_time`]
/// in SQL: sqlx decodes a timestamptz past chrono's range (year 262143, `infinity`) by
/// panicking, so a row another program wrote with an absurd time must never reach it. Long
/// texts are cut as `shape` says.
fn job_columns(shape: Shape) -> String {
    let (payload, payload_bytes) = TEXT.column("payload", shape.payload_bytes());
    let (error, error_bytes) = TEXT.column("last_error", shape.error_bytes());
    let reserved_at = clamped_time("reserved_at");
    let available_at = clamped_time("available_at");
    let created_at = clamped_time("created_at");
    let finished_at = clamped_time("finished_at");
    format!(
        "id, queue, kind, {payload}, {payload_bytes}, attempts, max_attempts, timeout_ms, state, \
         unique_key, {error}, {error_bytes}, {reserved_at}, reserved_by, {available_at}, \
         {created_at}, {finished_at}"
    )
}

/// A timestamptz column brought into the node's range (NULL stays NULL, which LEAST and
/// GREATEST would not keep).
fn clamped_time(column: &str) -> String {
    const MIN: &str = "'1970-01-01 00:00:00+00'::timestamptz";
    const MAX: &str = "'9999-12-31 23:59:59+00'::timestamptz";
    format!(
        "CASE WHEN {column} < {MIN} THEN {MIN} WHEN {column} > {MAX} THEN {MAX} \
         ELSE {column} END AS {column}"
    )
}

/// How PostgreSQL spells a long text column (`left` counts characters).
const TEXT: rows::TextSql = rows::TextSql {
    no_length: "NULL::bigint",
    prefix: |column, max| format!("left({column}, {max})"),
    byte_length: |column| format!("octet_length({column})::bigint"),
};

/// Insert a job; with a unique key held by a pending/reserved job, insert nothing (the
/// unique index on `live_key`, the key of an unfinished job, decides, race-free).
const ENQUEUE: &str = "
    INSERT INTO jobs (queue, kind, payload, max_attempts, timeout_ms, unique_key, available_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 millisecond')
    ON CONFLICT DO NOTHING
    RETURNING id";

const UNIQUE_HOLDER: &str = "
    SELECT id, queue FROM jobs WHERE live_key = $1";

/// Ids for a batch, taken up front so that each inserted row is known by its place in the
/// batch (RETURNING promises no order).
const BATCH_IDS: &str = "
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, $1)";

/// A batch in one statement, one array per column; rows whose unique key is held by an
/// unfinished job (or by an earlier row of the same batch) are not inserted.
const ENQUEUE_BATCH: &str = "
    INSERT INTO jobs (id, queue, kind, payload, max_attempts, timeout_ms, unique_key, available_at)
    SELECT t.id, t.queue, t.kind, t.payload, t.max_attempts, t.timeout_ms, t.unique_key,
           now() + t.delay_ms * interval '1 millisecond'
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[],
                $7::text[], $8::bigint[])
         AS t(id, queue, kind, payload, max_attempts, timeout_ms, unique_key, delay_ms)
    ON CONFLICT DO NOTHING
    RETURNING id";

const UNIQUE_HOLDERS: &str = "
    SELECT live_key, id, queue FROM jobs WHERE live_key = ANY($1)";

/// The claim, one statement for every queue. Pending is spelled `reserved_at IS NULL`, the
/// predicate of `jobs_claim_idx` (a CHECK keeps it equal to `state = 'pending'`); `state` is
/// in no index, so that the completion is a HOT update (migration 0004). The LATERAL subquery runs once per queue in the
/// order of `$1` (a nested loop over the unnested array, which keeps its order), each an index
/// scan of `jobs_claim_idx` locking rows as it reads them with SKIP LOCKED; the outer LIMIT
/// stops pulling as soon as `$2` rows are locked, so a lower queue is not even read while a
/// higher one fills the batch (strict priority), and no row is locked without being claimed.
/// MATERIALIZED keeps the picking subquery from being inlined and re-run. The UPDATE finds
/// the picked rows by primary key (`id = ANY(ARRAY(...))`): written as `FROM picked`, an
/// analyzed table made the planner hash-join against a sequential scan of all of `jobs`
/// (retained finished rows included) — 44 ms instead of 5 ms per 1,000-row claim at 100k rows.
/// `attempts` saturates at the INTEGER maximum: a row another program wrote with
/// `attempts = 2147483647` must not make every claim of its queue fail with "integer out of
/// range".
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH picked AS MATERIALIZED (
             SELECT j.id
             FROM unnest($1::text[]) AS q(name)
             CROSS JOIN LATERAL (
                 SELECT id FROM jobs
                 WHERE reserved_at IS NULL AND queue = q.name AND available_at <= now()
                 ORDER BY available_at, id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) AS j
             LIMIT $2
         )
         UPDATE jobs
         SET state = 'reserved', reserved_at = now(), reserved_by = $3,
             attempts = LEAST(jobs.attempts::bigint + 1, 2147483647)::integer
         WHERE jobs.id = ANY(ARRAY(SELECT id FROM picked))
         RETURNING {}",
        job_columns(Shape::Full)
    )
});

/// A whole completion batch in one statement (one round trip, atomic): one data-modifying CTE
/// per completion variant, each over an array parameter (empty arrays cost an index probe).
/// PostgreSQL runs every data-modifying CTE exactly once whether or not it is referenced.
/// Every CTE only touches rows still `reserved`.
const COMPLETE: &str = "
    WITH completed AS (
        UPDATE jobs SET state = 'completed', finished_at = now()
        WHERE id = ANY($1::bigint[]) AND state = 'reserved' AND reserved_by = $9
    ), retried AS (
        UPDATE jobs
        SET state = 'pending', available_at = r.available_at, last_error = r.error,
            reserved_at = NULL, reserved_by = NULL,
            attempts = CASE WHEN r.refund THEN GREATEST(jobs.attempts - 1, 0) ELSE jobs.attempts END
        FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $8::boolean[])
            AS r(id, error, available_at, refund)
        WHERE jobs.id = r.id AND jobs.state = 'reserved' AND jobs.reserved_by = $9
    ), failed AS (
        UPDATE jobs SET state = 'failed', finished_at = now(), last_error = f.error
        FROM unnest($5::bigint[], $6::text[]) AS f(id, error)
        WHERE jobs.id = f.id AND jobs.state = 'reserved' AND jobs.reserved_by = $9
        RETURNING jobs.id, jobs.queue, jobs.kind, jobs.payload, jobs.attempts,
            jobs.max_attempts, jobs.timeout_ms, f.error
    ), dead AS (
        INSERT INTO failed_jobs
            (queue, kind, payload, exception, job_id, attempts, max_attempts, timeout_ms, failed_at)
        SELECT queue, kind, payload, error, id, attempts, max_attempts, timeout_ms, now()
        FROM failed
    ), released AS (
        UPDATE jobs
        SET state = 'pending', available_at = now(), attempts = GREATEST(attempts - 1, 0),
            reserved_at = NULL, reserved_by = NULL
        WHERE id = ANY($7::bigint[]) AND state = 'reserved' AND reserved_by = $9
    )
    SELECT 1";

/// Per queue: pending jobs counted from `jobs_claim_idx`, which holds only them (an index-only
/// scan, however many finished rows are retained), and reserved, completed and failed jobs from
/// `job_counts`, which triggers keep equal to those rows (migration 0012). One statement, so
/// one snapshot: a job moving between states in between is counted once, in one of them.
const QUEUE_COUNTS: &str = "
    SELECT queue, sum(ready)::bigint AS ready, sum(delayed)::bigint AS delayed,
        sum(reserved)::bigint AS reserved, sum(completed)::bigint AS completed,
        sum(failed)::bigint AS failed
    FROM (
        SELECT queue,
            count(*) FILTER (WHERE available_at <= now()) AS ready,
            count(*) FILTER (WHERE available_at > now()) AS delayed,
            0::bigint AS reserved, 0::bigint AS completed, 0::bigint AS failed
        FROM jobs WHERE reserved_at IS NULL GROUP BY queue
        UNION ALL
        SELECT queue, 0, 0, reserved, completed, failed FROM job_counts
    ) AS counted
    GROUP BY queue
    HAVING sum(ready + delayed + reserved + completed + failed) > 0";

const PAUSE_QUEUE: &str =
    "INSERT INTO queue_pauses (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING";

/// Where the reaper's scans of `jobs_reserved_at_idx` start: no reserved row is older than
/// `queue_marks.stuck_before` (migration 0012), less a margin for a claim still committing
/// while the killer raised the mark (longer than any statement of the store runs).
macro_rules! reserved_since {
    () => {
        "reserved_at >= COALESCE((SELECT at FROM queue_marks WHERE name = 'stuck_before')
             - interval '5 minutes', '-infinity')"
    };
}

/// Back to pending, due now, reservation cleared; the consumed attempt stays counted. Scans
/// only when `job_counts` says the node holds reservations, and then only reservations since
/// the mark.
const RELEASE_NODE: &str = concat!(
    "UPDATE jobs SET state = 'pending', available_at = now(), reserved_at = NULL, reserved_by = NULL
     WHERE EXISTS (SELECT 1 FROM job_counts WHERE node = $1 AND reserved > 0)
       AND state = 'reserved' AND reserved_by = $1 AND ",
    reserved_since!()
);

/// Only when `job_counts` shows reservations held by a node other than `$2` that has not
/// heartbeat since `$1` (a one-time filter: otherwise nothing is read), and then only the
/// reservations made between the mark and `$1`.
const RESCUE_EXPIRED: &str = concat!(
    "UPDATE jobs SET state = 'pending', available_at = now(), reserved_at = NULL, reserved_by = NULL
     WHERE EXISTS (
           SELECT 1 FROM job_counts AS c
           WHERE c.reserved > 0 AND c.node <> $2
             AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.name = c.node AND nodes.seen_at > $1))
       AND reserved_at < $1 AND ",
    reserved_since!(),
    "
       AND state = 'reserved' AND reserved_by IS DISTINCT FROM $2
       AND NOT EXISTS (
           SELECT 1 FROM nodes WHERE nodes.name = jobs.reserved_by AND nodes.seen_at > $1)"
);

/// Finished rows were reserved first and finish after it: the reserved_at range bounds the
/// index scan to the rows to delete (the trigger takes them off `job_counts`).
const PRUNE_JOBS: &str = "
    DELETE FROM jobs WHERE reserved_at < $1 AND state IN ('completed', 'failed')
    AND finished_at < $1";

/// Counts that reached zero (a node name no longer used), in a statement of their own: inside
/// the prune's transaction their row locks would hold up that node's claims until it ends.
const PRUNE_COUNTS: &str =
    "DELETE FROM job_counts WHERE reserved = 0 AND completed = 0 AND failed = 0";

/// Reads only the reservations made between the mark and `$1` (every older one was failed by
/// an earlier pass), then raises the mark to `$1` unless it moved meanwhile (a row reserved
/// with an earlier time lowered it, or another node's pass raised it).
const KILL_STUCK: &str = concat!(
    "WITH mark AS (
        SELECT at FROM queue_marks WHERE name = 'stuck_before'
    ), killed AS (
        UPDATE jobs SET state = 'failed', finished_at = now(), last_error = $2
        WHERE state = 'reserved' AND reserved_at < $1 AND ",
    reserved_since!(),
    "
        RETURNING id, queue, kind, payload, attempts, max_attempts, timeout_ms
    ), dead AS (
        INSERT INTO failed_jobs
            (queue, kind, payload, exception, job_id, attempts, max_attempts, timeout_ms, failed_at)
        SELECT queue, kind, payload, $2, id, attempts, max_attempts, timeout_ms, now()
        FROM killed
    ), raised AS (
        UPDATE queue_marks SET at = $1
        WHERE name = 'stuck_before' AND at = (SELECT at FROM mark) AND at < $1
    )
    SELECT id FROM killed ORDER BY id"
);

/// Move failed_jobs rows back into jobs (attempts 0, no unique key), atomically: the
/// `{filter}` is `id = $1` (one) or `true` (all), two statements so each gets its own plan.
macro_rules! retry_failed_sql {
    ($filter:literal) => {
        concat!(
            "WITH retried AS (
                DELETE FROM failed_jobs WHERE ",
            $filter,
            "
                RETURNING id, queue, kind, payload, max_attempts, timeout_ms
            )
            INSERT INTO jobs (queue, kind, payload, max_attempts, timeout_ms)
            SELECT queue, kind, payload, max_attempts, timeout_ms FROM retried ORDER BY id
            RETURNING id"
        )
    };
}
const RETRY_FAILED_ONE: &str = retry_failed_sql!("id = $1");
const RETRY_FAILED_ALL: &str = retry_failed_sql!("true");

/// A failed_jobs listing: payload and exception cut to a preview, `failed_at` clamped.
static FAILED_LISTING: LazyLock<String> = LazyLock::new(|| {
    let (payload, payload_bytes) = TEXT.column("payload", Some(limits::PREVIEW_BYTES));
    let (exception, exception_bytes) = TEXT.column("exception", Some(limits::PREVIEW_BYTES));
    let failed_at = clamped_time("failed_at");
    format!(
        "SELECT id, uuid, job_id, connection, queue, kind, {payload}, {payload_bytes}, \
         {exception}, {exception_bytes}, attempts, {failed_at} \
         FROM failed_jobs ORDER BY failed_at DESC, id DESC LIMIT $1"
    )
});

/// Per kind: how many failures since `$1` and the newest one's error (its first
/// [`limits::PREVIEW_BYTES`] characters; the decoder cuts them to bytes).
const FAILURES_BY_KIND: &str = "
    SELECT kind, count(*) AS failures,
        (array_agg(left(exception, 2048) ORDER BY failed_at DESC, id DESC))[1] AS last_error
    FROM failed_jobs WHERE failed_at >= $1
    GROUP BY kind ORDER BY failures DESC, kind";

// === row decoding ===

const _: () = assert!(
    limits::PREVIEW_BYTES == 2048,
    "FAILURES_BY_KIND spells it out"
);

/// The health probe's write: one row of `health_probe` (migration 0005), rewritten.
const PROBE_WRITE: &str = "
    INSERT INTO health_probe (id, probed_at) VALUES (1, now())
    ON CONFLICT (id) DO UPDATE SET probed_at = EXCLUDED.probed_at";

fn job_from_row(row: &PgRow, shape: Shape) -> Result<Job, sqlx::Error> {
    // By position, not by name: a claim decodes thousands of rows a second and a lookup by
    // name hashes the column name for every cell. Every query that reads jobs selects
    // `job_columns` (checked here in debug builds, so the store suite catches a query that
    // does not).
    debug_assert!(
        row.columns()
            .iter()
            .map(sqlx::Column::name)
            .eq(rows::JOB_COLUMN_NAMES),
        "job row columns must be JOB_COLUMN_NAMES in order"
    );
    let (payload, payload_truncated) =
        rows::preview(row.try_get(3)?, row.try_get(4)?, shape.payload_bytes());
    let (last_error, last_error_truncated) =
        rows::opt_preview(row.try_get(10)?, row.try_get(11)?, shape.error_bytes());
    Ok(Job {
        id: row.try_get(0)?,
        queue: row.try_get(1)?,
        kind: row.try_get(2)?,
        payload,
        payload_truncated,
        attempts: rows::count_column(i64::from(row.try_get::<i32, _>(5)?)),
        max_attempts: row
            .try_get::<Option<i32>, _>(6)?
            .and_then(|n| rows::max_attempts_column(i64::from(n))),
        timeout_ms: row
            .try_get::<Option<i64>, _>(7)?
            .and_then(rows::timeout_column),
        state: rows::state_column(row.try_get(8)?)?,
        unique_key: row.try_get(9)?,
        last_error,
        last_error_truncated,
        reserved_at: row.try_get(12)?,
        reserved_by: row.try_get(13)?,
        available_at: row.try_get(14)?,
        created_at: row.try_get(15)?,
        finished_at: row.try_get(16)?,
    })
}

fn failed_from_row(row: &PgRow) -> Result<FailedJob, sqlx::Error> {
    let parts = rows::FailedParts {
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        exception: row.try_get("exception")?,
        attempts: i64::from(row.try_get::<i32, _>("attempts")?),
        failed_at: row.try_get("failed_at")?,
    };
    rows::failed_from_row(row, parts)
}

/// A text column (SQLite's counterpart reads odd stored values leniently).
fn text_column_value(row: &PgRow, column: &str) -> Result<String, sqlx::Error> {
    row.try_get(column)
}

stats_decoders!(PgRow);

/// Every timestamp is the database clock (see the module doc): a statement that needs "now"
/// says `now()` itself, so there is nothing to bind.
fn bind_now(query: Query<'_, Postgres, PgArguments>) -> Query<'_, Postgres, PgArguments> {
    query
}

/// A timestamp parameter: a timestamptz, bound as is.
fn time_param(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

// === impl Store ===

store_impl!(
    PgStore,
    db = Postgres,
    backend = Backend::Postgres,
    migrations = "migrations/postgres",
    begin = "BEGIN"
);

/// The operations whose PostgreSQL statements differ from SQLite's in more than spelling: each
/// is one statement, timed by the database clock, with `FOR UPDATE SKIP LOCKED` or
/// data-modifying CTEs where SQLite takes its write lock for several statements.
impl PgStore {
    async fn upsert_node(&self, node: &NodeRecord) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO nodes (name, hostname, pid, version, started_at, seen_at, instance, jobs_running)
             VALUES ($1, $2, $3, $4, now(), now(), $5, 0)
             ON CONFLICT (name) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
                 version = EXCLUDED.version, started_at = now(), seen_at = now(),
                 instance = EXCLUDED.instance, jobs_running = 0",
        )
        .bind(&node.name)
        .bind(&node.hostname)
        .bind(i64::from(node.pid))
        .bind(&node.version)
        .bind(&node.instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_nodes(&self, live_since: DateTime<Utc>) -> sqlx::Result<Vec<ClusterNode>> {
        let rows = sqlx::query(
            "SELECT name, instance, hostname, pid, version, started_at, seen_at, jobs_running
             FROM nodes WHERE seen_at > $1 ORDER BY name",
        )
        .bind(live_since)
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
                    started_at: row.try_get(5)?,
                    seen_at: row.try_get(6)?,
                    jobs_running: u64::try_from(row.try_get::<i64, _>(7)?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn insert_job(&self, job: &NewJob) -> sqlx::Result<Enqueued> {
        // The INSERT waits for a racing uncommitted holder of the key and then does nothing;
        // the SELECT (a new snapshot) then sees that holder. If the holder finished in
        // between, the key is free again: insert anew. Each statement commits on its own
        // before its answer is complete (`fetch_all` reads to the end, so an error at commit
        // is never lost).
        for _ in 0..rows::ENQUEUE_RACE_RETRIES {
            let inserted = enqueue_query(job)
                .bind(rows::duration_ms(job.delay))
                .fetch_all(&self.pool)
                .await?;
            if let Some(&id) = inserted.first() {
                return Ok(Enqueued {
                    id,
                    existing: false,
                    queue: job.queue.clone(),
                });
            }
            let Some(key) = &job.unique_key else {
                // Without a unique key only the primary key can conflict, which a sequence
                // never does; treat it as the database error it would be.
                return Err(sqlx::Error::RowNotFound);
            };
            let holder: Vec<(i64, String)> = sqlx::query_as(UNIQUE_HOLDER)
                .bind(key)
                .fetch_all(&self.pool)
                .await?;
            if let Some((id, queue)) = holder.into_iter().next() {
                return Ok(Enqueued {
                    id,
                    existing: true,
                    queue,
                });
            }
        }
        Err(sqlx::Error::Protocol(format!(
            "unique key {:?} kept changing hands during enqueue",
            job.unique_key
        )))
    }

    /// A batch in one transaction: one INSERT for the rows, one SELECT for the holders of the
    /// unique keys that were taken. A key whose holder finished between the two is free again:
    /// those rows go round once more, as in [`insert_job`](Self::insert_job).
    async fn insert_jobs(&self, jobs: &[NewJob]) -> sqlx::Result<Vec<Enqueued>> {
        let mut tx = self.pool.begin().await?;
        let mut answers: Vec<Option<Enqueued>> = vec![None; jobs.len()];
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        for _ in 0..rows::ENQUEUE_RACE_RETRIES {
            let refused = insert_rows(&mut tx, jobs, &todo, &mut answers).await?;
            if refused.is_empty() {
                break;
            }
            let keys: Vec<&str> = refused
                .iter()
                .map(|&i| jobs[i].unique_key.as_deref())
                .collect::<Option<_>>()
                // Without a unique key only the primary key can conflict, which the sequence
                // never does; treat it as the database error it would be.
                .ok_or(sqlx::Error::RowNotFound)?;
            let holders: HashMap<String, (i64, String)> =
                sqlx::query_as::<_, (String, i64, String)>(UNIQUE_HOLDERS)
                    .bind(&keys)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|(key, id, queue)| (key, (id, queue)))
                    .collect();
            todo.clear();
            for (i, key) in refused.into_iter().zip(keys) {
                match holders.get(key) {
                    Some((id, queue)) => {
                        answers[i] = Some(Enqueued {
                            id: *id,
                            existing: true,
                            queue: queue.clone(),
                        });
                    }
                    None => todo.push(i),
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        let answers = answers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                sqlx::Error::Protocol(
                    "unique keys kept changing hands during a batch enqueue".into(),
                )
            })?;
        tx.commit().await?;
        Ok(answers)
    }

    /// Every queue in one statement (see `CLAIM`).
    async fn reserve(&self, node: &str, queues: &[String], limit: u32) -> sqlx::Result<Vec<Job>> {
        let claim = sqlx::query(sqlx::AssertSqlSafe(CLAIM.as_str()))
            .bind(queues)
            .bind(i64::from(limit))
            .bind(node);
        fetch_jobs(&self.pool, claim, Shape::Full).await
    }

    /// The whole batch in one statement (see `COMPLETE`).
    async fn apply_completions(&self, node: &str, split: &SplitBatch) -> sqlx::Result<()> {
        sqlx::query(COMPLETE)
            .bind(&split.completed)
            .bind(&split.retry_ids)
            .bind(&split.retry_errors)
            .bind(&split.retry_at)
            .bind(&split.fail_ids)
            .bind(&split.fail_errors)
            .bind(&split.released)
            .bind(&split.retry_refund)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One statement: the UPDATE and the failed_jobs INSERT are CTEs (see `KILL_STUCK`).
    async fn fail_stuck(&self, cutoff: DateTime<Utc>, reason: &str) -> sqlx::Result<Vec<i64>> {
        sqlx::query_scalar(KILL_STUCK)
            .bind(cutoff)
            .bind(reason)
            .fetch_all(&self.pool)
            .await
    }

    async fn touch_node(
        &self,
        node: &str,
        live_since: DateTime<Utc>,
        running: u64,
    ) -> sqlx::Result<u64> {
        let live: i64 = sqlx::query_scalar(
            "WITH touched AS (
                 UPDATE nodes SET seen_at = now(), jobs_running = $3 WHERE name = $1 RETURNING name
             )
             SELECT count(*) FROM nodes
             WHERE seen_at > $2 OR name IN (SELECT name FROM touched)",
        )
        .bind(node)
        .bind(live_since)
        .bind(i64::try_from(running).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(live).unwrap_or(0))
    }

    /// The rows (the trigger takes them off `job_counts`), then the emptied counts.
    async fn prune_finished(&self, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
        let result = sqlx::query(PRUNE_JOBS)
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        sqlx::query(PRUNE_COUNTS).execute(&self.pool).await?;
        Ok(result.rows_affected())
    }

    /// One statement: the DELETE is a CTE feeding the INSERT (see `retry_failed_sql!`).
    async fn requeue_failed(&self, id: Option<i64>) -> sqlx::Result<Vec<i64>> {
        match id {
            Some(id) => {
                sqlx::query_scalar(RETRY_FAILED_ONE)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query_scalar(RETRY_FAILED_ALL)
                    .fetch_all(&self.pool)
                    .await
            }
        }
    }

    async fn job_notifications(&self) -> sqlx::Result<Option<BoxStream<'static, ()>>> {
        // The listener holds one pool connection for as long as the stream lives; closing
        // the pool ends the stream (PoolClosed), which returns that connection.
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(rows::JOBS_CHANNEL).await?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            match listener.try_recv().await {
                Ok(Some(_notification)) => Some(((), listener)),
                // The connection was lost and has been re-established (and re-LISTENed):
                // notifications sent meanwhile are gone, so wake the caller to look anyway.
                Ok(None) => Some(((), listener)),
                Err(error) => {
                    tracing::debug!(%error, "job notification stream ended");
                    None
                }
            }
        });
        Ok(Some(stream.boxed()))
    }
}

/// Insert the jobs at `todo` (indexes into `jobs`) in one statement, filling `answers` for
/// those inserted; the indexes of those refused (their unique key is held).
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[NewJob],
    todo: &[usize],
    answers: &mut [Option<Enqueued>],
) -> sqlx::Result<Vec<usize>> {
    let ids: Vec<i64> = sqlx::query_scalar(BATCH_IDS)
        .bind(i64::try_from(todo.len()).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
    let column = |f: &dyn Fn(&NewJob) -> Option<String>| -> Vec<Option<String>> {
        todo.iter().map(|&i| f(&jobs[i])).collect()
    };
    let inserted: HashSet<i64> = sqlx::query_scalar(ENQUEUE_BATCH)
        .bind(&ids)
        .bind(column(&|j| Some(j.queue.clone())))
        .bind(column(&|j| Some(j.kind.clone())))
        .bind(column(&|j| Some(j.payload.clone())))
        .bind(
            todo.iter()
                .map(|&i| rows::max_attempts_param(&jobs[i]))
                .collect::<Vec<_>>(),
        )
        .bind(
            todo.iter()
                .map(|&i| rows::timeout_param(&jobs[i]))
                .collect::<Vec<_>>(),
        )
        .bind(column(&|j| j.unique_key.clone()))
        .bind(
            todo.iter()
                .map(|&i| rows::duration_ms(jobs[i].delay))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    let mut refused = Vec::new();
    for (&i, &id) in todo.iter().zip(&ids) {
        if inserted.contains(&id) {
            answers[i] = Some(Enqueued {
                id,
                existing: false,
                queue: jobs[i].queue.clone(),
            });
        } else {
            refused.push(i);
        }
    }
    Ok(refused)
}
