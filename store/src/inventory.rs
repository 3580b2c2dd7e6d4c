//! The fleet's inventory (`vps_servers`, `tenants`, `sites`) on both backends.
//!
//! One implementation, instantiated for each backend by a macro (sqlx's row and pool types
//! differ per database); the shared store suite runs both.

use async_trait::async_trait;
use chom_core::inventory::{NewSite, Site, SiteStatus, Tenant, Tier, VpsServer};
use sqlx::Row;
use sqlx::error::ErrorKind;

use super::{PgStore, SqliteStore, StoreError};

/// Inventory operations (a supertrait of [`super::Store`]).
#[async_trait]
pub trait Inventory: Send + Sync {
    /// Insert or update the `[[vps]]` entries of the config (source `config`). Rows added with
    /// `chom vps add` of the same id become config rows. Config entries name no owner: a new
    /// row has none, an existing row keeps its owner.
    async fn upsert_config_vps(&self, servers: &[VpsServer]) -> Result<(), StoreError>;
    /// Add a server (with its owning tenant, if any); [`StoreError::Conflict`] when the id
    /// exists, [`StoreError::Invalid`] naming the tenant when there is no such tenant.
    async fn add_vps(&self, vps: &VpsServer) -> Result<(), StoreError>;
    /// Remove a server; `false` when there was none, [`StoreError::Invalid`] while sites are on it.
    async fn remove_vps(&self, id: &str) -> Result<bool, StoreError>;
    /// Every server, by id.
    async fn vps_list(&self) -> Result<Vec<VpsServer>, StoreError>;
    /// One server.
    async fn vps(&self, id: &str) -> Result<Option<VpsServer>, StoreError>;
    /// Create a tenant; [`StoreError::Conflict`] when the name is taken.
    async fn create_tenant(&self, name: &str, tier: Tier) -> Result<Tenant, StoreError>;
    /// Every tenant, by id.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Suspend (`active = false`) or reactivate a tenant; the tenant as stored, `None` when
    /// there is no such tenant. A suspended tenant's API requests are refused (403).
    async fn set_tenant_active(&self, id: i64, active: bool) -> Result<Option<Tenant>, StoreError>;
    /// Create a site (status `pending`); [`StoreError::Conflict`] for a taken domain,
    /// [`StoreError::Invalid`] for an unknown tenant or server, or a server owned by another
    /// tenant (checked by the INSERT itself, so no caller can skip it).
    async fn create_site(&self, site: &NewSite) -> Result<Site, StoreError>;
    /// Sites, optionally of one tenant, by id.
    async fn sites(&self, tenant_id: Option<i64>) -> Result<Vec<Site>, StoreError>;
    /// One site.
    async fn site(&self, id: i64) -> Result<Option<Site>, StoreError>;
    /// Set a site's status and failure reason (stored up to
    /// [`MAX_ERROR_BYTES`](chom_core::limits::MAX_ERROR_BYTES)); `false` when there is no such
    /// site.
    async fn set_site_status(
        &self,
        id: i64,
        status: SiteStatus,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Delete a site's row (once `site.delete` removed it from its server); `false` when
    /// there is no such site.
    async fn delete_site(&self, id: i64) -> Result<bool, StoreError>;
    /// Active tenants and active sites (the `chom_active_*` gauges).
    async fn inventory_counts(&self) -> Result<(u64, u64), StoreError>;
    /// The number of sites on each server that holds any, by server id (one row per server,
    /// so a placement decision never reads every site).
    async fn site_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Turn constraint violations into errors an operator can act on.
fn classify(
    error: sqlx::Error,
    conflict: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict(conflict()),
            ErrorKind::ForeignKeyViolation => StoreError::Invalid(missing()),
            _ => StoreError::Database(error),
        },
        _ => StoreError::Database(error),
    }
}

/// The row an `INSERT ... RETURNING` gave. Such a statement is read with `fetch_all`, never
/// `fetch_one`: on SQLite, stopping after the first row resets the statement, and the
/// autocommit's COMMIT then fails silently (a full disk), acknowledging a row never stored.
fn first<R>(rows: Vec<R>) -> Result<R, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

fn port(value: i64) -> u16 {
    u16::try_from(value).unwrap_or(22)
}

fn tier(value: &str) -> Result<Tier, sqlx::Error> {
    Tier::parse(value).ok_or_else(|| sqlx::Error::Decode(format!("unknown tier `{value}`").into()))
}

fn site_status(value: &str) -> Result<SiteStatus, sqlx::Error> {
    SiteStatus::parse(value)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown site status `{value}`").into()))
}

