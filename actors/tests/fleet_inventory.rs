//! `fleet/inventory` in-process under its supervisor, on a real SQLite store: when the servers'
//! actors start relative to the node's migrations.

use std::time::{Duration, Instant};

use chom_actors::backends::Backends;
use chom_actors::cache::Cache;
use chom_actors::fleet::inventory::{InventoryActor, InventoryArgs};
use chom_actors::fleet::{Fleet, FleetContext};
use chom_core::config::{Config, VpsConfig};
use chom_supervisors::{ChildSpec, StartCtx, Supervisor, SupervisorArgs, SupervisorSpec};
use ractor::Actor;

/// At a node's start the inventory is up before the store's migrations have run. Its first
/// round must follow them at once, not a retry interval later: every VPS actor waits for it
/// (scripts/bench-fleet's start time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_actors_start_as_soon_as_the_migrations_ran() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}/chom.db", dir.path().display());
    config.vps = vec![VpsConfig {
        id: "web-1".into(),
        host: "127.0.0.1".into(),
        port: 22,
        user: None,
        host_key: None,
        max_sites: None,
    }];
    let store = chom_store::open(&config.database).unwrap();
    store.migrate().await.unwrap();
    let fleet = Fleet::new(FleetContext::alone(config));
    fleet.ctx.published.publish(Some(Backends {
        store: store.clone(),
        cache: Cache::open(&fleet.ctx.config.cache).unwrap(),
    }));

    let shared = fleet.clone();
    let inventory = ChildSpec::worker("inventory", move |start: StartCtx| {
        let args = InventoryArgs {
            fleet: shared.clone(),
            supervisor: start.supervisor.clone().into(),
        };
        async move {
            let (actor, _) =
                Actor::spawn_linked(None, InventoryActor, args, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    });
    let args = SupervisorArgs {
        path: "fleet".into(),
        spec: SupervisorSpec::dynamic(16).child(inventory),
    };
    let (supervisor, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();

    // A round asked for now finds the store unmigrated (as far as the node knows), as the
    // round at the inventory's start did.
    let early = fleet.reconcile().await;
    assert_eq!(early, Err("the database is not migrated yet".to_owned()));
    assert!(fleet.actor("web-1").is_none());

    let migrated = Instant::now();
    fleet.ctx.readiness.set_migrated();
    let deadline = migrated + Duration::from_secs(5);
    while fleet.actor("web-1").is_none() {
        assert!(Instant::now() < deadline, "no actor for web-1 within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Retrying on a timer would take a second here.
    let took = migrated.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the actor started {took:?} after the migrations"
    );

    supervisor.stop(None);
    handle.await.unwrap();
    store.close().await;
}
