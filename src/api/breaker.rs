//! Circuit breakers of the servers: `breaker.list`, `breaker.reset`, `breaker.open`,
//! `breaker.close`.

use chom_actors::fleet::vps::VpsInfo;
use chom_core::breaker::BreakerInfo;
use serde::{Deserialize, Serialize};

use super::{Method, check_vps_id};
use crate::rpc::protocol::RpcError;

reply! {
    /// One server's breaker and session, as `chom breaker list` shows it.
    ServerBreaker {
        /// Server id.
        pub vps: String,
        /// `host:port`.
        pub address: String,
        /// Whether a session is open.
        pub connected: bool,
        /// The breaker.
        pub breaker: BreakerInfo,
    }
}

impl From<VpsInfo> for ServerBreaker {
    fn from(info: VpsInfo) -> Self {
        ServerBreaker {
            vps: info.vps,
            address: info.address,
            connected: info.connected,
            breaker: info.breaker,
        }
    }
}

request! {
    /// `breaker.list`: every running server's breaker.
    List("breaker.list") -> Breakers {}
}

reply! {
    /// The answer to `breaker.list`.
    Breakers {
        /// One row per running server.
        pub breakers: Vec<ServerBreaker>,
        /// The node's other breakers: `observability` (the observability host).
        #[serde(default)]
        pub services: Vec<ServiceBreaker>,
    }
}

reply! {
    /// A breaker of something other than a server (`observability`).
    ServiceBreaker {
        /// Its `service` label.
        pub service: String,
        /// What it guards (a URL, credentials masked).
        pub address: String,
        /// The breaker.
        pub breaker: BreakerInfo,
    }
}

/// The operator actions on one breaker share their parameters and answer.
macro_rules! breaker_action {
    ($(#[$doc:meta])* $name:ident, $method:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Server id.
            pub vps: String,
        }

        impl Method for $name {
            const NAME: &'static str = $method;
            type Reply = ServerBreaker;

            fn validate(&self) -> Result<(), RpcError> {
                check_vps_id("vps", &self.vps)
            }
        }
    };
}

breaker_action!(
    /// `breaker.reset`: back to closed with failures forgotten (also ends forced open and
    /// disabled).
    Reset,
    "breaker.reset"
);
breaker_action!(
    /// `breaker.open`: force open (maintenance) until reset or closed.
    Open,
    "breaker.open"
);
breaker_action!(
    /// `breaker.close`: close now.
    Close,
    "breaker.close"
);
