//! Customer sites: `sites.list`, `sites.add`, `sites.provision`.

use chom_core::inventory::{Site, check_domain, check_site_type};
use serde::{Deserialize, Serialize};

use super::{Id, Method, check_vps_id, echo};
use crate::rpc::protocol::RpcError;

/// `sites.list`: sites, optionally of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Only this tenant's sites.
    #[serde(default)]
    pub tenant: Option<Id>,
}

/// The answer to `sites.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sites {
    /// The sites.
    pub sites: Vec<Site>,
}

impl Method for List {
    const NAME: &'static str = "sites.list";
    type Reply = Sites;
}

/// `sites.add`: create a site and (by default) enqueue its provisioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    /// Owning tenant.
    pub tenant: Id,
    /// Server id.
    pub vps: String,
    /// Domain name.
    pub domain: String,
    /// Site type passed to `site:create` (default `wordpress`).
    #[serde(default, rename = "type")]
    pub site_type: Option<String>,
    /// Enqueue `site.provision` (default true).
    #[serde(default)]
    pub provision: Option<bool>,
}

impl Add {
    /// The site type after [`Method::validate`].
    pub fn site_type(&self) -> &str {
        self.site_type.as_deref().unwrap_or("wordpress")
    }
}

/// The answer to `sites.add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    /// The site as stored.
    pub site: Site,
    /// Its provisioning job, when one was enqueued.
    pub job: Option<i64>,
}

impl Method for Add {
    const NAME: &'static str = "sites.add";
    type Reply = Created;

    fn validate(&self) -> Result<(), RpcError> {
        check_vps_id("vps", &self.vps)?;
        check_domain(&self.domain).map_err(|_| {
            RpcError::invalid_params(format!(
                "`domain`: `{}` is not a domain name (at most 253 characters of lowercase labels of a-z, 0-9 and -, separated by dots)",
                echo(&self.domain)
            ))
        })?;
        check_site_type(self.site_type()).map_err(|_| {
            RpcError::invalid_params(format!(
                "`type`: `{}` is not a site type (a lowercase word such as wordpress, laravel, html)",
                echo(self.site_type())
            ))
        })
    }
}

/// `sites.provision`: enqueue `site.provision` for a site again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// Site id.
    pub id: Id,
}

/// The answer to `sites.provision`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provisioning {
    /// The provisioning job (the pending one, when there is one already).
    pub job: i64,
}

impl Method for Provision {
    const NAME: &'static str = "sites.provision";
    type Reply = Provisioning;
}
