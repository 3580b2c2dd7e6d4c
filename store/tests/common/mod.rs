//! Test databases for the store suite: a fresh SQLite file or a fresh PostgreSQL database per
//! test, opened through `chom_store::open` and migrated, plus a second raw pool on the
//! same database for the plain SQL another program (or a test) would run.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chom_core::config::DatabaseConfig;
use chom_store::{self as store, Store};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

/// Where the PostgreSQL tests create their databases.
pub const DEFAULT_PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";

/// The admin URL: `CHOM_TEST_PG_URL` or the local trust-auth default.
pub fn pg_admin_url() -> String {
    std::env::var("CHOM_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A raw pool on the test database, for SQL the store does not offer.
#[derive(Clone)]
pub enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Run `$body` with `$pool` bound to whichever raw pool `$raw` is: sqlx's pool types differ
/// per database, and SQL with `$N` placeholders runs on both.
macro_rules! on_pool {
    ($raw:expr, |$pool:ident| $body:expr) => {
        match $raw {
            Raw::Pg($pool) => $body,
            Raw::Sqlite($pool) => $body,
        }
    };
}

/// One migrated test database. Fields drop in order: the store and the raw pool first, then
/// the guard that deletes the database (even when the test panicked).
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub raw: Raw,
    pub url: String,
    _guard: Guard,
}

enum Guard {
    /// Removing the directory removes the database, its WAL and shared-memory files.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg {
        admin_url: String,
        name: String,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Pg { admin_url, name } = self {
            // Drop runs inside the test's runtime (or while it unwinds): do the async work on
            // a thread of its own with its own runtime. FORCE ends the pools' connections.
            let admin_url = admin_url.clone();
            let db = name.clone();
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for dropping the test database");
                rt.block_on(async move {
                    let mut conn = PgConnection::connect(&admin_url).await?;
                    let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await?;
                    conn.close().await
                })
            })
            .join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
                Err(_) => eprintln!("could not drop test database {name}: thread panicked"),
            }
        }
    }
}

fn config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url,
        max_connections: 10,
        connect_timeout: Duration::from_secs(10),
    }
}

