//! `fleet/vps:<id>`: one actor per server. It owns the server's SSH session (opened on first
//! use, kept alive, reopened when it drops) and its circuit breaker; callers run their
//! commands on the session outside the actor (several at once, multiplexed), so a command of
//! two minutes never blocks the breaker decisions of others.
//!
//! A call is three messages: `Acquire` (the breaker's permit or an immediate rejection),
//! `Session` (the live session, connecting if needed) and `Observe` (the outcome, fed to the
//! breaker). The breaker's state is written to the cache at every change and read back when
//! the actor starts, so an open breaker stays open across actor and node restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chom_core::breaker::{
    Breaker, BreakerInfo, BreakerSettings, BreakerState, Permit, Rejection, Snapshot,
};
use chom_core::inventory::VpsServer;
use chom_ssh::{HostKeyCheck, Session, SshError, Target};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, error, info, warn};

use super::{Fleet, breaker_sync};
use crate::cache::Cache;

/// The actor.
pub struct VpsActor;

/// Start-up arguments.
pub struct VpsArgs {
    /// The fleet's shared state.
    pub fleet: Arc<Fleet>,
    /// The server.
    pub server: VpsServer,
}

/// Running state.
pub struct VpsState {
    fleet: Arc<Fleet>,
    server: VpsServer,
    breaker: Breaker,
    session: Option<(Session, u64)>,
    generation: u64,
}

/// What a caller reports after using a permit (derived from the call's classified failure:
/// `Failure::observation` in `fleet/failure.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The command ran (whatever its exit status).
    Success,
    /// A transport failure (connect, handshake, auth, session lost).
    TransportFailure {
        /// The session it happened on, if one was in use: that session is dropped.
        generation: Option<u64>,
    },
    /// The host presented the wrong key: the breaker is forced open with `reason`.
    Security {
        /// Why, shown in `chom breaker list`.
        reason: String,
    },
    /// The call ended without telling anything about the host (bulkhead timeout, command
    /// timeout, local error): the permit is given back.
    Cancelled,
}

/// Operator actions on the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerCommand {
    /// Back to closed, failures forgotten (also leaves forced_open and disabled).
    Reset,
    /// Forced open until reset or closed.
    Open,
    /// Closed now.
    Close,
}

/// Messages.
pub enum VpsMsg {
    /// A breaker permit, or the rejection to return at once.
    Acquire(RpcReplyPort<Result<Permit, Rejection>>),
    /// The live session (connecting if needed) and its generation number.
    Session(RpcReplyPort<Result<(Session, u64), SshError>>),
    /// Report how a permit was used.
    Observe(Permit, Observation),
    /// Breaker and session state.
    Info(RpcReplyPort<VpsInfo>),
    /// An operator action; answers with the new state.
    Operator(BreakerCommand, RpcReplyPort<VpsInfo>),
    /// Another node's published breaker change (`fleet/breaker-sync`): adopt it.
    Adopt(Snapshot),
    /// Fault injection (debug hooks only): panic in the handler.
    Panic,
}

/// What `chom breaker list` shows for one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VpsInfo {
    /// Server id.
    pub vps: String,
    /// `host:port`.
    pub address: String,
    /// Whether a session is open.
    pub connected: bool,
    /// The breaker.
    pub breaker: BreakerInfo,
}

