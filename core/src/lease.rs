//! Cluster-wide bulkhead slots: the policy, as a pure model.
//!
//! Several nodes may run commands on the same server; together they must stay within its
//! `ssh.max_concurrent`. Each command holds a *lease* on one of the server's slots in Redis (a
//! sorted set per server: member = the holder, score = when the lease expires). A lease is
//! renewed while its command runs and removed when it ends; a node that dies stops renewing,
//! so its leases expire by themselves after [`LeaseTiming::ttl`] and the slots go back to the
//! others, well within `queue.retry_after` (the time after which its jobs are rescued).
//!
//! [`SlotTable`] is the model of the script Redis runs (`actors/src/fleet/slots.lua`): the
//! same operations on the same data, with the time passed in. The property tests below hold
//! the model to the bulkhead's promise, and a differential test against a real Redis
//! (`actors/tests/cluster_slots.rs`) holds the script to the model.

use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bound of a lease's time to live: how long a dead node's slots stay taken.
pub const MAX_TTL: Duration = Duration::from_secs(10);
/// Lower bound of a lease's time to live: renewals must not be a busy loop.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// How long a lease lives without renewal, and how often its holder renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A lease not renewed for this long is free again.
    pub ttl: Duration,
    /// The holder renews every this often (a third of `ttl`, so two renewals may be lost or
    /// late before the lease lapses under a live command).
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// The timing for a queue whose jobs are rescued after `retry_after`: a third of it, kept
    /// between [`MIN_TTL`] and [`MAX_TTL`], so that a dead node's slots are free again before
    /// its jobs are rescued and run elsewhere.
    pub fn for_retry_after(retry_after: Duration) -> LeaseTiming {
        let ttl = (retry_after / 3).clamp(MIN_TTL, MAX_TTL);
        LeaseTiming {
            ttl,
            renew_every: ttl / 3,
        }
    }
}

/// The slots one node may use on a server while the shared table cannot be reached: its share
/// of `max` among the live nodes, at least one (a node alone keeps them all). With `n` nodes
/// each allowing `max / n`, together they stay within `max` as long as they agree on `n`.
pub fn fallback_share(max: u32, live_nodes: u64) -> u32 {
    let nodes = u32::try_from(live_nodes.max(1)).unwrap_or(u32::MAX);
    (max / nodes).max(1)
}

/// The pause before the `n`th look (0-based) at a full table: 10 ms doubling to 200 ms, so a
/// slot given back is taken within a few milliseconds under light contention while a long wait
/// costs Redis five looks a second per waiter.
pub fn poll_delay(n: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << n.min(5)).min(200))
}

/// What asking for a slot gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is held (or was already held by the same member: renewed).
    Granted,
    /// Every slot is leased; the earliest lease expires in `retry_in_ms` unless renewed.
    Full {
        /// Milliseconds until the earliest lease lapses.
        retry_in_ms: u64,
    },
}

/// The leases of one server's slots: holder -> expiry (milliseconds on the table's clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotTable {
    leases: BTreeMap<String, u64>,
}

impl SlotTable {
    /// An empty table.
    pub fn new() -> SlotTable {
        SlotTable::default()
    }

    fn expire(&mut self, now_ms: u64) {
        self.leases.retain(|_, expires| *expires > now_ms);
    }

    /// Lease a slot for `member` until `now_ms + ttl_ms`, if fewer than `max` are leased.
    pub fn acquire(&mut self, member: &str, max: u32, ttl_ms: u64, now_ms: u64) -> Acquired {
        self.expire(now_ms);
        let expires = now_ms.saturating_add(ttl_ms);
        if let Some(held) = self.leases.get_mut(member) {
            *held = expires;
            return Acquired::Granted;
        }
        if self.leases.len() < max as usize {
            self.leases.insert(member.to_owned(), expires);
            return Acquired::Granted;
        }
        let earliest = self.leases.values().min().copied().unwrap_or(now_ms);
        Acquired::Full {
            retry_in_ms: earliest.saturating_sub(now_ms),
        }
    }

