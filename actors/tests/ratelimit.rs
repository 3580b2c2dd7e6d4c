//! The tenant API's rate limiter against real Redis: the shared Redis (127.0.0.1:6379, or
//! `CHOM_TEST_REDIS_URL`) for bursts per tier, two limiters on two clients sharing one
//! budget, and the Lua script decision for decision against chom-core's GCRA; a private
//! `redis-server` on a free port for the outage (killed, then frozen): checks answer from the
//! per-node fallback, counted, and the shared budget resumes once Redis is back.
//!
//! Every test uses its own key prefix and deletes its keys; nothing sleeps to synchronize
//! (conditions are polled with a deadline).

#![allow(
    clippy::too_many_lines,
    reason = "a test reads top to bottom as one scenario"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chom_actors::cache::Cache;
use chom_actors::metrics::Metrics;
use chom_actors::ratelimit::{
    LimiterSettings, RateLimiter, SHARED_RETRY, Shared, Source, Verdict, shared,
};
use chom_core::config::{ApiConfig, CacheConfig};
use chom_core::inventory::Tier;
use chom_core::ratelimit::Gcra;
use fred::prelude::{ClientLike, KeysInterface};
use futures::future::join_all;

fn redis_url() -> String {
    std::env::var("CHOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test (or run) uses.
fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "chom:rl:test:{tag}:{}-{nanos:x}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cache client of its own on `url`.
fn cache(url: &str) -> Cache {
    Cache::open(&CacheConfig {
        url: url.to_owned(),
        command_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

/// A limiter on its own Redis client; `redis_timeout` generous on the shared server (a busy
/// test machine must not turn a slow answer into a fallback and change the counts).
async fn limiter(
    url: &str,
    prefix: &str,
    redis_timeout: Duration,
    nodes: u32,
) -> (RateLimiter, Metrics) {
    let metrics = Metrics::new("test");
    let cache = cache(url);
    // Connected before the first check, so no burst waits for the connection.
    let connected = Instant::now() + Duration::from_secs(10);
    while cache.ping().await.is_err() {
        assert!(Instant::now() < connected, "no Redis at {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settings = LimiterSettings {
        redis_timeout,
        key_prefix: prefix.to_owned(),
        ..LimiterSettings::from_config(&ApiConfig::default())
    };
    let limiter = RateLimiter::new(
        settings,
        Shared::redis(cache),
        Arc::new(move || nodes),
        metrics.clone(),
    )
    .unwrap();
    (limiter, metrics)
}

/// `n` checks of one tenant sent at once, in order of sending.
async fn burst(limiter: &RateLimiter, tenant: i64, tier: Tier, n: usize) -> Vec<Verdict> {
    let checks = (0..n).map(|_| limiter.check(tenant, tier));
    join_all(checks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn allowed(verdicts: &[Verdict]) -> usize {
    verdicts.iter().filter(|v| v.allowed()).count()
}

/// The value of the unlabelled or labelled series `series` in `metrics`' text.
fn metric(metrics: &Metrics, series: &str) -> u64 {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Deletes every key under `prefix` (the tests' tenants are few and known).
async fn clean(url: &str, prefix: &str, tenants: &[i64]) {
    let client = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    for tenant in tenants {
        let _: i64 = client.del(format!("{prefix}{tenant}")).await.unwrap();
    }
    client.quit().await.unwrap();
}

/// Polls `check` until a verdict satisfies `ok`, at most `limit`.
async fn check_until(
    limiter: &RateLimiter,
    tenant: i64,
    tier: Tier,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Verdict) -> bool,
) -> Verdict {
    let deadline = Instant::now() + limit;
    loop {
        let v = limiter.check(tenant, tier).await.unwrap();
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the shared Redis ===

#[tokio::test]
async fn a_starter_burst_of_150_gets_100_then_one_per_emission_interval() {
    let url = redis_url();
    let prefix = unique_prefix("starter");
    let (limiter, metrics) = limiter(&url, &prefix, Duration::from_secs(1), 1).await;
    let started = Instant::now();
    let verdicts = burst(&limiter, 1, Tier::Starter, 150).await;
    let took = started.elapsed();
    assert!(
        verdicts.iter().all(|v| v.source == Source::Shared),
        "{verdicts:?}"
    );
    // A burst that took longer than T = 600 ms could have earned one more: say so.
    assert!(took < Duration::from_millis(600), "the burst took {took:?}");
    assert_eq!(allowed(&verdicts), 100);
    let refused: Vec<_> = verdicts.iter().filter(|v| !v.allowed()).collect();
    assert_eq!(refused.len(), 50);
    for v in &refused {
        assert_eq!(v.retry_after(), Some(1), "{v:?}");
        assert_eq!(v.ratelimit_header(), "\"starter\";r=0;t=1");
        assert_eq!(v.policy_header(), "\"starter\";q=100;w=60");
    }
    assert_eq!(
        metric(&metrics, "chom_rate_limited_total{tier=\"starter\"}"),
        50
    );
    assert_eq!(metric(&metrics, "chom_rate_limit_fallback_total"), 0);
    // One more once the emission interval (600 ms) has passed, not before.
    let v = check_until(
        &limiter,
        1,
        Tier::Starter,
        Duration::from_secs(5),
        "one more",
        |v| v.allowed(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(v.decision.remaining, 0);
    assert!(!limiter.check(1, Tier::Starter).await.unwrap().allowed());
    // The key expires by itself once the budget is full again (PEXPIRE, at most 60 s).
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    let ttl: i64 = client.pttl(format!("{prefix}1")).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "pttl {ttl}");
    client.quit().await.unwrap();
    clean(&url, &prefix, &[1]).await;
}

#[tokio::test]
async fn pro_and_enterprise_get_their_quotas() {
    let url = redis_url();
    let prefix = unique_prefix("tiers");
    let (limiter, metrics) = limiter(&url, &prefix, Duration::from_secs(1), 1).await;
    for (tenant, tier, quota) in [(2, Tier::Pro, 500), (3, Tier::Enterprise, 2000)] {
        let gcra = Gcra::per_minute(quota);
        let started = Instant::now();
        let verdicts = burst(&limiter, tenant, tier, quota as usize + 100).await;
        let took = started.elapsed();
        assert!(verdicts.iter().all(|v| v.source == Source::Shared));
        // Exactly the quota, plus what refilled while the burst itself ran (one per T:
        // 120 ms for pro, 30 ms for enterprise): GCRA's bound, chom-core proves it exact.
        let refilled = (took.as_micros() as u64 / gcra.interval_us()) as usize;
        let n = allowed(&verdicts);
        assert!(
            n >= quota as usize && n <= quota as usize + refilled,
            "{tier:?}: {n} allowed in {took:?}"
        );
        for v in verdicts.iter().filter(|v| !v.allowed()) {
            assert!(v.retry_after().is_some_and(|s| s >= 1), "{v:?}");
        }
        let label = format!("chom_rate_limited_total{{tier=\"{}\"}}", tier.as_str());
        assert_eq!(metric(&metrics, &label), (verdicts.len() - n) as u64);
    }
    clean(&url, &prefix, &[2, 3]).await;
}

#[tokio::test]
async fn two_limiters_on_two_clients_share_one_budget() {
    let url = redis_url();
    let prefix = unique_prefix("two");
    let (a, _) = limiter(&url, &prefix, Duration::from_secs(1), 2).await;
    let (b, _) = limiter(&url, &prefix, Duration::from_secs(1), 2).await;
    let started = Instant::now();
    let checks = (0..150).map(|i| {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { l.check(4, Tier::Starter).await.unwrap() }
    });
    let verdicts = join_all(checks).await;
    let took = started.elapsed();
    assert!(verdicts.iter().all(|v| v.source == Source::Shared));
    let n = allowed(&verdicts);
    // One budget, within one request (one more only if the burst outlasted T = 600 ms).
    assert!(
        (100..=101).contains(&n) && (n == 100 || took >= Duration::from_millis(600)),
        "{n} allowed in {took:?}"
    );
    let by_a = verdicts.iter().step_by(2).filter(|v| v.allowed()).count();
    assert!(
        by_a > 0 && by_a < n,
        "both nodes got part of the budget: {by_a} of {n}"
    );
    clean(&url, &prefix, &[4]).await;
}

/// A small deterministic generator of request times (no dependency on the clock).
struct Times(u64);

impl Times {
    fn next_gap(&mut self, max: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % max
    }
}

#[tokio::test]
async fn the_lua_script_decides_exactly_as_the_pure_gcra() {
    let url = redis_url();
    let prefix = unique_prefix("lua");
    let cache = cache(&url);
    let mut tenants = Vec::new();
    let t0: u64 = 1_764_000_000_000_000;
    for (i, quota) in [1u32, 3, 7, 100, 500, 2000].into_iter().enumerate() {
        let gcra = Gcra::per_minute(quota);
        let tenant = i as i64 + 10;
        tenants.push(tenant);
        let key = format!("{prefix}{tenant}");
        let mut times = Times(0x9E37_79B9_7F4A_7C15 ^ u64::from(quota));
        let (mut now, mut tat) = (t0, 0);
        for step in 0..400 {
            // Bursts (gap 0), gaps around T, and long pauses; sometimes exactly on T.
            now += match step % 5 {
                0 => 0,
                1 => gcra.interval_us(),
                2 => times.next_gap(gcra.interval_us() * 3),
                3 => times.next_gap(gcra.interval_us() / 2 + 1),
                _ => times.next_gap(gcra.interval_us() * u64::from(quota) / 4 + 1),
            };
            let pure = gcra.check(tat, now);
            let lua = shared::check(&cache, &key, &gcra, Some(now)).await.unwrap();
            assert_eq!(
                lua, pure,
                "quota {quota}, step {step}, now {now}, tat {tat}"
            );
            tat = pure.new_tat;
        }
    }
    clean(&url, &prefix, &tenants).await;
}

#[tokio::test]
async fn redis_down_or_frozen_falls_back_per_node_and_shared_limits_resume() {
    let redis = chom_testkit::PrivateRedis::start();
    let prefix = unique_prefix("down");
    let redis_timeout = Duration::from_millis(100);
    // Two live nodes: the fallback allows half of the tier's quota on this one.
    let (limiter, metrics) = limiter(&redis.url(), &prefix, redis_timeout, 2).await;
    let first = check_until(
        &limiter,
        5,
        Tier::Starter,
        Duration::from_secs(10),
        "Redis",
        |v| v.source == Source::Shared,
    )
    .await;
    assert!(first.allowed());
    let fallbacks_before = metric(&metrics, "chom_rate_limit_fallback_total");

    redis.stop();
    let started = Instant::now();
    let verdicts = burst(&limiter, 6, Tier::Starter, 60).await;
    // Answered, bounded by the Redis timeout rather than the cache's 2 s command timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        verdicts.iter().all(|v| v.source == Source::Fallback),
        "{verdicts:?}"
    );
    // Neither open nor closed: this node's share, 100 / 2 nodes.
    assert_eq!(allowed(&verdicts), 50);
    assert_eq!(verdicts[59].policy_header(), "\"starter\";q=50;w=60");
    assert_eq!(verdicts[59].retry_after(), Some(2));
    assert_eq!(
        metric(&metrics, "chom_rate_limit_fallback_total"),
        fallbacks_before + 60
    );
    assert_eq!(
        metric(&metrics, "chom_rate_limited_total{tier=\"starter\"}"),
        10
    );

    // Back (empty and without the script: EVALSHA's NOSCRIPT falls back to EVAL).
    redis.start_again();
    let resumed = check_until(
        &limiter,
        7,
        Tier::Starter,
        Duration::from_secs(20),
        "shared limits after the restart",
        |v| v.source == Source::Shared,
    )
    .await;
    assert!(resumed.allowed());
    assert_eq!(resumed.decision.remaining, 99);

    // Frozen: connections accepted, nothing answered. Each check still answers within
    // about the Redis timeout, from the fallback.
    redis.freeze();
    let started = Instant::now();
    let v = check_until(
        &limiter,
        8,
        Tier::Starter,
        Duration::from_secs(5),
        "fallback",
        |v| v.source == Source::Fallback,
    )
    .await;
    assert!(v.allowed());
    assert!(
        started.elapsed() < redis_timeout * 2 + Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // While paused after the failure, no check waits for Redis at all.
    let started = Instant::now();
    let v = limiter.check(8, Tier::Starter).await.unwrap();
    assert_eq!(v.source, Source::Fallback);
    assert!(started.elapsed() < SHARED_RETRY, "{:?}", started.elapsed());
    redis.thaw();
    check_until(
        &limiter,
        9,
        Tier::Starter,
        Duration::from_secs(20),
        "shared limits after the thaw",
        |v| v.source == Source::Shared,
    )
    .await;
}

#[tokio::test]
async fn a_batch_of_checks_decides_each_in_order_as_the_pure_gcra() {
    let url = redis_url();
    let prefix = unique_prefix("batch");
    let cache = cache(&url);
    let now: u64 = 1_764_000_000_000_000;
    // Three tenants interleaved, quotas 2, 3 and 100, six checks each in one call.
    let tenants = [31i64, 32, 33];
    let policies = [
        Gcra::per_minute(2),
        Gcra::per_minute(3),
        Gcra::per_minute(100),
    ];
    let checks: Vec<(String, Gcra)> = (0..18)
        .map(|i| (format!("{prefix}{}", tenants[i % 3]), policies[i % 3]))
        .collect();
    let lua = shared::check_many(&cache, &checks, Some(now))
        .await
        .unwrap();
    let mut tats = [0u64; 3];
    for (i, decision) in lua.iter().enumerate() {
        let pure = policies[i % 3].check(tats[i % 3], now);
        assert_eq!(*decision, pure, "check {i}");
        tats[i % 3] = pure.new_tat;
    }
    let allowed_by_tenant: Vec<usize> = (0..3)
        .map(|t| lua.iter().skip(t).step_by(3).filter(|d| d.allowed).count())
        .collect();
    assert_eq!(allowed_by_tenant, [2, 3, 6]);
    // What the call stored is what checking one by one would have stored.
    let later = now + policies[2].interval_us() / 2;
    let next = shared::check_many(&cache, &checks[2..3], Some(later))
        .await
        .unwrap();
    assert_eq!(next[0], policies[2].check(tats[2], later));
    clean(&url, &prefix, &tenants).await;
}
