//! The observability host's Prometheus, through the node: `metrics.query`.

use std::time::Duration;

use chom_core::config::METRICS_QUERY_WAIT;
use serde_json::{Map, Value};

use crate::rpc::protocol::RpcError;

request! {
    /// `metrics.query`: one PromQL instant query, answered live, or from the cache while the
    /// observability host is unreachable, slow or its breaker is open.
    Query("metrics.query") -> Answer {
        /// PromQL, at most `chom_core::observe::MAX_QUERY_BYTES` bytes.
        pub query: String,
        /// Evaluation time, RFC 3339 or Unix seconds; absent = now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub time: Option<String>,
    }
    impl {
        fn timeout(&self) -> Duration {
            // The node answers within its own bounds (config-checked); a little more here.
            METRICS_QUERY_WAIT + Duration::from_secs(30)
        }

        fn validate(&self) -> Result<(), RpcError> {
            chom_core::observe::check_query(&self.query, self.time.as_deref())
                .map_err(|why| RpcError::invalid_params(format!("`query`/`time`: {why}")))
        }
    }
}

reply! {
    /// Prometheus' `data` (`resultType`, `result`) and where the answer came from.
    Answer {
        /// Whether it came from the cache.
        #[serde(rename = "_cached")]
        pub cached: bool,
        /// When the cached answer was live (RFC 3339); only when cached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cached_at: Option<String>,
        /// Why the answer is not live; only when cached.
        #[serde(rename = "_warning", default, skip_serializing_if = "Option::is_none")]
        pub warning: Option<String>,
        /// Prometheus' `data` fields.
        #[serde(flatten)]
        pub data: Map<String, Value>,
    }
}
