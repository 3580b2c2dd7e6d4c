//! Admin RPC methods of the fleet: servers (`vps.*`), breakers (`breaker.*`), tenants
//! (`tenants.*`) and sites (`sites.*`).

use std::time::Duration;

use chom_actors::context::NodeContext;
use chom_actors::fleet::vps::{BreakerCommand, VpsInfo, VpsMsg, snapshot_key};
use chom_core::config::{LOGIN_RULE, NAME_RULE, is_fingerprint, is_host, is_login_name, is_name};
use chom_core::inventory::{NewSite, Tier, VpsServer, check_domain, check_site_type};
use chom_core::job::NewJob;
use chom_core::limits::{self, MAX_HOST_CHARS, MAX_ID_CHARS, MAX_NAME_CHARS, escape_control};
use chom_core::policy::JobPolicy;
use chom_store as store;
use serde_json::{Value, json};

use crate::methods::{
    STORE_TIMEOUT, backends, invalid, opt_bool, opt_id, opt_str, opt_u64, param_id, store_err,
    truncated, wake_dispatcher,
};
use crate::rpc::protocol::{self, RpcError};

/// The fleet's methods; `None` when `method` is not one of them.
pub async fn dispatch(
    ctx: &NodeContext,
    method: &str,
    params: &Value,
) -> Option<Result<Value, RpcError>> {
    Some(match method {
        "vps.list" => vps_list(ctx).await,
        "vps.add" => vps_add(ctx, params).await,
        "vps.remove" => vps_remove(ctx, params).await,
        "breaker.list" => breaker_list(ctx).await,
        "breaker.reset" => breaker_command(ctx, params, BreakerCommand::Reset).await,
        "breaker.open" => breaker_command(ctx, params, BreakerCommand::Open).await,
        "breaker.close" => breaker_command(ctx, params, BreakerCommand::Close).await,
        "tenants.list" => tenants_list(ctx).await,
        "tenants.add" => tenants_add(ctx, params).await,
        "sites.list" => sites_list(ctx, params).await,
        "sites.add" => sites_add(ctx, params).await,
        "sites.provision" => sites_provision(ctx, params).await,
        "debug.vps_panic" if ctx.debug_hooks => vps_panic(ctx, params),
        _ => return None,
    })
}

/// How long one VPS actor may take to answer.
const ACTOR_TIMEOUT_MS: u64 = 5_000;

async fn vps_list(ctx: &NodeContext) -> Result<Value, RpcError> {
    let b = backends(ctx)?;
    let servers = store::with_timeout(STORE_TIMEOUT, b.store.vps_list())
        .await
        .map_err(store_err)?;
    let running = ctx.fleet.running();
    let rows: Vec<Value> = servers
        .into_iter()
        .map(|v| {
            let actor = running.contains(&v.id);
            let mut row = serde_json::to_value(&v).expect("vps serializes");
            row["actor"] = json!(if actor { "running" } else { "not running" });
            row
        })
        .collect();
    Ok(json!({ "vps": rows }))
}

/// A server id parameter: a name of at most `MAX_ID_CHARS` characters.
fn param_vps_id<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    let id = protocol::param_str(params, name)?;
    if !is_name(id) {
        return Err(RpcError::invalid_params(format!(
            "`{name}`: `{}` is not a valid vps id ({NAME_RULE}, at most {MAX_ID_CHARS} characters)",
            escape_control(truncated(id))
        )));
    }
    Ok(id)
}

