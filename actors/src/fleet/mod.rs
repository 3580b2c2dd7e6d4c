//! The fleet: one actor per VPS under the dynamic `fleet` supervisor, and the call path jobs
//! use to run `vpsmanager` commands on them.
//!
//! A call ([`Fleet::exec`]) is a composition of steps (`exec.rs`): retries around the
//! server's circuit breaker (an open breaker rejects at once, without touching the network),
//! its bulkhead (at most `ssh.max_concurrent` commands at once; others wait up to
//! `ssh.queue_timeout`), its persistent SSH session (opened on first use), and the command
//! itself under `ssh.command_timeout`. Each attempt is one breaker observation; attempts back
//! off exponentially with full jitter, and they stop as soon as the breaker opens. A failure
//! before the command started is always retried; a session lost mid-command only for
//! commands listed in `ssh.idempotent_commands`. A failure is classified once (`failure.rs`);
//! its metric label, breaker observation and the caller's error all come from that value.
//!
//! `fleet/inventory` keeps the running VPS actors in step with `vps_servers`: it upserts the
//! config's `[[vps]]` entries at start, starts an actor per row and stops actors of removed
//! rows, at start, on `chom vps add|remove`, and every 30 s (servers added by another node).

pub mod breaker_sync;
pub mod breakers;
mod exec;
mod failure;
pub mod inventory;
pub mod slots;
pub mod vps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_core::breaker::Permit;

use chom_ssh::{Output, Session};
use ractor::ActorRef;
use tracing::debug;

use chom_core::config::Config;

use crate::backends::PublishedBackends;
use crate::handles::Readiness;
use crate::metrics::Metrics;
use exec::{Bulkhead, MAX_WAITING, Retry, outcome_label};
use failure::Failure;
use slots::{ClusterSlots, Unshared};
use vps::{Observation, VpsMsg};

/// Time to wait for a VPS actor that is being restarted before giving up on an attempt.
const ACTOR_WAIT: Duration = Duration::from_secs(2);

/// What the fleet uses of the node: built by the wiring from the node's handles.
#[derive(Clone)]
pub struct FleetContext {
    /// `ssh`, `breaker` and the config's `[[vps]]` entries.
    pub config: Arc<Config>,
    /// SSH command, breaker and inventory metrics.
    pub metrics: Metrics,
    /// The store's backends (the inventory, breaker snapshots' servers).
    pub published: PublishedBackends,
    /// Whether migrations ran (the inventory waits for them).
    pub readiness: Readiness,
    /// Where the VPS actors keep their breaker states for the rest of the node.
    pub breakers: breakers::BreakerBoard,
    /// The nodes sharing the fleet: whose leases and trial calls these are, and how many
    /// share a server's slots when the cache cannot be reached.
    pub peers: crate::handles::Peers,
}

impl FleetContext {
    /// A fleet's context on `config` alone: no store published yet, a fresh breaker board,
    /// this process as the only node (tests and tools that start VPS actors themselves).
    pub fn alone(config: Config) -> FleetContext {
        FleetContext {
            config: Arc::new(config),
            metrics: Metrics::new("0"),
            published: PublishedBackends::default(),
            readiness: Readiness::default(),
            breakers: breakers::BreakerBoard::default(),
            peers: crate::handles::Peers::default(),
        }
    }
}

/// A server's local bulkhead and the count of its commands running without a cluster lease.
type ServerSlots = (Arc<Bulkhead>, Arc<Unshared>);

/// What the fleet's actors and callers share.
pub struct Fleet {
    /// What the fleet uses of the node.
    pub ctx: FleetContext,
    actors: Mutex<HashMap<String, ActorRef<VpsMsg>>>,
    bulkheads: Mutex<HashMap<String, ServerSlots>>,
    slots: ClusterSlots,
    key: tokio::sync::Mutex<Option<Arc<chom_ssh::PrivateKey>>>,
    inventory: Mutex<Option<ActorRef<inventory::InventoryMsg>>>,
}

/// A command to run on a server.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    /// Server id.
    pub vps: &'a str,
    /// Command name (`site:create`), appended to `ssh.command_prefix`.
    pub command: &'a str,
    /// Arguments, each quoted so that no value can change the command line.
    pub args: &'a [String],
}

