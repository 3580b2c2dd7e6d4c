//! The shared limiter: one Lua script ([`gcra.lua`](./gcra.lua)) that reads a tenant's TAT,
//! decides on Redis' own clock and stores the new TAT, atomically. All nodes using the same
//! Redis share one budget per tenant, with no check-then-increment race and no skew between
//! the nodes' clocks.
//!
//! Checks are batched without waiting ([`Batcher`]): one call to Redis is in flight per node,
//! and the checks that arrive meanwhile go together in the next call, each decided in arrival
//! order inside the script. Alone, a check costs one round trip as before; under load, many
//! share one, which is what the node's CPU (and Redis') pays for.

use std::sync::{LazyLock, OnceLock};

use chom_core::ratelimit::{Decision, Gcra};
use tokio::sync::{mpsc, oneshot};

use super::CacheSource;
use crate::cache::{Cache, CacheError, Script};

/// The script, named by its SHA1.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// Checks sent in one call at most (a bounded script run; the rest wait for the next call).
pub const MAX_BATCH: usize = 128;

/// Checks waiting for the next call at most; more are refused at once (the caller falls
/// back to the local limiter), so a stalled Redis never grows a queue.
const MAX_WAITING: usize = 4096;

/// One check of the tenant whose TAT lives at `key`, decided by Redis.
///
/// `now_us` is `None` in the node: Redis reads its own clock (`TIME`). `Some` exists for
/// the test that runs the script and chom-core's [`Gcra::check`] on the same request times
/// and compares their decisions.
pub async fn check(
    cache: &Cache,
    key: &str,
    gcra: &Gcra,
    now_us: Option<u64>,
) -> Result<Decision, CacheError> {
    let mut decisions = check_many(cache, &[(key.to_owned(), *gcra)], now_us).await?;
    Ok(decisions.remove(0))
}

/// Several checks in one call, decided in order; one decision per check.
pub async fn check_many(
    cache: &Cache,
    checks: &[(String, Gcra)],
    now_us: Option<u64>,
) -> Result<Vec<Decision>, CacheError> {
    let as_arg = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let keys: Vec<String> = checks.iter().map(|(key, _)| key.clone()).collect();
    let mut args = Vec::with_capacity(checks.len() * 2 + 1);
    for (_, gcra) in checks {
        args.push(as_arg(gcra.interval_us()));
        args.push(i64::from(gcra.quota()));
    }
    args.extend(now_us.map(as_arg));
    let answer = cache.eval_ints(&GCRA, keys, args).await?;
    if answer.len() != checks.len() * 3 {
        return Err(CacheError::Unexpected(format!(
            "the rate-limit script answered {} values for {} checks",
            answer.len(),
            checks.len()
        )));
    }
    let as_time = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(checks
        .iter()
        .zip(answer.chunks_exact(3))
        .map(|((_, gcra), a)| gcra.describe(a[0] == 1, as_time(a[1]), as_time(a[2])))
        .collect())
}

/// One waiting check and where its decision goes.
struct Pending {
    key: String,
    gcra: Gcra,
    reply: oneshot::Sender<Result<Decision, String>>,
}

/// Batches the node's shared checks (see the module's text). The task starts with the first
/// check (inside the runtime) and ends when the limiter is dropped.
pub struct Batcher {
    source: CacheSource,
    tx: OnceLock<mpsc::Sender<Pending>>,
}

impl Batcher {
    /// A batcher over the current Redis client of `source`.
    pub fn new(source: CacheSource) -> Batcher {
        Batcher {
            source,
            tx: OnceLock::new(),
        }
    }

    /// Decide one check with the others waiting now. An error when there is no Redis client,
    /// Redis failed, or too many checks wait already.
    pub async fn check(&self, key: String, gcra: Gcra) -> Result<Decision, String> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_WAITING);
            tokio::spawn(run(self.source.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.try_send(Pending { key, gcra, reply })
            .map_err(|_| "too many rate-limit checks waiting for Redis".to_owned())?;
        answer
            .await
            .map_err(|_| "the rate-limit batcher stopped".to_owned())?
    }
}

/// One call at a time: take what waits (up to [`MAX_BATCH`]), send it, answer each.
async fn run(source: CacheSource, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Checks whose caller gave up (its timeout) are not sent.
        batch.retain(|p: &Pending| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let checks: Vec<(String, Gcra)> = batch.iter().map(|p| (p.key.clone(), p.gcra)).collect();
        let decided = match source() {
            Some(cache) => check_many(&cache, &checks, None)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the cache is being restarted".to_owned()),
        };
        match decided {
            Ok(decisions) => {
                for (pending, decision) in batch.drain(..).zip(decisions) {
                    let _ = pending.reply.send(Ok(decision));
                }
            }
            Err(why) => {
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(why.clone()));
                }
            }
        }
    }
}
