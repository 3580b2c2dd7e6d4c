//! The node's identity on its database: one live process per `node.name`.
//!
//! A node reserves jobs under its name and, when it starts, releases the jobs still reserved
//! under that name (its previous process died holding them). That is only safe if no other
//! live process uses the same name, so the name is claimed for the life of the process:
//!
//! - on PostgreSQL, with a session-level advisory lock keyed by the name, held on a dedicated
//!   connection. The server releases it when that session ends, so a node that was SIGKILLed
//!   or lost its host frees its name by itself, and a live node cannot be impersonated. The
//!   connection's `application_name` carries the name, host, pid and a per-process instance
//!   id, so a refused node can say who holds the name, and a node that lost its connection
//!   recognises its own stale session (a dead peer's session lingers until TCP gives up on it);
//! - on SQLite, with an exclusive lock on a file beside the database (`<file>.node.lock`): one
//!   node per database file, whatever data dir or name it was started with.
//!
//! Nothing here claims or releases jobs; the dispatcher waits for [`Readiness::identity_held`]
//! before it does.
//!
//! [`Readiness::identity_held`]: crate::handles::Readiness::identity_held

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chom_core::config::{DatabaseConfig, DatabaseKind};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Why a node may not use its name.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Another live process holds the name.
    #[error(
        "another live chom node named {name:?} is using this database ({holder}); give each node its own node.name (CHOM_NODE_NAME)"
    )]
    NameTaken {
        /// The contested name.
        name: String,
        /// Who holds it, as far as the database can tell.
        holder: String,
    },
    /// Another process holds the SQLite database file.
    #[error(
        "another chom node (pid {pid}) is using the database file {}; two nodes must not share a SQLite database", path.display()
    )]
    FileTaken {
        /// The database file.
        path: PathBuf,
        /// The pid recorded by the holder.
        pid: String,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database cannot be reached (yet): try again later.
    #[error("database not reachable: {0}")]
    Unreachable(String),
}

/// Identifies this process among every node that ever shared the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `node.name` (or the host name).
    pub name: String,
    /// The host the process runs on.
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// Random per process (16 hex digits): two processes never share it, even with pids reused.
    pub id: String,
}

impl Instance {
    /// This process, under `name`.
    pub fn current(name: &str) -> Self {
        Instance {
            name: name.to_owned(),
            hostname: crate::sys::hostname(),
            pid: std::process::id(),
            id: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// The PostgreSQL `application_name` of the lock session (at most 63 bytes are kept by
    /// the server, so the instance id comes first and the name last).
    fn application_name(&self) -> String {
        let text = format!(
            "chom {} pid={} host={} name={}",
            self.id, self.pid, self.hostname, self.name
        );
        chom_core::limits::cut_at_char_boundary(&text, 63).to_owned()
    }
}

/// The advisory-lock key of a node name: FNV-1a (64 bit) of `chom.node:<name>`. Stable across
/// versions and processes (it is the name's lock for every node sharing the database).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"chom.node:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The claim on a node name, held until dropped.
pub enum NodeLock {
    /// The exclusive lock on `<sqlite file>.node.lock`.
    Sqlite(File),
    /// The session holding the advisory lock.
    Postgres(Box<PgLock>),
}

impl std::fmt::Debug for NodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeLock::Sqlite(_) => f.write_str("NodeLock::Sqlite"),
            NodeLock::Postgres(_) => f.write_str("NodeLock::Postgres"),
        }
    }
}

/// A PostgreSQL session holding a node name's advisory lock.
pub struct PgLock {
    conn: PgConnection,
    options: PgConnectOptions,
    key: i64,
    instance: Instance,
}

/// Claim `instance.name` on the database `cfg` names, waiting at most `timeout` for the
/// database. `Unreachable` means "not decided": call again later.
pub async fn acquire(
    cfg: &DatabaseConfig,
    instance: &Instance,
    timeout: Duration,
) -> Result<NodeLock, IdentityError> {
    match cfg.kind() {
        DatabaseKind::Sqlite { path } => lock_sqlite_file(&path).map(NodeLock::Sqlite),
        DatabaseKind::Postgres => {
            let options: PgConnectOptions = cfg
                .url
                .parse()
                .map_err(|e: sqlx::Error| IdentityError::Unreachable(e.to_string()))?;
            let options = options.application_name(&instance.application_name());
            PgLock::acquire(options, instance.clone(), timeout)
                .await
                .map(|lock| NodeLock::Postgres(Box::new(lock)))
        }
    }
}

