//! Alerts received from Alertmanager's webhook: `alerts.list`.

use chom_core::alert::Alert;

request! {
    /// `alerts.list`: the active alerts, critical first, then oldest first (at most
    /// [`MAX_ACTIVE_LISTED`](chom_core::alert::MAX_ACTIVE_LISTED)).
    List("alerts.list") -> Alerts {}
}

reply! {
    /// The answer to `alerts.list`.
    Alerts {
        /// Every active alert, each with `alertname`, `severity`, `status` (`firing`),
        /// `labels`, `annotations` (`summary`, `description`, `runbook_url`, ...),
        /// `starts_at` and `fingerprint`.
        pub alerts: Vec<Alert>,
    }
}
