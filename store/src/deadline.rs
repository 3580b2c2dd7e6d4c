//! The store's time limits, as a layer around either implementation: every operation ends
//! within its limit, with [`StoreError::Timeout`], so a wedged database (a SIGSTOPed server,
//! dropped packets) turns into an error value instead of a hung caller. Callers do not pick
//! limits; the operation's class does:
//!
//! | class | limit | operations |
//! |---|---|---|
//! | quick | [`Deadlines::quick`] (10 s) | one job or row: enqueue, claim, complete, heartbeat, queue control, inventory, probes, alert counts, API tokens, console users and sessions |
//! | bulk | [`Deadlines::bulk`] (60 s) | many rows: pruning, rescue, the stuck-job killer, dead-letter lists and retries, job lists, stats, a webhook call's alerts, the alert listing |
//! | migrate | [`Deadlines::migrate`] (6 x `database.connect_timeout`, at least 6 s) | migrations |
//!
//! A caller whose own budget is shorter (a health check's `health.check_timeout`) still wraps
//! the call in [`crate::with_timeout`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chom_core::alert::{Alert, AlertCounts, AlertUpdate};
use chom_core::config::DatabaseConfig;
use chom_core::inventory::{NewSite, Site, SiteStatus, Tenant, Tier, VpsServer};
use chom_core::job::{
    Completion, Enqueued, FailedJob, Job, JobFilter, KindFailures, NewJob, QueueStats,
};
use chom_core::token::{ApiToken, TokenHash};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::{
    Alerts, Backend, ClusterNode, Inventory, NodeRecord, Store, StoreError, Tokens, UiSession,
    UiUser, UiUsers, with_timeout,
};

/// What every store operation answers.
type Answer<T> = Result<T, StoreError>;

/// The limit of each class of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// One job or one row.
    pub quick: Duration,
    /// Statements that may touch many rows.
    pub bulk: Duration,
    /// Applying migrations (they may wait for the first connection, and for locks).
    pub migrate: Duration,
}

impl Deadlines {
    /// The limits for a database configured with `cfg`.
    pub fn for_config(cfg: &DatabaseConfig) -> Deadlines {
        Deadlines {
            quick: Duration::from_secs(10),
            bulk: Duration::from_secs(60),
            migrate: cfg.connect_timeout.max(Duration::from_secs(1)) * 6,
        }
    }
}

/// A store whose every operation ends within its [`Deadlines`].
pub struct Deadlined {
    inner: Arc<dyn Store>,
    limits: Deadlines,
}

impl Deadlined {
    /// `inner` under `limits`.
    pub fn new(inner: Arc<dyn Store>, limits: Deadlines) -> Deadlined {
        Deadlined { inner, limits }
    }

    async fn quick<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Answer<T> {
        with_timeout(self.limits.quick, op).await
    }

    async fn bulk<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Answer<T> {
        with_timeout(self.limits.bulk, op).await
    }
}

#[async_trait]
impl Store for Deadlined {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn migrate(&self) -> Answer<()> {
        with_timeout(self.limits.migrate, self.inner.migrate()).await
    }
    async fn ping(&self) -> Answer<Duration> {
        self.quick(self.inner.ping()).await
    }
    async fn probe_write(&self) -> Answer<Duration> {
        self.quick(self.inner.probe_write()).await
    }
    async fn register_node(&self, node: &NodeRecord) -> Answer<()> {
        self.quick(self.inner.register_node(node)).await
    }
    async fn close(&self) {
        // Waits for connections in use to come back; each of those is bounded by its own
        // operation's limit.
        self.inner.close().await;
    }
    async fn enqueue(&self, job: &NewJob) -> Answer<Enqueued> {
        self.quick(self.inner.enqueue(job)).await
    }
    async fn enqueue_many(&self, jobs: &[NewJob]) -> Answer<Vec<Enqueued>> {
        self.bulk(self.inner.enqueue_many(jobs)).await
    }
    async fn claim(&self, node: &str, queues: &[String], limit: u32) -> Answer<Vec<Job>> {
        self.quick(self.inner.claim(node, queues, limit)).await
    }
    async fn complete(&self, node: &str, batch: &[Completion]) -> Answer<()> {
        self.quick(self.inner.complete(node, batch)).await
    }
    async fn job(&self, id: i64) -> Answer<Option<Job>> {
        self.quick(self.inner.job(id)).await
    }
    async fn jobs(&self, filter: &JobFilter) -> Answer<Vec<Job>> {
        self.bulk(self.inner.jobs(filter)).await
    }
    async fn queue_stats(&self, queues: &[String]) -> Answer<Vec<QueueStats>> {
        self.bulk(self.inner.queue_stats(queues)).await
    }
    async fn pause_queue(&self, queue: &str) -> Answer<()> {
        self.quick(self.inner.pause_queue(queue)).await
    }
    async fn resume_queue(&self, queue: &str) -> Answer<()> {
        self.quick(self.inner.resume_queue(queue)).await
    }
    async fn paused_queues(&self) -> Answer<Vec<String>> {
        self.quick(self.inner.paused_queues()).await
    }
    async fn release_node(&self, node: &str) -> Answer<u64> {
        self.quick(self.inner.release_node(node)).await
    }
    async fn rescue_expired(&self, cutoff: DateTime<Utc>, except_node: &str) -> Answer<u64> {
        self.bulk(self.inner.rescue_expired(cutoff, except_node))
            .await
    }
    async fn kill_stuck(&self, cutoff: DateTime<Utc>, reason: &str) -> Answer<Vec<i64>> {
        self.bulk(self.inner.kill_stuck(cutoff, reason)).await
    }
    async fn prune_jobs(&self, cutoff: DateTime<Utc>) -> Answer<u64> {
        self.bulk(self.inner.prune_jobs(cutoff)).await
    }
    async fn heartbeat(&self, node: &str, live_since: DateTime<Utc>, running: u64) -> Answer<u64> {
        self.quick(self.inner.heartbeat(node, live_since, running))
            .await
    }
    async fn cluster_nodes(&self, live_since: DateTime<Utc>) -> Answer<Vec<ClusterNode>> {
        self.quick(self.inner.cluster_nodes(live_since)).await
    }
    async fn failed_jobs(&self, limit: u32) -> Answer<Vec<FailedJob>> {
        self.bulk(self.inner.failed_jobs(limit)).await
    }
    async fn retry_failed(&self, id: Option<i64>) -> Answer<Vec<i64>> {
        self.bulk(self.inner.retry_failed(id)).await
    }
    async fn prune_failed(&self, cutoff: DateTime<Utc>) -> Answer<u64> {
        self.bulk(self.inner.prune_failed(cutoff)).await
    }
    async fn failures_by_kind(&self, since: DateTime<Utc>) -> Answer<Vec<KindFailures>> {
        self.bulk(self.inner.failures_by_kind(since)).await
    }
    async fn failed_since(&self, since: DateTime<Utc>) -> Answer<u64> {
        self.bulk(self.inner.failed_since(since)).await
    }
    async fn listen(&self) -> Answer<Option<BoxStream<'static, ()>>> {
        self.quick(self.inner.listen()).await
    }
}

