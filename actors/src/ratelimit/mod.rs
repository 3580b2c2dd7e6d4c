//! The tenant API's per-tenant rate limit (`[api.rate_limits]`, requests per minute by tier).
//!
//! [`RateLimiter::check`] answers every request, one way or another:
//!
//! - `cache.url = redis://`: one Lua script evaluated atomically by Redis on its own clock
//!   (`shared.rs`), so every node sharing Redis shares one budget per tenant;
//! - `cache.url = memory://`: an in-process limiter with the tier's whole quota (nothing is
//!   shared; one node);
//! - Redis unreachable, or slower than `api.redis_timeout`: a per-node fallback limiter whose
//!   quota is the tier's divided by the live nodes (never unlimited, never refusing everyone),
//!   counted in `chom_rate_limit_fallback_total`. After a failure the node limits locally for
//!   [`SHARED_RETRY`] before it asks Redis again, so an outage costs one timeout per second,
//!   not one per request; the shared budget resumes by itself once Redis answers.
//!
//! The arithmetic is chom-core's [`Gcra`] everywhere (the Lua script repeats it; a test
//! compares the two); each refusal is counted in `chom_rate_limited_total{tier}`.

mod local;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chom_core::config::{ApiConfig, CacheKind, Config, RateLimitsConfig};
use chom_core::inventory::Tier;
use chom_core::ratelimit::{self, Decision, Gcra};
use tracing::{info, warn};

use self::local::LocalLimiter;
use crate::backends::PublishedBackends;
use crate::cache::Cache;
use crate::metrics::Metrics;

/// How long the node limits locally after Redis failed before it tries Redis again.
pub const SHARED_RETRY: Duration = Duration::from_secs(1);

/// Key prefix of the tenants' TATs in Redis: `chom:rl:<tenant id>`.
pub const KEY_PREFIX: &str = "chom:rl:";

/// The longest key prefix accepted (tests use their own).
pub const MAX_KEY_PREFIX: usize = 64;

/// Tenants an in-process limiter tracks at most (about 40 bytes each).
pub const MAX_TENANTS: usize = 100_000;

/// The number of nodes sharing the tenants' budgets, read at each fallback check.
pub type LiveNodes = Arc<dyn Fn() -> u32 + Send + Sync>;

/// Where the current Redis client comes from (the store actor republishes it on a restart).
pub type CacheSource = Arc<dyn Fn() -> Option<Cache> + Send + Sync>;

/// What the limiter needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterSettings {
    /// Requests per minute by tier.
    pub limits: RateLimitsConfig,
    /// Limit of one call to Redis before the fallback answers.
    pub redis_timeout: Duration,
    /// Prefix of the keys in Redis ([`KEY_PREFIX`]; at most [`MAX_KEY_PREFIX`] visible
    /// ASCII characters).
    pub key_prefix: String,
    /// Tenants each in-process limiter tracks at most.
    pub max_tenants: usize,
}

impl LimiterSettings {
    /// The settings of `[api]`.
    pub fn from_config(api: &ApiConfig) -> LimiterSettings {
        LimiterSettings {
            limits: api.rate_limits,
            redis_timeout: api.redis_timeout,
            key_prefix: api.rate_limit_prefix.clone(),
            max_tenants: MAX_TENANTS,
        }
    }
}

/// Where shared budgets live.
#[derive(Clone)]
pub enum Shared {
    /// `memory://`: nowhere; this process counts alone.
    InProcess,
    /// Redis, through the cache client `source` hands out at each check.
    Redis(CacheSource),
}

impl Shared {
    /// Redis through one fixed client.
    pub fn redis(cache: Cache) -> Shared {
        Shared::Redis(Arc::new(move || Some(cache.clone())))
    }
}

/// Which limiter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis: the budget every node shares.
    Shared,
    /// The in-process limiter of `memory://`.
    InProcess,
    /// This node's fallback while Redis is unreachable or slow.
    Fallback,
}

/// One request's verdict, with what its answer's headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The tenant's tier.
    pub tier: Tier,
    /// The policy applied: the tier's quota, or this node's share of it in the fallback.
    pub gcra: Gcra,
    /// The decision and its numbers.
    pub decision: Decision,
    /// Which limiter decided.
    pub source: Source,
}

impl Verdict {
    /// Whether the request may proceed (else: 429).
    pub fn allowed(&self) -> bool {
        self.decision.allowed
    }

    /// `RateLimit-Policy`, e.g. `"starter";q=100;w=60`.
    pub fn policy_header(&self) -> String {
        ratelimit::policy_header(self.tier, &self.gcra)
    }

    /// `RateLimit`, e.g. `"starter";r=42;t=18`.
    pub fn ratelimit_header(&self) -> String {
        ratelimit::ratelimit_header(self.tier, &self.decision)
    }

