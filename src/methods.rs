//! The admin RPC methods of a running node (SPEC.md "Admin RPC").
//!
//! Every method is a request type of `api` with a [`Handle`] implementation here (or in
//! `fleet_methods` for vps.*, breaker.*, tenants.*, sites.*); `NodeRpc::call` only routes a
//! name to its type. The request arrives decoded and validated ([`api::decode`]); the handler
//! adds the checks that need the node (a known queue or job kind) and does the work.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::{Backends, NodeContext};
use chom_actors::monitors::health;
use chom_actors::queue::reaper;
use chom_actors::tree;
use chom_core::job::{Enqueued, Job, JobFilter, NewJob};
use chom_core::limits;
use chom_core::policy::JobPolicy;
use chom_store::{self as store, StoreError};
use chom_supervisors::{Fault, SupervisorMsg, SupervisorReport};
use futures::future::BoxFuture;
use ractor::ActorRef;
use serde_json::Value;

use crate::api::debug::FaultKind;
use crate::api::{self, Method, invalid};
use crate::rpc::protocol::{INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError};
use crate::rpc::server::Dispatch;

/// How long the tree may take to answer an introspection call.
const TREE_TIMEOUT: Duration = Duration::from_secs(5);

/// A method the node answers: its validated request, handled against the node's context.
pub(crate) trait Handle: Method {
    /// Do the work and answer.
    fn handle(
        self,
        ctx: &NodeContext,
    ) -> impl Future<Output = Result<Self::Reply, RpcError>> + Send;
}