/// The lock file of a SQLite database file.
pub fn sqlite_lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".node.lock");
    db.with_file_name(name)
}

fn lock_sqlite_file(db: &Path) -> Result<File, IdentityError> {
    let path = sqlite_lock_path(db);
    let io = |source| IdentityError::LockFile {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(IdentityError::FileTaken {
                path: db.to_owned(),
                pid: pid.trim().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // The pid is only for the message a second node prints; a full disk must not stop us.
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// What happened when the lock session was checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The lock is held on a live session.
    Held,
    /// The session was lost and the lock taken again on a new one.
    Reacquired,
}

/// The session holding a name's advisory lock, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// The server process of that session (what `pg_terminate_backend` takes).
    pub backend_pid: i32,
    /// Its `application_name`: `chom <instance> pid=<pid> host=<host> name=<name>` for a node.
    pub application_name: String,
    /// The client's address, if it came over TCP.
    pub client_addr: Option<String>,
    /// When the session started (RFC 3339).
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.application_name.is_empty() {
            "a session"
        } else {
            &self.application_name
        };
        write!(
            f,
            "held by {who} from {} since {}",
            self.client_addr.as_deref().unwrap_or("a local socket"),
            self.since
        )
    }
}

impl Holder {
    /// The instance id, pid and host a node wrote into its `application_name`.
    pub fn node(&self) -> Option<(&str, u32, &str)> {
        let rest = self.application_name.strip_prefix("chom ")?;
        let (instance, rest) = rest.split_once(" pid=")?;
        let (pid, rest) = rest.split_once(" host=")?;
        let host = rest.split_once(" name=").map_or(rest, |(host, _)| host);
        Some((instance, pid.parse().ok()?, host))
    }
}

/// Whether a process `pid` of this host is a chom process that is still alive (not a zombie).
/// A pid that was reused by another program counts as gone.
fn chom_process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ')'.
    let Some((head, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let comm = head.split_once(" (").map_or("", |(_, c)| c);
    let zombie = matches!(rest.chars().next(), Some('Z' | 'X'));
    comm.starts_with("chom") && !zombie
}

impl PgLock {
    async fn acquire(
        options: PgConnectOptions,
        instance: Instance,
        timeout: Duration,
    ) -> Result<Self, IdentityError> {
        let key = lock_key(&instance.name);
        let conn = connect(&options, timeout).await?;
        let mut lock = PgLock {
            conn,
            options,
            key,
            instance,
        };
        let holder = match lock.try_lock(timeout).await? {
            None => return Ok(lock),
            Some(holder) => holder,
        };
        // A node of this host that died (SIGKILL, OOM) and was started again at once can find
        // its old session still holding the name for a moment, or for long if its connection
        // died without the server noticing. Its pid is gone: end that session, take the name.
        let dead_local = holder.node().is_some_and(|(_, pid, host)| {
            host == lock.instance.hostname && pid != lock.instance.pid && !chom_process_alive(pid)
        });
        if dead_local {
            lock.terminate(&holder, timeout).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match lock.try_lock(timeout).await? {
                    None => return Ok(lock),
                    Some(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(holder) => return Err(lock.taken(holder)),
                }
            }
        }
        Err(lock.taken(holder))
    }

    fn taken(&self, holder: Holder) -> IdentityError {
        IdentityError::NameTaken {
            name: self.instance.name.clone(),
            holder: holder.to_string(),
        }
    }

    /// Take the lock if it is free: `None` when taken, else who holds it.
    async fn try_lock(&mut self, timeout: Duration) -> Result<Option<Holder>, IdentityError> {
        let got: bool = bounded(
            timeout,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.key)
                .fetch_one(&mut self.conn),
        )
        .await?;
        if got {
            return Ok(None);
        }
        // Released between the two statements: the next try decides.
        Ok(Some(
            bounded(timeout, holder(&mut self.conn, self.key))
                .await?
                .unwrap_or_default(),
        ))
    }

    /// End the session `holder` (only ever a session of a dead process of this node).
    async fn terminate(&mut self, holder: &Holder, timeout: Duration) -> Result<(), IdentityError> {
        tracing::warn!(backend = holder.backend_pid, holder = %holder,
            "ending the database session of a node process that is gone, which still holds this node's name");
        bounded(
            timeout,
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(holder.backend_pid)
                .execute(&mut self.conn),
        )
        .await?;
        Ok(())
    }

    /// Make sure the lock is still held: ping the session; if it was lost (the server
    /// restarted, the connection broke), connect again and take the lock again. A session of
    /// this same process that the server has not noticed dead yet may still hold it: that one
    /// is ended and the lock taken over.
    pub async fn check(&mut self, timeout: Duration) -> Result<Check, IdentityError> {
        let alive = bounded(
            timeout,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut self.conn),
        )
        .await
        .is_ok();
        if alive {
            return Ok(Check::Held);
        }
        self.conn = connect(&self.options, timeout).await?;
        match self.try_lock(timeout).await? {
            None => Ok(Check::Reacquired),
            Some(holder)
                if holder
                    .node()
                    .is_some_and(|(instance, _, _)| instance == self.instance.id) =>
            {
                self.terminate(&holder, timeout).await?;
                Err(IdentityError::Unreachable(
                    "ended a stale session of this node that still held its name; taking it again"
                        .to_owned(),
                ))
            }
            Some(holder) => Err(self.taken(holder)),
        }
    }
}

