//! PostgreSQL implementation of [`Store`].

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chom_core::config::DatabaseConfig;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Backend, NodeRecord, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A lazily connected PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Build the pool without connecting.
    pub fn open(url: &str, cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .connect_lazy(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and later store methods).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
        sqlx::query(
            "INSERT INTO nodes (name, hostname, pid, version, started_at, seen_at)
             VALUES ($1, $2, $3, $4, now(), now())
             ON CONFLICT (name) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
                 version = EXCLUDED.version, started_at = now(), seen_at = now()",
        )
        .bind(&node.name)
        .bind(&node.hostname)
        .bind(i64::from(node.pid))
        .bind(&node.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
