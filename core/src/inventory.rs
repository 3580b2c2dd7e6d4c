//! The inventory the fleet works on: VPS servers, tenants and their sites.
//!
//! These are wire types too (the admin RPC returns them), hence the serde derives.

use serde::{Deserialize, Serialize};

/// A server of the fleet, as stored in `vps_servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpsServer {
    /// Stable identifier (`web-1`); the actor is `fleet/vps:<id>`.
    pub id: String,
    /// Host name or IP address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Remote user; `None` = `ssh.user`.
    pub user: Option<String>,
    /// Pinned host key fingerprint (`SHA256:...`); `None` = check `ssh.known_hosts`.
    pub host_key: Option<String>,
    /// Where it came from: `config` (a `[[vps]]` entry, upserted at start) or `admin`
    /// (`chom vps add`).
    pub source: String,
    /// Owning tenant: only its sites may be placed here. `None` (JSON `null`) = a shared server
    /// that takes any tenant's sites.
    #[serde(default)]
    pub tenant_id: Option<i64>,
    /// At most this many sites are placed here (`None`, JSON `null`: no limit). A site that
    /// would exceed it is refused ("server full").
    #[serde(default)]
    pub max_sites: Option<u32>,
}

impl VpsServer {
    /// A server from a `[[vps]]` config entry.
    pub fn from_config(entry: &crate::config::VpsConfig) -> Self {
        VpsServer {
            id: entry.id.clone(),
            host: entry.host.clone(),
            port: entry.port,
            user: entry.user.clone(),
            host_key: entry.host_key.clone(),
            source: "config".to_owned(),
            // `[[vps]]` entries name no owner; an upsert keeps the owner stored.
            tenant_id: None,
            max_sites: entry.max_sites,
        }
    }
}

/// Service tier of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Entry tier.
    Starter,
    /// Middle tier.
    Pro,
    /// Top tier.
    Enterprise,
}

impl Tier {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Starter => "starter",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// Parse a stored or typed value.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "starter" => Some(Tier::Starter),
            "pro" => Some(Tier::Pro),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }
}

/// A customer, as stored in `tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Database id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Service tier.
    pub tier: Tier,
    /// `active` or `suspended`; only active tenants count in `chom_active_tenants`.
    pub status: String,
}

/// Lifecycle of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteStatus {
    /// Created, provisioning not finished.
    Pending,
    /// `site:create` succeeded.
    Active,
    /// Provisioning ran out of attempts (`failure_reason` says why).
    Failed,
    /// `site.delete` is removing it from its server; the row goes when that succeeded.
    Deleting,
}

impl SiteStatus {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteStatus::Pending => "pending",
            SiteStatus::Active => "active",
            SiteStatus::Failed => "failed",
            SiteStatus::Deleting => "deleting",
        }
    }

    /// Parse a stored value.
    pub fn parse(s: &str) -> Option<SiteStatus> {
        match s {
            "pending" => Some(SiteStatus::Pending),
            "active" => Some(SiteStatus::Active),
            "failed" => Some(SiteStatus::Failed),
            "deleting" => Some(SiteStatus::Deleting),
            _ => None,
        }
    }
}

/// A customer site, as stored in `sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Database id (the `site.provision` payload names it).
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// The VPS it lives on.
    pub vps_id: String,
    /// Its domain (unique).
    pub domain: String,
    /// Site type passed to `site:create` (`wordpress`, `laravel`, `html`, ...).
    #[serde(rename = "type")]
    pub site_type: String,
    /// Lifecycle state.
    pub status: SiteStatus,
    /// Why provisioning failed, when it did.
    pub failure_reason: Option<String>,
}

/// A site to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    /// Owning tenant.
    pub tenant_id: i64,
    /// The VPS to put it on.
    pub vps_id: String,
    /// Its domain.
    pub domain: String,
    /// Site type.
    pub site_type: String,
}

/// The name of a server in the tree, in metrics and in the cache: `vps:<id>` (the VPS actor's
/// child id, the breaker's `service` label, the breaker snapshot's key). Formatted and parsed
/// only here.
pub fn vps_service(id: &str) -> String {
    format!("vps:{id}")
}

/// The server id of a `vps:<id>` name; `None` for another service (e.g. `observability`).
pub fn vps_of_service(service: &str) -> Option<&str> {
    service.strip_prefix("vps:")
}

/// Why an inventory value is refused before it reaches the database.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{domain}` is not a domain name (lowercase labels of a-z, 0-9 and -, separated by dots)"
        ))
    }
}

/// Site types are passed to `site:create` as an argument; keep them to a plain word.
pub fn check_site_type(site_type: &str) -> Result<(), String> {
    let ok = !site_type.is_empty()
        && site_type.len() <= 32
        && site_type.starts_with(|c: char| c.is_ascii_lowercase())
        && site_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{site_type}` is not a site type (a lowercase word such as wordpress, laravel, html)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(check_domain("shop.example.com").is_ok());
        assert!(check_domain("a-b.example").is_ok());
        for bad in [
            "",
            "localhost",
            "Shop.example.com",
            "-a.example",
            "a..b",
            "a b.c",
            "x;rm.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn site_types() {
        assert!(check_site_type("wordpress").is_ok());
        for bad in ["", "Word", "1php", "a b", "php;reboot"] {
            assert!(check_site_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiers_and_statuses_round_trip() {
        for t in [Tier::Starter, Tier::Pro, Tier::Enterprise] {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
        for s in [SiteStatus::Pending, SiteStatus::Active, SiteStatus::Failed] {
            assert_eq!(SiteStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(Tier::parse("gold"), None);
    }
}

#[cfg(test)]
mod service_names {
    use super::*;

    #[test]
    fn vps_service_names_round_trip() {
        assert_eq!(vps_service("web-1"), "vps:web-1");
        assert_eq!(vps_of_service(&vps_service("web-1")), Some("web-1"));
        assert_eq!(vps_of_service("observability"), None);
    }
}