/// Decode `params` as method `M`'s request, handle it, and encode the reply.
pub(crate) async fn run<M: Handle>(ctx: &NodeContext, params: Value) -> Result<Value, RpcError> {
    let request = api::decode::<M>(params)?;
    let reply = request.handle(ctx).await?;
    Ok(serde_json::to_value(reply).expect("a reply serializes"))
}

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
            let ctx = &*ctx;
            use api::{alerts, debug, failed, jobs, metrics, node, queue};
            match method.as_str() {
                node::Status::NAME => run::<node::Status>(ctx, params).await,
                api::cluster::Nodes::NAME => run::<api::cluster::Nodes>(ctx, params).await,
                node::Tree::NAME => run::<node::Tree>(ctx, params).await,
                node::Restart::NAME => run::<node::Restart>(ctx, params).await,
                node::Health::NAME => run::<node::Health>(ctx, params).await,
                node::Shutdown::NAME => run::<node::Shutdown>(ctx, params).await,
                jobs::Enqueue::NAME => run::<jobs::Enqueue>(ctx, params).await,
                jobs::EnqueueMany::NAME => run::<jobs::EnqueueMany>(ctx, params).await,
                jobs::Show::NAME => run::<jobs::Show>(ctx, params).await,
                jobs::List::NAME => run::<jobs::List>(ctx, params).await,
                jobs::KillStuck::NAME => run::<jobs::KillStuck>(ctx, params).await,
                queue::Stats::NAME => run::<queue::Stats>(ctx, params).await,
                queue::Pause::NAME => run::<queue::Pause>(ctx, params).await,
                queue::Resume::NAME => run::<queue::Resume>(ctx, params).await,
                failed::List::NAME => run::<failed::List>(ctx, params).await,
                failed::Retry::NAME => run::<failed::Retry>(ctx, params).await,
                failed::Prune::NAME => run::<failed::Prune>(ctx, params).await,
                failed::Analyze::NAME => run::<failed::Analyze>(ctx, params).await,
                metrics::Query::NAME => run::<metrics::Query>(ctx, params).await,
                alerts::List::NAME => run::<alerts::List>(ctx, params).await,
                api::ui::UserAdd::NAME => run::<api::ui::UserAdd>(ctx, params).await,
                api::ui::UserRemove::NAME => run::<api::ui::UserRemove>(ctx, params).await,
                debug::Stall::NAME if ctx.info.debug_hooks => {
                    run::<debug::Stall>(ctx, params).await
                }
                debug::Fault::NAME if ctx.info.debug_hooks => {
                    run::<debug::Fault>(ctx, params).await
                }
                debug::Inflate::NAME if ctx.info.debug_hooks => {
                    run::<debug::Inflate>(ctx, params).await
                }
                other => match crate::fleet_methods::dispatch(ctx, other, params).await {
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

impl Handle for api::ui::UserAdd {
    async fn handle(self, ctx: &NodeContext) -> Result<api::ui::UserAdded, RpcError> {
        let b = backends(ctx)?;
        let password =
            crate::edge::ui::generate_password().map_err(|e| RpcError::failed(e.to_string()))?;
        let to_hash = password.clone();
        // Argon2id takes tens of milliseconds of CPU: off the runtime's threads.
        let hash = tokio::task::spawn_blocking(move || crate::edge::ui::hash_password(&to_hash))
            .await
            .map_err(|e| RpcError::failed(e.to_string()))?
            .map_err(|e| RpcError::failed(e.to_string()))?;
        let user = b
            .store
            .create_ui_user(&self.name, &hash)
            .await
            .map_err(store_err)?;
        // Who was added is worth a line; the password never is.
        tracing::info!(operator = %user.name, "web console operator added");
        Ok(api::ui::UserAdded {
            name: user.name,
            password,
        })
    }
}

impl Handle for api::ui::UserRemove {
    async fn handle(self, ctx: &NodeContext) -> Result<api::ui::UserRemoved, RpcError> {
        let b = backends(ctx)?;
        let removed = b
            .store
            .remove_ui_user(&self.name)
            .await
            .map_err(store_err)?;
        if removed {
            tracing::info!(operator = %self.name, "web console operator removed; their sessions ended");
        }
        Ok(api::ui::UserRemoved {
            name: self.name,
            removed,
        })
    }
}

fn root(ctx: &NodeContext) -> Result<&ActorRef<SupervisorMsg>, RpcError> {
    ctx.root()
        .ok_or_else(|| RpcError::failed("supervision tree not started"))
}

impl Handle for api::cluster::Nodes {
    async fn handle(self, ctx: &NodeContext) -> Result<api::cluster::ClusterNodes, RpcError> {
        let b = backends(ctx)?;
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(chom_actors::queue::reaper::LIVE_WINDOW)
                .unwrap_or_default();
        let nodes = b.store.cluster_nodes(since).await.map_err(store_err)?;
        Ok(api::cluster::ClusterNodes { nodes })
    }
}

impl Handle for api::node::Status {
    async fn handle(self, ctx: &NodeContext) -> Result<api::node::StatusReply, RpcError> {
        let report = tree::fetch(root(ctx)?, TREE_TIMEOUT)
            .await
            .map_err(RpcError::failed)?;
        let backends = ctx.backends();
        Ok(api::node::StatusReply {
            version: ctx.info.version.to_owned(),
            node: ctx.info.node_name.clone(),
            pid: std::process::id(),
            uptime_secs: ctx.info.started_at.elapsed().as_secs(),
            started_at: chrono::DateTime::<chrono::Utc>::from(ctx.info.started_wall)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ready: ctx.ready(),
            http: ctx.http_addr.get().map(|a| a.to_string()),
            api: ctx.api_addr.get().map(|a| a.to_string()),
            ui: ctx.ui_addr.get().map(|a| a.to_string()),
            admin_socket: ctx.config.admin.socket.display().to_string(),
            database: backends
                .as_ref()
                .map(|b| b.store.backend().as_str().to_owned()),
            cache: backends.as_ref().map(|b| b.cache.kind().to_owned()),
            tree: tree::summarize(&report),
            memory_rss_bytes: chom_actors::sys::rss_bytes(),
            memory: ctx.memory_status(),
            queues: queue_sizes(ctx).await,
            claiming: ctx.queue.active_queues().await,
            open_breakers: crate::fleet_methods::open_breakers(ctx).await,
            live_nodes: ctx.queue.live_nodes(),
        })
    }
}

impl Handle for api::node::Tree {
    async fn handle(self, ctx: &NodeContext) -> Result<SupervisorReport, RpcError> {
        tree::fetch(root(ctx)?, TREE_TIMEOUT)
            .await
            .map_err(RpcError::failed)
    }
}

impl Handle for api::node::Restart {
    async fn handle(self, ctx: &NodeContext) -> Result<api::node::Restarted, RpcError> {
        let path = self.actor_path().to_owned();
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
        Ok(api::node::Restarted {
            state: child.map(|c| c.state),
            restart_count: child.map(|c| c.restart_count),
            path,
        })
    }
}

impl Handle for api::node::Health {
    async fn handle(self, ctx: &NodeContext) -> Result<health::HealthReport, RpcError> {
        Ok(health::run_checks(&ctx.checks()).await)
    }
}

impl Handle for api::node::Shutdown {
    async fn handle(self, ctx: &NodeContext) -> Result<api::node::ShuttingDown, RpcError> {
        ctx.request_shutdown();
        Ok(api::node::ShuttingDown {
            shutting_down: true,
        })
    }
}

/// Test hook: make a supervisor's mailbox unresponsive for a while (watchdog tests).
impl Handle for api::debug::Stall {
    async fn handle(self, ctx: &NodeContext) -> Result<api::debug::Stalled, RpcError> {
        let path = self.supervisor();
        let duration = self.duration.0;
        let root = root(ctx)?;
        let target: ActorRef<SupervisorMsg> = if path.is_empty() {
            root.clone()
        } else {
            supervisor_at(root, path).await?
        };
        target
            .cast(SupervisorMsg::Stall { duration })
            .map_err(|e| RpcError::failed(e.to_string()))?;
        Ok(api::debug::Stalled {
            stalled: if path.is_empty() { "root" } else { path }.to_owned(),
            for_ms: duration.as_millis() as u64,
        })
    }
}

/// The supervisor at `path` (not the root).
async fn supervisor_at(
    root: &ActorRef<SupervisorMsg>,
    path: &str,
) -> Result<ActorRef<SupervisorMsg>, RpcError> {
    let report = tree::fetch(root, TREE_TIMEOUT)
        .await
        .map_err(RpcError::failed)?;
    match tree::find(&report, path) {
        Some(child) if child.kind == chom_supervisors::ChildKind::Supervisor => {}
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
    Ok(cell.into())
}

/// Test hook: crash an actor, or make its starts fail (escalation tests).
impl Handle for api::debug::Fault {
    async fn handle(self, ctx: &NodeContext) -> Result<api::debug::Injected, RpcError> {
        let path = self.actor_path().to_owned();
        // Start failures are armed in the context (so they outlive subtree restarts), then the
        // actor is killed so that its supervisor starts it again.
        if let Some(FaultKind::FailStarts(n)) = self.kind() {
            ctx.inject_start_failures(&path, n);
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
        Ok(api::debug::Injected {
            path,
            injected: true,
        })
    }
}

/// Test hook: hold memory (memory monitor tests).
impl Handle for api::debug::Inflate {
    async fn handle(self, _: &NodeContext) -> Result<api::debug::Inflated, RpcError> {
        let bytes = usize::try_from(self.bytes.unwrap_or(0)).expect("validated to fit");
        if bytes == 0 {
            chom_actors::monitors::memory::deflate();
        } else {
            chom_actors::monitors::memory::inflate(bytes);
        }
        Ok(api::debug::Inflated {
            inflated: bytes,
            rss_bytes: chom_actors::sys::rss_bytes(),
        })
    }
}

// === alerts ===

impl Handle for api::alerts::List {
    async fn handle(self, ctx: &NodeContext) -> Result<api::alerts::Alerts, RpcError> {
        let limit = chom_core::alert::MAX_ACTIVE_LISTED;
        let alerts = backends(ctx)?
            .store
            .active_alerts(limit)
            .await
            .map_err(store_err)?;
        Ok(api::alerts::Alerts { alerts })
    }
}

// === jobs, queues, dead letters ===

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

impl Handle for api::jobs::Enqueue {
    async fn handle(self, ctx: &NodeContext) -> Result<Enqueued, RpcError> {
        let job = new_job(ctx, self)?;
        let b = backends(ctx)?;
        let enqueued = b.store.enqueue(&job).await.map_err(store_err)?;
        wake_dispatcher(ctx);
        Ok(enqueued)
    }
}

impl Handle for api::jobs::EnqueueMany {
    async fn handle(self, ctx: &NodeContext) -> Result<api::jobs::EnqueuedMany, RpcError> {
        let jobs = self
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                new_job(ctx, job).map_err(|mut e| {
                    e.message = format!("jobs[{i}]: {}", e.message);
                    e
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let b = backends(ctx)?;
        let enqueued = b.store.enqueue_many(&jobs).await.map_err(store_err)?;
        wake_dispatcher(ctx);
        Ok(api::jobs::EnqueuedMany {
            ids: enqueued.into_iter().map(|e| e.id).collect(),
        })
    }
}

/// The job a `jobs.enqueue` request asks for, after the checks that need the node (a known
/// kind, a configured queue) and the kind's policy for what it leaves out.
fn new_job(ctx: &NodeContext, request: api::jobs::Enqueue) -> Result<NewJob, RpcError> {
    if !chom_actors::jobs::known_kind(&request.kind, ctx.info.debug_hooks) {
        return Err(RpcError::invalid_params(format!(
            "unknown job kind `{}`",
            request.kind
        )));
    }
    let policy = JobPolicy::resolve(&request.kind, &ctx.config);
    let queue = request.queue.clone().unwrap_or(policy.queue);
    check_queue(ctx, &queue)?;
    Ok(NewJob {
        payload: request.payload_text(),
        max_attempts: request.attempts(),
        timeout: request.timeout.map(|t| t.0),
        delay: request.delay.map(|d| d.0).unwrap_or_default(),
        kind: request.kind,
        queue,
        unique_key: request.unique_key,
    })
}

impl Handle for api::jobs::Show {
    async fn handle(self, ctx: &NodeContext) -> Result<Job, RpcError> {
        let id = self.id.get();
        let b = backends(ctx)?;
        b.store.job(id).await.map_err(store_err)?.ok_or_else(|| {
            RpcError::failed(format!(
                "no job with id {id} (completed jobs are kept for queue.retention)"
            ))
        })
    }
}

impl Handle for api::jobs::List {
    async fn handle(self, ctx: &NodeContext) -> Result<api::jobs::Jobs, RpcError> {
        let filter = JobFilter {
            state: self.job_state(),
            limit: api::list_limit(self.limit),
            queue: self.queue,
        };
        let b = backends(ctx)?;
        let jobs = b.store.jobs(&filter).await.map_err(store_err)?;
        Ok(api::jobs::Jobs { jobs })
    }
}

impl Handle for api::jobs::KillStuck {
    async fn handle(self, ctx: &NodeContext) -> Result<api::jobs::Killed, RpcError> {
        let older_than = self
            .older_than
            .map_or(ctx.config.queue.stuck_after, |d| d.0);
        let b = backends(ctx)?;
        let killed = reaper::kill_stuck(&ctx.queue.ctx, &b, older_than)
            .await
            .map_err(store_err)?;
        Ok(api::jobs::Killed {
            killed,
            older_than: humantime::format_duration(older_than).to_string(),
        })
    }
}

/// Jobs waiting or running per queue for `status`; empty when the database does not answer.
async fn queue_sizes(ctx: &NodeContext) -> std::collections::BTreeMap<String, u64> {
    let Ok(b) = backends(ctx) else {
        return Default::default();
    };
    // `status` answers quickly even when the database is slow: 5 s of its own, not the
    // store's limit for statistics.
    match store::with_timeout(
        Duration::from_secs(5),
        b.store.queue_stats(&ctx.config.queue.queues),
    )
    .await
    {
        Ok(stats) => stats.iter().map(|s| (s.queue.clone(), s.size())).collect(),
        Err(_) => Default::default(),
    }
}

impl Handle for api::queue::Stats {
    async fn handle(self, ctx: &NodeContext) -> Result<api::queue::QueueStatsReply, RpcError> {
        let b = backends(ctx)?;
        let queues = b
            .store
            .queue_stats(&ctx.config.queue.queues)
            .await
            .map_err(store_err)?;
        Ok(api::queue::QueueStatsReply { queues })
    }
}

impl Handle for api::queue::Pause {
    async fn handle(self, ctx: &NodeContext) -> Result<api::queue::Paused, RpcError> {
        queue_pause(ctx, self.queue, true).await
    }
}

impl Handle for api::queue::Resume {
    async fn handle(self, ctx: &NodeContext) -> Result<api::queue::Paused, RpcError> {
        queue_pause(ctx, self.queue, false).await
    }
}

async fn queue_pause(
    ctx: &NodeContext,
    queue: String,
    pause: bool,
) -> Result<api::queue::Paused, RpcError> {
    check_queue(ctx, &queue)?;
    let b = backends(ctx)?;
    let op = if pause {
        b.store.pause_queue(&queue)
    } else {
        b.store.resume_queue(&queue)
    };
    op.await.map_err(store_err)?;
    ctx.queue.invalidate_paused();
    tracing::info!(
        queue,
        paused = pause,
        "queue: {}",
        if pause { "paused" } else { "resumed" }
    );
    Ok(api::queue::Paused {
        queue,
        paused: pause,
    })
}

impl Handle for api::failed::List {
    async fn handle(self, ctx: &NodeContext) -> Result<api::failed::Failed, RpcError> {
        let limit = api::list_limit(self.limit);
        let b = backends(ctx)?;
        let failed = b.store.failed_jobs(limit).await.map_err(store_err)?;
        Ok(api::failed::Failed { failed })
    }
}

impl Handle for api::failed::Retry {
    async fn handle(self, ctx: &NodeContext) -> Result<api::failed::Retried, RpcError> {
        let target = self.target();
        let b = backends(ctx)?;
        let ids = b.store.retry_failed(target).await.map_err(store_err)?;
        if let (Some(id), true) = (target, ids.is_empty()) {
            return Err(RpcError::failed(format!("no failed job with id {id}")));
        }
        wake_dispatcher(ctx);
        Ok(api::failed::Retried {
            retried: ids.len(),
            new_job_ids: ids,
        })
    }
}

impl Handle for api::failed::Prune {
    async fn handle(self, ctx: &NodeContext) -> Result<api::failed::Pruned, RpcError> {
        let older_than = self
            .older_than
            .map_or(Duration::from_secs(24 * 3600), |d| d.0);
        let cutoff =
            limits::cutoff_before(chrono::Utc::now(), "older_than", older_than).map_err(invalid)?;
        let b = backends(ctx)?;
        let pruned = b.store.prune_failed(cutoff).await.map_err(store_err)?;
        Ok(api::failed::Pruned {
            pruned,
            older_than: humantime::format_duration(older_than).to_string(),
        })
    }
}

impl Handle for api::failed::Analyze {
    async fn handle(self, ctx: &NodeContext) -> Result<api::failed::Analysis, RpcError> {
        let b = backends(ctx)?;
        let kinds = reaper::analyze(&ctx.queue.ctx, &b)
            .await
            .map_err(store_err)?;
        Ok(api::failed::Analysis {
            window: "24h".to_owned(),
            threshold: ctx.config.queue.analyze_threshold,
            kinds: kinds
                .into_iter()
                .map(|(k, flagged)| api::failed::KindReport {
                    kind: k.kind,
                    count: k.count,
                    last_error: k.last_error,
                    flagged,
                })
                .collect(),
        })
    }
}

impl Handle for api::metrics::Query {
    async fn handle(self, ctx: &NodeContext) -> Result<api::metrics::Answer, RpcError> {
        use chom_actors::observability::QueryError;
        let answer = ctx
            .observability
            .query(&self.query, self.time.as_deref())
            .await
            .map_err(|e| match e {
                QueryError::Invalid(why) => RpcError::invalid_params(why),
                other => RpcError::failed(other.to_string()),
            })?;
        serde_json::from_value(answer)
            .map_err(|e| RpcError::failed(format!("unexpected answer from prometheus: {e}")))
    }
}
