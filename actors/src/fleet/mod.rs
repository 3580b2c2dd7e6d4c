//! The fleet: one actor per VPS under the dynamic `fleet` supervisor, and the call path jobs
//! use to run `vpsmanager` commands on them.
//!
//! A call ([`Fleet::exec`]) goes through, in order: the server's circuit breaker (an open
//! breaker rejects at once, without touching the network), its bulkhead (at most
//! `ssh.max_concurrent` commands at once; others wait up to `ssh.queue_timeout`), its
//! persistent SSH session (opened on first use), and the command itself under
//! `ssh.command_timeout`. Retries wrap all of it: each attempt is one breaker observation,
//! attempts back off exponentially with full jitter, and they stop as soon as the breaker
//! opens. A failure before the command started is always retried; a session lost
//! mid-command only for commands listed in `ssh.idempotent_commands`.
//!
//! `fleet/inventory` keeps the running VPS actors in step with `vps_servers`: it upserts the
//! config's `[[vps]]` entries at start, starts an actor per row and stops actors of removed
//! rows, at start, on `chom vps add|remove`, and every 30 s (servers added by another node).

pub mod inventory;
pub mod vps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_ssh::{ErrorClass, Output};
use ractor::ActorRef;
use rand::Rng as _;
use tokio::sync::Semaphore;
use tracing::debug;

use chom_core::config::Config;

use crate::backends::{Backends, PublishedBackends};
use crate::handles::Readiness;
use crate::metrics::Metrics;
use vps::{Observation, VpsMsg, observation_for};

/// Waiters allowed per server beyond the running commands; more are rejected at once.
const MAX_WAITING: usize = 64;

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
}

impl FleetContext {
    /// The store's backends, while the store actor runs.
    pub fn backends(&self) -> Option<Backends> {
        self.published.current()
    }

    /// Whether migrations have been applied.
    pub fn migrated(&self) -> bool {
        self.readiness.migrated()
    }
}

/// What the fleet's actors and callers share.
pub struct Fleet {
    /// What the fleet uses of the node.
    pub ctx: FleetContext,
    actors: Mutex<HashMap<String, ActorRef<VpsMsg>>>,
    bulkheads: Mutex<HashMap<String, Arc<Bulkhead>>>,
    key: tokio::sync::Mutex<Option<Arc<chom_ssh::PrivateKey>>>,
    inventory: Mutex<Option<ActorRef<inventory::InventoryMsg>>>,
}

