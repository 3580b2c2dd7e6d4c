//! The job store: one trait, a PostgreSQL and a SQLite implementation.
//!
//! Both use runtime `sqlx::query` (no database needed at build time) and their own migration
//! folder (`store/migrations/{postgres,sqlite}`), embedded at compile time. Pools are created
//! lazily: building a store never touches the network, so the node starts (and reports the
//! database as down on `/health`) even when the database is unreachable.

/// Decoders of the statistics rows, the same on both backends: sqlx's row types differ per
/// database, so a macro keeps one copy. The backend module provides `text_column_value`.
macro_rules! stats_decoders {
    ($row:ty) => {
        /// One row of `QUEUE_COUNTS`: the queue and its counts.
        fn queue_counts_from_row(row: &$row) -> Result<(String, Counts), sqlx::Error> {
            Ok((
                text_column_value(row, "queue")?,
                Counts {
                    ready: rows::count(row.try_get("ready")?),
                    delayed: rows::count(row.try_get("delayed")?),
                    reserved: rows::count(row.try_get("reserved")?),
                    completed: rows::count(row.try_get("completed")?),
                    failed: rows::count(row.try_get("failed")?),
                },
            ))
        }

        /// One row of `FAILURES_BY_KIND`.
        fn kind_failures_from_row(row: &$row) -> Result<KindFailures, sqlx::Error> {
            Ok(KindFailures {
                kind: text_column_value(row, "kind")?,
                count: rows::count(row.try_get("failures")?),
                last_error: rows::preview(
                    row.try_get("last_error")?,
                    None,
                    Some(limits::PREVIEW_BYTES),
                )
                .0,
            })
        }
    };
}

#[macro_use]
mod store_impl;

mod alerts;
mod deadline;
mod inventory;
mod postgres;
mod rows;
mod sqlite;
mod sqltime;
mod tokens;
mod ui_users;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chom_core::config::{DatabaseConfig, DatabaseKind};
use chom_core::job::{
    Completion, Enqueued, FailedJob, Job, JobFilter, KindFailures, NewJob, QueueStats,
};
use chrono::{DateTime, Utc};

pub use alerts::Alerts;
pub use deadline::{Deadlined, Deadlines};
pub use inventory::Inventory;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tokens::{TOUCH_INTERVAL, Tokens};
pub use ui_users::{SESSION_TOUCH_INTERVAL, UiSession, UiUser, UiUsers};

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The configured URL cannot be used.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The operation did not finish in time.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    /// A file-system problem preparing the SQLite file.
    #[error("cannot prepare database file: {0}")]
    Io(#[from] std::io::Error),
    /// The row exists already (a duplicate id, name or domain).
    #[error("{0}")]
    Conflict(String),
    /// The request names something that does not exist or is still in use.
    #[error("{0}")]
    Invalid(String),
    /// The target has no room left (a server holding its `max_sites`).
    #[error("{0}")]
    Full(String),
}

/// Which implementation backs a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite in WAL mode (the embedded default).
    Sqlite,
}

impl Backend {
    /// Lowercase name, as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// The identity a node records in the `nodes` table at start.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    /// `node.name` (or the host name).
    pub name: String,
    /// The host the process runs on.
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// The node's version.
    pub version: String,
    /// This process's instance id (random per start).
    pub instance: String,
}

/// A live node sharing the database, as `chom cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterNode {
    /// `node.name`.
    pub name: String,
    /// The process instance holding the name (random per start).
    pub instance: String,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id.
    pub pid: i64,
    /// Its version.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub seen_at: DateTime<Utc>,
    /// Jobs it was running at that heartbeat.
    pub jobs_running: u64,
}

