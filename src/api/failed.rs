//! Dead letters: `failed.list`, `failed.retry`, `failed.prune`, `failed.analyze`.

use chom_core::job::FailedJob;
use chom_core::limits::MAX_DURATION;
use serde::{Deserialize, Serialize};

use super::{HumanDuration, Id, Method, check_duration, check_limit};
use crate::rpc::protocol::RpcError;

/// `failed.list`: the newest dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// At most this many (1 to 1000, default 50).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// The answer to `failed.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    /// Newest first; payloads and errors cut to a preview.
    pub failed: Vec<FailedJob>,
}

impl Method for List {
    const NAME: &'static str = "failed.list";
    type Reply = Failed;

    fn validate(&self) -> Result<(), RpcError> {
        check_limit(self.limit)
    }
}

/// `failed.retry`: enqueue dead letters again, one (`id`) or every one (`all: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// The dead letter's id (as `failed.list` shows it).
    #[serde(default)]
    pub id: Option<Id>,
    /// Every dead letter.
    #[serde(default)]
    pub all: Option<bool>,
}

impl Retry {
    /// The dead letter to retry; `None` = all of them (after [`Method::validate`]).
    pub fn target(&self) -> Option<i64> {
        self.id.map(Id::get)
    }
}

/// The answer to `failed.retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retried {
    /// How many were enqueued again.
    pub retried: usize,
    /// Their new jobs.
    pub new_job_ids: Vec<i64>,
}

impl Method for Retry {
    const NAME: &'static str = "failed.retry";
    type Reply = Retried;

    fn validate(&self) -> Result<(), RpcError> {
        match (self.id, self.all == Some(true)) {
            (Some(_), false) | (None, true) => Ok(()),
            _ => Err(RpcError::invalid_params("give either `id` or `all: true`")),
        }
    }
}

/// `failed.prune`: delete dead letters older than `older_than`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// Age limit (at most 10 years); absent = 24h.
    #[serde(default)]
    pub older_than: Option<HumanDuration>,
}

/// The answer to `failed.prune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pruned {
    /// Rows deleted.
    pub pruned: u64,
    /// The age limit applied (humantime).
    pub older_than: String,
}

impl Method for Prune {
    const NAME: &'static str = "failed.prune";
    type Reply = Pruned;

    fn validate(&self) -> Result<(), RpcError> {
        check_duration("older_than", self.older_than, MAX_DURATION)
    }
}

/// `failed.analyze`: failures of the last 24 h by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analyze {}

/// The answer to `failed.analyze`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    /// The window looked at (`24h`).
    pub window: String,
    /// `queue.analyze_threshold`: kinds with at least this many failures are flagged.
    pub threshold: u32,
    /// One row per kind that failed.
    pub kinds: Vec<KindReport>,
}

/// One kind's failures in the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindReport {
    /// Job kind.
    pub kind: String,
    /// Failures in the window.
    pub count: u64,
    /// The most recent error.
    pub last_error: String,
    /// At or above the threshold.
    pub flagged: bool,
}

impl Method for Analyze {
    const NAME: &'static str = "failed.analyze";
    type Reply = Analysis;
}
