//! Test hooks, answered only when the node runs with `CHOM_DEBUG_HOOKS=1` (otherwise they
//! do not exist: -32601): `debug.stall`, `debug.fault`, `debug.inflate`, `debug.vps_panic`.

use std::time::Duration;

use super::node::check_path;
use super::{HumanDuration, check_duration, check_vps_id, ensure, invalid};
use crate::rpc::protocol::RpcError;

/// The longest `debug.stall`.
pub const MAX_STALL: Duration = Duration::from_secs(3600);

/// The most `debug.inflate` may allocate (the memory tests need a few hundred MB).
pub const MAX_INFLATE_BYTES: u64 = 4 << 30;

request! {
    /// `debug.stall`: make a supervisor's mailbox unresponsive for a while (watchdog tests).
    Stall("debug.stall") -> Stalled {
        /// The supervisor's path; absent or empty = the root.
        pub path: Option<String>,
        /// How long (at most an hour).
        pub duration: HumanDuration,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_path("path", self.path.as_deref().unwrap_or(""))?;
            check_duration("duration", Some(self.duration), MAX_STALL)
        }
    }
}

impl Stall {
    /// The supervisor's path without surrounding '/'; empty = the root.
    pub fn supervisor(&self) -> &str {
        self.path.as_deref().unwrap_or("").trim_matches('/')
    }
}

reply! {
    /// The answer to `debug.stall`.
    Stalled {
        /// The supervisor stalled (`root` for the root).
        pub stalled: String,
        /// For how long.
        pub for_ms: u64,
    }
}

request! {
    /// `debug.fault`: crash an actor, or make its starts fail (escalation tests).
    Fault("debug.fault") -> Injected {
        /// The actor's path.
        pub path: String,
        /// `kill`, `fail_forever` or `fail_starts:N`.
        pub fault: String,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_path("path", &self.path)?;
            ensure(
                self.kind().is_some(),
                "fault must be kill, fail_forever or fail_starts:N",
            )
        }
    }
}

/// What [`Fault`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Kill the actor once.
    Kill,
    /// Kill it and make its next `n` starts fail.
    FailStarts(u32),
}

impl Fault {
    /// The actor's path without surrounding '/'.
    pub fn actor_path(&self) -> &str {
        self.path.trim_matches('/')
    }

    /// The fault, or `None` when `fault` names none.
    pub fn kind(&self) -> Option<FaultKind> {
        match self.fault.as_str() {
            "kill" => Some(FaultKind::Kill),
            "fail_forever" => Some(FaultKind::FailStarts(u32::MAX)),
            other => other
                .strip_prefix("fail_starts:")
                .and_then(|n| n.parse().ok())
                .map(FaultKind::FailStarts),
        }
    }
}

reply! {
    /// The answer to `debug.fault`.
    Injected {
        /// The actor's path.
        pub path: String,
        /// Always true.
        pub injected: bool,
    }
}

request! {
    /// `debug.inflate`: hold `bytes` of memory (0 frees it; memory tests).
    Inflate("debug.inflate") -> Inflated {
        /// Bytes to hold, at most 4 GiB.
        pub bytes: Option<u64>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            let bytes = self.bytes.unwrap_or(0);
            chom_core::limits::check_count("bytes", bytes, 0, MAX_INFLATE_BYTES).map_err(invalid)?;
            usize::try_from(bytes)
                .map(|_| ())
                .map_err(|_| RpcError::invalid_params("`bytes` does not fit this platform"))
        }
    }
}

reply! {
    /// The answer to `debug.inflate`.
    Inflated {
        /// Bytes held now.
        pub inflated: usize,
        /// Resident memory after the allocation.
        pub rss_bytes: Option<u64>,
    }
}

request! {
    /// `debug.vps_panic`: make a server's actor panic (fleet supervision tests).
    VpsPanic("debug.vps_panic") -> Panicked {
        /// Server id.
        pub vps: String,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_vps_id("vps", &self.vps)
        }
    }
}

reply! {
    /// The answer to `debug.vps_panic`.
    Panicked {
        /// Server id.
        pub vps: String,
        /// Always true.
        pub panicked: bool,
    }
}