/// Everything the node stores in its database.
#[async_trait]
pub trait Store: Inventory + Alerts + Tokens + UiUsers + Send + Sync + 'static {
    /// Which implementation this is.
    fn backend(&self) -> Backend;
    /// Apply every pending migration.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// One round trip (`SELECT 1`); returns its latency.
    async fn ping(&self) -> Result<Duration, StoreError>;
    /// Commit one tiny write (the single row of `health_probe`) in a transaction; returns its
    /// latency. Fails when the store cannot write (a full disk, a read-only file or server,
    /// a wedged pool), which `SELECT 1` does not notice. Needs the migrations applied.
    async fn probe_write(&self) -> Result<Duration, StoreError>;
    /// Record (or refresh) this node in the `nodes` table.
    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Close the pool, waiting for connections in use to be returned.
    async fn close(&self);

    // === jobs ===

    /// Insert a job. With a unique key, returns the pending/reserved job holding that key
    /// instead (`existing: true`), atomically (two racing enqueues yield one job).
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError>;
    /// Insert a batch (at most [`MAX_ENQUEUE_BATCH`](chom_core::limits::MAX_ENQUEUE_BATCH))
    /// in one transaction, each job as [`enqueue`](Store::enqueue) would: the answers are in
    /// the batch's order, and all of it is stored or none (an invalid job refuses the batch).
    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError>;
    /// Claim up to `limit` due jobs for `node`, taking queues in the given order (strict
    /// priority: a later queue is only read when the earlier ones have no due job left). Claimed
    /// jobs become `reserved` (reserved_at = now, reserved_by = node) with `attempts + 1`.
    /// Concurrent claimers (other nodes) never get the same job (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL, a single writer on SQLite).
    async fn claim(
        &self,
        node: &str,
        queues: &[String],
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// Apply `node`'s batch of completions in one transaction. Only rows still `reserved` by
    /// `node` are changed: a job rescued or killed meanwhile, or rescued and claimed by another
    /// node, is left alone (a late result never overwrites the new holder's).
    async fn complete(&self, node: &str, batch: &[Completion]) -> Result<(), StoreError>;
    /// One job by id.
    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;
    /// Jobs matching the filter, newest first.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// Counts per queue, for every queue in `queues` (zeros included) and any other queue
    /// that has rows, from one snapshot. Its cost follows the unfinished jobs and the queues,
    /// not the finished jobs retained (`queue.retention`).
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStats>, StoreError>;

    // === queue control ===

    /// Stop claims from `queue` on every node sharing this database (idempotent).
    async fn pause_queue(&self, queue: &str) -> Result<(), StoreError>;
    /// Resume claims from `queue` (idempotent).
    async fn resume_queue(&self, queue: &str) -> Result<(), StoreError>;
    /// Queues currently paused.
    async fn paused_queues(&self) -> Result<Vec<String>, StoreError>;

    // === maintenance ===

    /// Jobs reserved by `node` go back to pending (the attempt they consumed stays counted).
    /// Run at start: a node of that name that died left them behind. Returns how many.
    async fn release_node(&self, node: &str) -> Result<u64, StoreError>;
    /// Jobs reserved before `cutoff` by a node other than `except_node` go back to pending
    /// (visibility timeout: their node died), unless that node's `nodes.seen_at` heartbeat is
    /// newer than `cutoff` (a live node's long job is never taken from it; the stuck-job killer
    /// handles wedged ones). Returns how many. Costs next to nothing while no such node holds a
    /// reservation, however many finished jobs are retained.
    async fn rescue_expired(
        &self,
        cutoff: DateTime<Utc>,
        except_node: &str,
    ) -> Result<u64, StoreError>;
    /// Jobs reserved before `cutoff` fail for good with `reason` (a failed_jobs row each).
    /// Returns their ids.
    async fn kill_stuck(&self, cutoff: DateTime<Utc>, reason: &str)
    -> Result<Vec<i64>, StoreError>;
    /// Delete completed and failed `jobs` rows finished before `cutoff`. Returns how many.
    async fn prune_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Record that `node` is alive (nodes.seen_at = now) and count the nodes seen after
    /// `live_since`, this one included (the cluster's size, e.g. for the rate limiter's
    /// per-node share while Redis is away).
    async fn heartbeat(
        &self,
        node: &str,
        live_since: DateTime<Utc>,
        jobs_running: u64,
    ) -> Result<u64, StoreError>;
    /// The nodes seen after `live_since`, by name.
    async fn cluster_nodes(
        &self,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<ClusterNode>, StoreError>;

    // === dead letters ===

    /// The newest `limit` failed_jobs rows.
    async fn failed_jobs(&self, limit: u32) -> Result<Vec<FailedJob>, StoreError>;
    /// Re-enqueue failed jobs as new pending jobs (attempts 0) and delete their failed_jobs
    /// rows; `None` = all of them. Returns the new job ids.
    async fn retry_failed(&self, id: Option<i64>) -> Result<Vec<i64>, StoreError>;
    /// Delete failed_jobs rows older than `cutoff`. Returns how many.
    async fn prune_failed(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
    /// failed_jobs rows since `since`, grouped by kind, most failures first.
    async fn failures_by_kind(&self, since: DateTime<Utc>)
    -> Result<Vec<KindFailures>, StoreError>;
    /// Number of failed_jobs rows since `since`.
    async fn failed_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError>;

    /// A wake-up stream: yields whenever a job is inserted (PostgreSQL LISTEN on the channel
    /// `chom_jobs`, fed by a trigger, so plain SQL inserts by other programs wake the node
    /// too). `None` when the backend has no notifications (SQLite: the dispatcher polls).
    async fn listen(&self) -> Result<Option<futures::stream::BoxStream<'static, ()>>, StoreError>;
}

/// Build the store the config names, every operation under its [`Deadlines`]. Never
/// connects: pools are lazy.
pub fn open(cfg: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let inner: Arc<dyn Store> = match cfg.kind() {
        DatabaseKind::Sqlite { path } => Arc::new(SqliteStore::open(&path, cfg)?),
        DatabaseKind::Postgres => Arc::new(PgStore::open(&cfg.url, cfg)?),
    };
    Ok(Arc::new(Deadlined::new(inner, Deadlines::for_config(cfg))))
}

/// Pool options both backends build their lazy pool from: the configured size and acquire
/// timeout, and [`release_clean`] on every connection returned.
fn pool_options<DB: sqlx::Database>(cfg: &DatabaseConfig) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(cfg.connect_timeout)
        .after_release(|conn, _| Box::pin(release_clean(conn)))
}

/// The pools' `after_release` check: a connection still inside a transaction is closed
/// instead of returned to the pool. sqlx lowers its transaction depth only when COMMIT or
/// ROLLBACK succeeds, so after a COMMIT that failed (SQLITE_FULL, which also ends SQLite's
/// transaction) the rollback on drop fails too and the connection would come back "in a
/// transaction": every later `begin` on it fails with "attempted to call begin_with at
/// non-zero transaction depth".
async fn release_clean<C: sqlx::Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        // A dropped transaction's rollback may still be queued on the connection: let it
        // run, then look again.
        conn.ping().await?;
    }
    let clean = !conn.is_in_transaction();
    if !clean {
        // Debug, not warn: it follows every failed write while the disk is full (thousands a
        // minute), and the failure itself is logged, throttled, by whoever wrote.
        tracing::debug!("store: closing a database connection left inside a transaction");
    }
    Ok(clean)
}

/// Run a store operation under a deadline, so a wedged database (SIGSTOPed server, dropped
/// packets) turns into an error value instead of a hung caller. Every operation of a store
/// from [`open`] already has one (its [`Deadlines`]); this is for a caller whose own budget is
/// shorter (a health check).
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}
