//! `edge/api`: the tenant API (SPEC.md "Tenant API") on `api.listen`, for CHOM's customers
//! and its web panel: their sites, the jobs of their sites, and PromQL over their servers'
//! metrics, each tenant seeing only its own.
//!
//! Served by `edge/http.rs`'s accept loop (`serve`, with the same connection limits as
//! `http.listen`). Every request passes, outermost first:
//!
//! 1. [`observe`]: counts the answer in `chom_api_requests_total{route,status}` and
//!    `chom_api_request_duration_seconds{route}` by route template (`unmatched` for unknown
//!    paths, never the raw path) and gives any error answer made outside the handlers (a
//!    rejected path, an unknown route) the JSON shape;
//! 2. [`gate`](gate::gate): the bearer token, the tenant's rate limit (headers on every answer
//!    from here on), suspension, then the route under `api.request_timeout`;
//! 3. the route (`routes.rs`), whose JSON body is bounded by `api.max_body`.

mod error;
mod gate;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chom_actors::context::{Backends, NodeContext};
use chom_actors::ratelimit::RateLimiter;
use tokio::net::TcpListener;

use self::error::{ApiError, code_of};
use super::http::{HttpLimits, serve};
use super::{Door, ServerTask};

/// Route template of the site list and creation.
pub const SITES: &str = "/api/v1/sites";
/// Route template of one site.
pub const SITE: &str = "/api/v1/sites/{id}";
/// Route template of one job.
pub const JOB: &str = "/api/v1/jobs/{id}";
/// Route template of a metrics query.
pub const METRICS_QUERY: &str = "/api/v1/metrics/query";
/// The `route` label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Every route template: the only values of the metrics' `route` label besides
/// [`UNMATCHED`].
const ROUTES: [&str; 4] = [SITES, SITE, JOB, METRICS_QUERY];

/// The tenant API's door. It holds the node's one rate limiter, so a restarted `edge/api`
/// keeps the in-process budgets.
#[derive(Clone)]
pub struct Api {
    limiter: RateLimiter,
}

impl Api {
    /// The door, limiting with `limiter`.
    pub fn new(limiter: RateLimiter) -> Api {
        Api { limiter }
    }
}

impl Door for Api {
    type Listener = std::net::TcpListener;
    const GRACE: Duration = Duration::from_secs(5);

    fn open(&self, ctx: Arc<NodeContext>, listener: TcpListener) -> ServerTask {
        let limits = HttpLimits::from(&ctx.config.http);
        let app = router(ctx, self.limiter.clone());
        ServerTask::spawn(|token| serve(listener, app, limits, token))
    }
}

/// What the routes and the middleware share.
pub struct ApiState {
    ctx: Arc<NodeContext>,
    limiter: RateLimiter,
    queries: QuerySlots,
    /// Tokens whose `last_used_at` is being written (one write in flight per token).
    touching: Mutex<std::collections::HashSet<i64>>,
}

impl ApiState {
    /// The store's backends, once migrations ran; else 503.
    fn backends(&self) -> Result<Backends, ApiError> {
        if !self.ctx.migrated() {
            return Err(ApiError::unavailable());
        }
        self.ctx.backends().ok_or_else(ApiError::unavailable)
    }
}

/// The routes over the node, limited by `limiter`.
pub fn router(ctx: Arc<NodeContext>, limiter: RateLimiter) -> Router {
    let api = &ctx.config.api;
    let max_body = usize::try_from(api.max_body).unwrap_or(usize::MAX);
    let state = Arc::new(ApiState {
        queries: QuerySlots::new(api.max_concurrent_queries),
        ctx: ctx.clone(),
        limiter,
        touching: Mutex::default(),
    });
    Router::new()
        .route(SITES, get(routes::list_sites).post(routes::create_site))
        .route(SITE, get(routes::show_site).delete(routes::delete_site))
        .route(JOB, get(routes::show_job))
        .route(METRICS_QUERY, get(routes::metrics_query))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Count the answer by route template and status, and give an error answer that is not
/// JSON yet (made by axum outside the handlers) the API's error shape.
async fn observe(State(api): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let mut response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !json {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let mut replaced = ApiError::new(status, code_of(status), reason).into_response();
        // Whatever the gate added (RateLimit headers) stays.
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                replaced.headers_mut().insert(name.clone(), value.clone());
            }
        }
        response = replaced;
    }
    api.ctx
        .metrics
        .api_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// The `route` label: the matched route's template, or [`UNMATCHED`].
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|m| ROUTES.into_iter().find(|r| *r == m.as_str()))
        .unwrap_or(UNMATCHED)
}

/// The bulkhead of observability queries: at most `max` in flight per tenant; one more is
/// refused at once rather than queued (a queue would only grow while the host is slow).
struct QuerySlots {
    max: u32,
    in_flight: Arc<Mutex<HashMap<i64, u32>>>,
}

/// One query's slot, given back when dropped (also when the request is cancelled).
struct QuerySlot {
    in_flight: Arc<Mutex<HashMap<i64, u32>>>,
    tenant: i64,
}

impl QuerySlots {
    fn new(max: u32) -> QuerySlots {
        QuerySlots {
            max: max.max(1),
            in_flight: Arc::default(),
        }
    }

    /// A slot for `tenant`, or `None` when it has `max` queries in flight.
    fn take(&self, tenant: i64) -> Option<QuerySlot> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = in_flight.entry(tenant).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(QuerySlot {
            in_flight: self.in_flight.clone(),
            tenant,
        })
    }
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            // Tenants without a query in flight take no room.
            if *n == 0 {
                in_flight.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_slots_are_per_tenant_and_come_back() {
        let slots = QuerySlots::new(2);
        let a1 = slots.take(1).unwrap();
        let _a2 = slots.take(1).unwrap();
        assert!(slots.take(1).is_none(), "a third is refused");
        let b = slots.take(2).expect("another tenant has its own slots");
        drop(a1);
        assert!(slots.take(1).is_some(), "a finished query frees its slot");
        drop(b);
        assert!(!slots.in_flight.lock().unwrap().contains_key(&2));
    }

    #[test]
    fn route_labels_are_templates_only() {
        assert_eq!(route_label(None), UNMATCHED);
        for route in ROUTES {
            assert!(route.starts_with("/api/v1/"), "{route}");
        }
    }
}
