//! The console's pages: each reads through the admin RPC's typed operations (`Handle`) and
//! renders an askama template. Times go out in UTC inside `<time>` (the script shows them
//! in the operator's zone, UTC stays in the title); every state is a word with a colour, never
//! a colour alone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use chom_actors::context::NodeContext;
use chom_core::job::{FailedJob, Job, QueueStats};
use chom_supervisors::ChildReport;
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::UiState;
use super::session::Operator;
use super::snapshot::{self, Overview};
use crate::api::{self, Id, Method};
use crate::methods::Handle;
use crate::rpc::protocol::RpcError;

/// A template as an HTML answer (500 with a plain message if it cannot render).
pub struct Html<T>(pub T);

impl<T: Template> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(body) => {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "web console: a template failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

/// A short error page with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let mut response = Html(ErrorPage {
        status: status.as_u16(),
        message: message.to_owned(),
    })
    .into_response();
    *response.status_mut() = status;
    response
}

/// A failed typed operation as a page: refused parameters are 400, the rest 502-ish 503.
pub fn rpc_error(e: &RpcError) -> Response {
    let status = if e.code == crate::rpc::protocol::INVALID_PARAMS {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    error_page(status, &e.message)
}

/// Run a typed operation the way the admin socket does: validate, then handle.
pub async fn call<M: Handle>(ctx: &NodeContext, request: M) -> Result<M::Reply, Response> {
    request.validate().map_err(|e| rpc_error(&e))?;
    request.handle(ctx).await.map_err(|e| rpc_error(&e))
}

/// The wire name of an enum value (`running`, `forced_open`).
pub fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// A state as a word and a colour class (the word is what counts).
#[derive(Debug, Clone)]
pub struct Badge {
    pub text: String,
    pub class: &'static str,
}

impl Badge {
    /// The badge of a state's wire name.
    pub fn new(text: &str) -> Badge {
        let class = match text {
            "ok" | "healthy" | "running" | "closed" | "completed" | "active" | "claiming" => "ok",
            "warning" | "degraded" | "restarting" | "starting" | "half_open" | "reserved"
            | "pending" | "paused" | "provisioning" | "info" | "deleting" => "warn",
            "error" | "unhealthy" | "failed" | "open" | "forced_open" | "stopped" | "critical"
            | "suspended" => "bad",
            _ => "neutral",
        };
        Badge {
            text: text.replace('_', " "),
            class,
        }
    }
}

/// A point in time: the RFC 3339 UTC text (the script shows it in the local zone).
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The layout's fields.
pub struct Layout {
    pub operator: String,
    pub csrf: String,
    pub page: &'static str,
}

impl Layout {
    fn new(op: &Operator, page: &'static str) -> Layout {
        Layout {
            operator: op.name.clone(),
            csrf: op.csrf.clone(),
            page,
        }
    }

    /// `aria-current` on the navigation link of the page shown.
    pub fn current(&self, page: &str) -> &'static str {
        if self.page == page { "page" } else { "false" }
    }
}

// === overview ===

#[derive(Template)]
#[template(path = "live.html")]
struct Live<'a> {
    ov: &'a Overview,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    live: String,
}

fn render_live(ov: &Overview) -> String {
    Live { ov }.render().unwrap_or_default()
}

/// `GET /`.
pub async fn overview(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
) -> Response {
    let ov = snapshot::current(&ui.ctx, &ui.shared).await;
    Html(OverviewPage {
        layout: Layout::new(&op, "overview"),
        live: render_live(&ov),
    })
    .into_response()
}

/// `GET /live`: the overview's live part alone.
pub async fn live(State(ui): State<Arc<UiState>>) -> Response {
    let ov = snapshot::current(&ui.ctx, &ui.shared).await;
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_live(&ov),
    )
        .into_response()
}

