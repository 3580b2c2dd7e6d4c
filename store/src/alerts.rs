//! Active alerts received from Alertmanager (`alerts`) on both backends.
//!
//! One implementation, instantiated for each backend by a macro (sqlx's row and pool types
//! differ per database), as in `inventory.rs`; the shared store suite runs both.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chom_core::alert::{
    Alert, AlertCounts, AlertStatus, AlertUpdate, MAX_ACTIVE_LISTED, MAX_CRITICAL_NAMED,
};
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{PgStore, SqliteStore, StoreError};

/// Alert operations (a supertrait of [`super::Store`]).
#[async_trait]
pub trait Alerts: Send + Sync {
    /// Apply one webhook call's changes in one transaction, in order: a firing alert is
    /// inserted or replaces the row of its fingerprint (keeping when it was first received),
    /// a resolved one is deleted. Returns once committed.
    async fn apply_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError>;
    /// Active alerts, critical first, then warning, then the rest, each oldest first; at most
    /// `limit` (itself capped at [`MAX_ACTIVE_LISTED`]).
    async fn active_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError>;
    /// How many alerts are active, how many critical, and the oldest critical names: one
    /// bounded statement, for the `alerts` health check.
    async fn alert_counts(&self) -> Result<AlertCounts, StoreError>;
    /// Delete the alerts last received before `before` (Alertmanager re-sends a firing
    /// alert every `repeat_interval`, so one not heard of for much longer was resolved while
    /// the node did not hear it): the table stays bounded. Returns how many.
    async fn forget_stale_alerts(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Labels or annotations as stored: a JSON object of strings.
fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a map of strings serializes")
}

/// A stored JSON object of strings; anything else (another program's odd row) reads as
/// empty rather than failing the listing.
fn map_column(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Upsert one firing alert; `received_at` is kept from the first time.
const UPSERT: &str = "INSERT INTO alerts (fingerprint, alertname, severity, labels, annotations,
        starts_at, ends_at, generator_url, received_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {now}, {now})
    ON CONFLICT (fingerprint) DO UPDATE SET alertname = EXCLUDED.alertname,
        severity = EXCLUDED.severity, labels = EXCLUDED.labels,
        annotations = EXCLUDED.annotations, starts_at = EXCLUDED.starts_at,
        ends_at = EXCLUDED.ends_at, generator_url = EXCLUDED.generator_url,
        updated_at = {now}";

const DELETE: &str = "DELETE FROM alerts WHERE fingerprint = $1";

/// The listing's order: critical, warning, the rest; oldest first; the fingerprint breaks ties.
const ORDER: &str = "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, \
     starts_at, fingerprint";

/// Counts and up to `$1` critical names in one statement: the LEFT JOIN keeps the counts row
/// when no alert is critical.
const COUNTS: &str = "SELECT c.active, c.critical, n.alertname
    FROM (SELECT (SELECT count(*) FROM alerts) AS active,
                 (SELECT count(*) FROM alerts WHERE severity = 'critical') AS critical) c
    LEFT JOIN (SELECT alertname, starts_at, fingerprint FROM alerts
               WHERE severity = 'critical' ORDER BY starts_at, fingerprint LIMIT $1) n ON 1 = 1
    ORDER BY n.starts_at, n.fingerprint";

/// The statements and decoding on one backend. The module provides `NOW` (the current time
/// in SQL), `time_param` (a timestamp as stored), `time_column` (a timestamp column as read,
/// clamped into the node's range) and `read_time`/`read_opt_time` (its decoders).
macro_rules! alerts {
    ($store:ty, $db:ty, begin = $begin:expr) => {
        fn alert_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Alert, sqlx::Error> {
            Ok(Alert {
                fingerprint: row.try_get(0)?,
                alertname: row.try_get(1)?,
                severity: row.try_get(2)?,
                status: AlertStatus::Firing,
                labels: map_column(&row.try_get::<String, _>(3)?),
                annotations: map_column(&row.try_get::<String, _>(4)?),
                starts_at: read_time(row, 5)?,
                ends_at: read_opt_time(row, 6)?,
                generator_url: row.try_get(7)?,
            })
        }

        fn select_active() -> String {
            format!(
                "SELECT fingerprint, alertname, severity, labels, annotations, {}, {}, \
                 generator_url FROM alerts ORDER BY {ORDER} LIMIT $1",
                time_column("starts_at"),
                time_column("ends_at"),
            )
        }

        #[async_trait]
        impl Alerts for $store {
            async fn apply_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
                if updates.is_empty() {
                    return Ok(());
                }
                let upsert = UPSERT.replace("{now}", NOW);
                let mut tx = self.pool.begin_with($begin).await?;
                for update in updates {
                    match update {
                        AlertUpdate::Firing(a) => {
                            sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
                                .bind(&a.fingerprint)
                                .bind(&a.alertname)
                                .bind(&a.severity)
                                .bind(map_json(&a.labels))
                                .bind(map_json(&a.annotations))
                                .bind(time_param(a.starts_at))
                                .bind(a.ends_at.map(time_param))
                                .bind(&a.generator_url)
                                .execute(&mut *tx)
                                .await?;
                        }
                        AlertUpdate::Resolved { fingerprint } => {
                            sqlx::query(DELETE)
                                .bind(fingerprint)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn active_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError> {
                let limit = i64::from(limit.min(MAX_ACTIVE_LISTED));
                let rows = sqlx::query(sqlx::AssertSqlSafe(select_active()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(alert_from_row).collect::<Result<_, _>>()?)
            }

            async fn alert_counts(&self) -> Result<AlertCounts, StoreError> {
                let rows = sqlx::query(COUNTS)
                    .bind(i64::from(MAX_CRITICAL_NAMED))
                    .fetch_all(&self.pool)
                    .await?;
                let mut counts = AlertCounts::default();
                for row in &rows {
                    counts.active = count(row.try_get(0)?);
                    counts.critical = count(row.try_get(1)?);
                    if let Some(name) = row.try_get::<Option<String>, _>(2)?
                        && !counts.critical_names.contains(&name)
                    {
                        counts.critical_names.push(name);
                    }
                }
                Ok(counts)
            }

            async fn forget_stale_alerts(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM alerts WHERE updated_at < $1")
                    .bind(time_param(before))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

mod pg {
    use super::*;
    use crate::sqltime::pg::*;
    alerts!(PgStore, sqlx::Postgres, begin = "BEGIN");
}

mod lite {
    use super::*;
    use crate::sqltime::lite::*;
    alerts!(SqliteStore, sqlx::Sqlite, begin = "BEGIN IMMEDIATE");
}
