//! The admin RPC methods of a running node (SPEC.md "Admin RPC").
//!
//! Each method is one small function; `NodeRpc::call` only dispatches. The fleet's methods
//! (vps.*, breaker.*, tenants.*, sites.*) live in `fleet_methods`.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::{Backends, NodeContext};
use chom_actors::monitors::health;
use chom_actors::queue::reaper;
use chom_actors::tree;
use chom_core::job::{JobFilter, JobState, NewJob};
use chom_core::limits::{self, LimitError};
use chom_core::policy::JobPolicy;
use chom_store::{self as store, StoreError};
use chom_supervisors::{Fault, SupervisorMsg};
use futures::future::BoxFuture;
use ractor::ActorRef;
use serde_json::{Value, json};

use crate::rpc::protocol::{self, INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError};
use crate::rpc::server::Dispatch;

/// How long the tree may take to answer an introspection call.
const TREE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest actor path `restart` and the debug hooks accept, in characters.
const MAX_PATH_CHARS: usize = 255;

/// The longest `debug.stall`.
const MAX_STALL: Duration = Duration::from_secs(3600);

/// The most `debug.inflate` may allocate (the memory tests need a few hundred MB).
const MAX_INFLATE_BYTES: u64 = 4 << 30;

/// The admin RPC handler of one node.
pub struct NodeRpc {
    ctx: Arc<NodeContext>,
}

impl NodeRpc {
    /// A handler over the node's context.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        NodeRpc { ctx }
    }
}

impl Dispatch for NodeRpc {
    fn call(&self, method: String, params: Value) -> BoxFuture<'static, Result<Value, RpcError>> {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            match method.as_str() {
                "status" => status(&ctx).await,
                "tree" => tree(&ctx).await,
                "restart" => restart(&ctx, &params).await,
                "health" => Ok(
                    serde_json::to_value(health::run_checks(&ctx.checks()).await)
                        .expect("report serializes"),
                ),
                "shutdown" => shutdown(&ctx),
                "jobs.enqueue" => jobs_enqueue(&ctx, &params).await,
                "jobs.show" => jobs_show(&ctx, &params).await,
                "jobs.list" => jobs_list(&ctx, &params).await,
                "jobs.kill_stuck" => jobs_kill_stuck(&ctx, &params).await,
                "queue.stats" => queue_stats(&ctx).await,
                "queue.pause" => queue_pause(&ctx, &params, true).await,
                "queue.resume" => queue_pause(&ctx, &params, false).await,
                "failed.list" => failed_list(&ctx, &params).await,
                "failed.retry" => failed_retry(&ctx, &params).await,
                "failed.prune" => failed_prune(&ctx, &params).await,
                "failed.analyze" => failed_analyze(&ctx).await,
                "debug.stall" if ctx.debug_hooks => debug_stall(&ctx, &params).await,
                "debug.fault" if ctx.debug_hooks => debug_fault(&ctx, &params).await,
                "debug.inflate" if ctx.debug_hooks => {
                    let bytes = opt_count(&params, "bytes", 0, MAX_INFLATE_BYTES)?.unwrap_or(0);
                    let bytes = usize::try_from(bytes).map_err(|_| {
                        RpcError::invalid_params("`bytes` does not fit this platform")
                    })?;
                    if bytes == 0 {
                        chom_actors::monitors::memory::deflate();
                    } else {
                        chom_actors::monitors::memory::inflate(bytes);
                    }
                    Ok(json!({ "inflated": bytes, "rss_bytes": chom_actors::sys::rss_bytes() }))
                }
                other => match crate::fleet_methods::dispatch(&ctx, other, &params).await {
                    Some(result) => result,
                    None => Err(RpcError::new(
                        METHOD_NOT_FOUND,
                        format!("no method named `{other}`"),
                    )),
                },
            }
        })
    }
}

fn root(ctx: &NodeContext) -> Result<&ActorRef<SupervisorMsg>, RpcError> {
    ctx.root()
        .ok_or_else(|| RpcError::failed("supervision tree not started"))
}

