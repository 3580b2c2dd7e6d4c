//! `site.provision` (`{"site": ID}`): runs `site:create DOMAIN TYPE` on the site's server and
//! marks the site active; when its attempts run out, the final-failure hook marks it failed
//! with the reason.

use std::time::Duration;

use chom_core::inventory::SiteStatus;
use tracing::{error, info, warn};

use super::payload::{Fields, Payload};
use super::vps_exec::command_result;
use super::{JobEnv, JobError, fleet};
use std::sync::Arc;

use chom_core::inventory::Site;

use crate::backends::{Backends, PublishedBackends};
use crate::fleet::ExecRequest;
use crate::fleet::Fleet;

/// The payload of `site.provision`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteProvision {
    /// Site id.
    pub site: i64,
}

impl Payload for SiteProvision {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(SiteProvision {
            site: fields.required("site", "site.provision needs `site` (a site id)")?,
        })
    }
}

/// The fleet, the store and site `id` (`None` when there is no such site) for a site job.
pub(super) async fn site_job<'a>(
    env: &'a JobEnv<'_>,
    id: i64,
) -> Result<(&'a Arc<Fleet>, Backends, Option<Site>), JobError> {
    let fleet = fleet(env)?;
    let backends = fleet
        .ctx
        .published
        .current()
        .ok_or_else(|| JobError::Retryable("the store is not running".into()))?;
    let site = backends
        .store
        .site(id)
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?;
    Ok((fleet, backends, site))
}

/// Create the site and mark it active (nothing to do when it already is).
pub(super) async fn run(job: &SiteProvision, env: &JobEnv<'_>) -> Result<(), JobError> {
    let id = job.site;
    let (fleet, backends, site) = site_job(env, id).await?;
    let site = site.ok_or_else(|| JobError::Permanent(format!("no site {id}")))?;
    if site.status == SiteStatus::Active {
        return Ok(());
    }
    let args = [site.domain.clone(), site.site_type.clone()];
    let output = fleet
        .exec(ExecRequest {
            vps: &site.vps_id,
            command: "site:create",
            args: &args,
        })
        .await?;
    command_result(&site.vps_id, "site:create", &output)?;
    backends
        .store
        .set_site_status(id, SiteStatus::Active, None)
        .await
        .map_err(|e| JobError::Retryable(format!("site created but not marked active: {e}")))?;
    info!(site = id, domain = %site.domain, vps = %site.vps_id, "site provisioned");
    Ok(())
}

/// Mark the site failed with `error`, in the background: the worker must not wait on the
/// database here; a few tries, then a loud log line.
pub(super) fn on_final_failure(backends: &PublishedBackends, job: &SiteProvision, error: &str) {
    let (backends, site, error) = (backends.clone(), job.site, error.to_owned());
    tokio::spawn(async move { mark_site_failed(&backends, site, &error).await });
}

pub(super) async fn mark_site_failed(backends: &PublishedBackends, site: i64, reason: &str) {
    for attempt in 1..=5u32 {
        let result = match backends.current() {
            Some(b) => b
                .store
                .set_site_status(site, SiteStatus::Failed, Some(reason))
                .await
                .map_err(|e| e.to_string()),
            None => Err("the store is not running".to_owned()),
        };
        match result {
            Ok(_) => {
                warn!(site, %reason, "site job failed for good; site marked failed");
                return;
            }
            Err(error) if attempt == 5 => {
                error!(site, %error, %reason, "cannot mark the site failed; set it by hand");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
        }
    }
}