impl Actor for VpsActor {
    type Msg = VpsMsg;
    type State = VpsState;
    type Arguments = VpsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<VpsMsg>,
        args: VpsArgs,
    ) -> Result<VpsState, ActorProcessingErr> {
        let settings = BreakerSettings::from(&args.fleet.ctx.config.breaker);
        let breaker = match load_snapshot(&args.fleet, &args.server.id).await {
            Some(snapshot) => {
                let restored =
                    Breaker::restore(settings, &snapshot, Instant::now(), chrono::Utc::now());
                let info = restored.info(Instant::now());
                if info.state.as_str() != "closed" {
                    info!(vps = %args.server.id, state = info.state.as_str(), "breaker state restored");
                }
                restored
            }
            None => Breaker::new(settings),
        };
        let mut state = VpsState {
            fleet: args.fleet,
            server: args.server,
            breaker,
            session: None,
            generation: 0,
        };
        adopt_published(&mut state).await;
        publish(&state);
        state.fleet.register(&state.server.id, myself);
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<VpsMsg>,
        message: VpsMsg,
        state: &mut VpsState,
    ) -> Result<(), ActorProcessingErr> {
        // Every await is boxed: ractor keeps one future per actor for its whole life, sized
        // for the largest handler (an SSH connect, a cache write): ~11 KB per idle server
        // unboxed, which is most of an actor's memory (scripts/bench-fleet).
        match message {
            VpsMsg::Acquire(reply) => {
                let _ = reply.send(Box::pin(acquire(state)).await);
            }
            VpsMsg::Session(reply) => {
                let _ = reply.send(Box::pin(session(state)).await);
            }
            VpsMsg::Observe(permit, observation) => {
                Box::pin(observe(state, permit, observation)).await;
            }
            VpsMsg::Adopt(snapshot) => Box::pin(adopt(state, &snapshot)).await,
            VpsMsg::Info(reply) => {
                let _ = reply.send(info(state));
            }
            VpsMsg::Operator(command, reply) => {
                Box::pin(operator(state, command)).await;
                let _ = reply.send(info(state));
            }
            VpsMsg::Panic => panic!(
                "vps {}: panicking on purpose (debug.vps_panic)",
                state.server.id
            ),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<VpsMsg>,
        state: &mut VpsState,
    ) -> Result<(), ActorProcessingErr> {
        state.fleet.unregister(&state.server.id, &myself);
        if let Some((session, _)) = state.session.take() {
            session.close().await;
        }
        Ok(())
    }
}

impl Drop for VpsState {
    /// A crashed actor skips `post_stop`; its session must still go, so that commands running
    /// on it end (and are retried) instead of outliving the actor that owns the host.
    fn drop(&mut self) {
        if let Some((session, _)) = self.session.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { session.close().await });
        }
    }
}

fn service(state: &VpsState) -> String {
    chom_core::inventory::vps_service(&state.server.id)
}

async fn acquire(state: &mut VpsState) -> Result<Permit, Rejection> {
    let before = state.breaker.state(Instant::now());
    let result = state.breaker.try_acquire(Instant::now());
    let after = state.breaker.state(Instant::now());
    if before != after {
        info!(vps = %state.server.id, from = before.as_str(), to = after.as_str(), "circuit breaker changed state");
        changed(state).await;
    }
    match result {
        Ok(permit) if permit.is_trial() && !take_trial(state).await => {
            Err(state.breaker.trial_elsewhere(permit))
        }
        other => other,
    }
}

/// Whether this node may make the trial call (it holds, or now took, the server's trial
/// token). Alone, or with the cache unreachable, it may: the breaker then works per node.
async fn take_trial(state: &VpsState) -> bool {
    let Some(cache) = shared_cache(state) else {
        return true;
    };
    let me = state.fleet.ctx.peers.instance();
    let key = breaker_sync::trial_key(&state.server.id);
    let ssh = &state.fleet.ctx.config.ssh;
    let lasts = ssh.connect_timeout + ssh.command_timeout + Duration::from_secs(5);
    match cache.set_if_absent(&key, me, lasts).await {
        Ok(true) => true,
        Ok(false) => match cache.get(&key).await {
            Ok(holder) => holder.as_deref() == Some(me),
            Err(_) => true,
        },
        Err(error) => {
            warn!(vps = %state.server.id, %error, "cannot take the trial token; trying alone");
            true
        }
    }
}

