//! Operators of the web console (`ui_users`) and their sessions (`ui_sessions`) on both
//! backends. A password reaches the store only as its Argon2id hash, a session only as the
//! SHA-256 of its id: the store holds nothing a browser could present.
//!
//! One implementation, instantiated for each backend by a macro, as in `tokens.rs`; the
//! shared store suite runs both.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use sqlx::error::ErrorKind;

use super::{PgStore, SqliteStore, StoreError};

/// How stale a session's `last_seen_at` may get before [`UiUsers::touch_ui_session`] writes
/// it again: one write per session per minute at most, however many pages it loads.
pub const SESSION_TOUCH_INTERVAL: TimeDelta = TimeDelta::minutes(1);

/// An operator of the console, with the hash their password is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiUser {
    /// Database id.
    pub id: i64,
    /// Sign-in name.
    pub name: String,
    /// Argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// When the operator was added.
    pub created_at: DateTime<Utc>,
}

/// A live session: whose it is and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// The operator's id.
    pub user_id: i64,
    /// The operator's name.
    pub user: String,
    /// When the session last loaded a page, to within [`SESSION_TOUCH_INTERVAL`].
    pub last_seen_at: DateTime<Utc>,
}

/// Console operator and session operations (a supertrait of [`super::Store`]).
#[async_trait]
pub trait UiUsers: Send + Sync {
    /// Store a new operator; [`StoreError::Conflict`] when the name is taken.
    async fn create_ui_user(&self, name: &str, password_hash: &str) -> Result<UiUser, StoreError>;
    /// Remove an operator and end their sessions; `false` when there is no such operator.
    async fn remove_ui_user(&self, name: &str) -> Result<bool, StoreError>;
    /// The operator named `name`.
    async fn ui_user(&self, name: &str) -> Result<Option<UiUser>, StoreError>;
    /// Start a session of `user_id` known by `id_hash` (64 hex digits), first dropping that
    /// operator's sessions unused since `idle_before`.
    async fn create_ui_session(
        &self,
        user_id: i64,
        id_hash: &str,
        idle_before: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The session known by `id_hash` when it was used after `idle_before`.
    async fn ui_session(
        &self,
        id_hash: &str,
        idle_before: DateTime<Utc>,
    ) -> Result<Option<UiSession>, StoreError>;
    /// Record that the session was used at `now`, only when its `last_seen_at` is older
    /// than [`SESSION_TOUCH_INTERVAL`]; `true` when it wrote.
    async fn touch_ui_session(&self, id_hash: &str, now: DateTime<Utc>)
    -> Result<bool, StoreError>;
    /// End a session (sign-out); `false` when there was none.
    async fn end_ui_session(&self, id_hash: &str) -> Result<bool, StoreError>;
}

/// The row an `INSERT ... RETURNING` gave (read with `fetch_all`; see `inventory.rs`).
fn first<R>(rows: Vec<R>) -> Result<R, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

fn classify(error: sqlx::Error, name: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            StoreError::Conflict(format!("an operator named `{name}` exists already"))
        }
        _ => StoreError::Database(error),
    }
}

macro_rules! ui_users {
    ($store:ty, $db:ty, begin = $begin:expr) => {
        fn user_columns() -> String {
            format!("id, name, password_hash, {}", time_column("created_at"))
        }

        fn user_from_row(row: &<$db as sqlx::Database>::Row) -> Result<UiUser, sqlx::Error> {
            Ok(UiUser {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                password_hash: row.try_get(2)?,
                created_at: read_time(row, 3)?,
            })
        }

        #[async_trait]
        impl UiUsers for $store {
            async fn create_ui_user(
                &self,
                name: &str,
                password_hash: &str,
            ) -> Result<UiUser, StoreError> {
                let sql = format!(
                    "INSERT INTO ui_users (name, password_hash) VALUES ($1, $2) RETURNING {}",
                    user_columns()
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(password_hash)
                    .fetch_all(&self.pool)
                    .await
                    .and_then(first)
                    .map_err(|e| classify(e, name))?;
                Ok(user_from_row(&row)?)
            }

            async fn remove_ui_user(&self, name: &str) -> Result<bool, StoreError> {
                // Sessions first, in the same transaction: SQLite enforces the cascade only
                // with `PRAGMA foreign_keys` on.
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "DELETE FROM ui_sessions WHERE user_id IN
                     (SELECT id FROM ui_users WHERE name = $1)",
                )
                .bind(name)
                .execute(&mut *tx)
                .await?;
                let removed = sqlx::query("DELETE FROM ui_users WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(removed > 0)
            }

            async fn ui_user(&self, name: &str) -> Result<Option<UiUser>, StoreError> {
                let sql = format!("SELECT {} FROM ui_users WHERE name = $1", user_columns());
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(user_from_row).transpose()?)
            }

            async fn create_ui_session(
                &self,
                user_id: i64,
                id_hash: &str,
                idle_before: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1 AND last_seen_at <= $2")
                    .bind(user_id)
                    .bind(time_param(chom_core::limits::clamp_time(idle_before)))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO ui_sessions (id_hash, user_id) VALUES ($1, $2)")
                    .bind(id_hash)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn ui_session(
                &self,
                id_hash: &str,
                idle_before: DateTime<Utc>,
            ) -> Result<Option<UiSession>, StoreError> {
                let sql = format!(
                    "SELECT s.user_id, u.name, {}
                     FROM ui_sessions s JOIN ui_users u ON u.id = s.user_id
                     WHERE s.id_hash = $1 AND s.last_seen_at > $2",
                    time_column("s.last_seen_at")
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id_hash)
                    .bind(time_param(chom_core::limits::clamp_time(idle_before)))
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(UiSession {
                    user_id: row.try_get(0)?,
                    user: row.try_get(1)?,
                    last_seen_at: read_time(&row, 2)?,
                }))
            }

            async fn touch_ui_session(
                &self,
                id_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let now = chom_core::limits::clamp_time(now);
                let result = sqlx::query(
                    "UPDATE ui_sessions SET last_seen_at = $2
                     WHERE id_hash = $1 AND last_seen_at <= $3",
                )
                .bind(id_hash)
                .bind(time_param(now))
                .bind(time_param(now - SESSION_TOUCH_INTERVAL))
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn end_ui_session(&self, id_hash: &str) -> Result<bool, StoreError> {
                let result = sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
                    .bind(id_hash)
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

    ui_users!(PgStore, sqlx::Postgres, begin = "BEGIN");
}

mod lite {
    use super::*;
    use crate::sqltime::lite::*;

    ui_users!(SqliteStore, sqlx::Sqlite, begin = "BEGIN IMMEDIATE");
}
