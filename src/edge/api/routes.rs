//! The tenant API's routes. Each answers within the caller's tenant: another tenant's site or
//! job is 404, exactly like one that does not exist, so nothing tells them apart.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chom_actors::observability::client::QueryError;
use chom_core::config::is_name;
use chom_core::inventory::{NewSite, Site, check_domain, check_site_type};
use chom_core::job::{Job, JobKind};
use chom_core::policy::JobPolicy;
use chom_core::promql::scope_to_tenant;
use chom_store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use super::ApiState;
use super::error::{ApiError, JsonBody, bad_data, echo};
use super::gate::Caller;
use crate::sites;

/// `GET /api/v1/sites`: the tenant's sites, by id.
pub async fn list_sites(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let b = api.backends()?;
    let sites = b
        .store
        .sites(Some(caller.tenant))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "sites": sites })))
}

/// `GET /api/v1/sites/{id}`.
pub async fn show_site(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Site>, ApiError> {
    Ok(Json(own_site(&api, caller, &id).await?))
}

/// The body of `POST /api/v1/sites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    domain: String,
    #[serde(rename = "type")]
    site_type: String,
    vps: Option<String>,
}

impl CreateSite {
    /// The checks that need only the body.
    fn validate(&self) -> Result<(), ApiError> {
        check_domain(&self.domain).map_err(|_| {
            ApiError::bad_request(format!(
                "`domain`: `{}` is not a domain name (at most 253 characters of lowercase labels of a-z, 0-9 and -, separated by dots)",
                echo(crate::api::truncated(&self.domain))
            ))
        })?;
        check_site_type(&self.site_type).map_err(|_| {
            ApiError::bad_request(format!(
                "`type`: `{}` is not a site type (a lowercase word such as wordpress, laravel, html)",
                echo(crate::api::truncated(&self.site_type))
            ))
        })?;
        match &self.vps {
            Some(vps) if !is_name(vps) => Err(ApiError::bad_request(format!(
                "`vps`: `{}` is not a server id",
                echo(crate::api::truncated(vps))
            ))),
            _ => Ok(()),
        }
    }
}

/// `POST /api/v1/sites`: 202 with the site and its `site.provision` job.
pub async fn create_site(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CreateSite>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let b = api.backends()?;
    let vps = match body.vps {
        Some(vps) => vps,
        None => sites::pick_server(&b, caller.tenant)
            .await
            .map_err(store_error)?
            .ok_or_else(|| unprocessable("no server has room for this tenant's sites"))?,
    };
    let new = NewSite {
        tenant_id: caller.tenant,
        vps_id: vps,
        domain: body.domain,
        site_type: body.site_type,
    };
    let (site, job) = sites::create(&api.ctx, &b, &new, true)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            // A server the tenant may use but that holds its `max_sites`.
            StoreError::Full(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "server_full",
                format!("server `{}` is full; name another with `vps`", new.vps_id),
            ),
            // No such server, or another tenant's: told apart neither here nor anywhere.
            StoreError::Invalid(_) => unprocessable(&format!(
                "server `{}` cannot take this tenant's sites",
                new.vps_id
            )),
            other => store_error(other),
        })?;
    Ok(accepted(json!({ "site": site, "job": job })))
}

/// `DELETE /api/v1/sites/{id}`: 202 with the site (`deleting`) and its `site.delete` job.
pub async fn delete_site(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let site = own_site(&api, caller, &id).await?;
    let b = api.backends()?;
    let (site, job) = sites::delete(&api.ctx, &b, &site)
        .await
        .map_err(store_error)?;
    Ok(accepted(json!({ "site": site, "job": job })))
}

