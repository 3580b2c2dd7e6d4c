//! Servers of the fleet: `vps.list`, `vps.add`, `vps.remove`.

use chom_core::config::{LOGIN_RULE, is_fingerprint, is_host, is_login_name};
use chom_core::inventory::VpsServer;
use chom_core::limits::MAX_HOST_CHARS;
use serde::{Deserialize, Serialize};

use super::{Method, check_vps_id, echo};
use crate::rpc::protocol::RpcError;

/// `vps.list`: every server, with whether its actor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {}

/// The answer to `vps.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Servers {
    /// Every server.
    pub vps: Vec<ServerRow>,
}

/// One server of `vps.list`: the stored row and its actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRow {
    /// The stored row.
    #[serde(flatten)]
    pub server: VpsServer,
    /// `running` or `not running`.
    pub actor: String,
}

impl Method for List {
    const NAME: &'static str = "vps.list";
    type Reply = Servers;
}

/// `vps.add`: add a server and start its actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    /// Server id.
    pub id: String,
    /// Host name or IP address.
    pub host: String,
    /// SSH port (1 to 65535, default 22).
    #[serde(default)]
    pub port: Option<u64>,
    /// Remote login name; absent = `ssh.user`.
    #[serde(default)]
    pub user: Option<String>,
    /// Pinned host key fingerprint (`SHA256:...`); absent = check `ssh.known_hosts`.
    #[serde(default)]
    pub host_key: Option<String>,
}

impl Add {
    /// The port after [`Method::validate`].
    pub fn ssh_port(&self) -> u16 {
        self.port
            .map_or(22, |p| u16::try_from(p).expect("validated port"))
    }
}

/// The answer to `vps.add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    /// The server as stored.
    pub vps: VpsServer,
    /// `running`.
    pub actor: String,
}

impl Method for Add {
    const NAME: &'static str = "vps.add";
    type Reply = Added;

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
        if self.port.is_some_and(|p| p == 0 || p > u64::from(u16::MAX)) {
            return Err(RpcError::invalid_params(
                "`port` must be between 1 and 65535",
            ));
        }
        if let Some(fp) = &self.host_key
            && !is_fingerprint(fp)
        {
            return Err(RpcError::invalid_params(
                "`host_key` must be a SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:...)",
            ));
        }
        Ok(())
    }
}

/// `vps.remove`: remove a server (refused while sites are on it) and stop its actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// Server id.
    pub id: String,
}

/// The answer to `vps.remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    /// The server removed.
    pub removed: String,
}

impl Method for Remove {
    const NAME: &'static str = "vps.remove";
    type Reply = Removed;

    fn validate(&self) -> Result<(), RpcError> {
        check_vps_id("id", &self.id)
    }
}
