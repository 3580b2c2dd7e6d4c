//! `fleet/inventory`: keeps one `fleet/vps:<id>` actor per row of `vps_servers`.
//!
//! At its first round it upserts the config's `[[vps]]` entries; every round (at start, on
//! request after `chom vps add|remove`, and every 30 s for changes made by another node) it
//! starts actors for new rows, stops those of removed rows and restarts those whose address
//! or host key changed. It also refreshes the `chom_active_tenants` / `chom_active_sites`
//! gauges. It asks its parent supervisor to add and remove children, so it never does that
//! from `pre_start` (the supervisor is busy starting it then).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chom_core::inventory::VpsServer;
use chom_supervisors::{ChildSpec, StartCtx, SupervisorError, SupervisorMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};

use super::Fleet;
use super::vps::{VpsActor, VpsArgs};
use crate::handles::AbortOnDrop;

/// How often the inventory is re-read.
const INTERVAL: Duration = Duration::from_secs(30);

/// The actor.
pub struct InventoryActor;

/// Start-up arguments.
pub struct InventoryArgs {
    /// The fleet's shared state.
    pub fleet: Arc<Fleet>,
    /// The `fleet` supervisor (this actor's parent).
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// Running state.
pub struct InventoryState {
    fleet: Arc<Fleet>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Sends the first `Tick` once migrations ran; ends with the incarnation.
    _first_round: AbortOnDrop,
    /// Servers whose actor this incarnation added (or found running), as last read.
    started: HashMap<String, VpsServer>,
    config_upserted: bool,
    /// Whether a round has completed (the first is always logged).
    reconciled: bool,
    last_error: Option<String>,
}

/// Messages.
pub enum InventoryMsg {
    /// Reconcile now and answer.
    Reconcile(RpcReplyPort<Result<(), String>>),
    /// Periodic reconcile.
    Tick,
}

impl Actor for InventoryActor {
    type Msg = InventoryMsg;
    type State = InventoryState;
    type Arguments = InventoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<InventoryMsg>,
        args: InventoryArgs,
    ) -> Result<InventoryState, ActorProcessingErr> {
        args.fleet.set_inventory(Some(myself.clone()));
        // The first round as soon as the migrations ran: at a node's start they are still
        // running now, and the retry a second later would delay every VPS actor by that.
        let (readiness, me) = (args.fleet.ctx.readiness.clone(), myself.clone());
        let first_round = AbortOnDrop(tokio::spawn(async move {
            readiness.wait_migrated().await;
            let _ = me.send_message(InventoryMsg::Tick);
        }));
        myself.send_interval(INTERVAL, || InventoryMsg::Tick);
        Ok(InventoryState {
            fleet: args.fleet,
            supervisor: args.supervisor,
            _first_round: first_round,
            started: HashMap::new(),
            config_upserted: false,
            reconciled: false,
            last_error: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<InventoryMsg>,
        message: InventoryMsg,
        state: &mut InventoryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InventoryMsg::Reconcile(reply) => {
                let _ = reply.send(reconcile(state).await);
            }
            InventoryMsg::Tick => {
                if let Err(error) = reconcile(state).await {
                    if state.last_error.as_deref() != Some(error.as_str()) {
                        warn!(%error, "fleet: cannot read the inventory; retrying");
                    }
                    state.last_error = Some(error);
                    // Not yet migrated or database down: try again soon, not in 30 s.
                    myself.send_after(Duration::from_secs(1), || InventoryMsg::Tick);
                } else if state.last_error.take().is_some() {
                    info!("fleet: inventory read again");
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<InventoryMsg>,
        state: &mut InventoryState,
    ) -> Result<(), ActorProcessingErr> {
        state.fleet.set_inventory(None);
        Ok(())
    }
}

async fn reconcile(state: &mut InventoryState) -> Result<(), String> {
    let fleet = state.fleet.clone();
    let ctx = &fleet.ctx;
    if !ctx.readiness.migrated() {
        return Err("the database is not migrated yet".into());
    }
    let backends = ctx.published.current().ok_or("the store is not running")?;
    let store = &backends.store;
    if !state.config_upserted {
        let entries: Vec<VpsServer> = ctx.config.vps.iter().map(VpsServer::from_config).collect();
        store
            .upsert_config_vps(&entries)
            .await
            .map_err(|e| e.to_string())?;
        state.config_upserted = true;
    }
    let began = std::time::Instant::now();
    let rows = store.vps_list().await.map_err(|e| e.to_string())?;
    let wanted: HashMap<String, VpsServer> = rows.into_iter().map(|v| (v.id.clone(), v)).collect();
    let (mut started, mut stopped) = (0usize, 0usize);

    let gone: Vec<String> = state
        .started
        .keys()
        .filter(|id| !wanted.contains_key(*id))
        .cloned()
        .collect();
    for id in gone {
        stop(state, &id).await?;
        stopped += 1;
        info!(vps = %id, "fleet: server removed; its actor stopped");
    }
    for (id, server) in &wanted {
        match state.started.get(id) {
            Some(running) if same_target(running, server) => {}
            Some(_) => {
                stop(state, id).await?;
                start(state, server).await?;
                info!(vps = %id, "fleet: server changed; its actor restarted");
            }
            None => {
                start(state, server).await?;
                started += 1;
            }
        }
    }
    if started + stopped > 0 || !state.reconciled {
        // Once per change, not every round: scripts/bench-fleet reads it as "all running".
        info!(servers = wanted.len(), started, stopped, took = ?began.elapsed(), "fleet: inventory reconciled");
        state.reconciled = true;
    }
    if let Ok((tenants, sites)) = store.inventory_counts().await {
        ctx.metrics.set_inventory(tenants, sites);
    }
    Ok(())
}

fn same_target(a: &VpsServer, b: &VpsServer) -> bool {
    (&a.host, a.port, &a.user, &a.host_key) == (&b.host, b.port, &b.user, &b.host_key)
}

/// Child id of a server's actor.
pub fn child_id(vps: &str) -> String {
    chom_core::inventory::vps_service(vps)
}

async fn start(state: &mut InventoryState, server: &VpsServer) -> Result<(), String> {
    let spec = vps_spec(state.fleet.clone(), server.clone());
    let added = ractor::call_t!(
        state.supervisor,
        |reply| SupervisorMsg::AddChild { spec, reply },
        30_000
    )
    .map_err(|e| format!("fleet supervisor did not answer: {e}"))?;
    match added {
        // Already running: a previous incarnation of this actor added it.
        Ok(()) | Err(SupervisorError::DuplicateId(_)) => {
            state.started.insert(server.id.clone(), server.clone());
            Ok(())
        }
        Err(error) => Err(format!(
            "cannot start the actor of vps `{}`: {error}",
            server.id
        )),
    }
}

async fn stop(state: &mut InventoryState, id: &str) -> Result<(), String> {
    let removed = ractor::call_t!(
        state.supervisor,
        |reply| SupervisorMsg::RemoveChild {
            id: child_id(id),
            reply
        },
        30_000
    )
    .map_err(|e| format!("fleet supervisor did not answer: {e}"))?;
    match removed {
        Ok(()) | Err(SupervisorError::NoSuchChild(_)) => {
            state.started.remove(id);
            state.fleet.forget(id);
            let service = chom_core::inventory::vps_service(id);
            state.fleet.ctx.breakers.remove(&service);
            state.fleet.ctx.metrics.remove_breaker(&service);
            Ok(())
        }
        Err(error) => Err(format!("cannot stop the actor of vps `{id}`: {error}")),
    }
}

/// The child spec of one server's actor: permanent, fresh arguments at every restart.
pub fn vps_spec(fleet: Arc<Fleet>, server: VpsServer) -> ChildSpec {
    ChildSpec::worker(child_id(&server.id), move |start: StartCtx| {
        let args = VpsArgs {
            fleet: fleet.clone(),
            server: server.clone(),
        };
        async move {
            let (actor, _) = Actor::spawn_linked(None, VpsActor, args, start.supervisor).await?;
            Ok(actor.get_cell())
        }
    })
}
