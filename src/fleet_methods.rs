//! Admin RPC methods of the fleet: servers (`vps.*`), breakers (`breaker.*`), tenants
//! (`tenants.*`, their API tokens included) and sites (`sites.*`).

use chom_actors::context::NodeContext;
use chom_actors::fleet::vps::{BreakerCommand, VpsInfo, VpsMsg, snapshot_key};
use chom_core::inventory::{NewSite, Tenant, VpsServer};
use chom_core::token::Secret;
use serde_json::Value;

use crate::api::node::OpenBreaker;
use crate::api::{self, Method, breaker, debug, sites, tenants, vps};
use crate::methods::{Handle, backends, run, store_err};
use crate::rpc::protocol::RpcError;

/// The fleet's methods; `None` when `method` is not one of them.
pub async fn dispatch(
    ctx: &NodeContext,
    method: &str,
    params: Value,
) -> Option<Result<Value, RpcError>> {
    Some(match method {
        vps::List::NAME => run::<vps::List>(ctx, params).await,
        vps::Add::NAME => run::<vps::Add>(ctx, params).await,
        vps::Remove::NAME => run::<vps::Remove>(ctx, params).await,
        breaker::List::NAME => run::<breaker::List>(ctx, params).await,
        breaker::Reset::NAME => run::<breaker::Reset>(ctx, params).await,
        breaker::Open::NAME => run::<breaker::Open>(ctx, params).await,
        breaker::Close::NAME => run::<breaker::Close>(ctx, params).await,
        tenants::List::NAME => run::<tenants::List>(ctx, params).await,
        tenants::Add::NAME => run::<tenants::Add>(ctx, params).await,
        tenants::Suspend::NAME => run::<tenants::Suspend>(ctx, params).await,
        tenants::Resume::NAME => run::<tenants::Resume>(ctx, params).await,
        tenants::Token::NAME => run::<tenants::Token>(ctx, params).await,
        tenants::Tokens::NAME => run::<tenants::Tokens>(ctx, params).await,
        tenants::Revoke::NAME => run::<tenants::Revoke>(ctx, params).await,
        sites::List::NAME => run::<sites::List>(ctx, params).await,
        sites::Add::NAME => run::<sites::Add>(ctx, params).await,
        sites::Provision::NAME => run::<sites::Provision>(ctx, params).await,
        debug::VpsPanic::NAME if ctx.info.debug_hooks => run::<debug::VpsPanic>(ctx, params).await,
        _ => return None,
    })
}

/// How long one VPS actor may take to answer.
const ACTOR_TIMEOUT_MS: u64 = 5_000;

impl Handle for vps::List {
    async fn handle(self, ctx: &NodeContext) -> Result<vps::Servers, RpcError> {
        let b = backends(ctx)?;
        let servers = b.store.vps_list().await.map_err(store_err)?;
        let running = ctx.fleet.running();
        let vps = servers
            .into_iter()
            .map(|server| vps::ServerRow {
                actor: if running.contains(&server.id) {
                    "running"
                } else {
                    "not running"
                }
                .to_owned(),
                server,
            })
            .collect();
        Ok(vps::Servers { vps })
    }
}

impl Handle for vps::Add {
    async fn handle(self, ctx: &NodeContext) -> Result<vps::Added, RpcError> {
        let server = VpsServer {
            port: self.ssh_port(),
            max_sites: self.capacity(),
            id: self.id,
            host: self.host,
            user: self.user,
            host_key: self.host_key,
            source: "admin".to_owned(),
            tenant_id: self.tenant_id.map(api::Id::get),
        };
        let b = backends(ctx)?;
        b.store.add_vps(&server).await.map_err(store_err)?;
        reconcile(ctx).await?;
        Ok(vps::Added {
            vps: server,
            actor: "running".to_owned(),
        })
    }
}

