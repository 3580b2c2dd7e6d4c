//! Classifying a child's exit, from the supervision event ractor delivers.

use ractor::{ActorId, SupervisionEvent};

/// Exit reason of a child that recycles itself (a worker replacing itself after N jobs):
/// stop with this reason and the supervisor starts a fresh incarnation at once, without
/// counting it as a restart.
pub const RECYCLE: &str = "recycle";

/// Exit reason the supervisor gives the children it stops itself.
pub const SHUTDOWN: &str = "shutdown";

/// What kind of exit a child made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Stopped with no reason, `"normal"`, `"shutdown"` or `"shutdown:..."`.
    Normal,
    /// Stopped with reason `"recycle"`: a planned replacement.
    Recycle,
    /// Panicked, returned `Err`, was killed, or stopped with any other reason.
    Abnormal,
}

impl ExitKind {
    /// Whether this exit is a failure.
    pub fn is_abnormal(self) -> bool {
        self == ExitKind::Abnormal
    }
}

/// One child exit, taken out of a supervision event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Which actor exited.
    pub actor: ActorId,
    /// Its reason, as reported to the observer.
    pub reason: String,
    /// How to treat it.
    pub kind: ExitKind,
}

impl Exit {
    /// The exit described by `event`, or `None` for events that are not exits.
    pub fn from_event(event: &SupervisionEvent) -> Option<Exit> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => Some(Exit {
                actor: cell.get_id(),
                reason: err.to_string(),
                kind: ExitKind::Abnormal,
            }),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let (reason, kind) = match reason.as_deref() {
                    None => ("normal".to_owned(), ExitKind::Normal),
                    Some(r) => (r.to_owned(), classify_reason(r)),
                };
                Some(Exit {
                    actor: cell.get_id(),
                    reason,
                    kind,
                })
            }
            _ => None,
        }
    }
}

/// Kind of a stop with this reason.
pub fn classify_reason(reason: &str) -> ExitKind {
    if reason == RECYCLE {
        ExitKind::Recycle
    } else if reason == "normal" || reason == SHUTDOWN || reason.starts_with("shutdown:") {
        ExitKind::Normal
    } else {
        ExitKind::Abnormal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(classify_reason("normal"), ExitKind::Normal);
        assert_eq!(classify_reason("shutdown"), ExitKind::Normal);
        assert_eq!(classify_reason("shutdown:sigterm"), ExitKind::Normal);
        assert_eq!(classify_reason("recycle"), ExitKind::Recycle);
        assert_eq!(classify_reason("killed"), ExitKind::Abnormal);
        assert_eq!(classify_reason("shutdownx"), ExitKind::Abnormal);
        assert_eq!(classify_reason("Drained"), ExitKind::Abnormal);
    }
}
