//! The admin RPC methods of a running node (SPEC.md "Admin RPC").
//!
//! Each method is one small function; `NodeRpc::call` only dispatches. Methods that later
//! issues add (jobs.*, queue.*, vps.*, ...) answer -32601 until they exist.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::NodeContext;
use chom_actors::{health, tree};
use chom_supervisors::{Fault, SupervisorMsg};
use futures::future::BoxFuture;
use ractor::ActorRef;
use serde_json::{Value, json};

use crate::rpc::protocol::{self, INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError};
use crate::rpc::server::Dispatch;

/// How long the tree may take to answer an introspection call.
const TREE_TIMEOUT: Duration = Duration::from_secs(5);

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
                "health" => Ok(serde_json::to_value(health::run_checks(&ctx).await)
                    .expect("report serializes")),
                "shutdown" => shutdown(&ctx),
                "debug.stall" if ctx.debug_hooks => debug_stall(&ctx, &params).await,
                "debug.fault" if ctx.debug_hooks => debug_fault(&ctx, &params).await,
                other => Err(RpcError::new(
                    METHOD_NOT_FOUND,
                    format!("no method named `{other}`"),
                )),
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
        "queues": {},
        "open_breakers": [],
    }))
}

async fn tree(ctx: &NodeContext) -> Result<Value, RpcError> {
    let report = tree::fetch(root(ctx)?, TREE_TIMEOUT)
        .await
        .map_err(RpcError::failed)?;
    Ok(serde_json::to_value(report).expect("report serializes"))
}

async fn restart(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let path = protocol::param_str(params, "path")?
        .trim_matches('/')
        .to_owned();
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
    let path = params
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_matches('/');
    let duration = humantime::parse_duration(protocol::param_str(params, "duration")?)
        .map_err(|e| RpcError::invalid_params(format!("duration: {e}")))?;
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
    let path = protocol::param_str(params, "path")?
        .trim_matches('/')
        .to_owned();
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
