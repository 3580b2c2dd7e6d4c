//! How the console slows down password guessing: per key (an operator name, a source
//! address) the wrong passwords in a row are counted; from the fourth one on, the key is
//! locked for a while that doubles with each further failure (1 s after the fourth, 2 s after
//! the fifth, ... at most [`MAX_LOCK_MS`]). While a key is locked every sign-in through it is
//! refused before any password is checked, so the fifth wrong password in a row can come at
//! the earliest a second after the fourth, the tenth about a minute after the ninth. A
//! success forgets the key.
//!
//! Pure and clock-injected (milliseconds passed in), bounded in memory: at most
//! `max_keys` keys, the least recently failed dropped first.

use std::collections::HashMap;

/// Wrong passwords in a row answered without a lock.
pub const FREE_FAILURES: u32 = 3;
/// The first lock, after the fourth wrong password in a row.
pub const FIRST_LOCK_MS: u64 = 1_000;
/// The longest lock.
pub const MAX_LOCK_MS: u64 = 15 * 60 * 1_000;
/// A key untouched this long after its lock ended is forgotten.
pub const FORGET_AFTER_MS: u64 = 60 * 60 * 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    locked_until: u64,
    last_failure: u64,
}

/// Failed sign-ins by key.
#[derive(Debug, Clone)]
pub struct SignInThrottle {
    entries: HashMap<String, Entry>,
    max_keys: usize,
}

/// The lock after `failures` wrong passwords in a row, in milliseconds.
pub fn lock_ms(failures: u32) -> u64 {
    match failures.checked_sub(FREE_FAILURES) {
        None | Some(0) => 0,
        Some(over) => FIRST_LOCK_MS
            .checked_shl(over - 1)
            .filter(|ms| *ms <= MAX_LOCK_MS)
            .unwrap_or(MAX_LOCK_MS),
    }
}

impl SignInThrottle {
    /// A throttle keeping at most `max_keys` keys (at least one).
    pub fn new(max_keys: usize) -> SignInThrottle {
        SignInThrottle {
            entries: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// `Err(ms)` while `key` is locked: how long until it may try again.
    pub fn check(&self, key: &str, now: u64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(e) if e.locked_until > now => Err(e.locked_until - now),
            _ => Ok(()),
        }
    }

    /// A wrong password through `key` at `now`; returns the lock it starts (0: none).
    pub fn failed(&mut self, key: &str, now: u64) -> u64 {
        if !self.entries.contains_key(key) {
            self.forget_stale(now);
            if self.entries.len() >= self.max_keys {
                self.evict_oldest();
            }
        }
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            locked_until: 0,
            last_failure: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let lock = lock_ms(entry.failures);
        entry.locked_until = now.saturating_add(lock);
        lock
    }

    /// A right password through `key`: its count starts again.
    pub fn succeeded(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No key held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn forget_stale(&mut self, now: u64) {
        self.entries
            .retain(|_, e| e.locked_until.saturating_add(FORGET_AFTER_MS) > now);
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_failure)
            .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fourth_wrong_password_locks_and_the_lock_doubles() {
        let mut t = SignInThrottle::new(10);
        for n in 1..=3 {
            assert_eq!(t.failed("ada", 1000 * n), 0, "failure {n} is free");
            assert_eq!(t.check("ada", 1000 * n), Ok(()));
        }
        assert_eq!(t.failed("ada", 10_000), 1_000);
        assert_eq!(t.check("ada", 10_000), Err(1_000), "the fifth must wait");
        assert_eq!(t.check("ada", 10_999), Err(1));
        assert_eq!(t.check("ada", 11_000), Ok(()));
        assert_eq!(t.failed("ada", 11_000), 2_000);
        assert_eq!(t.failed("ada", 13_000), 4_000);
        assert_eq!(t.check("bob", 13_000), Ok(()), "other keys are not locked");
        t.succeeded("ada");
        assert_eq!(t.check("ada", 13_001), Ok(()));
        assert_eq!(
            t.failed("ada", 13_002),
            0,
            "a success starts the count again"
        );
    }

    #[test]
    fn locks_are_capped() {
        assert_eq!(lock_ms(3), 0);
        assert_eq!(lock_ms(4), FIRST_LOCK_MS);
        assert_eq!(lock_ms(13), 512_000);
        assert_eq!(lock_ms(14), MAX_LOCK_MS);
        assert_eq!(lock_ms(u32::MAX), MAX_LOCK_MS);
    }

    proptest! {
        /// Whatever the sequence, memory stays bounded, a lock never exceeds the cap, and
        /// a key is locked exactly when its last failure set a lock that has not ended.
        #[test]
        fn bounded_and_consistent(ops in prop::collection::vec((0u8..6, any::<bool>(), 0u64..5_000), 1..300)) {
            let mut t = SignInThrottle::new(4);
            let mut now = 0u64;
            for (key, success, step) in ops {
                now += step;
                let key = format!("k{key}");
                if success {
                    t.succeeded(&key);
                    prop_assert_eq!(t.check(&key, now), Ok(()));
                } else {
                    let lock = t.failed(&key, now);
                    prop_assert!(lock <= MAX_LOCK_MS);
                    match t.check(&key, now) {
                        Ok(()) => prop_assert_eq!(lock, 0),
                        Err(wait) => prop_assert_eq!(wait, lock),
                    }
                }
                prop_assert!(t.len() <= 4);
            }
        }
    }
}