/// A stored `max_sites`; the column's CHECK keeps it positive, and a value no `u32` holds is
/// refused rather than wrapped.
fn capacity(value: Option<i64>) -> Result<Option<u32>, sqlx::Error> {
    value
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| sqlx::Error::Decode(format!("max_sites {v} out of range").into()))
        })
        .transpose()
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `port` is INTEGER on PostgreSQL; read as BIGINT like SQLite's, so one decoder fits both.
const VPS_COLUMNS: &str = "id, host, CAST(port AS BIGINT), ssh_user, host_key, source,
    CAST(tenant_id AS BIGINT), CAST(max_sites AS BIGINT)";
const TENANT_COLUMNS: &str = "id, name, tier, status";
const SITE_COLUMNS: &str = "id, tenant_id, vps_id, domain, type, status, failure_reason";

const COUNTS: &str = "SELECT
    (SELECT count(*) FROM tenants WHERE status = 'active'),
    (SELECT count(*) FROM sites s JOIN tenants t ON t.id = s.tenant_id
     WHERE s.status = 'active' AND t.status = 'active')";

/// Rows are decoded the same way on both backends; a macro keeps one copy of the mapping
/// without fighting sqlx's per-database trait bounds.
macro_rules! decoders {
    ($row:ty) => {
        fn vps_from_row(row: &$row) -> Result<VpsServer, sqlx::Error> {
            Ok(VpsServer {
                id: row.try_get(0)?,
                host: row.try_get(1)?,
                port: port(row.try_get::<i64, _>(2)?),
                user: row.try_get(3)?,
                host_key: row.try_get(4)?,
                source: row.try_get(5)?,
                tenant_id: row.try_get(6)?,
                max_sites: capacity(row.try_get(7)?)?,
            })
        }

        fn tenant_from_row(row: &$row) -> Result<Tenant, sqlx::Error> {
            Ok(Tenant {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                tier: tier(row.try_get(2)?)?,
                status: row.try_get(3)?,
            })
        }

        fn site_from_row(row: &$row) -> Result<Site, sqlx::Error> {
            Ok(Site {
                id: row.try_get(0)?,
                tenant_id: row.try_get(1)?,
                vps_id: row.try_get(2)?,
                domain: row.try_get(3)?,
                site_type: row.try_get(4)?,
                status: site_status(row.try_get(5)?)?,
                failure_reason: row.try_get(6)?,
            })
        }
    };
}