async fn vps_add(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let id = param_vps_id(params, "id")?;
    let host = protocol::param_str(params, "host")?;
    if !is_host(host) {
        return Err(RpcError::invalid_params(format!(
            "`host`: `{}` is not a host name or IP address of at most {MAX_HOST_CHARS} characters (give the port with --port)",
            escape_control(truncated(host))
        )));
    }
    let user = opt_str(params, "user")?;
    if let Some(user) = user
        && !is_login_name(user)
    {
        return Err(RpcError::invalid_params(format!(
            "`user`: `{}` {LOGIN_RULE}",
            escape_control(truncated(user))
        )));
    }
    let port = match opt_u64(params, "port")? {
        None => 22,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| RpcError::invalid_params("`port` must be between 1 and 65535"))?,
    };
    let host_key = opt_str(params, "host_key")?.map(str::to_owned);
    if let Some(fp) = &host_key
        && !is_fingerprint(fp)
    {
        return Err(RpcError::invalid_params(
            "`host_key` must be a SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:...)",
        ));
    }
    let server = VpsServer {
        id: id.to_owned(),
        host: host.to_owned(),
        port,
        user: user.map(str::to_owned),
        host_key,
        source: "admin".to_owned(),
    };
    let b = backends(ctx)?;
    store::with_timeout(STORE_TIMEOUT, b.store.add_vps(&server))
        .await
        .map_err(store_err)?;
    reconcile(ctx).await?;
    Ok(json!({ "vps": server, "actor": "running" }))
}

async fn vps_remove(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let id = param_vps_id(params, "id")?;
    let b = backends(ctx)?;
    let removed = store::with_timeout(STORE_TIMEOUT, b.store.remove_vps(id))
        .await
        .map_err(store_err)?;
    if !removed {
        return Err(RpcError::failed(format!("no vps `{id}`")));
    }
    reconcile(ctx).await?;
    // A server added again later starts with a fresh breaker.
    let _ = b.cache.delete(&snapshot_key(id)).await;
    Ok(json!({ "removed": id }))
}

async fn reconcile(ctx: &NodeContext) -> Result<(), RpcError> {
    let fleet = &ctx.fleet;
    fleet.reconcile().await.map_err(RpcError::failed)
}

async fn infos(ctx: &NodeContext) -> Result<Vec<VpsInfo>, RpcError> {
    let fleet = &ctx.fleet;
    let mut out = Vec::new();
    for id in fleet.running() {
        if let Some(actor) = fleet.actor(&id)
            && let Ok(info) = ractor::call_t!(actor, VpsMsg::Info, ACTOR_TIMEOUT_MS)
        {
            out.push(info);
        }
    }
    Ok(out)
}

async fn breaker_list(ctx: &NodeContext) -> Result<Value, RpcError> {
    Ok(json!({ "breakers": infos(ctx).await? }))
}

/// Servers whose breaker is open or forced open (for `status`). The exported states say
/// which; only those actors are asked for the reason, so `status` stays cheap on a large fleet.
pub async fn open_breakers(ctx: &NodeContext) -> Vec<Value> {
    let fleet = &ctx.fleet;
    let mut out = Vec::new();
    for (service, state) in ctx.metrics.breaker_states() {
        if !state.is_open() {
            continue;
        }
        let Some(id) = chom_core::inventory::vps_of_service(&service) else {
            continue;
        };
        let reason = match fleet.actor(id) {
            Some(actor) => ractor::call_t!(actor, VpsMsg::Info, ACTOR_TIMEOUT_MS)
                .ok()
                .and_then(|i| i.breaker.reason),
            None => None,
        };
        out.push(json!({ "vps": id, "state": state, "reason": reason }));
    }
    out
}

async fn breaker_command(
    ctx: &NodeContext,
    params: &Value,
    command: BreakerCommand,
) -> Result<Value, RpcError> {
    let id = param_vps_id(params, "vps")?;
    let fleet = &ctx.fleet;
    let actor = fleet
        .actor(id)
        .ok_or_else(|| RpcError::failed(format!("no running vps `{id}` (see `chom vps list`)")))?;
    let info = ractor::call_t!(
        actor,
        |reply| VpsMsg::Operator(command, reply),
        ACTOR_TIMEOUT_MS
    )
    .map_err(|e| RpcError::failed(format!("vps `{id}` did not answer: {e}")))?;
    Ok(serde_json::to_value(info).expect("info serializes"))
}

fn vps_panic(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let id = param_vps_id(params, "vps")?;
    let actor = ctx
        .fleet
        .actor(id)
        .ok_or_else(|| RpcError::failed(format!("no running vps `{id}`")))?;
    actor
        .cast(VpsMsg::Panic)
        .map_err(|e| RpcError::failed(e.to_string()))?;
    Ok(json!({ "vps": id, "panicked": true }))
}

