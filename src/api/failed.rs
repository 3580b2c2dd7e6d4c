//! Dead letters: `failed.list`, `failed.retry`, `failed.prune`, `failed.analyze`.

use chom_core::job::FailedJob;
use chom_core::limits::MAX_DURATION;

use super::{HumanDuration, Id, check_duration, check_limit};
use crate::rpc::protocol::RpcError;

request! {
    /// `failed.list`: the newest dead letters.
    List("failed.list") -> Failed {
        /// At most this many (1 to 1000, default 50).
        pub limit: Option<u64>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_limit(self.limit)
        }
    }
}

reply! {
    /// The answer to `failed.list`.
    Failed {
        /// Newest first; payloads and errors cut to a preview.
        pub failed: Vec<FailedJob>,
    }
}

request! {
    /// `failed.retry`: enqueue dead letters again, one (`id`) or every one (`all: true`).
    Retry("failed.retry") -> Retried {
        /// The dead letter's id (as `failed.list` shows it).
        pub id: Option<Id>,
        /// Every dead letter.
        pub all: Option<bool>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            match (self.id, self.all == Some(true)) {
                (Some(_), false) | (None, true) => Ok(()),
                _ => Err(RpcError::invalid_params("give either `id` or `all: true`")),
            }
        }
    }
}

impl Retry {
    /// The dead letter to retry; `None` = all of them (after [`Method::validate`](super::Method::validate)).
    pub fn target(&self) -> Option<i64> {
        self.id.map(Id::get)
    }
}

reply! {
    /// The answer to `failed.retry`.
    Retried {
        /// How many were enqueued again.
        pub retried: usize,
        /// Their new jobs.
        pub new_job_ids: Vec<i64>,
    }
}

request! {
    /// `failed.prune`: delete dead letters older than `older_than`.
    Prune("failed.prune") -> Pruned {
        /// Age limit (at most 10 years); absent = 24h.
        pub older_than: Option<HumanDuration>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_duration("older_than", self.older_than, MAX_DURATION)
        }
    }
}

reply! {
    /// The answer to `failed.prune`.
    Pruned {
        /// Rows deleted.
        pub pruned: u64,
        /// The age limit applied (humantime).
        pub older_than: String,
    }
}

request! {
    /// `failed.analyze`: failures of the last 24 h by kind.
    Analyze("failed.analyze") -> Analysis {}
}

reply! {
    /// The answer to `failed.analyze`.
    Analysis {
        /// The window looked at (`24h`).
        pub window: String,
        /// `queue.analyze_threshold`: kinds with at least this many failures are flagged.
        pub threshold: u32,
        /// One row per kind that failed.
        pub kinds: Vec<KindReport>,
    }
}

reply! {
    /// One kind's failures in the window.
    KindReport {
        /// Job kind.
        pub kind: String,
        /// Failures in the window.
        pub count: u64,
        /// The most recent error.
        pub last_error: String,
        /// At or above the threshold.
        pub flagged: bool,
    }
}
