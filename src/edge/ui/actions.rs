//! The console's actions: POST forms (the gate has checked the session and the CSRF token).
//! Each builds the admin RPC's typed request and runs it through [`call`] (validate, then
//! the same `Handle` the admin socket runs), logs who did what (and why, where a reason is
//! asked), and sends the browser back to the page (303, so a reload does not repeat it).
//! Destructive actions want their target typed again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chom_core::limits::escape_control;
use serde::Deserialize;
use tracing::info;

use super::UiState;
use super::pages::{call, error_page};
use super::session::Operator;
use crate::api::{self, HumanDuration, Id};

/// Longest reason an operator may give for forcing a breaker open.
const MAX_REASON_CHARS: usize = 200;

fn back(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The restart form.
#[derive(Deserialize)]
pub struct RestartForm {
    path: String,
    confirm: String,
}

/// `POST /tree/restart`: restart an actor or subtree once its path was typed again.
pub async fn restart(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<RestartForm>,
) -> Response {
    if form.confirm.trim() != form.path {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The path typed does not match: nothing was restarted.",
        );
    }
    let path = form.path.clone();
    match call(&ui.ctx, api::node::Restart { path: form.path }).await {
        Ok(_) => {
            info!(operator = %op.name, actor = %path, "web console: restart");
            back("/tree")
        }
        Err(refused) => refused,
    }
}

/// A queue's pause or resume form.
#[derive(Deserialize)]
pub struct QueueForm {
    queue: String,
}

/// `POST /queues/pause`.
pub async fn pause(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<QueueForm>,
) -> Response {
    match call(&ui.ctx, api::queue::Pause { queue: form.queue }).await {
        Ok(done) => {
            info!(operator = %op.name, queue = %done.queue, "web console: queue paused");
            back("/queues")
        }
        Err(refused) => refused,
    }
}

/// `POST /queues/resume`.
pub async fn resume(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<QueueForm>,
) -> Response {
    match call(&ui.ctx, api::queue::Resume { queue: form.queue }).await {
        Ok(done) => {
            info!(operator = %op.name, queue = %done.queue, "web console: queue resumed");
            back("/queues")
        }
        Err(refused) => refused,
    }
}

/// The dead-letter retry form: one (`id`), every one of a kind (`kind`), or all (`all`,
/// with `confirm` = `all`).
#[derive(Deserialize)]
pub struct RetryForm {
    id: Option<i64>,
    kind: Option<String>,
    all: Option<String>,
    #[serde(default)]
    confirm: String,
}

/// Dead letters a retry of one kind looks through (the newest).
const KIND_RETRY_SCAN: u64 = 1000;

/// `POST /failed/retry`.
pub async fn retry(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<RetryForm>,
) -> Response {
    let ids: Vec<Id> = if let Some(id) = form.id {
        match Id::try_from(id) {
            Ok(id) => vec![id],
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
        }
    } else if let Some(kind) = form.kind.filter(|k| !k.is_empty()) {
        let listed = call(
            &ui.ctx,
            api::failed::List {
                limit: Some(KIND_RETRY_SCAN),
            },
        )
        .await;
        match listed {
            Ok(list) => list
                .failed
                .iter()
                .filter(|f| f.kind == kind)
                .filter_map(|f| Id::try_from(f.id).ok())
                .collect(),
            Err(refused) => return refused,
        }
    } else if form.all.is_some() {
        if form.confirm.trim() != "all" {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Type `all` to retry every dead letter: nothing was retried.",
            );
        }
        let request = api::failed::Retry {
            id: None,
            all: Some(true),
        };
        return match call(&ui.ctx, request).await {
            Ok(done) => {
                info!(operator = %op.name, retried = done.retried, "web console: every dead letter retried");
                back("/failed")
            }
            Err(refused) => refused,
        };
    } else {
        return error_page(StatusCode::BAD_REQUEST, "Say which dead letters to retry.");
    };
    let mut retried = 0;
    for id in ids {
        match call(
            &ui.ctx,
            api::failed::Retry {
                id: Some(id),
                all: None,
            },
        )
        .await
        {
            Ok(done) => retried += done.retried,
            Err(refused) => return refused,
        }
    }
    info!(operator = %op.name, retried, "web console: dead letters retried");
    back("/failed")
}

/// The prune form: the age, and `prune` typed as confirmation.
#[derive(Deserialize)]
pub struct PruneForm {
    older_than: String,
    confirm: String,
}

/// `POST /failed/prune`.
pub async fn prune(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<PruneForm>,
) -> Response {
    if form.confirm.trim() != "prune" {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Type `prune` to delete dead letters: nothing was deleted.",
        );
    }
    let Ok(age) = humantime::parse_duration(form.older_than.trim()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The age is a duration such as 24h or 7days.",
        );
    };
    let request = api::failed::Prune {
        older_than: Some(HumanDuration(age)),
    };
    match call(&ui.ctx, request).await {
        Ok(done) => {
            info!(operator = %op.name, pruned = done.pruned, older_than = %done.older_than, "web console: dead letters pruned");
            back("/failed")
        }
        Err(refused) => refused,
    }
}

/// A breaker action with the operator's reason.
#[derive(Deserialize)]
pub struct BreakerForm {
    vps: String,
    action: String,
    #[serde(default)]
    reason: String,
}

/// `POST /fleet/breaker`: reset or force open a server's breaker, with a reason (logged).
pub async fn breaker(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<BreakerForm>,
) -> Response {
    let reason = form.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Give a reason (at most 200 characters): it goes to the node's log.",
        );
    }
    let vps = form.vps;
    let done = match form.action.as_str() {
        "reset" => call(&ui.ctx, api::breaker::Reset { vps: vps.clone() }).await,
        "open" => call(&ui.ctx, api::breaker::Open { vps: vps.clone() }).await,
        _ => return error_page(StatusCode::BAD_REQUEST, "The action is reset or open."),
    };
    match done {
        Ok(server) => {
            info!(
                operator = %op.name,
                vps = %server.vps,
                action = %form.action,
                reason = %escape_control(reason),
                "web console: breaker changed"
            );
            back("/fleet")
        }
        Err(refused) => refused,
    }
}

/// The provision-again form.
#[derive(Deserialize)]
pub struct ProvisionForm {
    site: i64,
}

/// `POST /sites/provision`: enqueue the site's provisioning again.
pub async fn provision(
    State(ui): State<Arc<UiState>>,
    Extension(op): Extension<Operator>,
    Form(form): Form<ProvisionForm>,
) -> Response {
    let Ok(id) = Id::try_from(form.site) else {
        return error_page(StatusCode::BAD_REQUEST, "A site id is a positive number.");
    };
    match call(&ui.ctx, api::sites::Provision { id }).await {
        Ok(done) => {
            info!(operator = %op.name, site = form.site, job = done.job, "web console: provisioning again");
            back("/tenants")
        }
        Err(refused) => refused,
    }
}