/// After a trial's outcome: closed, the token goes (calls pass anyway); open again, it stays
/// until the new open period ends, so no other node starts a trial before it learns of the
/// reopening; a trial that did not reach the host gives the token back.
async fn settle_trial(state: &VpsState) {
    let Some(cache) = shared_cache(state) else {
        return;
    };
    let key = breaker_sync::trial_key(&state.server.id);
    let info = state.breaker.info(Instant::now());
    let result = match info.open_remaining_ms {
        Some(ms) if info.state == BreakerState::Open => {
            let me = state.fleet.ctx.peers.instance();
            cache
                .set(&key, me, Some(Duration::from_millis(ms.max(1))))
                .await
        }
        _ => cache.delete(&key).await,
    };
    if let Err(error) = result {
        debug!(vps = %state.server.id, %error, "cannot settle the trial token; it lapses by itself");
    }
}

/// The cache, when it is shared with other nodes (Redis).
fn shared_cache(state: &VpsState) -> Option<Cache> {
    let backends = state.fleet.ctx.published.current()?;
    (!matches!(backends.cache, Cache::Memory(_))).then(|| backends.cache.clone())
}

/// Adopt another node's published change.
async fn adopt(state: &mut VpsState, snapshot: &Snapshot) {
    let t = state
        .breaker
        .adopt(snapshot, Instant::now(), chrono::Utc::now());
    if let Some(t) = t {
        info!(vps = %state.server.id, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state as another node published");
        changed(state).await;
    }
}

/// At start: the state the cluster last published for this server, if another node did.
async fn adopt_published(state: &mut VpsState) {
    let Some(cache) = shared_cache(state) else {
        return;
    };
    match breaker_sync::published(&cache, &state.server.id).await {
        Ok(Some(record)) if record.by != state.fleet.ctx.peers.instance() => {
            adopt(state, &record.snapshot).await;
        }
        Ok(_) => {}
        Err(error) => {
            warn!(vps = %state.server.id, %error, "cannot read the shared breaker state; starting from this node's own");
        }
    }
}

/// Publish a decisive change made here (not one adopted) for the other nodes.
async fn share(state: &VpsState) {
    let Some(cache) = shared_cache(state) else {
        return;
    };
    if state.breaker.state(Instant::now()) == BreakerState::HalfOpen {
        return;
    }
    let snapshot = state.breaker.snapshot(Instant::now(), chrono::Utc::now());
    let me = state.fleet.ctx.peers.instance();
    if let Err(error) = breaker_sync::publish(&cache, &state.server.id, me, &snapshot).await {
        warn!(vps = %state.server.id, %error, "cannot publish the breaker's change to the other nodes");
    }
}

async fn session(state: &mut VpsState) -> Result<(Session, u64), SshError> {
    if let Some((session, generation)) = &state.session {
        if !session.is_closed() {
            return Ok((session.clone(), *generation));
        }
        info!(vps = %state.server.id, "ssh session closed; reconnecting");
        state.session = None;
    }
    let key = state.fleet.key().await?;
    let ssh = &state.fleet.ctx.config.ssh;
    let target = Target {
        host: state.server.host.clone(),
        port: state.server.port,
        user: state
            .server
            .user
            .clone()
            .unwrap_or_else(|| ssh.user.clone()),
        host_key: match &state.server.host_key {
            Some(fingerprint) => HostKeyCheck::Pinned(fingerprint.clone()),
            None => HostKeyCheck::KnownHosts(ssh.known_hosts.clone()),
        },
    };
    let config = chom_ssh::ClientConfig {
        key,
        connect_timeout: ssh.connect_timeout,
        keepalive_interval: (!ssh.keepalive_interval.is_zero()).then_some(ssh.keepalive_interval),
    };
    let started = Instant::now();
    let session = Session::connect(&target, &config).await?;
    state.generation += 1;
    info!(vps = %state.server.id, took = ?started.elapsed(), "ssh session established");
    state.session = Some((session.clone(), state.generation));
    Ok((session, state.generation))
}

async fn observe(state: &mut VpsState, permit: Permit, observation: Observation) {
    let trial = permit.is_trial();
    let cancelled = observation == Observation::Cancelled;
    let now = Instant::now();
    let transition = match observation {
        Observation::Success => state.breaker.on_success(permit, now),
        Observation::TransportFailure { generation } => {
            // Drop the session the failure happened on (not a newer one).
            if let (Some(failed), Some((_, current))) = (generation, &state.session)
                && failed == *current
                && let Some((session, _)) = state.session.take()
            {
                session.close().await;
            }
            let t = state.breaker.on_failure(permit, now);
            // Failures inside the window change the snapshot even without a transition.
            save_snapshot(state).await;
            t
        }
        Observation::Security { reason } => {
            state.breaker.on_cancel(permit);
            error!(vps = %state.server.id, host = %state.server.host, %reason, "security: host key refused; breaker forced open, nothing retried");
            let before = state.breaker.state(now);
            state.breaker.force_open(reason, now);
            if let Some((session, _)) = state.session.take() {
                session.close().await;
            }
            Some(chom_core::breaker::Transition {
                from: before,
                to: state.breaker.state(now),
            })
        }
        Observation::Cancelled => {
            state.breaker.on_cancel(permit);
            None
        }
    };
    if let Some(t) = transition
        && t.from != t.to
    {
        if t.to.as_str() == "open" {
            warn!(vps = %state.server.id, from = t.from.as_str(), "circuit breaker opened");
        } else {
            info!(vps = %state.server.id, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
        }
        changed(state).await;
        share(state).await;
    }
    if trial && (cancelled || state.breaker.state(now) != BreakerState::HalfOpen) {
        settle_trial(state).await;
    }
}

async fn operator(state: &mut VpsState, command: BreakerCommand) {
    let now = Instant::now();
    match command {
        BreakerCommand::Reset => state.breaker.reset(now),
        BreakerCommand::Close => state.breaker.close(now),
        BreakerCommand::Open => state
            .breaker
            .force_open("forced open by an operator".to_owned(), now),
    }
    info!(vps = %state.server.id, ?command, state = state.breaker.state(now).as_str(), "breaker changed by an operator");
    changed(state).await;
    share(state).await;
}

fn info(state: &VpsState) -> VpsInfo {
    VpsInfo {
        vps: state.server.id.clone(),
        address: format!("{}:{}", state.server.host, state.server.port),
        connected: state.session.as_ref().is_some_and(|(s, _)| !s.is_closed()),
        breaker: state.breaker.info(Instant::now()),
    }
}

/// Export the state and persist it.
async fn changed(state: &VpsState) {
    publish(state);
    save_snapshot(state).await;
}

fn publish(state: &VpsState) {
    let (service, breaker) = (service(state), state.breaker.state(Instant::now()));
    state.fleet.ctx.breakers.set(&service, breaker);
    state.fleet.ctx.metrics.set_breaker(&service, breaker);
}

/// Cache key of a server's breaker snapshot.
pub fn snapshot_key(vps: &str) -> String {
    format!("chom:breaker:{}", chom_core::inventory::vps_service(vps))
}

async fn save_snapshot(state: &VpsState) {
    let Some(backends) = state.fleet.ctx.published.current() else {
        return;
    };
    let snapshot = state.breaker.snapshot(Instant::now(), chrono::Utc::now());
    let Ok(json) = serde_json::to_string(&snapshot) else {
        return;
    };
    // Kept a day: long enough for any restart, short enough not to pile up for removed servers.
    let ttl = Some(Duration::from_secs(24 * 3600));
    if let Err(error) = backends
        .cache
        .set(&snapshot_key(&state.server.id), &json, ttl)
        .await
    {
        warn!(vps = %state.server.id, %error, "cannot save breaker state to the cache");
    }
}

async fn load_snapshot(fleet: &Fleet, vps: &str) -> Option<Snapshot> {
    let backends = fleet.ctx.published.current()?;
    match backends.cache.get(&snapshot_key(vps)).await {
        Ok(Some(json)) => match Snapshot::from_json(&json) {
            Ok(snapshot) => Some(snapshot),
            Err(error) => {
                warn!(vps, %error, "ignoring an unreadable breaker snapshot");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            warn!(vps, %error, "cannot read breaker state from the cache; starting closed");
            None
        }
    }
}