    /// Extend `member`'s lease to `now_ms + ttl_ms`; false when it had lapsed (the slot may
    /// have gone to someone else: the holder must know).
    pub fn renew(&mut self, member: &str, ttl_ms: u64, now_ms: u64) -> bool {
        self.expire(now_ms);
        match self.leases.get_mut(member) {
            Some(expires) => {
                *expires = now_ms.saturating_add(ttl_ms);
                true
            }
            None => false,
        }
    }

    /// Give `member`'s slot back; false when it was not held.
    pub fn release(&mut self, member: &str) -> bool {
        self.leases.remove(member).is_some()
    }

    /// Leases in force at `now_ms`.
    pub fn live(&self, now_ms: u64) -> usize {
        self.leases.values().filter(|e| **e > now_ms).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ttl_is_a_third_of_retry_after_within_bounds() {
        let t = LeaseTiming::for_retry_after(Duration::from_secs(180));
        assert_eq!((t.ttl, t.renew_every), (MAX_TTL, MAX_TTL / 3));
        let t = LeaseTiming::for_retry_after(Duration::from_secs(12));
        assert_eq!(t.ttl, Duration::from_secs(4));
        let t = LeaseTiming::for_retry_after(Duration::from_millis(100));
        assert_eq!(t.ttl, MIN_TTL);
    }

    #[test]
    fn the_fallback_splits_the_slots_and_keeps_one() {
        assert_eq!(fallback_share(3, 0), 3);
        assert_eq!(fallback_share(3, 1), 3);
        assert_eq!(fallback_share(6, 3), 2);
        assert_eq!(fallback_share(3, 3), 1);
        assert_eq!(fallback_share(3, 10), 1);
        assert_eq!(fallback_share(3, u64::MAX), 1);
    }

    #[test]
    fn polling_backs_off_to_a_ceiling() {
        let delays: Vec<u64> = (0..8).map(|n| poll_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 200, 200, 200]);
    }

    #[test]
    fn a_full_table_says_when_the_first_lease_lapses() {
        let mut t = SlotTable::new();
        assert_eq!(t.acquire("a", 2, 1000, 0), Acquired::Granted);
        assert_eq!(t.acquire("b", 2, 1000, 400), Acquired::Granted);
        assert_eq!(
            t.acquire("c", 2, 1000, 500),
            Acquired::Full { retry_in_ms: 500 }
        );
        // "a" lapsed at 1000: its slot is free for "c".
        assert_eq!(t.acquire("c", 2, 1000, 1000), Acquired::Granted);
        assert!(!t.renew("a", 1000, 1000), "a lapsed lease is not renewed");
        assert!(t.renew("b", 1000, 1000));
        assert_eq!(t.live(1999), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8),
        Renew(u8),
        Release(u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..8).prop_map(Op::Acquire),
            2 => (0u8..8).prop_map(Op::Renew),
            2 => (0u8..8).prop_map(Op::Release),
            2 => (0u16..3000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever the holders do, never more than `max` leases are in force, a holder with a
        /// live lease keeps it, and a full table is full only of live leases.
        #[test]
        fn never_more_than_max_live_leases(max in 1u32..5, ops in prop::collection::vec(op(), 1..200)) {
            let ttl = 1000;
            let mut t = SlotTable::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Acquire(m) => {
                        let before = t.live(now);
                        match t.acquire(&m.to_string(), max, ttl, now) {
                            Acquired::Granted => prop_assert!(t.live(now) <= max as usize),
                            Acquired::Full { retry_in_ms } => {
                                prop_assert_eq!(before, max as usize);
                                prop_assert!(retry_in_ms > 0 && retry_in_ms <= ttl);
                            }
                        }
                    }
                    Op::Renew(m) => {
                        let held = t.leases.get(&m.to_string()).is_some_and(|e| *e > now);
                        prop_assert_eq!(t.renew(&m.to_string(), ttl, now), held);
                    }
                    Op::Release(m) => {
                        let before = t.live(now);
                        if t.release(&m.to_string()) {
                            prop_assert!(t.live(now) <= before);
                        }
                    }
                    Op::Wait(ms) => now += u64::from(ms),
                }
                prop_assert!(t.live(now) <= max as usize);
            }
            // Holders that stop renewing free every slot after one ttl.
            prop_assert_eq!(t.live(now + ttl), 0);
        }
    }
}
