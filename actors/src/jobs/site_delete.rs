//! `site.delete` (`{"site": ID}`): runs `site:delete DOMAIN` on the site's server, then deletes
//! the site's row (the site is `deleting` meanwhile; whoever enqueues the job marks it). When
//! its attempts run out, the final-failure hook marks the site failed with the reason, so it
//! does not stay `deleting` for ever. A site already gone is done.

use tracing::info;

use super::payload::{Fields, Payload};
use super::vps_exec::command_result;
use super::{JobEnv, JobError, site_provision};
use crate::backends::PublishedBackends;
use crate::fleet::ExecRequest;

/// The payload of `site.delete`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteDelete {
    /// Site id.
    pub site: i64,
}

impl Payload for SiteDelete {
    fn read(fields: &Fields) -> Result<Self, String> {
        Ok(SiteDelete {
            site: fields.required("site", "site.delete needs `site` (a site id)")?,
        })
    }
}

/// Delete the site from its server, then its row.
pub(super) async fn run(job: &SiteDelete, env: &JobEnv<'_>) -> Result<(), JobError> {
    let id = job.site;
    let (fleet, backends, site) = site_provision::site_job(env, id).await?;
    let Some(site) = site else {
        return Ok(());
    };
    let args = [site.domain.clone()];
    let output = fleet
        .exec(ExecRequest {
            vps: &site.vps_id,
            command: "site:delete",
            args: &args,
        })
        .await?;
    command_result(&site.vps_id, "site:delete", &output)?;
    backends
        .store
        .delete_site(id)
        .await
        .map_err(|e| JobError::Retryable(format!("site deleted but its row remains: {e}")))?;
    info!(site = id, domain = %site.domain, vps = %site.vps_id, "site deleted");
    Ok(())
}

/// Mark the site failed with `error` (in the background, as for `site.provision`).
pub(super) fn on_final_failure(backends: &PublishedBackends, job: &SiteDelete, error: &str) {
    let (backends, site) = (backends.clone(), job.site);
    let reason = format!("deletion failed: {error}");
    tokio::spawn(async move { site_provision::mark_site_failed(&backends, site, &reason).await });
}
