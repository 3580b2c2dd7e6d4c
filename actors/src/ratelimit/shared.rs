//! The shared limiter: one Lua script ([`gcra.lua`](./gcra.lua)) that reads a tenant's TAT,
//! decides on Redis' own clock and stores the new TAT, atomically. All nodes using the same
//! Redis share one budget per tenant, with no check-then-increment race and no skew between
//! the nodes' clocks.

use std::sync::LazyLock;

use chom_core::ratelimit::{Decision, Gcra};

use crate::cache::{Cache, CacheError, Script};

/// The script, named by its SHA1.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

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
    let as_arg = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut args = vec![as_arg(gcra.interval_us()), i64::from(gcra.quota())];
    args.extend(now_us.map(as_arg));
    let answer = cache.eval_ints(&GCRA, key, args).await?;
    let [allowed, tat, now] = answer[..] else {
        return Err(CacheError::Unexpected(format!(
            "the rate-limit script answered {} values, not 3",
            answer.len()
        )));
    };
    let as_time = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(gcra.describe(allowed == 1, as_time(tat), as_time(now)))
}
