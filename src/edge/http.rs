//! `edge/http`: `/health`, `/health/live`, `/health/ready` and `/metrics` (SPEC.md "HTTP").

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chom_actors::context::NodeContext;
use chom_actors::health;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;

use super::ServerTask;

/// `/health?fresh=true`.
#[derive(Debug, Default, serde::Deserialize)]
struct HealthQuery {
    #[serde(default)]
    fresh: bool,
}

/// The HTTP actor.
pub struct HttpActor;

/// Start-up arguments.
pub struct HttpArgs {
    /// The node's shared context.
    pub ctx: Arc<NodeContext>,
    /// The listener bound by `chom node`.
    pub listener: Arc<std::net::TcpListener>,
}

/// Running state: the server task.
pub struct HttpState {
    server: ServerTask,
}

/// The HTTP actor takes no messages; it exists to own (and restart) the server task.
pub enum HttpMsg {}

impl Actor for HttpActor {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = HttpArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<HttpMsg>,
        args: HttpArgs,
    ) -> Result<HttpState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let app = router(args.ctx);
        let server = ServerTask::spawn(|token| async move {
            let shutdown = async move { token.cancelled().await };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "http server stopped");
            }
        });
        Ok(HttpState { server })
    }

    async fn handle(
        &self,
        _: ActorRef<HttpMsg>,
        message: HttpMsg,
        _: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }

    async fn post_stop(
        &self,
        _: ActorRef<HttpMsg>,
        state: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        state.server.stop(Duration::from_secs(5)).await;
        Ok(())
    }
}

/// The routes, over the shared context.
pub fn router(ctx: Arc<NodeContext>) -> Router {
    Router::new()
        .route("/health", get(health_report))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// `/health` serves the health actor's last report (no database query per scrape) while it
/// is fresh (younger than two intervals); `?fresh=true`, or no recent report, runs the checks.
async fn health_report(
    State(ctx): State<Arc<NodeContext>>,
    Query(query): Query<HealthQuery>,
) -> Response {
    let max_age = ctx.config.health.interval * 2;
    let cached = if query.fresh {
        None
    } else {
        ctx.cached_health(max_age)
    };
    let report = match cached {
        Some(report) => report,
        None => health::run_checks(&ctx).await,
    };
    let status = StatusCode::from_u16(report.http_status()).expect("200 and 503 are valid");
    (status, axum::Json(report)).into_response()
}

async fn live() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(ctx): State<Arc<NodeContext>>) -> Response {
    let ready = ctx.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "migrated": ctx.migrated() })),
    )
        .into_response()
}

async fn metrics(State(ctx): State<Arc<NodeContext>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
        .into_response()
}
