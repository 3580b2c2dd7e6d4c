//! `store`: owns the database pool and the cache client, and publishes them to the rest of the
//! node ([`PublishedBackends`]).
//!
//! The store actor publishes its backends through a `watch` channel instead of handing pools to
//! each consumer: when the store is restarted (pools rebuilt), consumers see the new backends on
//! their next operation without being restarted themselves.
//!
//! Restarting it rebuilds both (the remedy for a pool wedged by a database failover). It never
//! fails because the database is down: it publishes lazily connecting backends at once and
//! applies migrations in a background task that retries with backoff, so the rest of the tree
//! (and `/health`) keeps running through a database outage.

use std::sync::Arc;
use std::time::Duration;

use chom_core::backoff::Doubling;
use chom_core::config::Config;
use chom_store::{self as store, NodeRecord, Store};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cache::Cache;
use crate::handles::{AbortOnDrop, NodeInfo, Readiness};

/// The database and cache handles the store actor owns.
#[derive(Clone)]
pub struct Backends {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// The cache.
    pub cache: Cache,
}

/// The backends the running store actor published, if it is running. Cloning shares the
/// same channel: the store actor publishes and withdraws, everyone else reads.
#[derive(Clone)]
pub struct PublishedBackends(Arc<watch::Sender<Option<Backends>>>);

impl Default for PublishedBackends {
    fn default() -> Self {
        PublishedBackends(Arc::new(watch::Sender::new(None)))
    }
}

impl PublishedBackends {
    /// The backends currently published by the store actor, if it is running.
    pub fn current(&self) -> Option<Backends> {
        self.0.borrow().clone()
    }

    /// Publish (or withdraw, with `None`) the store actor's backends.
    pub fn publish(&self, backends: Option<Backends>) {
        self.0.send_replace(backends);
    }

    /// Withdraw `mine` if it is still what is published. A stopping store incarnation must not
    /// withdraw the backends its replacement already published: its stop can finish after the
    /// new one started, and the node would then run without a store, silently (found by the
    /// store-crash fault scenario: no job ran again after one restart in four).
    pub fn withdraw(&self, mine: &Backends) {
        self.0.send_if_modified(|current| {
            let ours = current
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(&b.store, &mine.store));
            if ours {
                *current = None;
            }
            ours
        });
    }
}

/// The store actor.
pub struct StoreActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct StoreArgs {
    /// The node's configuration (`database`, `cache`).
    pub config: Arc<Config>,
    /// Who the node is (its row in the `nodes` table).
    pub node: NodeInfo,
    /// Where the backends are published.
    pub backends: PublishedBackends,
    /// Migrations applied (set here); the node name held (awaited before registering).
    pub readiness: Readiness,
}

/// What the actor holds while running.
pub struct StoreState {
    published: PublishedBackends,
    backends: Backends,
    _migration: AbortOnDrop,
}

/// The store actor takes no messages: its backends are published through
/// [`PublishedBackends`], and it exists to own (and, when restarted, rebuild) them.
pub enum StoreMsg {}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: StoreArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = store::open(&args.config.database)?;
        let cache = Cache::open(&args.config.cache)?;
        let backends = Backends { store, cache };
        args.backends.publish(Some(backends.clone()));
        let migration = tokio::spawn(migrate_until_done(
            args.node,
            args.readiness,
            backends.clone(),
        ));
        Ok(StoreState {
            published: args.backends,
            backends,
            _migration: AbortOnDrop(migration),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.published.withdraw(&state.backends);
        // Bounded: a wedged database must not hold up the node's shutdown.
        let close = async {
            state.backends.store.close().await;
            state.backends.cache.close().await;
        };
        if tokio::time::timeout(Duration::from_secs(5), close)
            .await
            .is_err()
        {
            warn!("store: closing the pools took longer than 5s; abandoning them");
        }
        Ok(())
    }
}

/// Apply migrations, retrying with capped exponential backoff until they succeed, then record
/// the node in the `nodes` table (once it holds its name) the same way.
async fn migrate_until_done(node: NodeInfo, readiness: Readiness, backends: Backends) {
    until_ok("store: migrations not applied yet", || {
        backends.store.migrate()
    })
    .await;
    info!(
        backend = backends.store.backend().as_str(),
        "store: migrations applied"
    );
    readiness.set_migrated();
    // A node refused for a name another live node holds must not overwrite that node's row.
    readiness.wait_identity().await;
    let record = NodeRecord {
        name: node.node_name,
        hostname: crate::sys::hostname(),
        pid: std::process::id(),
        version: node.version.to_owned(),
        instance: node.instance_id,
    };
    // The heartbeat only refreshes this row, so a registration lost to a passing failure (a
    // full disk at start) would leave the node without a liveness record, and other nodes
    // would rescue its running jobs.
    until_ok(
        "store: could not record this node in the nodes table",
        || backends.store.register_node(&record),
    )
    .await;
}

/// Run `op` until it succeeds, waiting 100 ms doubling to 5 s between tries; the first
/// failure and every tenth are logged with `what`, not every retry.
async fn until_ok<F, Fut>(what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), store::StoreError>>,
{
    let mut pace = Doubling::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 0u32;
    while let Err(error) = op().await {
        attempt += 1;
        let delay = pace.next_delay();
        if attempt == 1 || attempt.is_multiple_of(10) {
            warn!(%error, attempt, retry_in = ?delay, "{what}");
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(dir: &std::path::Path, name: &str) -> Backends {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}/{name}.db", dir.display());
        Backends {
            store: chom_store::open(&config.database).unwrap(),
            cache: Cache::open(&config.cache).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_stopping_store_withdraws_only_its_own_backends() {
        let dir = tempfile::tempdir().unwrap();
        let published = PublishedBackends::default();
        let (old, new) = (backends(dir.path(), "a"), backends(dir.path(), "b"));
        published.publish(Some(old.clone()));
        // The replacement starts before the old incarnation's stop has finished.
        published.publish(Some(new.clone()));
        published.withdraw(&old);
        let current = published
            .current()
            .expect("the new backends stay published");
        assert!(Arc::ptr_eq(&current.store, &new.store));
        // Its own stop withdraws them.
        published.withdraw(&new);
        assert!(published.current().is_none());
    }
}