/// `GET /events`: the overview's live part pushed every [`snapshot::FRESH_FOR`] (the
/// script closes it while the tab is hidden).
pub async fn events(
    State(ui): State<Arc<UiState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((ui, true), |(ui, first)| async move {
        if !first {
            tokio::time::sleep(snapshot::FRESH_FOR).await;
        }
        let ov = snapshot::current(&ui.ctx, &ui.shared).await;
        let event = Event::default().event("live").data(render_live(&ov));
        Some((Ok(event), (ui, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

// === tree ===

/// One actor of the tree, flattened with its depth.
pub struct TreeRow {
    pub path: String,
    pub depth: usize,
    pub supervisor: bool,
    pub state: Badge,
    pub restarts: u64,
    pub recycles: u64,
    pub failure: String,
    pub failed_at: String,
    pub back_in: String,
}

fn flatten(children: &[ChildReport], depth: usize, out: &mut Vec<TreeRow>) {
    for c in children {
        let failed_at = c
            .last_failure
            .as_ref()
            .and_then(|f| {
                chrono::DateTime::from_timestamp_millis(i64::try_from(f.at_unix_ms).ok()?)
            })
            .map(|t| when(&t))
            .unwrap_or_default();
        out.push(TreeRow {
            path: c.path.clone(),
            depth,
            supervisor: c.children.is_some(),
            state: Badge::new(&wire(&c.state)),
            restarts: c.restart_count,
            recycles: c.recycles,
            failure: c
                .last_failure
                .as_ref()
                .map(|f| f.reason.clone())
                .unwrap_or_default(),
            failed_at,
            back_in: c
                .last_recovery_us
                .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                .unwrap_or_default(),
        });
        if let Some(sub) = &c.children {
            flatten(&sub.children, depth + 1, out);
        }
    }
}

#[derive(Template)]
#[template(path = "tree.html")]
struct TreePage {
    layout: Layout,
    rows: Vec<TreeRow>,
    max_restarts: u32,
    period: String,
}

/// `GET /tree`.
pub async fn tree(State(ui): State<Arc<UiState>>, Extension(op): Extension<Operator>) -> Response {
    let report = match call(&ui.ctx, api::node::Tree {}).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let mut rows = Vec::new();
    flatten(&report.children, 0, &mut rows);
    let sup = &ui.ctx.config.supervision;
    Html(TreePage {
        layout: Layout::new(&op, "tree"),
        rows,
        max_restarts: sup.max_restarts,
        period: humantime::format_duration(sup.period).to_string(),
    })
    .into_response()
}

/// `?path=` of the restart confirmation.
#[derive(Deserialize)]
pub struct PathQuery {
    path: String,
}

#[derive(Template)]
#[template(path = "restart.html")]
struct RestartPage {
    layout: Layout,
    path: String,
}

/// `GET /tree/restart?path=`: the confirmation step (the path typed again).
pub async fn confirm_restart(
    Extension(op): Extension<Operator>,
    Query(q): Query<PathQuery>,
) -> Response {
    let request = api::node::Restart { path: q.path };
    if let Err(e) = request.validate() {
        return rpc_error(&e);
    }
    Html(RestartPage {
        layout: Layout::new(&op, "tree"),
        path: request.path,
    })
    .into_response()
}

// === queues and jobs ===

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    layout: Layout,
    queues: Vec<QueueStats>,
}

/// `GET /queues`.
pub async fn queues(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
) -> Response {
    match call(&ui.ctx, api::queue::Stats {}).await {
        Ok(reply) => Html(QueuesPage {
            layout: Layout::new(&op, "queues"),
            queues: reply.queues,
        })
        .into_response(),
        Err(refused) => refused,
    }
}

/// The job search's parameters: all in the URL, so a search is a link.
#[derive(Debug, Default, Deserialize)]
pub struct JobSearch {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub queue: String,
    pub limit: Option<u64>,
}

/// One job in a listing.
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: Badge,
    pub attempts: u32,
    pub created_at: String,
    pub error: String,
}

impl From<&Job> for JobRow {
    fn from(j: &Job) -> Self {
        JobRow {
            id: j.id,
            queue: j.queue.clone(),
            kind: j.kind.clone(),
            state: Badge::new(&wire(&j.state)),
            attempts: j.attempts,
            created_at: when(&j.created_at),
            error: j.last_error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    search: JobSearch,
    queues: Vec<String>,
    states: [&'static str; 4],
    rows: Vec<JobRow>,
    searched: usize,
    limit: u64,
}

/// Jobs a kind filter looks through (the newest that match the other filters).
const KIND_SCAN: u64 = 1000;

/// `GET /jobs?id=&kind=&state=&queue=&limit=`.
pub async fn jobs(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Query(search): Query<JobSearch>,
) -> Response {
    let id = search.id.trim();
    if !id.is_empty() {
        return match id.parse::<i64>().ok().and_then(|n| Id::try_from(n).ok()) {
            Some(id) => Redirect::to(&format!("/jobs/{}", id.get())).into_response(),
            None => error_page(StatusCode::BAD_REQUEST, "A job id is a positive number."),
        };
    }
    let limit = search.limit.unwrap_or(50).clamp(1, 1000);
    let kind = search.kind.trim().to_owned();
    let request = api::jobs::List {
        queue: Some(search.queue.clone()).filter(|q| !q.is_empty()),
        state: Some(search.state.clone()).filter(|s| !s.is_empty()),
        // The RPC has no kind filter: look through the newest jobs for it.
        limit: Some(if kind.is_empty() { limit } else { KIND_SCAN }),
    };
    let listed = match call(&ui.ctx, request).await {
        Ok(reply) => reply.jobs,
        Err(refused) => return refused,
    };
    let searched = listed.len();
    let rows = listed
        .iter()
        .filter(|j| kind.is_empty() || j.kind == kind)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(JobRow::from)
        .collect();
    Html(JobsPage {
        layout: Layout::new(&op, "jobs"),
        queues: ui.ctx.config.queue.queues.clone(),
        states: ["pending", "reserved", "completed", "failed"],
        search,
        rows,
        searched,
        limit,
    })
    .into_response()
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    job: Job,
    state: Badge,
    payload: String,
    created_at: String,
    available_at: String,
    reserved_at: String,
    finished_at: String,
}

/// A JSON text pretty-printed, or as it is when it is not JSON.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// `GET /jobs/{id}`.
pub async fn job(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<i64>,
) -> Response {
    let Ok(id) = Id::try_from(id) else {
        return error_page(StatusCode::BAD_REQUEST, "A job id is a positive number.");
    };
    let job = match call(&ui.ctx, api::jobs::Show { id }).await {
        Ok(job) => job,
        Err(refused) => return refused,
    };
    let opt = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map(when).unwrap_or_default();
    Html(JobPage {
        layout: Layout::new(&op, "jobs"),
        state: Badge::new(&wire(&job.state)),
        payload: pretty(&job.payload),
        created_at: when(&job.created_at),
        available_at: when(&job.available_at),
        reserved_at: opt(&job.reserved_at),
        finished_at: opt(&job.finished_at),
        job,
    })
    .into_response()
}

// === dead letters ===

#[derive(Template)]
#[template(path = "failed.html")]
struct FailedPage {
    layout: Layout,
    failed: Vec<(FailedJob, String)>,
    analysis: api::failed::Analysis,
}

/// `GET /failed`.
pub async fn failed(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
) -> Response {
    let list = call(&ui.ctx, api::failed::List { limit: Some(100) }).await;
    let analysis = call(&ui.ctx, api::failed::Analyze {}).await;
    match (list, analysis) {
        (Ok(list), Ok(analysis)) => Html(FailedPage {
            layout: Layout::new(&op, "failed"),
            failed: list
                .failed
                .into_iter()
                .map(|f| {
                    let at = when(&f.failed_at);
                    (f, at)
                })
                .collect(),
            analysis,
        })
        .into_response(),
        (Err(refused), _) | (_, Err(refused)) => refused,
    }
}

// === fleet ===

/// One server with its breaker.
pub struct ServerRow {
    pub vps: String,
    pub address: String,
    pub connected: bool,
    pub state: Badge,
    pub reason: String,
    pub failures: u32,
    pub trips: u32,
    pub open_left: String,
}

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    layout: Layout,
    servers: Vec<ServerRow>,
    stopped: Vec<String>,
}

/// `GET /fleet`.
pub async fn fleet(State(ui): State<Arc<UiState>>, Extension(op): Extension<Operator>) -> Response {
    let (breakers, servers) = match (
        call(&ui.ctx, api::breaker::List {}).await,
        call(&ui.ctx, api::vps::List {}).await,
    ) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(refused), _) | (_, Err(refused)) => return refused,
    };
    let rows = breakers
        .breakers
        .into_iter()
        .map(|b| ServerRow {
            state: Badge::new(&wire(&b.breaker.state)),
            reason: b.breaker.reason.unwrap_or_default(),
            failures: b.breaker.failures,
            trips: b.breaker.trips,
            open_left: b
                .breaker
                .open_remaining_ms
                .map(|ms| format!("{:.0} s", (ms as f64 / 1000.0).ceil()))
                .unwrap_or_default(),
            vps: b.vps,
            address: b.address,
            connected: b.connected,
        })
        .collect();
    let stopped = servers
        .vps
        .into_iter()
        .filter(|s| s.actor != "running")
        .map(|s| s.server.id)
        .collect();
    Html(FleetPage {
        layout: Layout::new(&op, "fleet"),
        servers: rows,
        stopped,
    })
    .into_response()
}

// === tenants and sites ===

/// One site.
pub struct SiteRow {
    pub id: i64,
    pub tenant: i64,
    pub domain: String,
    pub vps: String,
    pub status: Badge,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    layout: Layout,
    tenants: Vec<(i64, String, String, Badge)>,
    sites: Vec<SiteRow>,
}

/// `GET /tenants`.
pub async fn tenants(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
) -> Response {
    let (tenants, sites) = match (
        call(&ui.ctx, api::tenants::List {}).await,
        call(&ui.ctx, api::sites::List { tenant: None }).await,
    ) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(refused), _) | (_, Err(refused)) => return refused,
    };
    Html(TenantsPage {
        layout: Layout::new(&op, "tenants"),
        tenants: tenants
            .tenants
            .into_iter()
            .map(|t| (t.id, t.name, wire(&t.tier), Badge::new(&t.status)))
            .collect(),
        sites: sites
            .sites
            .into_iter()
            .map(|s| SiteRow {
                id: s.id,
                tenant: s.tenant_id,
                domain: s.domain,
                vps: s.vps_id,
                status: Badge::new(&wire(&s.status)),
                reason: s.failure_reason.unwrap_or_default(),
            })
            .collect(),
    })
    .into_response()
}

/// Unknown paths.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "No such page.")
}