#[async_trait]
impl Inventory for Deadlined {
    async fn upsert_config_vps(&self, servers: &[VpsServer]) -> Answer<()> {
        self.quick(self.inner.upsert_config_vps(servers)).await
    }
    async fn add_vps(&self, vps: &VpsServer) -> Answer<()> {
        self.quick(self.inner.add_vps(vps)).await
    }
    async fn remove_vps(&self, id: &str) -> Answer<bool> {
        self.quick(self.inner.remove_vps(id)).await
    }
    async fn vps_list(&self) -> Answer<Vec<VpsServer>> {
        self.quick(self.inner.vps_list()).await
    }
    async fn vps(&self, id: &str) -> Answer<Option<VpsServer>> {
        self.quick(self.inner.vps(id)).await
    }
    async fn create_tenant(&self, name: &str, tier: Tier) -> Answer<Tenant> {
        self.quick(self.inner.create_tenant(name, tier)).await
    }
    async fn tenants(&self) -> Answer<Vec<Tenant>> {
        self.quick(self.inner.tenants()).await
    }
    async fn set_tenant_active(&self, id: i64, active: bool) -> Answer<Option<Tenant>> {
        self.quick(self.inner.set_tenant_active(id, active)).await
    }
    async fn create_site(&self, site: &NewSite) -> Answer<Site> {
        self.quick(self.inner.create_site(site)).await
    }
    async fn sites(&self, tenant_id: Option<i64>) -> Answer<Vec<Site>> {
        self.quick(self.inner.sites(tenant_id)).await
    }
    async fn site(&self, id: i64) -> Answer<Option<Site>> {
        self.quick(self.inner.site(id)).await
    }
    async fn set_site_status(
        &self,
        id: i64,
        status: SiteStatus,
        reason: Option<&str>,
    ) -> Answer<bool> {
        self.quick(self.inner.set_site_status(id, status, reason))
            .await
    }
    async fn delete_site(&self, id: i64) -> Answer<bool> {
        self.quick(self.inner.delete_site(id)).await
    }
    async fn inventory_counts(&self) -> Answer<(u64, u64)> {
        self.quick(self.inner.inventory_counts()).await
    }
    async fn site_counts(&self) -> Answer<Vec<(String, u64)>> {
        self.quick(self.inner.site_counts()).await
    }
}

#[async_trait]
impl Alerts for Deadlined {
    async fn apply_alerts(&self, updates: &[AlertUpdate]) -> Answer<()> {
        self.bulk(self.inner.apply_alerts(updates)).await
    }
    async fn active_alerts(&self, limit: u32) -> Answer<Vec<Alert>> {
        self.bulk(self.inner.active_alerts(limit)).await
    }
    async fn alert_counts(&self) -> Answer<AlertCounts> {
        self.quick(self.inner.alert_counts()).await
    }
    async fn forget_stale_alerts(&self, before: DateTime<Utc>) -> Answer<u64> {
        self.quick(self.inner.forget_stale_alerts(before)).await
    }
}

