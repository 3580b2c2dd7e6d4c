//! Customer sites: `sites.list`, `sites.add`, `sites.provision`.

use chom_core::inventory::{Site, check_domain, check_site_type};

use super::{Id, check_vps_id, echo};
use crate::rpc::protocol::RpcError;

request! {
    /// `sites.list`: sites, optionally of one tenant.
    List("sites.list") -> Sites {
        /// Only this tenant's sites.
        pub tenant: Option<Id>,
    }
}

reply! {
    /// The answer to `sites.list`.
    Sites {
        /// The sites.
        pub sites: Vec<Site>,
    }
}

request! {
    /// `sites.add`: create a site and (by default) enqueue its provisioning.
    Add("sites.add") -> Created {
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
        pub provision: Option<bool>,
    }
    impl {
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
}

impl Add {
    /// The site type after [`Method::validate`](super::Method::validate).
    pub fn site_type(&self) -> &str {
        self.site_type.as_deref().unwrap_or("wordpress")
    }
}

reply! {
    /// The answer to `sites.add`.
    Created {
        /// The site as stored.
        pub site: Site,
        /// Its provisioning job, when one was enqueued.
        pub job: Option<i64>,
    }
}

request! {
    /// `sites.provision`: enqueue `site.provision` for a site again.
    Provision("sites.provision") -> Provisioning {
        /// Site id.
        pub id: Id,
    }
}

reply! {
    /// The answer to `sites.provision`.
    Provisioning {
        /// The provisioning job (the pending one, when there is one already).
        pub job: i64,
    }
}