/// `GET /api/v1/jobs/{id}`: a `site.provision` or `site.delete` job of one of the tenant's
/// sites; any other job is 404.
pub async fn show_job(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("job");
    let id = parse_id(&id).ok_or_else(not_found)?;
    let b = api.backends()?;
    let job = b.store.job(id).await.map_err(store_error)?;
    let job = job.ok_or_else(not_found)?;
    let site = job_site(&job).ok_or_else(not_found)?;
    // The site's row decides while it exists; once `site.delete` removed it, the tenant
    // the job was enqueued for does.
    let owner = match b.store.site(site.site).await.map_err(store_error)? {
        Some(row) => Some(row.tenant_id),
        None => site.tenant,
    };
    if owner != Some(caller.tenant) {
        return Err(not_found());
    }
    let policy = JobPolicy::resolve(&job.kind, &api.ctx.config);
    Ok(Json(json!({
        "id": job.id,
        "kind": job.kind,
        "site": site.site,
        "state": job.state.as_str(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts.unwrap_or(policy.max_attempts),
        "last_error": job.last_error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    })))
}

/// The site a job is about, and the tenant its payload names (if any).
struct JobSite {
    site: i64,
    tenant: Option<i64>,
}

/// For a `site.provision` or `site.delete` job, what its payload names; `None` for any other.
fn job_site(job: &Job) -> Option<JobSite> {
    let kind = JobKind::from_name(&job.kind)?;
    if !matches!(kind, JobKind::SiteProvision | JobKind::SiteDelete) {
        return None;
    }
    let payload: Value = serde_json::from_str(&job.payload).ok()?;
    Some(JobSite {
        site: payload.get("site")?.as_i64()?,
        tenant: payload.get("tenant").and_then(Value::as_i64),
    })
}

/// The query string of `GET /api/v1/metrics/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    query: Option<String>,
    time: Option<String>,
}

/// `GET /api/v1/metrics/query?query=PROMQL[&time=]`: the query with `tenant_id="<tenant>"`
/// enforced on every selector, answered by the observability client as it answers (live or
/// cached, with `_cached`/`cached_at`/`_warning`).
pub async fn metrics_query(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return bad_data(&rejection.body_text()),
    };
    let Some(query) = params.query else {
        return bad_data("missing parameter `query`");
    };
    let time = params.time.as_deref();
    if let Err(message) = chom_core::observe::check_query(&query, time) {
        return bad_data(&message);
    }
    let scoped = match scope_to_tenant(&query, caller.tenant) {
        Ok(scoped) => scoped,
        Err(e) => return bad_data(&e.to_string()),
    };
    let Some(_slot) = api.queries.take(caller.tenant) else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_queries",
            format!(
                "this tenant has {} metrics queries in flight (api.max_concurrent_queries); retry when one finished",
                api.queries.max
            ),
        )
        .into_response();
    };
    match api.ctx.observability.query(&scoped, time).await {
        Ok(value) => Json(value).into_response(),
        Err(QueryError::Invalid(message) | QueryError::Refused(message)) => bad_data(&message),
        Err(e @ (QueryError::NotConfigured | QueryError::Unavailable { .. })) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "observability_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

/// The tenant's site `id`; 404 when there is none or it is another tenant's.
async fn own_site(api: &ApiState, caller: Caller, id: &str) -> Result<Site, ApiError> {
    let not_found = || ApiError::not_found("site");
    let id = parse_id(id).ok_or_else(not_found)?;
    let b = api.backends()?;
    match b.store.site(id).await.map_err(store_error)? {
        Some(site) if site.tenant_id == caller.tenant => Ok(site),
        _ => Err(not_found()),
    }
}

/// A path id: a positive integer (anything else names nothing).
fn parse_id(text: &str) -> Option<i64> {
    text.parse().ok().filter(|id| *id > 0)
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn unprocessable(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
}

/// A store failure the client cannot act on: logged here, answered 503.
fn store_error(e: StoreError) -> ApiError {
    warn!(error = %e, "tenant api: database call failed");
    ApiError::unavailable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(parse_id("12"), Some(12));
        for bad in ["0", "-3", "x", "", "99999999999999999999", "1.5"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_are_checked() {
        let body = |domain: &str, site_type: &str, vps: Option<&str>| CreateSite {
            domain: domain.to_owned(),
            site_type: site_type.to_owned(),
            vps: vps.map(str::to_owned),
        };
        assert!(
            body("shop.example.com", "wordpress", None)
                .validate()
                .is_ok()
        );
        assert!(
            body("shop.example.com", "html", Some("web-1"))
                .validate()
                .is_ok()
        );
        for bad in [
            body("Shop.example.com", "wordpress", None),
            body("shop", "wordpress", None),
            body("shop.example.com", "Word Press", None),
            body("shop.example.com", "wordpress", Some("no such/vps")),
        ] {
            assert_eq!(bad.validate().unwrap_err().code(), "bad_request", "{bad:?}");
        }
    }
}
