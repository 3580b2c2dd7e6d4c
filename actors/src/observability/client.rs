//! The one client of the observability host's Prometheus: a reachability probe whose verdict
//! is kept for `observability.cache_ttl`, the `observability` circuit breaker, live PromQL
//! queries under `observability.query_timeout`, and every successful result kept in the cache
//! for `observability.result_ttl` to answer from while the host is unreachable, slow or its
//! breaker is open. What to do at each step is decided by `chom_core::observe` (pure); this
//! file does the IO.
//!
//! A handle, not an actor's mailbox: queries run concurrently in their callers' tasks and
//! share the breaker and the verdict under a lock never held across an await. Probes are
//! single-flight, so a burst of queries against a dead host costs one probe, not one each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chom_core::breaker::{Breaker, BreakerSettings, BreakerState, Permit};
use chom_core::config::ObservabilityConfig;
use chom_core::job::KindFailures;
use chom_core::observe::{self, Fallback, Outcome, Reachability, SpikeAlert, SpikeTracker, Step};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::backends::PublishedBackends;
use crate::fleet::breakers::BreakerBoard;
use crate::http::{HttpClient, describe};
use crate::metrics::Metrics;

/// The breaker's service name, in metrics and `chom breaker list`.
pub const SERVICE: &str = "observability";

/// Largest Prometheus answer read (bytes); a larger one is refused rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Largest answer kept in the cache (bytes): the cache is shared memory (or Redis), and a
/// dashboard-sized answer is far below this.
const MAX_CACHED_BYTES: usize = 1024 * 1024;

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// `observability.prometheus_url` is empty.
    #[error("observability.prometheus_url is not configured")]
    NotConfigured,
    /// The query text or time is not acceptable (before anything is sent).
    #[error("{0}")]
    Invalid(String),
    /// Prometheus refused the query (bad PromQL, an execution error): the host is fine.
    #[error("prometheus refused the query: {0}")]
    Refused(String),
    /// Neither a live nor a cached answer.
    #[error("{reason} and no cached answer is available")]
    Unavailable {
        /// Why there was no live answer.
        reason: String,
    },
}

/// What the client knows about the host's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `observability.prometheus_url` is empty.
    NotConfigured,
    /// The host answered its probe (`cached`: a verdict younger than `cache_ttl`).
    Reachable {
        /// From the kept verdict, without a request.
        cached: bool,
    },
    /// The host did not answer its probe.
    Unreachable {
        /// From the kept verdict, without a request.
        cached: bool,
    },
    /// The observability breaker is open: no call is made until it lets a trial through.
    BreakerOpen,
}

/// What the client needs, each a narrow handle built in wiring.
#[derive(Clone)]
pub struct ObservabilityDeps {
    /// `[observability]`.
    pub config: ObservabilityConfig,
    /// `[breaker]`, for the observability breaker.
    pub breaker: BreakerSettings,
    /// Counters and the breaker gauges.
    pub metrics: Metrics,
    /// Where breaker states are published for health, status and `chom breaker list`.
    pub breakers: BreakerBoard,
    /// The cache, while the store actor runs.
    pub backends: PublishedBackends,
}

/// Cheap to clone; every clone shares the breaker, the verdict and the probe.
#[derive(Clone)]
pub struct ObservabilityClient {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ObservabilityDeps,
    http: HttpClient,
    state: Mutex<State>,
    probing: tokio::sync::Mutex<()>,
}

struct State {
    breaker: Breaker,
    reach: Reachability,
    spikes: SpikeTracker,
}

/// How one call to the host went, for the breaker and the verdict.
enum Call<T> {
    /// The host answered (even if it refused the query).
    Answered(T),
    /// Transport failure, timeout or an answer that is not Prometheus'.
    Failed(String),
}

