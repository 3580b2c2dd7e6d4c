//! Servers of the fleet: `vps.list`, `vps.add`, `vps.remove`.

use chom_core::config::{LOGIN_RULE, is_fingerprint, is_host, is_login_name};
use chom_core::inventory::VpsServer;
use chom_core::limits::{MAX_HOST_CHARS, MAX_SITES_PER_SERVER};

use super::{Id, check_vps_id, echo, ensure};
use crate::rpc::protocol::RpcError;

request! {
    /// `vps.list`: every server, with whether its actor runs.
    List("vps.list") -> Servers {}
}

reply! {
    /// The answer to `vps.list`.
    Servers {
        /// Every server.
        pub vps: Vec<ServerRow>,
    }
}

reply! {
    /// One server of `vps.list`: the stored row and its actor.
    ServerRow {
        /// The stored row.
        #[serde(flatten)]
        pub server: VpsServer,
        /// `running` or `not running`.
        pub actor: String,
    }
}

request! {
    /// `vps.add`: add a server and start its actor.
    Add("vps.add") -> Added {
        /// Server id.
        pub id: String,
        /// Host name or IP address.
        pub host: String,
        /// SSH port (1 to 65535, default 22).
        pub port: Option<u64>,
        /// Remote login name; absent = `ssh.user`.
        pub user: Option<String>,
        /// Pinned host key fingerprint (`SHA256:...`); absent = check `ssh.known_hosts`.
        pub host_key: Option<String>,
        /// Owning tenant: only its sites may be placed on the server; absent = shared.
        pub tenant_id: Option<Id>,
        /// At most this many sites on the server (1 to 100,000); absent = no limit.
        pub max_sites: Option<u64>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_vps_id("id", &self.id)?;
            if !is_host(&self.host) {
                return Err(RpcError::invalid_params(format!(
                    "`host`: `{}` is not a host name or IP address of at most {MAX_HOST_CHARS} characters (give the port with --port)",
                    echo(&self.host)
                )));
            }
            if let Some(user) = &self.user
                && !is_login_name(user)
            {
                return Err(RpcError::invalid_params(format!(
                    "`user`: `{}` {LOGIN_RULE}",
                    echo(user)
                )));
            }
            ensure(
                !self.port.is_some_and(|p| p == 0 || p > u64::from(u16::MAX)),
                "`port` must be between 1 and 65535",
            )?;
            ensure(
                self.max_sites
                    .is_none_or(|m| (1..=u64::from(MAX_SITES_PER_SERVER)).contains(&m)),
                "`max_sites` must be between 1 and 100000",
            )?;
            ensure(
                self.host_key.as_deref().is_none_or(is_fingerprint),
                "`host_key` must be a SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:...)",
            )
        }
    }
}

impl Add {
    /// The port after [`Method::validate`](super::Method::validate).
    pub fn ssh_port(&self) -> u16 {
        self.port
            .map_or(22, |p| u16::try_from(p).expect("validated port"))
    }

    /// The capacity after [`Method::validate`](super::Method::validate).
    pub fn capacity(&self) -> Option<u32> {
        self.max_sites.and_then(|m| u32::try_from(m).ok())
    }
}

reply! {
    /// The answer to `vps.add`.
    Added {
        /// The server as stored.
        pub vps: VpsServer,
        /// `running`.
        pub actor: String,
    }
}

request! {
    /// `vps.remove`: remove a server (refused while sites are on it) and stop its actor.
    Remove("vps.remove") -> Removed {
        /// Server id.
        pub id: String,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_vps_id("id", &self.id)
        }
    }
}

reply! {
    /// The answer to `vps.remove`.
    Removed {
        /// The server removed.
        pub removed: String,
    }
}
