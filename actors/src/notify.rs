//! systemd notifications (`sd_notify`), a no-op when `NOTIFY_SOCKET` is unset.

use sd_notify::NotifyState;
use tracing::debug;

/// Send notifications; failures are logged at debug level only (systemd may be gone while we
/// shut down, and there is nothing to do about it).
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        debug!(%error, "sd_notify failed");
    }
}