async fn status(ctx: &NodeContext) -> Result<Value, RpcError> {
    let report = tree::fetch(root(ctx)?, TREE_TIMEOUT)
        .await
        .map_err(RpcError::failed)?;
    let summary = tree::summarize(&report);
    let backends = ctx.backends();
    Ok(json!({
        "version": ctx.version,
        "node": ctx.node_name,
        "pid": std::process::id(),
        "uptime_secs": ctx.started_at.elapsed().as_secs(),
        "started_at": chrono::DateTime::<chrono::Utc>::from(ctx.started_wall).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "ready": ctx.ready(),
        "http": ctx.http_addr.get().map(|a| a.to_string()),
        "admin_socket": ctx.config.admin.socket.display().to_string(),
        "database": backends.as_ref().map(|b| b.store.backend().as_str()),
        "cache": backends.as_ref().map(|b| b.cache.kind()),
        "tree": summary,
        "memory_rss_bytes": chom_actors::sys::rss_bytes(),
        "memory": ctx.memory_status(),
        "queues": queue_sizes(ctx).await,
        "claiming": ctx.queue.active_queues().await,
        "open_breakers": crate::fleet_methods::open_breakers(ctx).await,
    }))
}

async fn tree(ctx: &NodeContext) -> Result<Value, RpcError> {
    let report = tree::fetch(root(ctx)?, TREE_TIMEOUT)
        .await
        .map_err(RpcError::failed)?;
    Ok(serde_json::to_value(report).expect("report serializes"))
}

/// The actor path parameter `name`: bounded, no control characters, without surrounding '/'.
fn param_path(params: &Value, name: &str) -> Result<String, RpcError> {
    let path = protocol::param_str(params, name)?;
    if !path.is_empty() {
        limits::check_text(name, path, MAX_PATH_CHARS).map_err(invalid)?;
    }
    Ok(path.trim_matches('/').to_owned())
}

async fn restart(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let path = param_path(params, "path")?;
    if path.is_empty() {
        return Err(RpcError::invalid_params(
            "path must name an actor or subtree, e.g. store or edge/http",
        ));
    }
    let root = root(ctx)?;
    // Stopping a subtree may take its children's shutdown timeouts; allow for that.
    let limit = ctx.config.node.shutdown_timeout + TREE_TIMEOUT;
    ractor::call_t!(
        root,
        |reply| SupervisorMsg::Restart {
            path: path.clone(),
            reply
        },
        limit.as_millis() as u64
    )
    .map_err(|e| {
        RpcError::new(
            INTERNAL_ERROR,
            format!("root supervisor did not answer: {e}"),
        )
    })?
    .map_err(|e| RpcError::failed(e.to_string()))?;
    let report = tree::fetch(root, TREE_TIMEOUT)
        .await
        .map_err(RpcError::failed)?;
    let child = tree::find(&report, &path);
    Ok(json!({
        "path": path,
        "state": child.map(|c| c.state.clone()),
        "restart_count": child.map(|c| c.restart_count),
    }))
}

fn shutdown(ctx: &NodeContext) -> Result<Value, RpcError> {
    ctx.request_shutdown();
    Ok(json!({ "shutting_down": true }))
}

/// Test hook: make a supervisor's mailbox unresponsive for a while (watchdog tests).
async fn debug_stall(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let path = match params.get("path") {
        None | Some(Value::Null) => String::new(),
        Some(_) => param_path(params, "path")?,
    };
    let path = path.as_str();
    let duration = opt_duration(params, "duration", MAX_STALL)?
        .ok_or_else(|| RpcError::invalid_params("missing string parameter `duration`"))?;
    let root = root(ctx)?;
    let target: ActorRef<SupervisorMsg> = if path.is_empty() {
        root.clone()
    } else {
        let report = tree::fetch(root, TREE_TIMEOUT)
            .await
            .map_err(RpcError::failed)?;
        match tree::find(&report, path) {
            Some(child) if child.kind == "supervisor" => {}
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "{path} is not a supervisor"
                )));
            }
            None => return Err(RpcError::failed(format!("no actor at {path}"))),
        }
        let cell = ractor::call_t!(
            root,
            |reply| SupervisorMsg::Lookup {
                path: path.to_owned(),
                reply
            },
            5_000
        )
        .map_err(|e| RpcError::failed(e.to_string()))?
        .ok_or_else(|| RpcError::failed(format!("no actor at {path}")))?;
        cell.into()
    };
    target
        .cast(SupervisorMsg::Stall { duration })
        .map_err(|e| RpcError::failed(e.to_string()))?;
    Ok(
        json!({ "stalled": if path.is_empty() { "root" } else { path }, "for_ms": duration.as_millis() as u64 }),
    )
}