/// Apply the backend's migrations but the last `held_back` through `pool`, as an older
/// version of the node left the database.
async fn migrate_all_but<'a, A>(dir: &str, held_back: usize, pool: A)
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut migrator = sqlx::migrate::Migrator::new(path)
        .await
        .expect("migrations");
    let keep = migrator.migrations.len() - held_back;
    migrator.migrations = migrator.migrations[..keep].to_vec().into();
    migrator.run(pool).await.expect("older migrations");
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory, migrated.
    pub async fn sqlite() -> TestDb {
        Self::sqlite_but(0).await
    }

    /// A fresh SQLite file with every migration applied but the last `held_back` (0: all,
    /// through the store).
    pub async fn sqlite_but(held_back: usize) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chom.db");
        let url = format!("sqlite://{}", path.display());
        let store = store::open(&config(url.clone())).expect("open sqlite store");
        let raw = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10)),
            )
            .await
            .expect("raw sqlite pool");
        if held_back == 0 {
            store.migrate().await.expect("migrate sqlite");
        } else {
            migrate_all_but("migrations/sqlite", held_back, &raw).await;
        }
        TestDb {
            store,
            raw: Raw::Sqlite(raw),
            url,
            _guard: Guard::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database `chom_store_<random>`, migrated; dropped afterwards.
    pub async fn postgres() -> TestDb {
        Self::postgres_but(0).await
    }

    /// A fresh PostgreSQL database with every migration applied but the last `held_back` (0:
    /// all, through the store); dropped afterwards.
    pub async fn postgres_but(held_back: usize) -> TestDb {
        let admin_url = pg_admin_url();
        let name = format!("chom_store_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {admin_url} (set CHOM_TEST_PG_URL): {e}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        // From here on the guard drops the database whatever happens.
        let guard = Guard::Pg {
            admin_url: admin_url.clone(),
            name: name.clone(),
        };
        let mut url = url::Url::parse(&admin_url).expect("CHOM_TEST_PG_URL is a URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let store = store::open(&config(url.clone())).expect("open postgres store");
        let raw = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("raw postgres pool");
        if held_back == 0 {
            store.migrate().await.expect("migrate postgres");
        } else {
            migrate_all_but("migrations/postgres", held_back, &raw).await;
        }
        TestDb {
            store,
            raw: Raw::Pg(raw),
            url,
            _guard: guard,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn is_pg(&self) -> bool {
        matches!(self.raw, Raw::Pg(_))
    }

    /// Run one statement given in both dialects (no parameters).
    pub async fn exec(&self, pg: &'static str, sqlite: &'static str) -> u64 {
        let sql = if self.is_pg() { pg } else { sqlite };
        on_pool!(&self.raw, |pool| sqlx::query(sql)
            .execute(pool)
            .await
            .expect(sql)
            .rows_affected())
    }

    /// Insert `n` noop jobs into `queue` with one statement, as another program might.
    pub async fn bulk_insert(&self, queue: &str, n: i64) {
        let sql = if self.is_pg() {
            "INSERT INTO jobs (queue, kind, payload)
             SELECT $1, 'noop', '{}' FROM generate_series(1, $2)"
        } else {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2)
             INSERT INTO jobs (queue, kind, payload) SELECT ?1, 'noop', '{}' FROM c"
        };
        on_pool!(&self.raw, |pool| sqlx::query(sql)
            .bind(queue)
            .bind(n)
            .execute(pool)
            .await
            .expect("bulk insert")
            .rows_affected());
    }

    /// `INSERT INTO jobs (queue, kind, payload)` inside a transaction of its own, the way the
    /// README tells other programs to enqueue. Returns the new id.
    pub async fn plain_insert(&self, queue: &str, kind: &str, payload: &str) -> i64 {
        on_pool!(&self.raw, |pool| {
            let mut tx = pool.begin().await.expect("begin");
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (queue, kind, payload) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(queue)
            .bind(kind)
            .bind(payload)
            .fetch_one(&mut *tx)
            .await
            .expect("plain insert");
            tx.commit().await.expect("commit");
            id
        })
    }

    /// Set a timestamp column of one job (`column` is a constant from the test).
    pub async fn set_job_time(&self, id: i64, column: &'static str, at: DateTime<Utc>) {
        match &self.raw {
            Raw::Pg(pool) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE jobs SET {column} = $2 WHERE id = $1"
                )))
                .bind(id)
                .bind(at)
                .execute(pool)
                .await
                .expect("set job time");
            }
            Raw::Sqlite(pool) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE jobs SET {column} = ?2 WHERE id = ?1"
                )))
                .bind(id)
                .bind(at.timestamp_millis())
                .execute(pool)
                .await
                .expect("set job time");
            }
        }
    }

    /// Set `nodes.seen_at` (TIMESTAMPTZ on PostgreSQL, RFC 3339 text on SQLite).
    pub async fn set_seen_at(&self, node: &str, at: DateTime<Utc>) {
        let affected = match &self.raw {
            Raw::Pg(pool) => sqlx::query("UPDATE nodes SET seen_at = $2 WHERE name = $1")
                .bind(node)
                .bind(at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Raw::Sqlite(pool) => sqlx::query("UPDATE nodes SET seen_at = ?2 WHERE name = ?1")
                .bind(node)
                .bind(at.to_rfc3339())
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .expect("set seen_at");
        assert_eq!(affected, 1, "node {node} is registered");
    }

    /// `nodes.seen_at` of a node.
    pub async fn seen_at(&self, node: &str) -> DateTime<Utc> {
        match &self.raw {
            Raw::Pg(pool) => sqlx::query("SELECT seen_at FROM nodes WHERE name = $1")
                .bind(node)
                .fetch_one(pool)
                .await
                .expect("seen_at")
                .get("seen_at"),
            Raw::Sqlite(pool) => {
                let text: String = sqlx::query_scalar("SELECT seen_at FROM nodes WHERE name = ?1")
                    .bind(node)
                    .fetch_one(pool)
                    .await
                    .expect("seen_at");
                DateTime::parse_from_rfc3339(&text)
                    .expect("seen_at is RFC 3339")
                    .with_timezone(&Utc)
            }
        }
    }

    /// Number of rows of a table.
    pub async fn count(&self, table: &'static str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        on_pool!(&self.raw, |pool| sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await)
        .expect("count")
    }
}