/// At most `ssh.max_concurrent` commands at once on one server. Kept here, not in the VPS
/// actor, so that a restarted actor does not hand out a fresh set of slots while commands
/// of the old one still run.
struct Bulkhead {
    slots: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
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
        Arc::new(Fleet {
            ctx,
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

    fn bulkhead(&self, vps: &str) -> Arc<Bulkhead> {
        let max = self.ctx.config.ssh.max_concurrent.max(1) as usize;
        self.bulkheads
            .lock()
            .expect("fleet lock")
            .entry(vps.to_owned())
            .or_insert_with(|| {
                Arc::new(Bulkhead {
                    slots: Arc::new(Semaphore::new(max)),
                    waiting: Default::default(),
                })
            })
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
    async fn live_actor(&self, vps: &str) -> Result<ActorRef<VpsMsg>, ExecError> {
        let deadline = Instant::now() + ACTOR_WAIT;
        loop {
            if let Some(actor) = self.actor(vps) {
                return Ok(actor);
            }
            if Instant::now() >= deadline {
                let known = match self.ctx.backends() {
                    Some(b) => b.store.vps(vps).await.ok().flatten().is_some(),
                    None => true,
                };
                return Err(if known {
                    ExecError::Rejected {
                        reason: format!("vps `{vps}` is starting"),
                        retry_in: Duration::from_secs(5),
                    }
                } else {
                    ExecError::UnknownVps(vps.to_owned())
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run a command on a server, with the breaker, bulkhead, retry and timeouts described
    /// in the module doc. A command that ran and exited non-zero is an `Ok` output: that is
    /// the command's failure, not the host's.
    #[allow(clippy::too_many_lines, reason = "being split by issue 11")]
    pub async fn exec(&self, req: ExecRequest<'_>) -> Result<Output, ExecError> {
        let ssh = &self.ctx.config.ssh;
        let line = chom_ssh::command_line(&ssh.command_prefix, req.command, req.args)
            .map_err(|e| ExecError::InvalidCommand(e.to_string()))?;
        let idempotent = ssh.idempotent_commands.iter().any(|c| c == req.command);
        let attempts = ssh.retry_attempts.max(1);
        let metrics = &self.ctx.metrics;
        let mut last: Option<ExecError> = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(retry_delay(ssh.retry_base, attempt - 1)).await;
            }
            let actor = self.live_actor(req.vps).await?;
            let permit = match ractor::call!(actor, VpsMsg::Acquire) {
                Ok(Ok(permit)) => permit,
                Ok(Err(rejection)) => {
                    metrics.ssh_command(req.vps, "rejected", None);
                    // Retries stop as soon as the breaker opens: the last real failure
                    // stands (the job's policy decides), or, if nothing ran, run it later.
                    return Err(last.unwrap_or_else(|| ExecError::Rejected {
                        reason: format!("vps `{}`: {rejection}", req.vps),
                        retry_in: rejection
                            .retry_in
                            .unwrap_or(self.ctx.config.breaker.open_timeout),
                    }));
                }
                Err(_) => {
                    last = Some(ExecError::Transport(format!(
                        "vps `{}` actor stopped during the call",
                        req.vps
                    )));
                    continue;
                }
            };
            let bulkhead = self.bulkhead(req.vps);
            let slot = match wait_for_slot(&bulkhead, ssh.queue_timeout).await {
                Some(slot) => slot,
                None => {
                    let _ = actor.cast(VpsMsg::Observe(permit, Observation::Cancelled));
                    metrics.ssh_command(req.vps, "rejected", None);
                    return Err(ExecError::Rejected {
                        reason: format!(
                            "too many concurrent operations on {} (at most {} at once)",
                            req.vps, ssh.max_concurrent
                        ),
                        retry_in: ssh.queue_timeout.max(Duration::from_secs(1)),
                    });
                }
            };
            let (session, generation) = match ractor::call!(actor, VpsMsg::Session) {
                Ok(Ok(session)) => session,
                Ok(Err(error)) => {
                    // Counted before the breaker hears of it, so the metrics never lag it.
                    if !matches!(error.class(), ErrorClass::Local) {
                        metrics.ssh_command(req.vps, "transport_failed", None);
                    }
                    let _ = actor.cast(VpsMsg::Observe(permit, observation_for(&error, None)));
                    match error.class() {
                        ErrorClass::Transport { .. } | ErrorClass::Timeout => {
                            debug!(vps = req.vps, attempt, %error, "ssh: could not open a session");
                            last = Some(ExecError::Transport(error.to_string()));
                            continue;
                        }
                        ErrorClass::Security => {
                            return Err(ExecError::Security(error.to_string()));
                        }
                        ErrorClass::Local => return Err(ExecError::Local(error.to_string())),
                    }
                }
                Err(_) => {
                    last = Some(ExecError::Transport(format!(
                        "vps `{}` actor stopped during the call",
                        req.vps
                    )));
                    continue;
                }
            };
            let started = Instant::now();
            let result = session
                .exec(&line, ssh.command_timeout, ssh.max_output as usize)
                .await;
            drop(slot);
            let took = Some(started.elapsed());
            match result {
                Ok(output) => {
                    let outcome = if output.success() {
                        "ok"
                    } else {
                        "command_failed"
                    };
                    metrics.ssh_command(req.vps, outcome, took);
                    let _ = actor.cast(VpsMsg::Observe(permit, Observation::Success));
                    return Ok(output);
                }
                Err(error) => {
                    let counted = match error.class() {
                        ErrorClass::Transport { .. } => Some("transport_failed"),
                        ErrorClass::Timeout => Some("command_failed"),
                        ErrorClass::Security | ErrorClass::Local => None,
                    };
                    if let Some(outcome) = counted {
                        metrics.ssh_command(req.vps, outcome, took);
                    }
                    let _ = actor.cast(VpsMsg::Observe(
                        permit,
                        observation_for(&error, Some(generation)),
                    ));
                    match error.class() {
                        ErrorClass::Transport { started } => {
                            let err = ExecError::Transport(error.to_string());
                            if started && !idempotent {
                                // It may have run: only the job's own policy may re-run it.
                                return Err(err);
                            }
                            last = Some(err);
                        }
                        ErrorClass::Timeout => {
                            return Err(ExecError::Timeout(ssh.command_timeout));
                        }
                        ErrorClass::Security => {
                            return Err(ExecError::Security(error.to_string()));
                        }
                        ErrorClass::Local => return Err(ExecError::Local(error.to_string())),
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ExecError::Transport("no attempt was made".into())))
    }
}

/// A bulkhead slot, waiting at most `limit`; `None` when the line is full or the wait ran out.
async fn wait_for_slot(
    bulkhead: &Bulkhead,
    limit: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    use std::sync::atomic::Ordering;
    if let Ok(slot) = bulkhead.slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    if bulkhead.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        bulkhead.waiting.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    let slot = tokio::time::timeout(limit, bulkhead.slots.clone().acquire_owned()).await;
    bulkhead.waiting.fetch_sub(1, Ordering::SeqCst);
    slot.ok().and_then(Result::ok)
}

/// Delay before retry `n` (1-based): `base · 2^(n-1)` plus up to as much again of jitter.
fn retry_delay(base: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1 << (n - 1).min(16));
    let jitter = rand::rng().random_range(0.0..=1.0);
    exp + exp.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        for n in 1..=4 {
            let floor = base * (1 << (n - 1));
            for _ in 0..100 {
                let d = retry_delay(base, n);
                assert!(d >= floor && d <= floor * 2, "retry {n}: {d:?}");
            }
        }
    }

    #[tokio::test]
    async fn bulkhead_admits_max_then_times_out() {
        let b = Bulkhead {
            slots: Arc::new(Semaphore::new(2)),
            waiting: Default::default(),
        };
        let a = wait_for_slot(&b, Duration::from_millis(10)).await;
        let c = wait_for_slot(&b, Duration::from_millis(10)).await;
        assert!(a.is_some() && c.is_some());
        let started = Instant::now();
        assert!(wait_for_slot(&b, Duration::from_millis(50)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(a);
        assert!(wait_for_slot(&b, Duration::from_millis(10)).await.is_some());
    }
}
