//! The breaker state of every server, kept by its owner (each VPS actor writes its own on
//! every change) for whoever needs it: the `fleet` health check, the watchdog's STATUS= line,
//! `chom status` and `chom breaker list`. The metrics exporter keeps its own copy for the
//! gauges; nothing reads states back out of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chom_core::breaker::BreakerState;

/// Shared, cheap to clone; every clone sees the same states.
#[derive(Clone, Default)]
pub struct BreakerBoard {
    states: Arc<Mutex<BTreeMap<String, BreakerState>>>,
}

impl BreakerBoard {
    /// Record the state of the breaker of `service` (`vps:<id>`).
    pub fn set(&self, service: &str, state: BreakerState) {
        self.lock().insert(service.to_owned(), state);
    }

    /// Forget a breaker (its server was removed).
    pub fn remove(&self, service: &str) {
        self.lock().remove(service);
    }

    /// Every breaker's last state, by service.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// How many breakers are open (forced open included).
    pub fn open_count(&self) -> usize {
        self.lock().values().filter(|s| s.is_open()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BreakerState>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_latest_state_and_removals() {
        let board = BreakerBoard::default();
        let view = board.clone();
        board.set("vps:a", BreakerState::Open);
        board.set("vps:b", BreakerState::Closed);
        board.set("vps:c", BreakerState::ForcedOpen);
        assert_eq!(view.open_count(), 2);
        board.set("vps:a", BreakerState::HalfOpen);
        board.remove("vps:c");
        assert_eq!(
            view.states(),
            vec![
                ("vps:a".to_owned(), BreakerState::HalfOpen),
                ("vps:b".to_owned(), BreakerState::Closed)
            ]
        );
        assert_eq!(view.open_count(), 0);
    }
}