/// The inventory on one backend. The SQL is written once: both backends take `$N`
/// placeholders (sqlx binds `$N` by number on SQLite too) and standard `CAST`s; only the
/// current time (`timestamptz` on PostgreSQL, unix milliseconds on SQLite), the transaction
/// opener (SQLite takes the write lock at once: `BEGIN IMMEDIATE`) and the row lock a site's
/// creation takes on its server (PostgreSQL only) differ.
macro_rules! inventory {
    ($store:ty, $db:ty, now = $now:expr, begin = $begin:expr, lock = $lock:expr) => {
        decoders!(<$db as sqlx::Database>::Row);

        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>;
        type Decoder<T> = fn(&<$db as sqlx::Database>::Row) -> Result<T, sqlx::Error>;

        /// Why [`Inventory::create_site`] inserted nothing: no such server, it belongs to
        /// another tenant, or it is full (read after the refusal, for the message only).
        async fn placement_refusal(pool: &sqlx::Pool<$db>, site: &NewSite) -> StoreError {
            let row = sqlx::query(
                "SELECT CAST(v.tenant_id AS BIGINT), o.name, t.name, CAST(v.max_sites AS BIGINT),
                        (SELECT CAST(count(*) AS BIGINT) FROM sites s WHERE s.vps_id = v.id)
                 FROM vps_servers v
                 LEFT JOIN tenants o ON o.id = v.tenant_id
                 LEFT JOIN tenants t ON t.id = $2
                 WHERE v.id = $1",
            )
            .bind(&site.vps_id)
            .bind(site.tenant_id)
            .fetch_optional(pool)
            .await;
            let vps = &site.vps_id;
            let tenant = site.tenant_id;
            let described = |id: i64, name: Option<String>| match name {
                Some(name) => format!("tenant {id} ({name})"),
                None => format!("tenant {id}"),
            };
            match row {
                Err(e) => StoreError::Database(e),
                Ok(None) => StoreError::Invalid(format!("no vps `{vps}`")),
                Ok(Some(row)) => {
                    let owner: Option<i64> = row.try_get(0).unwrap_or(None);
                    let owner_name: Option<String> = row.try_get(1).unwrap_or(None);
                    let tenant_name: Option<String> = row.try_get(2).unwrap_or(None);
                    let max_sites: Option<i64> = row.try_get(3).unwrap_or(None);
                    let sites: i64 = row.try_get(4).unwrap_or(0);
                    match owner {
                        _ if tenant_name.is_none() => {
                            StoreError::Invalid(format!("no tenant {tenant}"))
                        }
                        Some(owner) if owner != tenant => StoreError::Invalid(format!(
                            "vps `{vps}` belongs to {}; a site of {} cannot be placed on it",
                            described(owner, owner_name),
                            described(tenant, tenant_name),
                        )),
                        _ if max_sites.is_some_and(|max| sites >= max) => StoreError::Full(
                            format!(
                                "vps `{vps}` is full: {sites} sites, max_sites {}",
                                max_sites.unwrap_or(sites)
                            ),
                        ),
                        // It changed after the refusal (owner or capacity): the caller may retry.
                        _ => StoreError::Invalid(format!(
                            "vps `{vps}` changed while the site was created; try again"
                        )),
                    }
                }
            }
        }

        /// Every row `query` returns, decoded.
        async fn all<T>(
            pool: &sqlx::Pool<$db>,
            query: Query<'_>,
            decode: Decoder<T>,
        ) -> Result<Vec<T>, StoreError> {
            let rows = query.fetch_all(pool).await?;
            Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
        }

        /// The row `query` returns, if any, decoded.
        async fn optional<T>(
            pool: &sqlx::Pool<$db>,
            query: Query<'_>,
            decode: Decoder<T>,
        ) -> Result<Option<T>, StoreError> {
            Ok(query.fetch_optional(pool).await?.as_ref().map(decode).transpose()?)
        }

        #[async_trait]
        impl Inventory for $store {
            async fn upsert_config_vps(&self, servers: &[VpsServer]) -> Result<(), StoreError> {
                let sql = format!(
                    "INSERT INTO vps_servers (id, host, port, ssh_user, host_key, source, max_sites)
                     VALUES ($1, $2, CAST($3 AS INTEGER), $4, $5, 'config', CAST($6 AS INTEGER))
                     ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,
                         ssh_user = EXCLUDED.ssh_user, host_key = EXCLUDED.host_key,
                         max_sites = EXCLUDED.max_sites, source = 'config', updated_at = {}",
                    $now
                );
                let mut tx = self.pool.begin_with($begin).await?;
                for v in servers {
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&v.id)
                        .bind(&v.host)
                        .bind(i64::from(v.port))
                        .bind(&v.user)
                        .bind(&v.host_key)
                        .bind(v.max_sites.map(i64::from))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn add_vps(&self, v: &VpsServer) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO vps_servers
                         (id, host, port, ssh_user, host_key, source, tenant_id, max_sites)
                     VALUES ($1, $2, CAST($3 AS INTEGER), $4, $5, 'admin', $6, CAST($7 AS INTEGER))",
                )
                .bind(&v.id)
                .bind(&v.host)
                .bind(i64::from(v.port))
                .bind(&v.user)
                .bind(&v.host_key)
                .bind(v.tenant_id)
                .bind(v.max_sites.map(i64::from))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    classify(
                        e,
                        || format!("vps `{}` exists already", v.id),
                        || format!("no tenant {} (see `chom tenants list`)", v.tenant_id.unwrap_or(0)),
                    )
                })?;
                Ok(())
            }

            async fn remove_vps(&self, id: &str) -> Result<bool, StoreError> {
                let result = sqlx::query("DELETE FROM vps_servers WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        classify(e, String::new, || {
                            format!("vps `{id}` still has sites; move or delete them first")
                        })
                    })?;
                Ok(result.rows_affected() > 0)
            }

            async fn vps_list(&self) -> Result<Vec<VpsServer>, StoreError> {
                let sql = format!("SELECT {VPS_COLUMNS} FROM vps_servers ORDER BY id");
                all(&self.pool, sqlx::query(sqlx::AssertSqlSafe(sql)), vps_from_row).await
            }

            async fn vps(&self, id: &str) -> Result<Option<VpsServer>, StoreError> {
                let sql = format!("SELECT {VPS_COLUMNS} FROM vps_servers WHERE id = $1");
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
                optional(&self.pool, query, vps_from_row).await
            }

            async fn create_tenant(&self, name: &str, tier: Tier) -> Result<Tenant, StoreError> {
                let sql = format!(
                    "INSERT INTO tenants (name, tier) VALUES ($1, $2) RETURNING {TENANT_COLUMNS}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(tier.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .and_then(first)
                    .map_err(|e| {
                        classify(e, || format!("tenant `{name}` exists already"), String::new)
                    })?;
                Ok(tenant_from_row(&row)?)
            }

            async fn set_tenant_active(
                &self,
                id: i64,
                active: bool,
            ) -> Result<Option<Tenant>, StoreError> {
                let sql = format!(
                    "UPDATE tenants SET status = $2 WHERE id = $1 RETURNING {TENANT_COLUMNS}"
                );
                let status = if active { "active" } else { "suspended" };
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(status);
                let rows = query.fetch_all(&self.pool).await?;
                Ok(rows.first().map(tenant_from_row).transpose()?)
            }

            async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id");
                all(&self.pool, sqlx::query(sqlx::AssertSqlSafe(sql)), tenant_from_row).await
            }

            async fn create_site(&self, site: &NewSite) -> Result<Site, StoreError> {
                // The server's row is locked first (PostgreSQL: FOR UPDATE; SQLite's
                // BEGIN IMMEDIATE holds its only write lock), so neither its owner nor its
                // site count can change until this site is committed, and the INSERT, a new
                // statement with a fresh snapshot, counts every site committed before. The
                // owner and the capacity are checked in the INSERT itself: a server owned by
                // another tenant, or full, yields no row to insert.
                let mut tx = self.pool.begin_with($begin).await?;
                let lock = format!("SELECT id FROM vps_servers WHERE id = $1{}", $lock);
                sqlx::query(sqlx::AssertSqlSafe(lock))
                    .bind(&site.vps_id)
                    .fetch_all(&mut *tx)
                    .await?;
                let sql = format!(
                    "INSERT INTO sites (tenant_id, vps_id, domain, type)
                     SELECT CAST($1 AS BIGINT), v.id, $3, $4 FROM vps_servers v
                     WHERE v.id = $2 AND (v.tenant_id IS NULL OR v.tenant_id = $1)
                       AND (v.max_sites IS NULL
                            OR (SELECT count(*) FROM sites s WHERE s.vps_id = v.id) < v.max_sites)
                     RETURNING {SITE_COLUMNS}"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(site.tenant_id)
                    .bind(&site.vps_id)
                    .bind(&site.domain)
                    .bind(&site.site_type)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| {
                        classify(
                            e,
                            || format!("a site with domain `{}` exists already", site.domain),
                            || format!("no tenant {}", site.tenant_id),
                        )
                    })?;
                match rows.first() {
                    Some(row) => {
                        let created = site_from_row(row)?;
                        tx.commit().await?;
                        Ok(created)
                    }
                    None => {
                        tx.rollback().await?;
                        Err(placement_refusal(&self.pool, site).await)
                    }
                }
            }

            async fn sites(&self, tenant_id: Option<i64>) -> Result<Vec<Site>, StoreError> {
                let sql = format!(
                    "SELECT {SITE_COLUMNS} FROM sites
                     WHERE (CAST($1 AS BIGINT) IS NULL OR tenant_id = $1) ORDER BY id"
                );
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
                all(&self.pool, query, site_from_row).await
            }

            async fn site(&self, id: i64) -> Result<Option<Site>, StoreError> {
                let sql = format!("SELECT {SITE_COLUMNS} FROM sites WHERE id = $1");
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
                optional(&self.pool, query, site_from_row).await
            }

            async fn set_site_status(
                &self,
                id: i64,
                status: SiteStatus,
                reason: Option<&str>,
            ) -> Result<bool, StoreError> {
                let sql = format!(
                    "UPDATE sites SET status = $2, failure_reason = $3, updated_at = {}
                     WHERE id = $1",
                    $now
                );
                let result = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(status.as_str())
                    .bind(reason.map(crate::rows::stored_error))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn delete_site(&self, id: i64) -> Result<bool, StoreError> {
                let result = sqlx::query("DELETE FROM sites WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn inventory_counts(&self) -> Result<(u64, u64), StoreError> {
                let row = sqlx::query(COUNTS).fetch_one(&self.pool).await?;
                Ok((count(row.try_get(0)?), count(row.try_get(1)?)))
            }

            async fn site_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT vps_id, CAST(count(*) AS BIGINT) FROM sites GROUP BY vps_id ORDER BY vps_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, count(row.try_get(1)?))))
                    .collect()
            }
        }
    };
}

mod pg {
    use super::*;

    inventory!(
        PgStore,
        sqlx::Postgres,
        now = "now()",
        begin = "BEGIN",
        lock = " FOR UPDATE"
    );
}

mod lite {
    use super::*;

    inventory!(
        SqliteStore,
        sqlx::Sqlite,
        now = "CAST(strftime('%s', 'now') AS INTEGER) * 1000",
        begin = "BEGIN IMMEDIATE",
        // BEGIN IMMEDIATE took SQLite's one write lock: nothing can change the server.
        lock = ""
    );
}