/// Why a command did not produce an output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// No such server in the inventory.
    #[error("no vps `{0}` in the inventory")]
    UnknownVps(String),
    /// The command name or an argument is not acceptable.
    #[error("{0}")]
    InvalidCommand(String),
    /// Turned away before running (breaker open, too many operations): run it later.
    #[error("{reason}")]
    Rejected {
        /// Why.
        reason: String,
        /// When trying again makes sense.
        retry_in: Duration,
    },
    /// The host presented a key we do not trust. Never retried.
    #[error("{0}")]
    Security(String),
    /// The host could not be reached or the session broke (after the retries allowed).
    #[error("{0}")]
    Transport(String),
    /// The command ran past `ssh.command_timeout`; its channel was closed.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    /// A local problem (private key unreadable).
    #[error("{0}")]
    Local(String),
}

impl Fleet {
    /// Shared state for a node.
    pub fn new(ctx: FleetContext) -> Arc<Fleet> {
        let slots = ClusterSlots::new(ctx.peers.clone(), ctx.config.queue.retry_after);
        Arc::new(Fleet {
            ctx,
            slots,
            actors: Mutex::default(),
            bulkheads: Mutex::default(),
            key: tokio::sync::Mutex::new(None),
            inventory: Mutex::new(None),
        })
    }

    pub(crate) fn register(&self, vps: &str, actor: ActorRef<VpsMsg>) {
        self.actors
            .lock()
            .expect("fleet lock")
            .insert(vps.to_owned(), actor);
    }

    pub(crate) fn unregister(&self, vps: &str, actor: &ActorRef<VpsMsg>) {
        let mut actors = self.actors.lock().expect("fleet lock");
        if actors
            .get(vps)
            .is_some_and(|a| a.get_id() == actor.get_id())
        {
            actors.remove(vps);
        }
    }

    /// The live actor of `vps`, if one is registered.
    pub fn actor(&self, vps: &str) -> Option<ActorRef<VpsMsg>> {
        self.actors.lock().expect("fleet lock").get(vps).cloned()
    }

    /// Ids of the servers with a registered actor.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .actors
            .lock()
            .expect("fleet lock")
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn set_inventory(&self, actor: Option<ActorRef<inventory::InventoryMsg>>) {
        *self.inventory.lock().expect("fleet lock") = actor;
    }

    /// Bring the running actors in step with the inventory now (after `vps add|remove`).
    pub async fn reconcile(&self) -> Result<(), String> {
        let actor = self
            .inventory
            .lock()
            .expect("fleet lock")
            .clone()
            .ok_or("the fleet is not running")?;
        ractor::call_t!(actor, inventory::InventoryMsg::Reconcile, 30_000)
            .map_err(|e| format!("fleet/inventory did not answer: {e}"))?
    }

    /// Forget a removed server's bulkhead.
    pub(crate) fn forget(&self, vps: &str) {
        self.bulkheads.lock().expect("fleet lock").remove(vps);
    }

    fn bulkhead(&self, vps: &str) -> ServerSlots {
        let max = self.ctx.config.ssh.max_concurrent.max(1) as usize;
        self.bulkheads
            .lock()
            .expect("fleet lock")
            .entry(vps.to_owned())
            .or_insert_with(|| (Arc::new(Bulkhead::new(max, MAX_WAITING)), Arc::default()))
            .clone()
    }

    /// The private key, loaded on first use.
    pub(crate) async fn key(&self) -> Result<Arc<chom_ssh::PrivateKey>, chom_ssh::SshError> {
        let mut key = self.key.lock().await;
        if let Some(k) = key.as_ref() {
            return Ok(k.clone());
        }
        let loaded = chom_ssh::load_key(&self.ctx.config.ssh.private_key)?;
        *key = Some(loaded.clone());
        Ok(loaded)
    }