/// Test hook: crash an actor, or make its starts fail (escalation tests).
async fn debug_fault(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let path = param_path(params, "path")?;
    // Start failures are armed in the context (so they outlive subtree restarts), then the
    // actor is killed so that its supervisor starts it again.
    match protocol::param_str(params, "fault")? {
        "kill" => {}
        "fail_forever" => ctx.inject_start_failures(&path, u32::MAX),
        other => match other
            .strip_prefix("fail_starts:")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => ctx.inject_start_failures(&path, n),
            None => {
                return Err(RpcError::invalid_params(
                    "fault must be kill, fail_forever or fail_starts:N",
                ));
            }
        },
    }
    let root = root(ctx)?;
    ractor::call_t!(
        root,
        |reply| SupervisorMsg::InjectFault {
            path: path.clone(),
            fault: Fault::Kill,
            reply
        },
        10_000
    )
    .map_err(|e| RpcError::failed(e.to_string()))?
    .map_err(|e| RpcError::failed(e.to_string()))?;
    Ok(json!({ "path": path, "injected": true }))
}

// === jobs, queues, dead letters ===

/// Database operations from the admin socket get this long.
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn backends(ctx: &NodeContext) -> Result<Backends, RpcError> {
    if !ctx.migrated() {
        return Err(RpcError::failed(
            "database not ready (migrations not applied yet)",
        ));
    }
    ctx.backends()
        .ok_or_else(|| RpcError::failed("store actor is not running"))
}

pub(crate) fn store_err(e: StoreError) -> RpcError {
    RpcError::failed(e.to_string())
}

pub(crate) fn opt_str<'a>(params: &'a Value, name: &str) -> Result<Option<&'a str>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{name}` must be a string"
        ))),
    }
}

/// An input outside the node's bounds, as the -32602 that names the parameter.
pub(crate) fn invalid(e: LimitError) -> RpcError {
    RpcError::invalid_params(e.to_string())
}

pub(crate) fn opt_u64(params: &Value, name: &str) -> Result<Option<u64>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            RpcError::invalid_params(format!("`{name}` must be a non-negative integer"))
        }),
    }
}

/// An optional integer in `min..=max`; out of range is refused, never clamped.
pub(crate) fn opt_count(
    params: &Value,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, RpcError> {
    opt_u64(params, name)?
        .map(|n| limits::check_count(name, n, min, max).map_err(invalid))
        .transpose()
}

/// An optional database id: a positive integer that fits the id columns (BIGINT).
pub(crate) fn opt_id(params: &Value, name: &str) -> Result<Option<i64>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().filter(|id| *id > 0).map(Some).ok_or_else(|| {
            RpcError::invalid_params(format!("`{name}` must be a positive integer id"))
        }),
    }
}

/// A required database id.
pub(crate) fn param_id(params: &Value, name: &str) -> Result<i64, RpcError> {
    opt_id(params, name)?
        .ok_or_else(|| RpcError::invalid_params(format!("missing `{name}` (an id)")))
}

