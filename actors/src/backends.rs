//! `store`: owns the database pool and the cache client.
//!
//! Restarting it rebuilds both (the remedy for a pool wedged by a database failover). It never
//! fails because the database is down: it publishes lazily connecting backends at once and
//! applies migrations in a background task that retries with backoff, so the rest of the tree
//! (and `/health`) keeps running through a database outage.

use std::sync::Arc;
use std::time::Duration;

use chom_core::backoff::Doubling;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::cache::Cache;
use crate::context::{AbortOnDrop, Backends, NodeContext};
use chom_store::{self as store, NodeRecord};

/// The store actor.
pub struct StoreActor;

/// Start-up arguments.
pub struct StoreArgs {
    /// The node's shared context.
    pub ctx: Arc<NodeContext>,
}

/// What the actor holds while running.
pub struct StoreState {
    ctx: Arc<NodeContext>,
    backends: Backends,
    _migration: AbortOnDrop,
}

/// The store actor takes no messages: its backends are published through the node context,
/// and it exists to own (and, when restarted, rebuild) them.
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
        let ctx = args.ctx;
        let store = store::open(&ctx.config.database)?;
        let cache = Cache::open(&ctx.config.cache)?;
        let backends = Backends { store, cache };
        ctx.publish_backends(Some(backends.clone()));
        let migration = tokio::spawn(migrate_until_done(ctx.clone(), backends.clone()));
        Ok(StoreState {
            ctx,
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
        state.ctx.withdraw_backends(&state.backends);
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
async fn migrate_until_done(ctx: Arc<NodeContext>, backends: Backends) {
    let limit = ctx
        .config
        .database
        .connect_timeout
        .max(Duration::from_secs(1))
        * 6;
    until_ok("store: migrations not applied yet", || {
        store::with_timeout(limit, backends.store.migrate())
    })
    .await;
    info!(
        backend = backends.store.backend().as_str(),
        "store: migrations applied"
    );
    ctx.set_migrated();
    // A node refused for a name another live node holds must not overwrite that node's row.
    ctx.wait_identity().await;
    let record = NodeRecord {
        name: ctx.node_name.clone(),
        hostname: crate::sys::hostname(),
        pid: std::process::id(),
        version: ctx.version.to_owned(),
    };
    // The heartbeat only refreshes this row, so a registration lost to a passing failure (a
    // full disk at start) would leave the node without a liveness record, and other nodes
    // would rescue its running jobs.
    until_ok(
        "store: could not record this node in the nodes table",
        || store::with_timeout(limit, backends.store.register_node(&record)),
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
