//! Tenant API tokens (`api_tokens`) on both backends: made and revoked through the admin RPC,
//! looked up by the HTTP API on every request. Only a token's hash is ever bound to a
//! statement; the token itself never reaches the database.
//!
//! One implementation, instantiated for each backend by a macro (sqlx's row and pool types
//! differ per database), as in `inventory.rs`; the shared store suite runs both.

use async_trait::async_trait;
use chom_core::inventory::{Tenant, Tier};
use chom_core::limits::{self, MAX_ACTIVE_TOKENS, MAX_TOKENS_LISTED};
use chom_core::token::{ApiToken, TokenHash};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use sqlx::error::ErrorKind;

use super::{PgStore, SqliteStore, StoreError};

/// How stale `last_used_at` may get before [`Tokens::touch_token`] writes it again: one
/// write per token per minute at most, however many requests it authenticates.
pub const TOUCH_INTERVAL: TimeDelta = TimeDelta::minutes(1);

/// API token operations (a supertrait of [`super::Store`]).
#[async_trait]
pub trait Tokens: Send + Sync {
    /// Store a new token of `tenant_id` by its hash. [`StoreError::Invalid`] for an unknown
    /// tenant, or one that already holds [`MAX_ACTIVE_TOKENS`] tokens not revoked (the count
    /// and the insert run under a lock on the tenant's row, so racing calls cannot pass it).
    async fn create_token(
        &self,
        tenant_id: i64,
        name: &str,
        hash: &TokenHash,
    ) -> Result<ApiToken, StoreError>;
    /// A tenant's tokens: those not revoked by id, then the revoked ones, latest revoked
    /// first; at most [`MAX_TOKENS_LISTED`]. [`StoreError::Invalid`] for an unknown tenant.
    async fn tokens(&self, tenant_id: i64) -> Result<Vec<ApiToken>, StoreError>;
    /// Revoke a token (idempotent: a revoked token keeps its first revocation time); `false`
    /// when there is no such token.
    async fn revoke_token(&self, id: i64) -> Result<bool, StoreError>;
    /// The token (not revoked) with this hash and its tenant (tier and status, for the rate
    /// limit and the suspension check), in one statement; `None` for an unknown or revoked
    /// token.
    async fn authenticate(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(ApiToken, Tenant)>, StoreError>;
    /// Record that token `id` was used at `now`, only when its `last_used_at` is unset or
    /// older than [`TOUCH_INTERVAL`] before `now` (and the token is not revoked); `true` when
    /// it wrote. A caller that already holds the token's `last_used_at` from
    /// [`Tokens::authenticate`] can skip the call while it is fresh.
    async fn touch_token(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// The row an `INSERT ... RETURNING` gave (read with `fetch_all`; see `inventory.rs`).
fn first<R>(rows: Vec<R>) -> Result<R, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

fn tier(value: &str) -> Result<Tier, sqlx::Error> {
    Tier::parse(value).ok_or_else(|| sqlx::Error::Decode(format!("unknown tier `{value}`").into()))
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A unique hash collision means the caller reused a token (generated ones never collide).
fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            StoreError::Conflict("a token with this hash exists already".to_owned())
        }
        _ => StoreError::Database(error),
    }
}

/// The refusal of a token for a tenant that holds `active` tokens already.
fn too_many(tenant_id: i64, active: u64) -> StoreError {
    StoreError::Invalid(format!(
        "tenant {tenant_id} holds {active} tokens that are not revoked (at most \
         {MAX_ACTIVE_TOKENS}); revoke one first (`chom tenants tokens {tenant_id}`)"
    ))
}

/// The statements and decoding on one backend. The module provides `NOW` (the current time
/// in SQL), `time_param`, `time_column` (a timestamp column as read, clamped into the node's
/// range) and `read_time`/`read_opt_time` (its decoders).
macro_rules! tokens {
    ($store:ty, $db:ty, begin = $begin:expr, lock = $lock:expr) => {
        /// The token columns, each prefixed by `table` (`k.` in a join; nothing in a
        /// RETURNING clause, which SQLite lets name only the table's own columns).
        fn token_columns(table: &str) -> String {
            format!(
                "{table}id, {table}tenant_id, {table}name, {}, {}, {}",
                time_column(&format!("{table}created_at")),
                time_column(&format!("{table}last_used_at")),
                time_column(&format!("{table}revoked_at")),
            )
        }

        fn token_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ApiToken, sqlx::Error> {
            Ok(ApiToken {
                id: row.try_get(0)?,
                tenant_id: row.try_get(1)?,
                name: row.try_get(2)?,
                created_at: read_time(row, 3)?,
                last_used_at: read_opt_time(row, 4)?,
                revoked_at: read_opt_time(row, 5)?,
            })
        }

        /// The tenant columns that follow the token's in [`Tokens::authenticate`].
        fn tenant_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Tenant, sqlx::Error> {
            Ok(Tenant {
                id: row.try_get(6)?,
                name: row.try_get(7)?,
                tier: tier(row.try_get(8)?)?,
                status: row.try_get(9)?,
            })
        }

        /// Whether the tenant exists; inside a transaction, its row is locked (PostgreSQL)
        /// until the commit.
        async fn tenant_exists<'c, E>(
            executor: E,
            tenant_id: i64,
            lock: &str,
        ) -> Result<bool, sqlx::Error>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let sql = format!("SELECT id FROM tenants WHERE id = $1{lock}");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .fetch_all(executor)
                .await?;
            Ok(!rows.is_empty())
        }

