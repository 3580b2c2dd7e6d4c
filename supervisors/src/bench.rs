//! Measurements the node exposes (`chom bench`): how fast a crashed child is back, and
//! what an idle actor costs in memory. Real actors, real supervisor, no mocks.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::{Backoff, ChildSpec, Intensity, Strategy, SupervisorSpec, start_supervisor};

/// Result of [`restart`].
#[derive(Serialize, Clone, Debug)]
pub struct RestartBench {
    /// Always `"restart"`.
    pub bench: &'static str,
    /// Number of measured crash-and-restart cycles.
    pub n: usize,
    /// Median cycle, microseconds.
    pub median_us: f64,
    /// 99th percentile cycle, microseconds.
    pub p99_us: f64,
    /// Resident memory per idle actor, bytes (RSS growth over 10,000 idle actors; 0 where
    /// `/proc/self/statm` is unavailable).
    pub idle_actor_bytes: u64,
}

/// Number of idle actors spawned to measure their memory.
const IDLE_ACTORS: usize = 10_000;
/// Unmeasured cycles first, so allocator and scheduler are warm.
const WARM_UP: usize = 100;

/// Measures `n` cycles of "the child's handler returns `Err` -> the one_for_one
/// supervisor restarts it -> the new child's `pre_start` has signalled", then the memory
/// of [`IDLE_ACTORS`] idle actors.
///
/// Memory is read as RSS growth, so the figure is only meaningful the first time in a
/// process (freed memory is reused by later runs).
///
/// # Panics
///
/// If actors cannot be spawned (no Tokio runtime), or the supervisor dies.
pub async fn restart(n: usize) -> RestartBench {
    let mut samples = restart_cycles(n).await;
    samples.sort_unstable();
    RestartBench {
        bench: "restart",
        n,
        median_us: percentile(&samples, 0.5),
        p99_us: percentile(&samples, 0.99),
        idle_actor_bytes: idle_actor_bytes().await,
    }
}

async fn restart_cycles(n: usize) -> Vec<Duration> {
    let (started_tx, mut started) = unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity::new(u32::MAX, Duration::from_secs(1)))
        .backoff(Backoff::none())
        .child(ChildSpec::worker("crasher", move |ctx| {
            let started_tx = started_tx.clone();
            async move {
                let (child, _) =
                    Actor::spawn_linked(None, Crasher, started_tx, ctx.supervisor).await?;
                Ok(child.get_cell())
            }
        }));
    let (sup, handle) = start_supervisor("bench", spec, None)
        .await
        .expect("bench supervisor starts");
    let mut current = started.recv().await.expect("first child started");
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let t0 = Instant::now();
        current.cast(Crash).expect("child is alive");
        current = started.recv().await.expect("child restarted");
        if i >= WARM_UP {
            samples.push(t0.elapsed());
        }
    }
    sup.stop(None);
    let _ = handle.await;
    samples
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // nearest-rank: the smallest sample with at least q of them at or below it
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    // nanosecond resolution is all a Duration has; more digits are float noise
    (sorted[rank - 1].as_secs_f64() * 1e9).round() / 1e3
}

async fn idle_actor_bytes() -> u64 {
    let before = rss_bytes();
    let mut actors = Vec::with_capacity(IDLE_ACTORS);
    for _ in 0..IDLE_ACTORS {
        let (actor, handle) = Actor::spawn(None, Idle, ())
            .await
            .expect("idle actor spawns");
        actors.push((actor, handle));
    }
    let after = rss_bytes();
    for (actor, _) in &actors {
        actor.stop(None);
    }
    for (_, handle) in actors {
        let _ = handle.await;
    }
    match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before) / IDLE_ACTORS as u64,
        _ => 0,
    }
}

/// Resident set size from `/proc/self/statm` (second field, in pages).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The page size from the ELF auxiliary vector (`AT_PAGESZ`), which needs no libc call.
fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 4096;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == AT_PAGESZ)
        .map_or(4096, |(_, value)| value)
}

/// A child that signals each start and fails on request.
struct Crasher;

/// The one message of [`Crasher`].
struct Crash;

impl Actor for Crasher {
    type Msg = Crash;
    type State = ();
    type Arguments = UnboundedSender<ActorRef<Crash>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Crash>,
        started: UnboundedSender<ActorRef<Crash>>,
    ) -> Result<(), ActorProcessingErr> {
        let _ = started.send(myself);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Crash>,
        _: Crash,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("bench crash".into())
    }
}

/// An actor that does nothing.
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn page_size_is_sane() {
        let size = page_size();
        assert!(size.is_power_of_two() && size >= 4096, "{size}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_bench_runs() {
        let result = restart(200).await;
        println!("{}", serde_json_like(&result));
        assert_eq!(result.n, 200);
        assert!(result.median_us > 0.0 && result.p99_us >= result.median_us);
    }

    fn serde_json_like(r: &RestartBench) -> String {
        format!(
            "restart bench: n={} median_us={:.1} p99_us={:.1} idle_actor_bytes={}",
            r.n, r.median_us, r.p99_us, r.idle_actor_bytes
        )
    }
}
