//! SQLite (WAL) implementation of [`Store`], the embedded default.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chom_core::config::DatabaseConfig;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Backend, NodeRecord, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A lazily opened SQLite pool in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and later store methods).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(start.elapsed())
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let now = chrono::Utc::now().to_rfc3339();
        sqlx::query(
            "INSERT INTO nodes (name, hostname, pid, version, started_at, seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid,
                 version = excluded.version, started_at = excluded.started_at,
                 seen_at = excluded.seen_at",
        )
        .bind(&node.name)
        .bind(&node.hostname)
        .bind(i64::from(node.pid))
        .bind(&node.version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