impl Handle for vps::Remove {
    async fn handle(self, ctx: &NodeContext) -> Result<vps::Removed, RpcError> {
        let id = self.id;
        let b = backends(ctx)?;
        let removed = b.store.remove_vps(&id).await.map_err(store_err)?;
        if !removed {
            return Err(RpcError::failed(format!("no vps `{id}`")));
        }
        reconcile(ctx).await?;
        // A server added again later starts with a fresh breaker.
        let _ = b.cache.delete(&snapshot_key(&id)).await;
        Ok(vps::Removed { removed: id })
    }
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

impl Handle for breaker::List {
    async fn handle(self, ctx: &NodeContext) -> Result<breaker::Breakers, RpcError> {
        let breakers = infos(ctx).await?.into_iter().map(Into::into).collect();
        let observability = &ctx.observability;
        let services = if ctx.config.observability.prometheus_url.is_empty() {
            Vec::new()
        } else {
            vec![breaker::ServiceBreaker {
                service: chom_actors::observability::client::SERVICE.to_owned(),
                address: observability.prometheus_url(),
                breaker: observability.breaker_info(),
            }]
        };
        Ok(breaker::Breakers { breakers, services })
    }
}

/// Servers whose breaker is open or forced open (for `status`). The breaker board says which;
/// only those actors are asked for the reason, so `status` stays cheap on a large fleet.
pub async fn open_breakers(ctx: &NodeContext) -> Vec<OpenBreaker> {
    let fleet = &ctx.fleet;
    let mut out = Vec::new();
    for (service, state) in fleet.ctx.breakers.states() {
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
        out.push(OpenBreaker {
            vps: id.to_owned(),
            state,
            reason,
        });
    }
    out
}

impl Handle for breaker::Reset {
    async fn handle(self, ctx: &NodeContext) -> Result<breaker::ServerBreaker, RpcError> {
        breaker_command(ctx, &self.vps, BreakerCommand::Reset).await
    }
}

impl Handle for breaker::Open {
    async fn handle(self, ctx: &NodeContext) -> Result<breaker::ServerBreaker, RpcError> {
        breaker_command(ctx, &self.vps, BreakerCommand::Open).await
    }
}

impl Handle for breaker::Close {
    async fn handle(self, ctx: &NodeContext) -> Result<breaker::ServerBreaker, RpcError> {
        breaker_command(ctx, &self.vps, BreakerCommand::Close).await
    }
}

async fn breaker_command(
    ctx: &NodeContext,
    id: &str,
    command: BreakerCommand,
) -> Result<breaker::ServerBreaker, RpcError> {
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
    Ok(info.into())
}

impl Handle for debug::VpsPanic {
    async fn handle(self, ctx: &NodeContext) -> Result<debug::Panicked, RpcError> {
        let id = self.vps;
        let actor = ctx
            .fleet
            .actor(&id)
            .ok_or_else(|| RpcError::failed(format!("no running vps `{id}`")))?;
        actor
            .cast(VpsMsg::Panic)
            .map_err(|e| RpcError::failed(e.to_string()))?;
        Ok(debug::Panicked {
            vps: id,
            panicked: true,
        })
    }
}

impl Handle for tenants::List {
    async fn handle(self, ctx: &NodeContext) -> Result<tenants::Tenants, RpcError> {
        let b = backends(ctx)?;
        let tenants = b.store.tenants().await.map_err(store_err)?;
        Ok(tenants::Tenants { tenants })
    }
}

impl Handle for tenants::Suspend {
    async fn handle(self, ctx: &NodeContext) -> Result<Tenant, RpcError> {
        set_tenant_active(ctx, self.tenant.get(), false).await
    }
}

impl Handle for tenants::Resume {
    async fn handle(self, ctx: &NodeContext) -> Result<Tenant, RpcError> {
        set_tenant_active(ctx, self.tenant.get(), true).await
    }
}

/// Suspend or resume a tenant, logging the change (operators' actions are on record).
async fn set_tenant_active(
    ctx: &NodeContext,
    tenant: i64,
    active: bool,
) -> Result<Tenant, RpcError> {
    let b = backends(ctx)?;
    let stored = b
        .store
        .set_tenant_active(tenant, active)
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::failed(format!("no tenant {tenant} (see `chom tenants list`)")))?;
    tracing::info!(tenant, status = %stored.status, "tenant status set");
    Ok(stored)
}

impl Handle for tenants::Add {
    async fn handle(self, ctx: &NodeContext) -> Result<Tenant, RpcError> {
        let b = backends(ctx)?;
        b.store
            .create_tenant(&self.name, self.tier())
            .await
            .map_err(store_err)
    }
}

impl Handle for tenants::Token {
    async fn handle(self, ctx: &NodeContext) -> Result<tenants::Issued, RpcError> {
        let secret = Secret::generate().map_err(|e| RpcError::failed(e.to_string()))?;
        let b = backends(ctx)?;
        let token = b
            .store
            .create_token(self.tenant.get(), self.name(), &secret.hash())
            .await
            .map_err(store_err)?;
        // Who made which token is worth a line; the token itself never is.
        tracing::info!(
            tenant = token.tenant_id,
            token_id = token.id,
            name = %token.name,
            "api token created"
        );
        Ok(tenants::Issued {
            token: secret.expose().to_owned(),
            id: token.id,
            tenant: token.tenant_id,
        })
    }
}

impl Handle for tenants::Tokens {
    async fn handle(self, ctx: &NodeContext) -> Result<tenants::TokenList, RpcError> {
        let b = backends(ctx)?;
        let tokens = b.store.tokens(self.tenant.get()).await.map_err(store_err)?;
        Ok(tenants::TokenList { tokens })
    }
}

impl Handle for tenants::Revoke {
    async fn handle(self, ctx: &NodeContext) -> Result<tenants::Revoked, RpcError> {
        let id = self.id.get();
        let b = backends(ctx)?;
        if !b.store.revoke_token(id).await.map_err(store_err)? {
            return Err(RpcError::failed(format!(
                "no token {id} (see `chom tenants tokens TENANT`)"
            )));
        }
        tracing::info!(token_id = id, "api token revoked");
        Ok(tenants::Revoked { id, revoked: true })
    }
}

impl Handle for sites::List {
    async fn handle(self, ctx: &NodeContext) -> Result<sites::Sites, RpcError> {
        let tenant = self.tenant.map(api::Id::get);
        let b = backends(ctx)?;
        let sites = b.store.sites(tenant).await.map_err(store_err)?;
        Ok(sites::Sites { sites })
    }
}

impl Handle for sites::Add {
    async fn handle(self, ctx: &NodeContext) -> Result<sites::Created, RpcError> {
        let provision = self.provision.unwrap_or(true);
        let new = NewSite {
            tenant_id: self.tenant.get(),
            site_type: self.site_type().to_owned(),
            vps_id: self.vps,
            domain: self.domain,
        };
        let b = backends(ctx)?;
        let (site, job) = crate::sites::create(ctx, &b, &new, provision)
            .await
            .map_err(store_err)?;
        Ok(sites::Created { site, job })
    }
}

impl Handle for sites::Provision {
    async fn handle(self, ctx: &NodeContext) -> Result<sites::Provisioning, RpcError> {
        let id = self.id.get();
        let b = backends(ctx)?;
        b.store
            .site(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| RpcError::failed(format!("no site {id}")))?;
        let job = crate::sites::enqueue_provision(ctx, &b, id)
            .await
            .map_err(store_err)?;
        Ok(sites::Provisioning { job })
    }
}