        #[async_trait]
        impl Tokens for $store {
            async fn create_token(
                &self,
                tenant_id: i64,
                name: &str,
                hash: &TokenHash,
            ) -> Result<ApiToken, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                if !tenant_exists(&mut *tx, tenant_id, $lock).await? {
                    return Err(StoreError::Invalid(format!(
                        "no tenant {tenant_id} (see `chom tenants list`)"
                    )));
                }
                let active: i64 = sqlx::query(
                    "SELECT count(*) FROM api_tokens WHERE tenant_id = $1 AND revoked_at IS NULL",
                )
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                if count(active) >= u64::from(MAX_ACTIVE_TOKENS) {
                    return Err(too_many(tenant_id, count(active)));
                }
                let sql = format!(
                    "INSERT INTO api_tokens (tenant_id, name, hash) VALUES ($1, $2, $3)
                     RETURNING {}",
                    token_columns("")
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant_id)
                    .bind(name)
                    .bind(hash.as_str())
                    .fetch_all(&mut *tx)
                    .await
                    .and_then(first)
                    .map_err(classify)?;
                let token = token_from_row(&row)?;
                tx.commit().await?;
                Ok(token)
            }

            async fn tokens(&self, tenant_id: i64) -> Result<Vec<ApiToken>, StoreError> {
                if !tenant_exists(&self.pool, tenant_id, "").await? {
                    return Err(StoreError::Invalid(format!(
                        "no tenant {tenant_id} (see `chom tenants list`)"
                    )));
                }
                let sql = format!(
                    "SELECT {} FROM api_tokens k WHERE k.tenant_id = $1
                     ORDER BY CASE WHEN k.revoked_at IS NULL THEN 0 ELSE 1 END,
                              k.revoked_at DESC, k.id
                     LIMIT $2",
                    token_columns("k.")
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant_id)
                    .bind(i64::from(MAX_TOKENS_LISTED))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
            }

            async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
                let sql = format!(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, {NOW}) WHERE id = $1"
                );
                let result = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn authenticate(
                &self,
                hash: &TokenHash,
            ) -> Result<Option<(ApiToken, Tenant)>, StoreError> {
                let sql = format!(
                    "SELECT {}, t.id, t.name, t.tier, t.status
                     FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.hash = $1 AND k.revoked_at IS NULL",
                    token_columns("k.")
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(hash.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some((token_from_row(&row)?, tenant_from_row(&row)?)),
                    None => None,
                })
            }

            async fn touch_token(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
                let now = limits::clamp_time(now);
                let stale = now - TOUCH_INTERVAL;
                let result = sqlx::query(
                    "UPDATE api_tokens SET last_used_at = $2
                     WHERE id = $1 AND revoked_at IS NULL
                       AND (last_used_at IS NULL OR last_used_at <= $3)",
                )
                .bind(id)
                .bind(time_param(now))
                .bind(time_param(stale))
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() > 0)
            }
        }
    };
}

mod pg {
    use super::*;
    use crate::sqltime::pg::*;

    // The tenant's row is locked while its tokens are counted and the new one inserted, so
    // two racing creations cannot both pass the limit. NO KEY UPDATE conflicts with itself
    // but not with the KEY SHARE locks foreign keys take (sites, servers, tokens).
    tokens!(
        PgStore,
        sqlx::Postgres,
        begin = "BEGIN",
        lock = " FOR NO KEY UPDATE"
    );
}

mod lite {
    use super::*;
    use crate::sqltime::lite::*;

    // BEGIN IMMEDIATE takes SQLite's single write lock up front: nothing else writes
    // between the count and the insert.
    tokens!(
        SqliteStore,
        sqlx::Sqlite,
        begin = "BEGIN IMMEDIATE",
        lock = ""
    );
}