#[async_trait]
impl Tokens for Deadlined {
    async fn create_token(&self, tenant_id: i64, name: &str, hash: &TokenHash) -> Answer<ApiToken> {
        self.quick(self.inner.create_token(tenant_id, name, hash))
            .await
    }
    async fn tokens(&self, tenant_id: i64) -> Answer<Vec<ApiToken>> {
        self.quick(self.inner.tokens(tenant_id)).await
    }
    async fn revoke_token(&self, id: i64) -> Answer<bool> {
        self.quick(self.inner.revoke_token(id)).await
    }
    async fn authenticate(&self, hash: &TokenHash) -> Answer<Option<(ApiToken, Tenant)>> {
        self.quick(self.inner.authenticate(hash)).await
    }
    async fn touch_token(&self, id: i64, now: DateTime<Utc>) -> Answer<bool> {
        self.quick(self.inner.touch_token(id, now)).await
    }
}

#[async_trait]
impl UiUsers for Deadlined {
    async fn create_ui_user(&self, name: &str, password_hash: &str) -> Answer<UiUser> {
        self.quick(self.inner.create_ui_user(name, password_hash))
            .await
    }
    async fn remove_ui_user(&self, name: &str) -> Answer<bool> {
        self.quick(self.inner.remove_ui_user(name)).await
    }
    async fn ui_user(&self, name: &str) -> Answer<Option<UiUser>> {
        self.quick(self.inner.ui_user(name)).await
    }
    async fn create_ui_session(
        &self,
        user_id: i64,
        id_hash: &str,
        idle_before: DateTime<Utc>,
    ) -> Answer<()> {
        self.quick(self.inner.create_ui_session(user_id, id_hash, idle_before))
            .await
    }
    async fn ui_session(
        &self,
        id_hash: &str,
        idle_before: DateTime<Utc>,
    ) -> Answer<Option<UiSession>> {
        self.quick(self.inner.ui_session(id_hash, idle_before))
            .await
    }
    async fn touch_ui_session(&self, id_hash: &str, now: DateTime<Utc>) -> Answer<bool> {
        self.quick(self.inner.touch_ui_session(id_hash, now)).await
    }
    async fn end_ui_session(&self, id_hash: &str) -> Answer<bool> {
        self.quick(self.inner.end_ui_session(id_hash)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL store whose server accepts connections and never answers (a frozen
    /// database, as after SIGSTOP), with a pool that would wait an hour for a connection.
    async fn frozen() -> (Deadlined, tokio::net::TcpListener) {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = DatabaseConfig {
            url: format!("postgres://chom@{}/chom", server.local_addr().unwrap()),
            connect_timeout: Duration::from_secs(3600),
            ..DatabaseConfig::default()
        };
        let inner = Arc::new(crate::PgStore::open(&cfg.url, &cfg).unwrap());
        let limits = Deadlines {
            quick: Duration::from_secs(10),
            bulk: Duration::from_secs(60),
            migrate: Duration::from_secs(30),
        };
        (Deadlined::new(inner, limits), server)
    }

    /// How long `op` took to fail under paused time, and the limit its error names.
    async fn time_out<T: std::fmt::Debug>(
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> (Duration, Duration) {
        let start = tokio::time::Instant::now();
        match op.await {
            Err(StoreError::Timeout(limit)) => (start.elapsed(), limit),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_class_of_operation_ends_at_its_own_limit_on_a_frozen_database() {
        let (store, _server) = frozen().await;
        let now = Utc::now();
        let quick = Duration::from_secs(10);
        let bulk = Duration::from_secs(60);
        assert_eq!(time_out(store.job(1)).await, (quick, quick));
        assert_eq!(
            time_out(store.claim("n", &["default".to_owned()], 1)).await,
            (quick, quick)
        );
        assert_eq!(time_out(store.heartbeat("n", now, 0)).await, (quick, quick));
        assert_eq!(time_out(store.vps_list()).await, (quick, quick));
        let hash = chom_core::token::Secret::from_random(&[0; 32]).hash();
        assert_eq!(time_out(store.authenticate(&hash)).await, (quick, quick));
        assert_eq!(time_out(store.prune_jobs(now)).await, (bulk, bulk));
        assert_eq!(time_out(store.retry_failed(None)).await, (bulk, bulk));
        assert_eq!(time_out(store.rescue_expired(now, "n")).await, (bulk, bulk));
        let migrate = Duration::from_secs(30);
        assert_eq!(time_out(store.migrate()).await, (migrate, migrate));
    }

    #[test]
    fn migrations_get_six_connect_timeouts_and_at_least_six_seconds() {
        let mut cfg = DatabaseConfig {
            connect_timeout: Duration::from_secs(5),
            ..DatabaseConfig::default()
        };
        assert_eq!(Deadlines::for_config(&cfg).migrate, Duration::from_secs(30));
        cfg.connect_timeout = Duration::from_millis(10);
        assert_eq!(Deadlines::for_config(&cfg).migrate, Duration::from_secs(6));
    }
}
