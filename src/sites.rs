//! Site actions, written once and called by both doors that offer them: the admin RPC
//! (`sites.add`, `sites.provision`) and the tenant API (`POST` and `DELETE /api/v1/sites`).
//! Each door checks its own inputs and maps [`StoreError`] to its own error shape.

use std::collections::HashMap;
use std::time::Duration;

use chom_actors::context::{Backends, NodeContext};
use chom_core::inventory::{NewSite, Site, SiteStatus};
use chom_core::job::{JobKind, NewJob};
use chom_core::policy::JobPolicy;
use chom_store::StoreError;
use serde_json::{Value, json};

/// Create a site (status `pending`) and, with `provision`, enqueue its `site.provision` job;
/// the site and the job's id. The server's owner is checked by the store's INSERT itself.
pub async fn create(
    ctx: &NodeContext,
    b: &Backends,
    new: &NewSite,
    provision: bool,
) -> Result<(Site, Option<i64>), StoreError> {
    let site = b.store.create_site(new).await?;
    let job = if provision {
        Some(enqueue_provision(ctx, b, site.id).await?)
    } else {
        None
    };
    Ok((site, job))
}

/// Enqueue `site.provision` for a site, at most one pending at a time (unique key per site).
pub async fn enqueue_provision(
    ctx: &NodeContext,
    b: &Backends,
    site: i64,
) -> Result<i64, StoreError> {
    enqueue(
        ctx,
        b,
        JobKind::SiteProvision,
        site,
        json!({ "site": site }),
    )
    .await
}

/// Mark a site `deleting` and enqueue its `site.delete` job (one pending at a time: asking
/// again answers the pending job). The payload names the tenant too, so the job stays the
/// tenant's after the job removed the site's row. Returns the site as marked and the job id.
pub async fn delete(
    ctx: &NodeContext,
    b: &Backends,
    site: &Site,
) -> Result<(Site, i64), StoreError> {
    // Marked first: if the enqueue fails, asking again enqueues; the other order could leave
    // a job deleting a site that still reads `active`.
    b.store
        .set_site_status(site.id, SiteStatus::Deleting, None)
        .await?;
    let payload = json!({ "site": site.id, "tenant": site.tenant_id });
    let job = enqueue(ctx, b, JobKind::SiteDelete, site.id, payload).await?;
    let marked = Site {
        status: SiteStatus::Deleting,
        failure_reason: None,
        ..site.clone()
    };
    Ok((marked, job))
}

/// The server a new site of `tenant` goes to when the request names none: the one holding
/// the fewest sites (ties: the lowest id) among those the tenant owns, else among the shared
/// ones, leaving out full servers; `None` when no server has room. The store checks the
/// capacity again when it inserts, so a server filled meanwhile is refused there.
pub async fn pick_server(b: &Backends, tenant: i64) -> Result<Option<String>, StoreError> {
    let servers = b.store.vps_list().await?;
    let counts: HashMap<String, u64> = b.store.site_counts().await?.into_iter().collect();
    Ok(choose(
        servers
            .iter()
            .map(|v| (v.id.as_str(), v.tenant_id, v.max_sites)),
        &counts,
        tenant,
    ))
}

/// [`pick_server`]'s choice over `(server id, owner, capacity)` and site counts per server.
fn choose<'a>(
    servers: impl Iterator<Item = (&'a str, Option<i64>, Option<u32>)> + Clone,
    counts: &HashMap<String, u64>,
    tenant: i64,
) -> Option<String> {
    let held = |id: &str| counts.get(id).copied().unwrap_or(0);
    let fewest = |owner: Option<i64>| {
        servers
            .clone()
            .filter(|(id, o, max)| *o == owner && max.is_none_or(|m| held(id) < u64::from(m)))
            .min_by_key(|(id, _, _)| (held(id), *id))
            .map(|(id, _, _)| id.to_owned())
    };
    fewest(Some(tenant)).or_else(|| fewest(None))
}

/// Enqueue a job of `kind` about `site`, deduplicated by the key `<kind>:<site>`.
async fn enqueue(
    ctx: &NodeContext,
    b: &Backends,
    kind: JobKind,
    site: i64,
    payload: Value,
) -> Result<i64, StoreError> {
    let name = kind.name();
    let policy = JobPolicy::resolve(name, &ctx.config);
    let job = NewJob {
        kind: name.to_owned(),
        queue: policy.queue,
        payload: payload.to_string(),
        max_attempts: None,
        timeout: None,
        delay: Duration::ZERO,
        unique_key: Some(format!("{name}:{site}")),
    };
    let enqueued = b.store.enqueue(&job).await?;
    ctx.queue.wake_for_new_jobs();
    Ok(enqueued.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_servers_first_then_the_least_used_shared_one() {
        let servers = [
            ("a", None, None),
            ("b", None, None),
            ("c", Some(7), None),
            ("d", Some(8), None),
            ("e", Some(7), None),
        ];
        let counts = HashMap::from([
            ("a".to_owned(), 3),
            ("b".to_owned(), 1),
            ("c".to_owned(), 5),
            ("e".to_owned(), 2),
        ]);
        let pick = |tenant| choose(servers.iter().copied(), &counts, tenant);
        assert_eq!(pick(7).as_deref(), Some("e"));
        assert_eq!(pick(8).as_deref(), Some("d"));
        assert_eq!(pick(9).as_deref(), Some("b"));
        let shared_tie = [("y", None, None), ("x", None, None)];
        assert_eq!(
            choose(shared_tie.iter().copied(), &HashMap::new(), 1).as_deref(),
            Some("x")
        );
        let owned_elsewhere = [("z", Some(2), None)];
        assert_eq!(choose(owned_elsewhere.iter().copied(), &counts, 1), None);
    }

    #[test]
    fn full_servers_are_passed_over() {
        let counts = HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 5)]);
        // Own server full: the least used shared one with room.
        let servers = [
            ("a", Some(7), Some(2)),
            ("b", None, Some(5)),
            ("c", None, Some(9)),
        ];
        let pick = |tenant| choose(servers.iter().copied(), &counts, tenant);
        assert_eq!(pick(7).as_deref(), Some("c"));
        // One site short of full still takes one.
        let room = [("a", Some(7), Some(3))];
        assert_eq!(
            choose(room.iter().copied(), &counts, 7).as_deref(),
            Some("a")
        );
        // Every server full: none.
        let full = [("a", Some(7), Some(2)), ("b", None, Some(5))];
        assert_eq!(choose(full.iter().copied(), &counts, 7), None);
    }
}
