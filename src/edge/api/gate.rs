//! What every tenant API request passes before its route: the bearer token, the tenant's
//! rate limit, suspension, and the per-request time limit. The token is hashed at once and
//! never logged or echoed; the answer's `RateLimit-Policy` and `RateLimit` headers are set on
//! whatever the route answers (errors and timeouts included).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chom_actors::context::Backends;
use chom_actors::ratelimit::Verdict;
use chom_core::inventory::Tenant;
use chom_core::token::{ApiToken, Secret};
use chom_store::TOUCH_INTERVAL;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, error, warn};

use super::ApiState;
use super::error::ApiError;

/// The authenticated tenant of a request, for its route.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The tenant's id: every route answers within it.
    pub tenant: i64,
}

/// Authenticate, rate-limit and time-limit one request, then run its route.
pub async fn gate(State(api): State<Arc<ApiState>>, mut request: Request, next: Next) -> Response {
    let limit = api.ctx.config.api.request_timeout;
    let deadline = Instant::now() + limit;
    let (token, tenant, backends) =
        match timeout_at(deadline, authenticate(&api, request.headers())).await {
            Ok(Ok(found)) => found,
            Ok(Err(refused)) => return refused.into_response(),
            Err(_) => return ApiError::timeout(limit).into_response(),
        };
    // `[api.rate_limits] enabled = false`: nothing counted or refused, no headers.
    let verdict = if !api.ctx.config.api.rate_limits.enabled {
        None
    } else {
        match api.limiter.check(tenant.id, tenant.tier).await {
            Ok(verdict) => Some(verdict),
            Err(e) => {
                // Tenant ids from the database are positive: this is a bug, not the client's.
                error!(tenant = tenant.id, error = %e, "tenant api: rate limiter refused the check");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
                .into_response();
            }
        }
    };
    let mut response = if let Some(seconds) = verdict.as_ref().and_then(Verdict::retry_after) {
        ApiError::rate_limited(seconds).into_response()
    } else if tenant.status != "active" {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "suspended",
            "this tenant is suspended; contact support",
        )
        .into_response()
    } else {
        touch(&api, backends, &token);
        request
            .extensions_mut()
            .insert(Caller { tenant: tenant.id });
        match timeout_at(deadline, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::timeout(limit).into_response(),
        }
    };
    if let Some(verdict) = &verdict {
        set_rate_limit_headers(response.headers_mut(), verdict);
    }
    response
}

/// The token of the `Authorization` header and its tenant: 401 when the header is missing
/// or not `Bearer <token>`, or the token is unknown or revoked; 503 when the database cannot
/// say.
async fn authenticate(
    api: &ApiState,
    headers: &HeaderMap,
) -> Result<(ApiToken, Tenant, Backends), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer TOKEN`"))?;
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| Secret::from_authorization(v).ok())
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: expected `Bearer TOKEN`")
        })?;
    let backends = api.backends()?;
    match backends.store.authenticate(&secret.hash()).await {
        Ok(Some((token, tenant))) => Ok((token, tenant, backends)),
        Ok(None) => Err(ApiError::unauthorized("unknown or revoked token")),
        Err(e) => {
            warn!(error = %e, "tenant api: cannot authenticate a request (database)");
            Err(ApiError::unavailable())
        }
    }
}

/// Record the token's use in the background when its `last_used_at` is older than the
/// store's touch interval, at most one write in flight per token: a burst of requests costs
/// one write, not one each. Best effort: a failure only leaves `last_used_at` older.
fn touch(api: &Arc<ApiState>, backends: Backends, token: &ApiToken) {
    let now = chrono::Utc::now();
    if token
        .last_used_at
        .is_some_and(|used| now - used < TOUCH_INTERVAL)
    {
        return;
    }
    let id = token.id;
    if !api
        .touching
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id)
    {
        return;
    }
    let api = api.clone();
    tokio::spawn(async move {
        if let Err(e) = backends.store.touch_token(id, now).await {
            debug!(token_id = id, error = %e, "tenant api: could not record a token's use");
        }
        api.touching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    });
}

/// `RateLimit-Policy` and `RateLimit` (IETF draft) from the request's verdict.
fn set_rate_limit_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    for (name, value) in [
        ("ratelimit-policy", verdict.policy_header()),
        ("ratelimit", verdict.ratelimit_header()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