    /// `Retry-After` in seconds (and the 429 body's `retry_after`), when refused.
    pub fn retry_after(&self) -> Option<u64> {
        (!self.decision.allowed).then_some(self.decision.retry_after)
    }
}

/// A request the limiter cannot check.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Tenant ids are positive database ids.
    #[error("tenant id must be positive, got {0}")]
    BadTenant(i64),
    /// The configured key prefix is empty, too long or not visible ASCII.
    #[error("rate limit key prefix must be 1 to {MAX_KEY_PREFIX} visible ASCII characters")]
    BadKeyPrefix,
}

/// The limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    settings: LimiterSettings,
    shared: Shared,
    live_nodes: LiveNodes,
    metrics: Metrics,
    in_process: LocalLimiter,
    fallback: LocalLimiter,
    /// The shared checks' batcher (Redis only).
    batcher: Option<shared::Batcher>,
    /// Microseconds after `started` before which Redis is not asked again.
    shared_paused_until: AtomicU64,
    /// Whether the last shared check failed (to log the change once, not every request).
    degraded: AtomicBool,
    started: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter over `shared`; `live_nodes` is read whenever the fallback answers (0 counts
    /// as 1).
    pub fn new(
        settings: LimiterSettings,
        shared: Shared,
        live_nodes: LiveNodes,
        metrics: Metrics,
    ) -> Result<RateLimiter, RateLimitError> {
        let prefix = &settings.key_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_KEY_PREFIX
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(RateLimitError::BadKeyPrefix);
        }
        let max_tenants = settings.max_tenants;
        let batcher = match &shared {
            Shared::Redis(source) => Some(shared::Batcher::new(source.clone())),
            Shared::InProcess => None,
        };
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                batcher,
                settings,
                shared,
                live_nodes,
                metrics,
                in_process: LocalLimiter::new(max_tenants),
                fallback: LocalLimiter::new(max_tenants),
                shared_paused_until: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
                started: Instant::now(),
            }),
        })
    }

    /// The node's limiter: `[api]` settings, the cache the store actor publishes (Redis
    /// unless `cache.url` is `memory://`).
    pub fn for_node(
        config: &Config,
        backends: PublishedBackends,
        live_nodes: LiveNodes,
        metrics: Metrics,
    ) -> RateLimiter {
        let shared = match config.cache.kind() {
            CacheKind::Memory => Shared::InProcess,
            CacheKind::Redis => {
                Shared::Redis(Arc::new(move || backends.current().map(|b| b.cache)))
            }
        };
        RateLimiter::new(
            LimiterSettings::from_config(&config.api),
            shared,
            live_nodes,
            metrics,
        )
        .expect("the built-in key prefix is valid")
    }

    /// Check (and count) one request of `tenant_id`, whose tier is `tier`.
    pub async fn check(&self, tenant_id: i64, tier: Tier) -> Result<Verdict, RateLimitError> {
        if tenant_id <= 0 {
            return Err(RateLimitError::BadTenant(tenant_id));
        }
        let quota = self.inner.settings.limits.quota(tier);
        let verdict = match &self.inner.shared {
            Shared::InProcess => {
                let gcra = Gcra::per_minute(quota);
                let decision = self
                    .inner
                    .in_process
                    .check(tenant_id, &gcra, Instant::now());
                Verdict {
                    tier,
                    gcra,
                    decision,
                    source: Source::InProcess,
                }
            }
            Shared::Redis(_) => match self.shared_check(tenant_id, quota).await {
                Some((gcra, decision)) => Verdict {
                    tier,
                    gcra,
                    decision,
                    source: Source::Shared,
                },
                None => self.fallback_check(tenant_id, tier, quota),
            },
        };
        if !verdict.allowed() {
            self.inner.metrics.rate_limited(tier);
        }
        Ok(verdict)
    }

    /// The shared decision, or `None` when Redis cannot give it within `redis_timeout` (or is
    /// being left alone for [`SHARED_RETRY`] after such a failure).
    async fn shared_check(&self, tenant_id: i64, quota: u32) -> Option<(Gcra, Decision)> {
        let inner = &self.inner;
        let batcher = inner.batcher.as_ref()?;
        if self.elapsed_us() < inner.shared_paused_until.load(Ordering::Relaxed) {
            return None;
        }
        let gcra = Gcra::per_minute(quota);
        let key = format!("{}{tenant_id}", inner.settings.key_prefix);
        let timeout = inner.settings.redis_timeout;
        let answer = match tokio::time::timeout(timeout, batcher.check(key, gcra)).await {
            Ok(answer) => answer.map_err(Unavailable::Redis),
            Err(_) => Err(Unavailable::TimedOut(timeout)),
        };
        match answer {
            Ok(decision) => {
                if inner.degraded.swap(false, Ordering::Relaxed) {
                    info!("rate limiter: Redis answers again; shared limits resumed");
                }
                Some((gcra, decision))
            }
            Err(error) => {
                let retry_at = self.elapsed_us() + duration_us(SHARED_RETRY);
                inner.shared_paused_until.store(retry_at, Ordering::Relaxed);
                if !inner.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, "rate limiter: Redis unavailable; limiting per node (quota / live nodes)");
                }
                None
            }
        }
    }

    /// This node's share of the tier's quota, decided locally and counted as a fallback.
    fn fallback_check(&self, tenant_id: i64, tier: Tier, quota: u32) -> Verdict {
        let nodes = (self.inner.live_nodes)().max(1);
        let gcra = Gcra::per_minute((quota / nodes).max(1));
        let decision = self.inner.fallback.check(tenant_id, &gcra, Instant::now());
        self.inner.metrics.rate_limit_fallback();
        Verdict {
            tier,
            gcra,
            decision,
            source: Source::Fallback,
        }
    }

    fn elapsed_us(&self) -> u64 {
        duration_us(self.inner.started.elapsed())
    }
}

