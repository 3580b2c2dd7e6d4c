//! Alerts received from Alertmanager (`POST /webhooks/alertmanager`): what the node keeps of
//! each active one for `chom alerts` and the `alerts` health check, and the bounds a webhook
//! payload is checked against before anything is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most alerts one webhook call may carry (the shipped Alertmanager config sends at most
/// 100 per call: `max_alerts`).
pub const MAX_ALERTS_PER_CALL: usize = 1_000;

/// The most labels, and separately the most annotations, one alert may carry.
pub const MAX_ALERT_LABELS: usize = 64;

/// The longest label or annotation name, in characters.
pub const MAX_LABEL_NAME_CHARS: usize = 128;

/// The longest label value (`alertname` included), in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 1_024;

/// The longest annotation value (a description, a runbook URL), in characters.
pub const MAX_ANNOTATION_VALUE_CHARS: usize = 8 * 1_024;

/// The longest fingerprint, in characters (Alertmanager's are 16 hex digits).
pub const MAX_FINGERPRINT_CHARS: usize = 64;

/// The longest `generatorURL`, in characters.
pub const MAX_GENERATOR_URL_CHARS: usize = 2_048;

/// The most active alerts one listing returns (`alerts.list`).
pub const MAX_ACTIVE_LISTED: u32 = 1_000;

/// The most critical alert names the `alerts` health check names.
pub const MAX_CRITICAL_NAMED: u32 = 10;

/// An alert's state as Alertmanager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Active.
    Firing,
    /// No longer active.
    Resolved,
}

impl AlertStatus {
    /// The wire name (`firing`, `resolved`), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// The status named `value`, if it is one.
    pub fn parse(value: &str) -> Option<AlertStatus> {
        match value {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One active alert, as stored and as `alerts.list` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Alertmanager's fingerprint of the label set: the alert's identity.
    pub fingerprint: String,
    /// The `alertname` label.
    pub alertname: String,
    /// The `severity` label, when there is one.
    pub severity: Option<String>,
    /// As received; always `firing` for a stored alert (a resolved one is deleted).
    pub status: AlertStatus,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Every annotation (`summary`, `description`, `runbook_url`, ...).
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// When Alertmanager will consider it resolved unless it is sent again; absent when unset.
    pub ends_at: Option<DateTime<Utc>>,
    /// The link to the expression that fired (may be empty).
    pub generator_url: String,
}

/// One change a webhook call asks for; a call's changes are stored in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertUpdate {
    /// Insert the alert, or replace what is stored under its fingerprint.
    Firing(Alert),
    /// Forget the alert of this fingerprint (nothing when there is none).
    Resolved {
        /// The alert's fingerprint.
        fingerprint: String,
    },
}

/// What the `alerts` health check reads: counts and the first critical names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Active alerts.
    pub active: u64,
    /// Active alerts labelled `severity="critical"`.
    pub critical: u64,
    /// The names of the oldest critical ones (at most [`MAX_CRITICAL_NAMED`], each once).
    pub critical_names: Vec<String>,
}
