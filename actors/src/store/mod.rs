//! The job store: one trait, a PostgreSQL and a SQLite implementation.
//!
//! Both use runtime `sqlx::query` (no database needed at build time) and their own migration
//! folder (`actors/migrations/{postgres,sqlite}`), embedded at compile time. Pools are created
//! lazily: building a store never touches the network, so the node starts (and reports the
//! database as down on `/health`) even when the database is unreachable.

mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chom_core::config::{DatabaseConfig, DatabaseKind};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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
}

/// Everything the node stores in its database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which implementation this is.
    fn backend(&self) -> Backend;
    /// Apply every pending migration.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// One round trip (`SELECT 1`); returns its latency.
    async fn ping(&self) -> Result<Duration, StoreError>;
    /// Record (or refresh) this node in the `nodes` table.
    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Close the pool, waiting for connections in use to be returned.
    async fn close(&self);
}

/// Build the store the config names. Never connects: pools are lazy.
pub fn open(cfg: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    match cfg.kind() {
        DatabaseKind::Sqlite { path } => Ok(Arc::new(SqliteStore::open(&path, cfg)?)),
        DatabaseKind::Postgres => Ok(Arc::new(PgStore::open(&cfg.url, cfg)?)),
    }
}

/// Run a store operation under a deadline, so a wedged database (SIGSTOPed server, dropped
/// packets) turns into an error value instead of a hung caller.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}