async fn tenants_list(ctx: &NodeContext) -> Result<Value, RpcError> {
    let b = backends(ctx)?;
    let tenants = store::with_timeout(STORE_TIMEOUT, b.store.tenants())
        .await
        .map_err(store_err)?;
    Ok(json!({ "tenants": tenants }))
}

async fn tenants_add(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let name = protocol::param_str(params, "name")?;
    // Characters, not bytes: a name in Greek or Japanese gets the same room as one in English.
    limits::check_text("name", name, MAX_NAME_CHARS).map_err(invalid)?;
    if name.trim().is_empty() {
        return Err(RpcError::invalid_params("`name` must not be blank"));
    }
    let tier = match opt_str(params, "tier")? {
        None => Tier::Starter,
        Some(t) => Tier::parse(t).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "`tier`: unknown tier `{}` (starter, pro or enterprise)",
                escape_control(truncated(t))
            ))
        })?,
    };
    let b = backends(ctx)?;
    let tenant = store::with_timeout(STORE_TIMEOUT, b.store.create_tenant(name, tier))
        .await
        .map_err(store_err)?;
    Ok(serde_json::to_value(tenant).expect("tenant serializes"))
}

async fn sites_list(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let tenant = opt_id(params, "tenant")?;
    let b = backends(ctx)?;
    let sites = store::with_timeout(STORE_TIMEOUT, b.store.sites(tenant))
        .await
        .map_err(store_err)?;
    Ok(json!({ "sites": sites }))
}

async fn sites_add(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let tenant_id = param_id(params, "tenant")?;
    let vps_id = param_vps_id(params, "vps")?.to_owned();
    let domain = protocol::param_str(params, "domain")?.to_owned();
    check_domain(&domain)
        .map_err(|_| RpcError::invalid_params(format!("`domain`: {}", domain_rule(&domain))))?;
    let site_type = opt_str(params, "type")?.unwrap_or("wordpress").to_owned();
    check_site_type(&site_type).map_err(|_| {
        RpcError::invalid_params(format!(
            "`type`: `{}` is not a site type (a lowercase word such as wordpress, laravel, html)",
            escape_control(truncated(&site_type))
        ))
    })?;
    let provision = opt_bool(params, "provision")?.unwrap_or(true);
    let b = backends(ctx)?;
    let site = store::with_timeout(
        STORE_TIMEOUT,
        b.store.create_site(&NewSite {
            tenant_id,
            vps_id,
            domain,
            site_type,
        }),
    )
    .await
    .map_err(store_err)?;
    let job = if provision {
        Some(enqueue_provision(ctx, site.id).await?)
    } else {
        None
    };
    Ok(json!({ "site": site, "job": job }))
}

async fn sites_provision(ctx: &NodeContext, params: &Value) -> Result<Value, RpcError> {
    let id = param_id(params, "id")?;
    let b = backends(ctx)?;
    store::with_timeout(STORE_TIMEOUT, b.store.site(id))
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::failed(format!("no site {id}")))?;
    Ok(json!({ "job": enqueue_provision(ctx, id).await? }))
}

/// Enqueue `site.provision` for a site, at most one pending at a time (unique key per site).
async fn enqueue_provision(ctx: &NodeContext, site: i64) -> Result<i64, RpcError> {
    let policy = JobPolicy::resolve("site.provision", &ctx.config);
    let job = NewJob {
        kind: "site.provision".to_owned(),
        queue: policy.queue,
        payload: json!({ "site": site }).to_string(),
        max_attempts: None,
        timeout: None,
        delay: Duration::ZERO,
        unique_key: Some(format!("site.provision:{site}")),
    };
    let b = backends(ctx)?;
    let enqueued = store::with_timeout(STORE_TIMEOUT, b.store.enqueue(&job))
        .await
        .map_err(store_err)?;
    wake_dispatcher(ctx);
    Ok(enqueued.id)
}

/// Why a domain is refused, echoing at most a short, escaped part of it.
fn domain_rule(domain: &str) -> String {
    format!(
        "`{}` is not a domain name (at most 253 characters of lowercase labels of a-z, 0-9 and -, separated by dots)",
        escape_control(truncated(domain))
    )
}
