//! Breakers shared by the nodes of a cluster, through the cache (Redis).
//!
//! Each VPS actor keeps its breaker (`chom_core::breaker`) and counts its own failures. What
//! travels is the breaker's *decisive* changes: opened, forced open, disabled, closed. The
//! node that makes one publishes its snapshot (`breakers.lua`: a record per server and a
//! sequence number); every node's `fleet/breaker-sync` actor reads what was published since
//! its last look, every [`SYNC_EVERY`], and hands each record to the server's actor, which
//! adopts it ([`Breaker::adopt`]). A breaker opened by one node is so on all within about
//! [`SYNC_EVERY`] plus a round trip.
//!
//! When the open period ends, each node's breaker lets a trial call through, but a trial must
//! first take the server's *trial token* ([`trial_key`], `SET NX` with the time a call may
//! last): one node holds it, the others turn calls away as half-open. The holder's outcome is
//! published like any change: closed (the token is deleted: later calls pass anyway), or open
//! again (the token is kept until the new period ends, so no second trial starts while the
//! others learn of it). A holder that dies leaves its token to lapse.
//!
//! Failure cases: with the in-process cache (one node) nothing is shared; while Redis cannot
//! be reached each node's breaker works alone, as before, and trial calls are not coordinated.
//!
//! [`Breaker::adopt`]: chom_core::breaker::Breaker::adopt

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chom_core::breaker::Snapshot;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::Fleet;
use super::vps::VpsMsg;
use crate::cache::{Cache, CacheError, Script};

/// How often each node looks for changes published by the others.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Records read per look (a fleet of many servers opening at once is read over a few looks).
const PAGE: usize = 1000;

static BREAKERS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("breakers.lua")));
const KEYS: [&str; 3] = [
    "chom:breakers:log",
    "chom:breakers:seq",
    "chom:breaker:shared:",
];
/// How long a published record is kept (as long as a breaker snapshot).
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Cache key of a server's trial token.
pub fn trial_key(vps: &str) -> String {
    format!(
        "chom:breaker:trial:{}",
        chom_core::inventory::vps_service(vps)
    )
}

/// A published breaker change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The instance that published it (it does not adopt its own).
    pub by: String,
    /// The breaker as that node had it.
    pub snapshot: Snapshot,
}

fn keys() -> Vec<String> {
    KEYS.iter().map(|k| (*k).to_owned()).collect()
}

/// Publish `snapshot` of `vps`'s breaker as `by`; the record's sequence number.
pub async fn publish(
    cache: &Cache,
    vps: &str,
    by: &str,
    snapshot: &Snapshot,
) -> Result<i64, CacheError> {
    let record = serde_json::to_string(&Record {
        by: by.to_owned(),
        snapshot: snapshot.clone(),
    })
    .map_err(|e| CacheError::Unexpected(e.to_string()))?;
    let args = vec![
        "publish".to_owned(),
        vps.to_owned(),
        record,
        RECORD_TTL.as_secs().to_string(),
    ];
    let answer: Vec<String> = cache.eval(&BREAKERS, keys(), args).await?;
    parse_seq(answer.first())
}

fn parse_seq(value: Option<&String>) -> Result<i64, CacheError> {
    value
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CacheError::Unexpected("breaker sequence number".into()))
}

/// The last record published for `vps`, if any.
pub async fn published(cache: &Cache, vps: &str) -> Result<Option<Record>, CacheError> {
    let args = vec!["get".to_owned(), vps.to_owned()];
    let answer: Vec<String> = cache.eval(&BREAKERS, keys(), args).await?;
    match answer.first() {
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| CacheError::Unexpected(e.to_string())),
        None => Ok(None),
    }
}

/// The records published after `last`, at most `limit` of them, and the cursor to ask from
/// next time. Unreadable records are skipped (and logged): one bad record must not stop the
/// others.
pub async fn since(
    cache: &Cache,
    last: i64,
    limit: usize,
) -> Result<(i64, Vec<(String, Record)>), CacheError> {
    let args = vec!["since".to_owned(), last.to_string(), limit.to_string()];
    let answer: Vec<String> = cache.eval(&BREAKERS, keys(), args).await?;
    let cursor = parse_seq(answer.first())?;
    let mut records = Vec::with_capacity(answer.len() / 2);
    for pair in answer[1..].chunks_exact(2) {
        match serde_json::from_str::<Record>(&pair[1]) {
            Ok(record) => records.push((pair[0].clone(), record)),
            Err(error) => {
                warn!(vps = %pair[0], %error, "ignoring an unreadable shared breaker record")
            }
        }
    }
    Ok((cursor, records))
}

/// The actor.
pub struct BreakerSyncActor;

/// Running state: the fleet and the last sequence number seen.
pub struct BreakerSyncState {
    fleet: Arc<Fleet>,
    last: i64,
}

/// The periodic look.
pub struct Tick;

impl Actor for BreakerSyncActor {
    type Msg = Tick;
    type State = BreakerSyncState;
    type Arguments = Arc<Fleet>;

    async fn pre_start(
        &self,
        myself: ActorRef<Tick>,
        fleet: Arc<Fleet>,
    ) -> Result<BreakerSyncState, ActorProcessingErr> {
        myself.send_interval(SYNC_EVERY, || Tick);
        Ok(BreakerSyncState { fleet, last: 0 })
    }

    async fn handle(
        &self,
        _: ActorRef<Tick>,
        _: Tick,
        state: &mut BreakerSyncState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(backends) = state.fleet.ctx.published.current() else {
            return Ok(());
        };
        if matches!(backends.cache, Cache::Memory(_)) {
            return Ok(());
        }
        match since(&backends.cache, state.last, PAGE).await {
            Ok((cursor, records)) => {
                state.last = cursor;
                let me = state.fleet.ctx.peers.instance();
                for (vps, record) in records {
                    if record.by == me {
                        continue;
                    }
                    if let Some(actor) = state.fleet.actor(&vps) {
                        let _ = actor.cast(VpsMsg::Adopt(record.snapshot));
                    }
                }
            }
            Err(error) => {
                debug!(%error, "cannot read the shared breakers; each breaker works alone meanwhile")
            }
        }
        Ok(())
    }
}
