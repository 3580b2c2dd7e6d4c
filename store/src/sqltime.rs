//! Timestamps in SQL for the modules whose statements are written once for both backends
//! (alerts, tokens): PostgreSQL keeps `timestamptz`, SQLite milliseconds since the epoch.
//! Each backend's module gives `NOW` (the current time in SQL), `time_param` (a timestamp as
//! bound), `time_column` (a column as read, clamped into the node's range) and
//! `read_time`/`read_opt_time` (their decoders).

use chom_core::limits;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// PostgreSQL.
pub(crate) mod pg {
    use super::*;

    pub(crate) const NOW: &str = "now()";

    pub(crate) fn time_param(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    /// Clamped in SQL: sqlx panics decoding a timestamptz past chrono's range.
    pub(crate) fn time_column(column: &str) -> String {
        const MIN: &str = "'1970-01-01 00:00:00+00'::timestamptz";
        const MAX: &str = "'9999-12-31 23:59:59+00'::timestamptz";
        format!(
            "CASE WHEN {column} < {MIN} THEN {MIN} WHEN {column} > {MAX} THEN {MAX} \
             ELSE {column} END"
        )
    }

    pub(crate) fn read_time(
        row: &sqlx::postgres::PgRow,
        i: usize,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get(i)
    }

    pub(crate) fn read_opt_time(
        row: &sqlx::postgres::PgRow,
        i: usize,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        row.try_get(i)
    }
}

/// SQLite.
pub(crate) mod lite {
    use super::*;

    pub(crate) const NOW: &str = "CAST(strftime('%s', 'now') AS INTEGER) * 1000";

    pub(crate) fn time_param(t: DateTime<Utc>) -> i64 {
        t.timestamp_millis()
    }

    pub(crate) fn time_column(column: &str) -> String {
        format!("CAST({column} AS INTEGER)")
    }

    pub(crate) fn read_time(
        row: &sqlx::sqlite::SqliteRow,
        i: usize,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        Ok(limits::time_from_millis(row.try_get(i)?))
    }

    pub(crate) fn read_opt_time(
        row: &sqlx::sqlite::SqliteRow,
        i: usize,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(i)?
            .map(limits::time_from_millis))
    }
}
