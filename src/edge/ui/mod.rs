//! `edge/ui`: the operator web console (SPEC.md "Operator web console") on `ui.listen`.
//!
//! Served by `edge/http.rs`'s accept loop (`serve`, with the connection limits of
//! `http.listen`). Every answer passes, outermost first:
//!
//! 1. [`headers`]: the security headers (CSP `default-src 'self'` with no inline script or
//!    style, `frame-ancestors 'none'`, nosniff, no referrer, no caching of pages);
//! 2. [`session::gate`]: the session cookie (signed, then looked up in the store; idle for
//!    `ui.session_idle` = over), and for every POST a same-origin check and the CSRF token
//!    bound to the session. Without a session a page redirects to `/signin`, an action is
//!    refused (403): never data;
//! 3. the page (`pages.rs`) or action (`actions.rs`). Every action builds the admin RPC's
//!    typed request, validates it and calls the same `Handle` implementation the admin
//!    socket does: one implementation per action, no SQL here.
//!
//! Templates (askama, `templates/`), the one stylesheet and the one script are compiled into
//! the binary.

// A refusal is the page answered (built once, on the error path), so results carry a Response.
#![allow(
    clippy::result_large_err,
    reason = "the Err of a handler's step is the answer itself"
)]

mod actions;
mod auth;
mod pages;
mod session;
mod snapshot;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chom_actors::context::NodeContext;
use chom_core::signin::SignInThrottle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use self::auth::{SessionKey, generate_password, hash_password};
use super::http::{HttpLimits, serve};
use super::{Door, ServerTask};

/// Largest form body accepted, in bytes (the forms carry a few short fields).
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Keys (operator names, source addresses) the sign-in throttle remembers at most.
const THROTTLE_KEYS: usize = 10_000;
/// Password checks running at once: each is ~20 MiB and tens of ms of CPU, so a flood of
/// sign-ins waits here instead of taking the node's memory and cores.
const HASHING_SLOTS: usize = 2;

/// The console's door. What it holds outlives a restart of `edge/ui`: the session key, the
/// sign-in throttle and the charts' history.
#[derive(Clone)]
pub struct Ui {
    shared: Arc<Shared>,
}

/// What the door keeps across incarnations.
struct Shared {
    key: Result<SessionKey, String>,
    throttle: Mutex<SignInThrottle>,
    hashing: Semaphore,
    snapshots: snapshot::Snapshots,
}

impl Ui {
    /// The door, its session key derived from the secret file in `data_dir` (created when
    /// missing). A key that cannot be had is logged; the console then answers 503.
    pub fn new(data_dir: &std::path::Path) -> Ui {
        let key = SessionKey::load_or_create(data_dir).map_err(|e| {
            tracing::error!(error = %e, "web console: no session key; the console will answer 503");
            e.to_string()
        });
        Ui {
            shared: Arc::new(Shared {
                key,
                throttle: Mutex::new(SignInThrottle::new(THROTTLE_KEYS)),
                hashing: Semaphore::new(HASHING_SLOTS),
                snapshots: snapshot::Snapshots::default(),
            }),
        }
    }
}

impl Door for Ui {
    type Listener = std::net::TcpListener;
    const GRACE: Duration = Duration::from_secs(5);

    fn open(&self, ctx: Arc<NodeContext>, listener: TcpListener) -> ServerTask {
        let limits = HttpLimits::from(&ctx.config.http);
        let shared = self.shared.clone();
        let app = router(ctx.clone(), shared.clone());
        ServerTask::spawn(move |token| async move {
            // The charts' history is sampled whether or not anyone looks.
            let sampler = tokio::spawn(snapshot::sample(ctx, shared));
            serve(listener, app, limits, token).await;
            sampler.abort();
        })
    }
}

/// What the handlers share.
pub struct UiState {
    ctx: Arc<NodeContext>,
    shared: Arc<Shared>,
}

impl UiState {
    fn key(&self) -> Result<&SessionKey, Response> {
        self.shared.key.as_ref().map_err(|_| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the console has no session key; see the node's log",
            )
                .into_response()
        })
    }
}

/// The console's routes over the node.
fn router(ctx: Arc<NodeContext>, shared: Arc<Shared>) -> Router {
    let state = Arc::new(UiState { ctx, shared });
    Router::new()
        .route("/", get(pages::overview))
        .route("/live", get(pages::live))
        .route("/events", get(pages::events))
        .route("/tree", get(pages::tree))
        .route(
            "/tree/restart",
            get(pages::confirm_restart).post(actions::restart),
        )
        .route("/queues", get(pages::queues))
        .route("/queues/pause", post(actions::pause))
        .route("/queues/resume", post(actions::resume))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/failed", get(pages::failed))
        .route("/failed/retry", post(actions::retry))
        .route("/failed/prune", post(actions::prune))
        .route("/fleet", get(pages::fleet))
        .route("/fleet/breaker", post(actions::breaker))
        .route("/tenants", get(pages::tenants))
        .route("/sites/provision", post(actions::provision))
        .route("/signin", get(session::signin_page).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/assets/console.css", get(asset_css))
        .route("/assets/console.js", get(asset_js))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), session::gate))
        .layer(middleware::from_fn(headers))
        .with_state(state)
}

/// The Content-Security-Policy of every answer: nothing but this origin's own files, no
/// inline script or style, never framed, forms posting only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every answer, whatever made it.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

async fn asset_css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn asset_js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