async fn connect(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, IdentityError> {
    bounded(timeout, PgConnection::connect_with(options)).await
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, IdentityError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(IdentityError::Unreachable(error.to_string())),
        Err(_) => Err(IdentityError::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// Who holds the advisory lock `key` in this database.
async fn holder(conn: &mut PgConnection, key: i64) -> Result<Option<Holder>, sqlx::Error> {
    // A bigint advisory key is shown as classid = high 32 bits, objid = low 32 bits,
    // objsubid = 1; advisory locks are per database.
    type Row = (i32, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT a.pid, a.application_name, host(a.client_addr),
                to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = (($1 >> 32) & 4294967295)::oid AND l.objid = ($1 & 4294967295)::oid
         LIMIT 1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(backend_pid, app, addr, since)| Holder {
        backend_pid,
        application_name: app.unwrap_or_default(),
        client_addr: addr,
        since: since.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        // Fixed: every node sharing a database must compute the same key for a name.
        assert_eq!(lock_key("web-1"), lock_key("web-1"));
        assert_ne!(lock_key("web-1"), lock_key("web-2"));
        assert_ne!(lock_key(""), lock_key("a"));
    }

    #[test]
    fn application_names_fit_postgres_and_lead_with_the_instance() {
        let i = Instance {
            name: "é".repeat(100),
            hostname: "h".into(),
            pid: 7,
            id: "00112233aabbccdd".into(),
        };
        let app = i.application_name();
        assert!(app.len() <= 63);
        assert!(app.starts_with("chom 00112233aabbccdd pid=7 host=h name="));
    }

    #[test]
    fn holders_name_their_node() {
        let h = Holder {
            backend_pid: 9,
            application_name: "chom 00112233aabbccdd pid=42 host=web 1 name=n".into(),
            client_addr: None,
            since: String::new(),
        };
        assert_eq!(h.node(), Some(("00112233aabbccdd", 42, "web 1")));
        let other = Holder {
            application_name: "psql".into(),
            ..h.clone()
        };
        assert_eq!(other.node(), None);
        assert!(h.to_string().contains("pid=42"));
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        // The test binary is not named chom*, so it reads as "not a chom process".
        assert!(!chom_process_alive(u32::MAX - 1));
    }

    #[test]
    fn sqlite_lock_sits_beside_the_database() {
        assert_eq!(
            sqlite_lock_path(Path::new("/var/lib/chom/chom.db")),
            PathBuf::from("/var/lib/chom/chom.db.node.lock")
        );
        assert_eq!(
            sqlite_lock_path(Path::new("chom.db")),
            PathBuf::from("chom.db.node.lock")
        );
    }

    #[test]
    fn a_second_lock_on_one_sqlite_file_is_refused_and_freed_on_drop() {
        let dir = std::env::temp_dir().join(format!("chom-idlock-{}", rand::random::<u64>()));
        let db = dir.join("sub").join("chom.db");
        let first = lock_sqlite_file(&db).expect("first lock");
        match lock_sqlite_file(&db) {
            Err(IdentityError::FileTaken { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected FileTaken, got {other:?}"),
        }
        drop(first);
        let again = lock_sqlite_file(&db).expect("free again after drop");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