impl ObservabilityClient {
    /// A client with a closed breaker and nothing known.
    pub fn new(deps: ObservabilityDeps) -> Self {
        let state = State {
            breaker: Breaker::new(deps.breaker.clone()),
            reach: Reachability::new(deps.config.cache_ttl),
            spikes: SpikeTracker::default(),
        };
        deps.metrics.set_breaker(SERVICE, BreakerState::Closed);
        deps.breakers.set(SERVICE, BreakerState::Closed);
        ObservabilityClient {
            inner: Arc::new(Inner {
                deps,
                // No client-wide timeout: each request carries its own limit.
                http: HttpClient::shared().clone(),
                state: Mutex::new(state),
                probing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The breaker's state and details, for `chom breaker list`.
    pub fn breaker_info(&self) -> chom_core::breaker::BreakerInfo {
        self.lock().breaker.info(Instant::now())
    }

    /// Answer `query` (at `time`, RFC 3339 or Unix seconds; now when `None`): Prometheus'
    /// `data` object plus `_cached`, and when cached `cached_at` and `_warning`.
    pub async fn query(&self, query: &str, time: Option<&str>) -> Result<Value, QueryError> {
        check_query(query, time)?;
        let base = self.base().ok_or(QueryError::NotConfigured)?;
        let key = observe::cache_key(query, time);
        let (outcome, answer) = self.answer(&base, &key, query, time).await;
        self.inner
            .deps
            .metrics
            .observability_query(outcome.as_str());
        answer
    }

    async fn answer(
        &self,
        base: &str,
        key: &str,
        query: &str,
        time: Option<&str>,
    ) -> (Outcome, Result<Value, QueryError>) {
        // At most: a probe, then the live query or the cache.
        for _ in 0..3 {
            let (permit, step) = self.next_step();
            match (step, permit) {
                (Step::Probe, Some(permit)) => self.probe(base, permit).await,
                (Step::Live, Some(permit)) => match self.live(base, query, time, permit).await {
                    Call::Answered(Ok(data)) => {
                        self.remember(key, &data).await;
                        return (Outcome::Live, Ok(with_cached(data, None)));
                    }
                    Call::Answered(Err(refused)) => {
                        return (Outcome::Failed, Err(QueryError::Refused(refused)));
                    }
                    Call::Failed(_) => return self.cached(key, Fallback::LiveFailed).await,
                },
                (Step::Cached(fallback), _) => return self.cached(key, fallback).await,
                (_, None) => unreachable!("next_step answers Cached without a permit"),
            }
        }
        self.cached(key, Fallback::Unreachable).await
    }

    /// Whether the host answers, for the `observability` health check: the fresh verdict
    /// when there is one (no request), else one probe through the breaker (single-flight,
    /// within `observability.timeout`). An open breaker is reported without a call.
    pub async fn reachability(&self) -> Reach {
        let Some(base) = self.base() else {
            return Reach::NotConfigured;
        };
        let (permit, step) = self.next_step();
        match (step, permit) {
            (Step::Probe, Some(permit)) => {
                self.probe(&base, permit).await;
                match self.lock().reach.known(Instant::now()) {
                    Some(true) => Reach::Reachable { cached: false },
                    _ => Reach::Unreachable { cached: false },
                }
            }
            (Step::Live, Some(permit)) => {
                self.lock().breaker.on_cancel(permit);
                Reach::Reachable { cached: true }
            }
            (Step::Cached(Fallback::BreakerOpen), _) => Reach::BreakerOpen,
            (Step::Cached(_), _) => Reach::Unreachable { cached: true },
            (_, None) => unreachable!("next_step answers Cached without a permit"),
        }
    }

    /// The configured Prometheus URL with any credentials masked (for reports).
    pub fn prometheus_url(&self) -> String {
        chom_core::config::redact_url(&self.inner.deps.config.prometheus_url)
    }

    /// Why no request can reach the configured Prometheus from this host (an https:// URL
    /// without CA certificates), if so.
    pub fn prometheus_refused(&self) -> Option<&str> {
        let url = &self.inner.deps.config.prometheus_url;
        self.inner.http.refuses(url).filter(|_| !url.is_empty())
    }

    /// Tell Alertmanager which job kinds have a dead-letter spike (`ChomDeadLetterSpike`,
    /// firing until `hold` from now unless re-sent) and which no longer do (resolved now).
    /// Returns how many alerts were sent; a push that fails is retried whole by the next call.
    pub async fn push_dead_letters(
        &self,
        flagged: &[KindFailures],
        hold: Duration,
    ) -> Result<usize, String> {
        let base = self
            .inner
            .deps
            .config
            .alertmanager_url
            .trim_end_matches('/');
        if base.is_empty() {
            return Ok(0);
        }
        let kinds: Vec<String> = flagged.iter().map(|k| k.kind.clone()).collect();
        let now = Utc::now();
        let (permit, plan) = {
            let mut state = self.lock();
            let plan = state.spikes.plan(&kinds, now);
            if plan.is_empty() {
                return Ok(0);
            }
            match state.breaker.try_acquire(Instant::now()) {
                Ok(permit) => (permit, plan),
                Err(_) => return Err("the observability breaker is open".to_owned()),
            }
        };
        let body: Vec<Value> = plan
            .iter()
            .map(|alert| spike_json(alert, flagged, now, hold))
            .collect();
        let request = self
            .inner
            .http
            .post(&format!("{base}/api/v2/alerts"))
            .map(|r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(Value::Array(body).to_string())
                    .timeout(self.inner.deps.config.timeout)
            });
        let call = expect_success(request, "alertmanager").await;
        self.settle(permit, &call);
        match call {
            Call::Answered(()) => {
                self.lock().spikes.commit(&plan);
                Ok(plan.len())
            }
            Call::Failed(why) => Err(why),
        }
    }

    /// Post one gzipped Loki push body to `loki_url`, behind the breaker, within
    /// `observability.timeout`.
    pub async fn push_logs(&self, body: Vec<u8>) -> Result<(), String> {
        let base = self.inner.deps.config.loki_url.trim_end_matches('/');
        if base.is_empty() {
            return Err("observability.loki_url is not configured".to_owned());
        }
        let permit = self
            .lock()
            .breaker
            .try_acquire(Instant::now())
            .map_err(|_| "the observability breaker is open".to_owned())?;
        let request = self
            .inner
            .http
            .post(&format!("{base}/loki/api/v1/push"))
            .map(|r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(reqwest::header::CONTENT_ENCODING, "gzip")
                    .body(body)
                    .timeout(self.inner.deps.config.timeout)
            });
        let call = expect_success(request, "loki").await;
        self.settle(permit, &call);
        match call {
            Call::Answered(()) => Ok(()),
            Call::Failed(why) => Err(why),
        }
    }

    /// The next step, with the breaker's permit when a call is to be made.
    fn next_step(&self) -> (Option<Permit>, Step) {
        let now = Instant::now();
        let mut state = self.lock();
        let permit = state.breaker.try_acquire(now).ok();
        let step = observe::next_step(permit.is_some(), state.reach.known(now));
        match (step, permit) {
            (Step::Cached(_), Some(permit)) => {
                state.breaker.on_cancel(permit);
                (None, step)
            }
            (step, permit) => (permit, step),
        }
    }

    /// Probe `/-/healthy` unless another caller's probe already answered meanwhile.
    async fn probe(&self, base: &str, permit: Permit) {
        let _single = self.inner.probing.lock().await;
        if self.lock().reach.known(Instant::now()).is_some() {
            self.lock().breaker.on_cancel(permit);
            return;
        }
        let call = self.ping(base).await;
        self.settle(permit, &call);
    }

    /// `GET /-/healthy` under `observability.timeout`.
    async fn ping(&self, base: &str) -> Call<()> {
        let started = Instant::now();
        let limit = self.inner.deps.config.timeout;
        let request = self
            .inner
            .http
            .get(&format!("{base}/-/healthy"))
            .map(|r| r.timeout(limit));
        let call = expect_success(request, "prometheus").await;
        self.inner
            .deps
            .metrics
            .observability_probe(started.elapsed());
        if let Call::Failed(why) = &call {
            debug!(error = %why, "observability: probe failed");
        }
        call
    }

    /// One live query under `query_timeout`.
    async fn live(
        &self,
        base: &str,
        query: &str,
        time: Option<&str>,
        permit: Permit,
    ) -> Call<Result<Value, String>> {
        let limit = self.inner.deps.config.query_timeout;
        // Prometheus stops evaluating a little before the client gives up, so a slow query
        // comes back as Prometheus' own timeout error, not as a cut connection.
        let server_limit = limit
            .saturating_sub(Duration::from_millis(500))
            .max(Duration::from_millis(100));
        let mut params = vec![
            ("query", query.to_owned()),
            ("timeout", format!("{}ms", server_limit.as_millis())),
        ];
        if let Some(time) = time {
            params.push(("time", time.to_owned()));
        }
        let url = match reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &params) {
            Ok(url) => url,
            Err(e) => {
                // Checked when the config loaded; not the host's fault if it happens.
                self.lock().breaker.on_cancel(permit);
                return Call::Failed(format!("bad prometheus_url: {e}"));
            }
        };
        let exchange = async {
            let request = match self.inner.http.request(reqwest::Method::GET, url) {
                Ok(request) => request.timeout(limit),
                Err(why) => return Call::Failed(why),
            };
            match request.send().await {
                Ok(response) => read_answer(response).await,
                Err(e) => Call::Failed(describe(e)),
            }
        };
        tokio::pin!(exchange);
        // A query still unanswered after the probe's timeout: a slow query on a live host
        // keeps its query_timeout, but a host that does not answer its probe either is
        // given up on now, so a frozen host costs two probe timeouts, not the query timeout.
        let probe_after = self.inner.deps.config.timeout;
        let call = tokio::select! {
            call = &mut exchange => call,
            () = tokio::time::sleep(probe_after) => match self.ping(base).await {
                Call::Answered(()) => exchange.await,
                Call::Failed(why) => Call::Failed(format!("no answer, and the probe failed: {why}")),
            },
        };
        if let Call::Failed(why) = &call {
            warn!(error = %why, "observability: live query failed; answering from the cache");
        }
        self.settle(permit, &call);
        call
    }

    /// Report a call's outcome to the breaker and the verdict; publish a changed state.
    fn settle<T>(&self, permit: Permit, call: &Call<T>) {
        let now = Instant::now();
        let mut state = self.lock();
        let before = state.breaker.state(now);
        match call {
            Call::Answered(_) => {
                state.breaker.on_success(permit, now);
                state.reach.record(now, true);
            }
            Call::Failed(_) => {
                state.breaker.on_failure(permit, now);
                state.reach.record(now, false);
            }
        }
        let after = state.breaker.state(now);
        drop(state);
        if before != after {
            self.publish(before, after);
        }
    }

    fn publish(&self, before: BreakerState, after: BreakerState) {
        let deps = &self.inner.deps;
        deps.metrics.set_breaker(SERVICE, after);
        deps.breakers.set(SERVICE, after);
        if after == BreakerState::Open {
            deps.metrics.breaker_tripped(SERVICE);
            warn!(
                from = before.as_str(),
                "observability: circuit breaker opened"
            );
        } else {
            info!(
                from = before.as_str(),
                to = after.as_str(),
                "observability: circuit breaker changed"
            );
        }
    }

    /// Keep a live answer for `result_ttl` (best effort: a cache that is down or an answer too
    /// large to keep only means no fallback for this query later).
    async fn remember(&self, key: &str, data: &Value) {
        let Some(backends) = self.inner.deps.backends.current() else {
            return;
        };
        let entry = json!({ "data": data, "cached_at": Utc::now().to_rfc3339() }).to_string();
        if entry.len() > MAX_CACHED_BYTES {
            debug!(
                bytes = entry.len(),
                "observability: answer too large to cache"
            );
            return;
        }
        let ttl = Some(self.inner.deps.config.result_ttl);
        if let Err(e) = backends.cache.set(key, &entry, ttl).await {
            debug!(error = %e, "observability: could not cache the answer");
        }
    }

    async fn cached(&self, key: &str, fallback: Fallback) -> (Outcome, Result<Value, QueryError>) {
        let unavailable = || QueryError::Unavailable {
            reason: fallback.reason().to_owned(),
        };
        let Some(backends) = self.inner.deps.backends.current() else {
            return (Outcome::Failed, Err(unavailable()));
        };
        let entry = match backends.cache.get(key).await {
            Ok(Some(text)) => parse_entry(&text),
            Ok(None) => None,
            Err(e) => {
                debug!(error = %e, "observability: cache unreadable");
                None
            }
        };
        let now = Utc::now();
        match entry {
            Some((data, at)) if observe::usable(at, now, self.inner.deps.config.result_ttl) => {
                let warning = observe::warning(fallback, at, now);
                (Outcome::Cached, Ok(with_cached(data, Some((at, warning)))))
            }
            _ => (Outcome::Failed, Err(unavailable())),
        }
    }

    fn base(&self) -> Option<String> {
        let url = self.inner.deps.config.prometheus_url.trim_end_matches('/');
        (!url.is_empty()).then(|| url.to_owned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update under this lock is a single call into the pure breaker/verdict.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `ChomDeadLetterSpike` alert in Alertmanager's v2 API form. No node label: every node
/// of a cluster reads the same dead letters, and identical label sets are one alert.
fn spike_json(
    alert: &SpikeAlert,
    flagged: &[KindFailures],
    now: DateTime<Utc>,
    hold: Duration,
) -> Value {
    let ends = if alert.firing {
        chom_core::limits::saturating_after(now, hold)
    } else {
        now
    };
    let detail = flagged.iter().find(|k| k.kind == alert.kind).map_or_else(
        || "no longer at the threshold".to_owned(),
        |k| {
            let last = chom_core::limits::cut_at_char_boundary(&k.last_error, 300);
            format!(
                "{} failed for good in the last 24 hours; last error: {last}",
                k.count
            )
        },
    );
    json!({
        "labels": {
            "alertname": "ChomDeadLetterSpike",
            "kind": alert.kind,
            "severity": "warning",
            "source": "chom-node",
        },
        "annotations": {
            "summary": format!("Jobs of kind {} keep failing for good", alert.kind),
            "description": format!("Jobs of kind {}: {detail}.", alert.kind),
            "runbook_url": "https://git.chom.example/chom/node/src/branch/main/docs/runbook.md#chomdeadletterspike",
        },
        "startsAt": alert.starts_at.to_rfc3339(),
        "endsAt": ends.to_rfc3339(),
    })
}

/// The query text and time, checked before anything is sent or keyed.
fn check_query(query: &str, time: Option<&str>) -> Result<(), QueryError> {
    observe::check_query(query, time).map_err(QueryError::Invalid)
}

/// Prometheus' answer: `data` on success, its error text when it refused the query (4xx:
/// the query's fault), a failure for anything else (5xx, not JSON, too large).
async fn read_answer(mut response: reqwest::Response) -> Call<Result<Value, String>> {
    let status = response.status();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Call::Failed(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Call::Failed(describe(e)),
        }
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    match (status.as_u16(), parsed) {
        (200, Some(v)) if v["status"] == "success" && v["data"].is_object() => {
            Call::Answered(Ok(v["data"].clone()))
        }
        (400 | 422, Some(v)) if v["status"] == "error" => {
            let error = v["error"].as_str().unwrap_or("unknown error");
            Call::Answered(Err(
                chom_core::limits::cut_at_char_boundary(error, 512).to_owned()
            ))
        }
        (code, _) => Call::Failed(format!("prometheus answered {code} without a usable body")),
    }
}

fn parse_entry(text: &str) -> Option<(Value, DateTime<Utc>)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let at = DateTime::parse_from_rfc3339(v["cached_at"].as_str()?).ok()?;
    v["data"]
        .is_object()
        .then(|| (v["data"].clone(), at.with_timezone(&Utc)))
}

/// Prometheus' `data` with `_cached`, and for a cached answer `cached_at` and `_warning`.
fn with_cached(mut data: Value, cached: Option<(DateTime<Utc>, String)>) -> Value {
    let object = data.as_object_mut().expect("checked to be an object");
    object.insert("_cached".into(), Value::Bool(cached.is_some()));
    if let Some((at, warning)) = cached {
        object.insert("cached_at".into(), Value::String(at.to_rfc3339()));
        object.insert("_warning".into(), Value::String(warning));
    }
    data
}

/// Send `request` (or report why it could not be made); any 2xx is an answer, anything
/// else a failure naming `who`.
async fn expect_success(request: Result<reqwest::RequestBuilder, String>, who: &str) -> Call<()> {
    let request = match request {
        Ok(request) => request,
        Err(why) => return Call::Failed(why),
    };
    match request.send().await {
        Ok(response) if response.status().is_success() => Call::Answered(()),
        Ok(response) => Call::Failed(format!("{who} answered {}", response.status())),
        Err(e) => Call::Failed(describe(e)),
    }
}