/// Why the shared limiter could not answer (logged once when the node starts limiting locally).
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("no answer within api.redis_timeout ({})", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("{0}")]
    Redis(String),
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(shared: Shared, nodes: u32) -> RateLimiter {
        let settings = LimiterSettings::from_config(&ApiConfig::default());
        RateLimiter::new(settings, shared, Arc::new(move || nodes), Metrics::new("t")).unwrap()
    }

    async fn allowed(limiter: &RateLimiter, tenant: i64, tier: Tier, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            if limiter.check(tenant, tier).await.unwrap().allowed() {
                allowed += 1;
            }
        }
        allowed
    }

    #[tokio::test]
    async fn in_process_gives_each_tenant_its_tier_quota() {
        let l = limiter(Shared::InProcess, 3);
        assert_eq!(allowed(&l, 1, Tier::Starter, 150).await, 100);
        assert_eq!(allowed(&l, 2, Tier::Pro, 600).await, 500);
        let v = l.check(1, Tier::Starter).await.unwrap();
        assert_eq!(v.source, Source::InProcess);
        assert_eq!(v.retry_after(), Some(1));
        assert_eq!(v.policy_header(), "\"starter\";q=100;w=60");
        assert_eq!(v.ratelimit_header(), "\"starter\";r=0;t=1");
        let text = l.inner.metrics.render();
        assert!(
            text.contains("chom_rate_limited_total{tier=\"starter\"} 51"),
            "{text}"
        );
        assert!(
            text.contains("chom_rate_limited_total{tier=\"pro\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("\nchom_rate_limit_fallback_total 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_a_cache_the_fallback_divides_the_quota_by_the_live_nodes() {
        let l = limiter(Shared::Redis(Arc::new(|| None)), 3);
        assert_eq!(allowed(&l, 7, Tier::Starter, 50).await, 33);
        let v = l.check(7, Tier::Starter).await.unwrap();
        assert_eq!(v.source, Source::Fallback);
        assert_eq!(v.policy_header(), "\"starter\";q=33;w=60");
        // Never closed: a tier quota below the node count still allows one.
        let l = limiter(Shared::Redis(Arc::new(|| None)), 1000);
        assert_eq!(allowed(&l, 7, Tier::Starter, 5).await, 1);
        assert!(
            l.inner
                .metrics
                .render()
                .contains("\nchom_rate_limit_fallback_total 5")
        );
        // Zero live nodes counts as one.
        let l = limiter(Shared::Redis(Arc::new(|| None)), 0);
        assert_eq!(allowed(&l, 7, Tier::Starter, 150).await, 100);
    }

    #[tokio::test]
    async fn bad_input_is_refused() {
        let l = limiter(Shared::InProcess, 1);
        assert!(matches!(
            l.check(0, Tier::Pro).await,
            Err(RateLimitError::BadTenant(0))
        ));
        assert!(l.check(-5, Tier::Pro).await.is_err());
        for prefix in ["", "has space:", &"p".repeat(MAX_KEY_PREFIX + 1)] {
            let settings = LimiterSettings {
                key_prefix: prefix.to_owned(),
                ..LimiterSettings::from_config(&ApiConfig::default())
            };
            let made = RateLimiter::new(
                settings,
                Shared::InProcess,
                Arc::new(|| 1),
                Metrics::new("t"),
            );
            assert!(
                matches!(made, Err(RateLimitError::BadKeyPrefix)),
                "{prefix}"
            );
        }
    }
}
