//! The bulkhead across nodes: a lease on one of a server's `ssh.max_concurrent` slots in the
//! cache, taken after the local [`Bulkhead`](super::exec::Bulkhead) slot and held while the
//! command runs (policy and model: `chom_core::lease`; script: `slots.lua`).
//!
//! - The lease is renewed every [`LeaseTiming::renew_every`] by a task of its own and removed
//!   when the command ends ([`Lease`] is a guard). A node that dies renews nothing, so its
//!   slots are free again after [`LeaseTiming::ttl`], before its jobs are rescued.
//! - A full table is looked at again after [`poll_delay`] (10 ms doubling to 200 ms), never
//!   beyond the caller's `ssh.queue_timeout`.
//! - With the in-process cache (one node, the embedded default) the local bulkhead is the
//!   whole story and no lease is taken.
//! - When Redis cannot be reached, a node runs at most its [`fallback_share`] of the slots
//!   (`max / live nodes`, at least one) without leases: the nodes stay within the limit as
//!   long as they agree on how many they are, and none stops working because Redis did.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chom_core::lease::{LeaseTiming, fallback_share, poll_delay};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cache::{Cache, Script};
use crate::handles::Peers;

static SLOTS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("slots.lua")));

/// Cache key of a server's slot table.
pub fn slots_key(vps: &str) -> String {
    format!("chom:slots:{}", chom_core::inventory::vps_service(vps))
}

/// What this node needs to take leases.
pub(crate) struct ClusterSlots {
    peers: Peers,
    timing: LeaseTiming,
    next: AtomicU64,
}

/// Commands running without a lease on one server (the cache was unreachable), bounded by
/// the node's fallback share.
#[derive(Default)]
pub(crate) struct Unshared(AtomicUsize);

/// A slot held across the cluster, given back when dropped.
pub(crate) enum Lease {
    /// No lease needed: the cache is in-process, so this node is alone.
    Local,
    /// A lease in the cache, renewed by `renewer` until dropped.
    Held {
        cache: Cache,
        key: String,
        member: String,
        renewer: JoinHandle<()>,
    },
    /// Running on the node's fallback share while the cache is unreachable.
    Fallback(Arc<Unshared>),
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self {
            Lease::Local => {}
            Lease::Fallback(unshared) => {
                unshared.0.fetch_sub(1, Ordering::SeqCst);
            }
            Lease::Held {
                cache,
                key,
                member,
                renewer,
            } => {
                renewer.abort();
                let (cache, key, member) = (cache.clone(), key.clone(), member.clone());
                // Not given back (no runtime, Redis away): it lapses after its ttl.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let args = vec!["release".to_owned(), member];
                        if let Err(error) = cache.eval::<i64, _>(&SLOTS, vec![key], args).await {
                            debug!(%error, "a slot lease was not given back; it lapses by itself");
                        }
                    });
                }
            }
        }
    }
}

/// Why no lease could be had.
pub(crate) struct Full;

impl ClusterSlots {
    pub(crate) fn new(peers: Peers, retry_after: Duration) -> ClusterSlots {
        ClusterSlots {
            peers,
            timing: LeaseTiming::for_retry_after(retry_after),
            next: AtomicU64::new(1),
        }
    }

    /// A lease on one of `max` slots of `vps`, looking again while the table is full until
    /// `deadline`.
    pub(crate) async fn lease(
        &self,
        cache: &Cache,
        vps: &str,
        max: u32,
        unshared: &Arc<Unshared>,
        deadline: Instant,
    ) -> Result<Lease, Full> {
        if matches!(cache, Cache::Memory(_)) {
            return Ok(Lease::Local);
        }
        let key = slots_key(vps);
        let member = format!(
            "{}:{}",
            self.peers.instance(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let acquire = script_args("acquire", &member, max, self.timing.ttl, None);
        let mut n = 0;
        loop {
            let wait = match cache
                .eval::<i64, _>(&SLOTS, vec![key.clone()], acquire.clone())
                .await
            {
                Ok(0) => return Ok(self.held(cache, key, member)),
                Ok(ms) => Duration::from_millis(ms.max(1).unsigned_abs()),
                Err(error) => {
                    let share = fallback_share(max, self.peers.live()) as usize;
                    if try_enter(unshared, share) {
                        warn!(vps, %error, share, "cannot lease a slot in the cache; running on this node's share");
                        return Ok(Lease::Fallback(unshared.clone()));
                    }
                    Duration::MAX
                }
            };
            let pause = poll_delay(n).min(wait);
            if Instant::now() + pause >= deadline {
                return Err(Full);
            }
            tokio::time::sleep(pause).await;
            n += 1;
        }
    }

    fn held(&self, cache: &Cache, key: String, member: String) -> Lease {
        let renewer = tokio::spawn(renew(
            cache.clone(),
            key.clone(),
            member.clone(),
            self.timing,
        ));
        Lease::Held {
            cache: cache.clone(),
            key,
            member,
            renewer,
        }
    }
}

/// The arguments of `slots.lua`: `now_ms` only from tests (else the Redis server's clock).
fn script_args(
    op: &str,
    member: &str,
    max: u32,
    ttl: Duration,
    now_ms: Option<u64>,
) -> Vec<String> {
    vec![
        op.to_owned(),
        member.to_owned(),
        max.to_string(),
        ttl.as_millis().to_string(),
        now_ms.map(|n| n.to_string()).unwrap_or_default(),
    ]
}

/// Run one operation of the slot script with the caller's clock: for the test that holds the
/// script to its model (`chom_core::lease::SlotTable`).
#[doc(hidden)]
pub async fn slots_script(
    cache: &Cache,
    key: &str,
    op: &str,
    member: &str,
    max: u32,
    ttl: Duration,
    now_ms: u64,
) -> Result<i64, crate::cache::CacheError> {
    let args = script_args(op, member, max, ttl, Some(now_ms));
    cache.eval(&SLOTS, vec![key.to_owned()], args).await
}

/// One more command on the fallback share, if the share allows it.
fn try_enter(unshared: &Unshared, share: usize) -> bool {
    unshared
        .0
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < share).then_some(n + 1)
        })
        .is_ok()
}

/// Keep a lease alive while its command runs. A lease found lapsed (Redis lost it, or this
/// node stalled past its ttl) is reported once: another node may be using the slot now.
async fn renew(cache: Cache, key: String, member: String, timing: LeaseTiming) {
    let args = script_args("renew", &member, 0, timing.ttl, None);
    loop {
        tokio::time::sleep(timing.renew_every).await;
        match cache
            .eval::<i64, _>(&SLOTS, vec![key.clone()], args.clone())
            .await
        {
            Ok(1) => {}
            Ok(_) => {
                warn!(
                    key,
                    "a slot lease lapsed while its command ran; the server may see one command more than its limit"
                );
                return;
            }
            Err(error) => debug!(key, %error, "cannot renew a slot lease; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_share_is_never_exceeded() {
        let unshared = Unshared::default();
        assert!(try_enter(&unshared, 2));
        assert!(try_enter(&unshared, 2));
        assert!(!try_enter(&unshared, 2));
        unshared.0.fetch_sub(1, Ordering::SeqCst);
        assert!(try_enter(&unshared, 2));
    }
}
