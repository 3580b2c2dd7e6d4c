//! The cache: Redis (through `fred`) in production, an in-process map as the embedded default.
//!
//! Used for breaker snapshots, cached observability answers and the tenant API's shared rate
//! limit (Lua scripts, [`Script`]). Every Redis
//! command runs under `cache.command_timeout`, so a Redis outage is an error value after that
//! long, never a hung caller (fred otherwise waits for the reconnect indefinitely).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_core::config::{CacheConfig, CacheKind};
use fred::prelude::{
    Builder, ClientLike, Config as RedisConfig, Expiration, FromValue, KeysInterface, LuaInterface,
    ReconnectPolicy, SetOptions, Value,
};
use sha1::{Digest as _, Sha1};

/// What went wrong talking to the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis answered with an error or could not be reached in time.
    #[error("redis error: {0}")]
    Redis(#[from] fred::error::Error),
    /// Redis answered something the caller cannot read.
    #[error("unexpected answer from redis: {0}")]
    Unexpected(String),
    /// Scripts run only in Redis; the in-process cache has none.
    #[error("the in-process cache runs no scripts")]
    NoScripts,
}

/// A Lua script Redis runs atomically, sent by its SHA1 (`EVALSHA`) and in full (`EVAL`)
/// only when Redis does not have it yet (a fresh or restarted server answers `NOSCRIPT`).
#[derive(Debug, Clone)]
pub struct Script {
    source: &'static str,
    sha1: String,
}

impl Script {
    /// The script `source` and its SHA1, as Redis names it.
    pub fn new(source: &'static str) -> Script {
        let sha1 = Sha1::digest(source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Script { source, sha1 }
    }

    /// The SHA1 `EVALSHA` names the script by.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }
}

/// A cache handle; cheap to clone.
#[derive(Clone)]
pub enum Cache {
    /// In-process map, lost on restart.
    Memory(MemoryCache),
    /// A Redis client with its own reconnect loop.
    Redis(fred::clients::Client),
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// A cached value and when it expires (`None`: never).
type Entry = (String, Option<Instant>);

/// The in-process cache: values with an optional expiry.
#[derive(Clone, Default)]
pub struct MemoryCache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Cache {
    /// Build the cache the config names. For Redis this starts the connection task and returns
    /// at once; commands fail (after the command timeout) until Redis is reachable.
    pub fn open(cfg: &CacheConfig) -> Result<Cache, CacheError> {
        match cfg.kind() {
            CacheKind::Memory => Ok(Cache::Memory(MemoryCache::default())),
            CacheKind::Redis => {
                let config = RedisConfig::from_url(&cfg.url)?;
                let timeout = cfg.command_timeout;
                let client = Builder::from_config(config)
                    .with_performance_config(|p| p.default_command_timeout = timeout)
                    .with_connection_config(|c| {
                        c.connection_timeout = timeout;
                        c.internal_command_timeout = timeout;
                        // One attempt per command: the caller decides about retries.
                        c.max_command_attempts = 1;
                    })
                    // Retry forever, 100 ms doubling up to 5 s: Redis coming back is picked up.
                    .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
                    .build()?;
                // `connect` spawns the connection task without waiting for it: a node must
                // start (and report the cache as down) while Redis is unreachable.
                drop(client.connect());
                Ok(Cache::Redis(client))
            }
        }
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cache::Memory(_) => "memory",
            Cache::Redis(_) => "redis",
        }
    }

    /// One round trip; returns its latency.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        let start = Instant::now();
        if let Cache::Redis(client) = self {
            let _: String = client.ping(None).await?;
        }
        Ok(start.elapsed())
    }

    /// Read a value.
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.get(key, Instant::now())),
            Cache::Redis(client) => Ok(client.get(key).await?),
        }
    }

    /// Write a value, with an expiry when `ttl` is given.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.set(key, value, ttl.map(|t| Instant::now() + t));
                Ok(())
            }
            Cache::Redis(client) => {
                let expire = ttl.map(|t| Expiration::PX(t.as_millis().max(1) as i64));
                let _: () = client.set(key, value, expire, None, false).await?;
                Ok(())
            }
        }
    }

    /// Remove a value.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.entries.lock().expect("cache lock").remove(key);
                Ok(())
            }
            Cache::Redis(client) => {
                let _: i64 = client.del(key).await?;
                Ok(())
            }
        }
    }

    /// Run `script` on `keys` with integer `args` and read its answer as integers. Redis only:
    /// the in-process cache answers [`CacheError::NoScripts`].
    pub async fn eval_ints(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<i64>,
    ) -> Result<Vec<i64>, CacheError> {
        self.eval(script, keys, args).await
    }

    /// Write `value` under `key` for `ttl` unless the key exists; whether it was written.
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        match self {
            Cache::Memory(m) => {
                let now = Instant::now();
                if m.get(key, now).is_some() {
                    return Ok(false);
                }
                m.set(key, value, Some(now + ttl));
                Ok(true)
            }
            Cache::Redis(client) => {
                let expire = Some(Expiration::PX(ttl.as_millis().max(1) as i64));
                let written: Option<String> = client
                    .set(key, value, expire, Some(SetOptions::NX), false)
                    .await?;
                Ok(written.is_some())
            }
        }
    }

    /// Run `script` on `keys` with `args` and read its answer as `R`. Redis only: the
    /// in-process cache answers [`CacheError::NoScripts`].
    pub async fn eval<R, A>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<R, CacheError>
    where
        R: FromValue,
        A: TryInto<Value> + Clone + Send,
        A::Error: Into<fred::error::Error> + Send,
    {
        let Cache::Redis(client) = self else {
            return Err(CacheError::NoScripts);
        };
        let by_sha = client
            .evalsha::<R, _, _, _>(script.sha1.as_str(), keys.clone(), args.clone())
            .await;
        match by_sha {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // EVAL also caches the script, so the next call's EVALSHA finds it.
                Ok(client.eval(script.source, keys, args).await?)
            }
            other => Ok(other?),
        }
    }

    /// Close the connection (Redis); a no-op for the memory cache.
    pub async fn close(&self) {
        if let Cache::Redis(client) = self {
            let _ = client.quit().await;
        }
    }
}

impl MemoryCache {
    fn get(&self, key: &str, now: Instant) -> Option<String> {
        let mut entries = self.entries.lock().expect("cache lock");
        match entries.get(key) {
            Some((_, Some(expiry))) if *expiry <= now => {
                entries.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    fn set(&self, key: &str, value: &str, expiry: Option<Instant>) {
        self.entries
            .lock()
            .expect("cache lock")
            .insert(key.to_owned(), (value.to_owned(), expiry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_are_redis_sha1s() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this.
        assert_eq!(
            Script::new("return 1").sha1(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn memory_entries_expire() {
        let cache = MemoryCache::default();
        let now = Instant::now();
        cache.set("a", "1", Some(now + Duration::from_secs(1)));
        cache.set("b", "2", None);
        assert_eq!(cache.get("a", now).as_deref(), Some("1"));
        assert_eq!(cache.get("a", now + Duration::from_secs(2)), None);
        assert_eq!(
            cache.get("b", now + Duration::from_secs(3600)).as_deref(),
            Some("2")
        );
    }
}