    /// Wait briefly for the actor of `vps` (it may be restarting); `UnknownVps` when the
    /// inventory has no such server.
    async fn live_actor(&self, vps: &str) -> Result<ActorRef<VpsMsg>, Failure> {
        let deadline = Instant::now() + ACTOR_WAIT;
        loop {
            if let Some(actor) = self.actor(vps) {
                return Ok(actor);
            }
            if Instant::now() >= deadline {
                let known = match self.ctx.published.current() {
                    Some(b) => b.store.vps(vps).await.ok().flatten().is_some(),
                    None => true,
                };
                return Err(if known {
                    Failure::Starting(vps.to_owned())
                } else {
                    Failure::UnknownVps(vps.to_owned())
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run a command on a server, with the breaker, bulkhead, retry and timeouts described
    /// in the module doc. A command that ran and exited non-zero is an `Ok` output: that is
    /// the command's failure, not the host's.
    pub async fn exec(&self, req: ExecRequest<'_>) -> Result<Output, ExecError> {
        let ssh = &self.ctx.config.ssh;
        let line = chom_ssh::command_line(&ssh.command_prefix, req.command, req.args)
            .map_err(|e| ExecError::InvalidCommand(e.to_string()))?;
        let retry = Retry {
            attempts: ssh.retry_attempts,
            base: ssh.retry_base,
            idempotent: ssh.idempotent_commands.iter().any(|c| c == req.command),
        };
        retry
            .run(|attempt| self.attempt(req.vps, &line, attempt))
            .await
            .map_err(ExecError::from)
    }

    /// One attempt: the breaker's permit, the call under it, then the classified result
    /// counted and, after that, reported to the breaker.
    async fn attempt(&self, vps: &str, line: &str, attempt: u32) -> Result<Output, Failure> {
        let actor = self.live_actor(vps).await?;
        let permit = self.admit(&actor, vps).await?;
        let called = self.call(&actor, vps, line, attempt).await;
        if let Some(label) = outcome_label(&called.result) {
            self.ctx.metrics.ssh_command(vps, label, called.took);
        }
        let observation = match &called.result {
            Ok(_) => Some(Observation::Success),
            Err(failure) => failure.observation(called.generation),
        };
        if let Some(observation) = observation {
            let _ = actor.cast(VpsMsg::Observe(permit, observation));
        }
        called.result
    }

    /// Breaker admission: a permit, or the rejection (counted) without touching the network.
    async fn admit(&self, actor: &ActorRef<VpsMsg>, vps: &str) -> Result<Permit, Failure> {
        match ractor::call!(actor, VpsMsg::Acquire) {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(rejection)) => {
                let open_timeout = self.ctx.config.breaker.open_timeout;
                let failure = Failure::breaker_open(vps, &rejection, open_timeout);
                self.ctx.metrics.ssh_command(vps, "rejected", None);
                Err(failure)
            }
            Err(_) => Err(Failure::ActorStopped(vps.to_owned())),
        }
    }

    /// Under a permit: a bulkhead slot, the session, and the command under its time limit.
    async fn call(&self, actor: &ActorRef<VpsMsg>, vps: &str, line: &str, attempt: u32) -> Called {
        let ssh = &self.ctx.config.ssh;
        let deadline = tokio::time::Instant::now() + ssh.queue_timeout;
        let busy =
            || Called::before_command(Failure::busy(vps, ssh.max_concurrent, ssh.queue_timeout));
        let (bulkhead, unshared) = self.bulkhead(vps);
        let Some(slot) = bulkhead.enter(ssh.queue_timeout).await else {
            return busy();
        };
        let lease = match self.ctx.published.current() {
            Some(backends) => {
                let max = ssh.max_concurrent.max(1);
                let leased = self
                    .slots
                    .lease(&backends.cache, vps, max, &unshared, deadline);
                match leased.await {
                    Ok(lease) => Some(lease),
                    Err(_) => return busy(),
                }
            }
            None => None,
        };
        let (session, generation) = match session(actor, vps).await {
            Ok(session) => session,
            Err(failure) => {
                if let Failure::Transport { message, .. } = &failure {
                    debug!(vps, attempt, error = %message, "ssh: could not open a session");
                }
                return Called::before_command(failure);
            }
        };
        let started = Instant::now();
        let result = session
            .exec(line, ssh.command_timeout, ssh.max_output as usize)
            .await
            .map_err(|e| Failure::from_ssh(&e));
        drop((lease, slot));
        Called {
            result,
            generation: Some(generation),
            took: Some(started.elapsed()),
        }
    }
}

/// The server's live session (its actor connects if needed) and its generation.
async fn session(actor: &ActorRef<VpsMsg>, vps: &str) -> Result<(Session, u64), Failure> {
    match ractor::call!(actor, VpsMsg::Session) {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(error)) => Err(Failure::from_ssh(&error)),
        Err(_) => Err(Failure::ActorStopped(vps.to_owned())),
    }
}

/// How a call under a permit ended.
struct Called {
    result: Result<Output, Failure>,
    /// The session the command ran on.
    generation: Option<u64>,
    /// How long the command took, when it was sent.
    took: Option<Duration>,
}

impl Called {
    fn before_command(failure: Failure) -> Called {
        Called {
            result: Err(failure),
            generation: None,
            took: None,
        }
    }
}