/// An optional boolean; anything but `true`, `false` or null is refused.
pub(crate) fn opt_bool(params: &Value, name: &str) -> Result<Option<bool>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{name}` must be true or false"
        ))),
    }
}

/// An optional humantime duration (`"30s"`, `"7days"`) of at most `max`.
fn opt_duration(params: &Value, name: &str, max: Duration) -> Result<Option<Duration>, RpcError> {
    opt_str(params, name)?
        .map(|s| limits::parse_duration(name, s, max).map_err(invalid))
        .transpose()
}

/// An optional listing limit: 1 to `limits::MAX_LIST_LIMIT`, 50 when absent.
fn list_limit(params: &Value) -> Result<u32, RpcError> {
    let limit = opt_count(params, "limit", 1, limits::MAX_LIST_LIMIT.into())?.unwrap_or(50);
    Ok(u32::try_from(limit).expect("bounded by MAX_LIST_LIMIT"))
}

/// A queue name parameter: one of `queue.queues` (checked for size first, so a huge or
/// hostile value is never echoed back).
fn check_queue(ctx: &NodeContext, queue: &str) -> Result<(), RpcError> {
    limits::check_text("queue", queue, limits::MAX_ID_CHARS).map_err(invalid)?;
    if ctx.config.queue.queues.iter().any(|q| q == queue) {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!(
            "unknown queue `{queue}` (queues: {})",
            ctx.config.queue.queues.join(", ")
        )))
    }
}

pub(crate) fn wake_dispatcher(ctx: &NodeContext) {
    ctx.queue.wake_for_new_jobs();
}

async fn jobs_enqueue(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let kind = protocol::param_str(params, "kind")?.to_owned();
    limits::check_text("kind", &kind, limits::MAX_ID_CHARS).map_err(invalid)?;
    if !chom_actors::jobs::known_kind(&kind, ctx.debug_hooks) {
        return Err(RpcError::invalid_params(format!(
            "unknown job kind `{kind}`"
        )));
    }
    let payload = match params.get("payload") {
        None | Some(Value::Null) => "{}".to_owned(),
        // A string is taken as JSON text and must parse; anything else is the payload itself.
        Some(Value::String(text)) => {
            serde_json::from_str::<Value>(text)
                .map_err(|e| RpcError::invalid_params(format!("payload is not valid JSON: {e}")))?;
            text.clone()
        }
        Some(other) => other.to_string(),
    };
    if payload.len() > limits::MAX_PAYLOAD_BYTES {
        return Err(RpcError::invalid_params(format!(
            "`payload` must be at most {} bytes, got {}",
            limits::MAX_PAYLOAD_BYTES,
            payload.len()
        )));
    }
    let policy = JobPolicy::resolve(&kind, &ctx.config);
    let queue = opt_str(params, "queue")?.map_or(policy.queue, str::to_owned);
    check_queue(ctx, &queue)?;
    let max_attempts = opt_count(params, "max_attempts", 1, limits::MAX_ATTEMPTS.into())?
        .map(|n| u32::try_from(n).expect("bounded by MAX_ATTEMPTS"));
    let timeout = opt_duration(params, "timeout", limits::MAX_JOB_TIMEOUT)?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(RpcError::invalid_params(
            "`timeout` must be greater than zero",
        ));
    }
    // Bounded like every duration (the store turns it into a timestamp, saturating).
    let delay = opt_duration(params, "delay", limits::MAX_DURATION)?.unwrap_or_default();
    let unique_key = opt_str(params, "unique_key")?;
    if let Some(key) = unique_key {
        limits::check_text("unique_key", key, limits::MAX_UNIQUE_KEY_CHARS).map_err(invalid)?;
    }
    let job = NewJob {
        kind,
        queue,
        payload,
        max_attempts,
        timeout,
        delay,
        unique_key: unique_key.map(str::to_owned),
    };
    let b = backends(ctx)?;
    let enqueued = store::with_timeout(STORE_TIMEOUT, b.store.enqueue(&job))
        .await
        .map_err(store_err)?;
    wake_dispatcher(ctx);
    Ok(json!({ "id": enqueued.id, "existing": enqueued.existing, "queue": enqueued.queue }))
}

async fn jobs_show(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let id = param_id(params, "id")?;
    let b = backends(ctx)?;
    match store::with_timeout(STORE_TIMEOUT, b.store.job(id))
        .await
        .map_err(store_err)?
    {
        Some(job) => Ok(serde_json::to_value(job).expect("job serializes")),
        None => Err(RpcError::failed(format!(
            "no job with id {id} (completed jobs are kept for queue.retention)"
        ))),
    }
}

async fn jobs_list(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let state = opt_str(params, "state")?
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "unknown state `{}` (pending, reserved, completed, failed)",
                    limits::escape_control(truncated(s))
                ))
            })
        })
        .transpose()?;
    // Any queue name may be listed (rows inserted by another program name their own), but
    // only a sane one.
    let queue = opt_str(params, "queue")?;
    if let Some(queue) = queue {
        limits::check_text("queue", queue, limits::MAX_ID_CHARS).map_err(invalid)?;
    }
    let filter = JobFilter {
        queue: queue.map(str::to_owned),
        state,
        limit: list_limit(params)?,
    };
    let b = backends(ctx)?;
    let jobs = store::with_timeout(STORE_TIMEOUT, b.store.jobs(&filter))
        .await
        .map_err(store_err)?;
    Ok(json!({ "jobs": jobs }))
}

async fn jobs_kill_stuck(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let older_than = opt_duration(params, "older_than", limits::MAX_DURATION)?
        .unwrap_or(ctx.config.queue.stuck_after);
    let b = backends(ctx)?;
    let ids = reaper::kill_stuck(&ctx.queue.ctx, &b, older_than)
        .await
        .map_err(store_err)?;
    Ok(json!({ "killed": ids, "older_than": humantime::format_duration(older_than).to_string() }))
}

async fn queue_sizes(ctx: &NodeContext) -> Value {
    let Ok(b) = backends(ctx) else {
        return json!({});
    };
    match store::with_timeout(
        Duration::from_secs(5),
        b.store.queue_stats(&ctx.config.queue.queues),
    )
    .await
    {
        Ok(stats) => stats
            .iter()
            .map(|s| (s.queue.clone(), json!(s.size())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Err(_) => json!({}),
    }
}

async fn queue_stats(ctx: &NodeContext) -> Result<Value, RpcError> {
    let b = backends(ctx)?;
    let stats = store::with_timeout(STORE_TIMEOUT, b.store.queue_stats(&ctx.config.queue.queues))
        .await
        .map_err(store_err)?;
    Ok(json!({ "queues": stats }))
}

async fn queue_pause(ctx: &NodeContext, params: &Value, pause: bool) -> Result<Value, RpcError> {
    let queue = protocol::param_str(params, "queue")?;
    check_queue(ctx, queue)?;
    let b = backends(ctx)?;
    let op = if pause {
        b.store.pause_queue(queue)
    } else {
        b.store.resume_queue(queue)
    };
    store::with_timeout(STORE_TIMEOUT, op)
        .await
        .map_err(store_err)?;
    ctx.queue.invalidate_paused();
    tracing::info!(
        queue,
        paused = pause,
        "queue: {}",
        if pause { "paused" } else { "resumed" }
    );
    Ok(json!({ "queue": queue, "paused": pause }))
}

async fn failed_list(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let limit = list_limit(params)?;
    let b = backends(ctx)?;
    let failed = store::with_timeout(STORE_TIMEOUT, b.store.failed_jobs(limit))
        .await
        .map_err(store_err)?;
    Ok(json!({ "failed": failed }))
}

async fn failed_retry(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let all = opt_bool(params, "all")? == Some(true);
    let id = opt_id(params, "id")?;
    let target = match (id, all) {
        (Some(id), false) => Some(id),
        (None, true) => None,
        _ => return Err(RpcError::invalid_params("give either `id` or `all: true`")),
    };
    let b = backends(ctx)?;
    let ids = store::with_timeout(STORE_TIMEOUT, b.store.retry_failed(target))
        .await
        .map_err(store_err)?;
    if let (Some(id), true) = (target, ids.is_empty()) {
        return Err(RpcError::failed(format!("no failed job with id {id}")));
    }
    wake_dispatcher(ctx);
    Ok(json!({ "retried": ids.len(), "new_job_ids": ids }))
}

async fn failed_prune(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let older_than = opt_duration(params, "older_than", limits::MAX_DURATION)?
        .unwrap_or(Duration::from_secs(24 * 3600));
    let cutoff =
        limits::cutoff_before(chrono::Utc::now(), "older_than", older_than).map_err(invalid)?;
    let b = backends(ctx)?;
    let n = store::with_timeout(STORE_TIMEOUT, b.store.prune_failed(cutoff))
        .await
        .map_err(store_err)?;
    Ok(json!({ "pruned": n, "older_than": humantime::format_duration(older_than).to_string() }))
}

async fn failed_analyze(ctx: &NodeContext) -> Result<Value, RpcError> {
    let b = backends(ctx)?;
    let kinds = reaper::analyze(&ctx.queue.ctx, &b)
        .await
        .map_err(store_err)?;
    let list: Vec<Value> = kinds
        .into_iter()
        .map(|(k, flagged)| json!({ "kind": k.kind, "count": k.count, "last_error": k.last_error, "flagged": flagged }))
        .collect();
    Ok(json!({ "window": "24h", "threshold": ctx.config.queue.analyze_threshold, "kinds": list }))
}

/// At most 64 characters of `s`, for echoing a refused value back.
pub(crate) fn truncated(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}
