//! `edge/http`: `/health`, `/health/live`, `/health/ready`, `/metrics` (SPEC.md "HTTP") and
//! `/prometheus/sd` (the fleet as Prometheus HTTP service discovery, `prometheus_sd.rs`) and
//! Alertmanager's webhook `POST /webhooks/alertmanager` (`webhook.rs`).
//!
//! Served by our own accept loop over hyper's HTTP/1 connection, not `axum::serve`, because a
//! public port must bound what a client can hold: at most `http.max_connections` connections
//! (one more is answered 503 and closed at once: it never waits holding a file descriptor),
//! a request head complete within `http.header_timeout` (hyper's header read timeout, which
//! also runs while a kept-alive connection waits for its next request), a head of at most
//! [`MAX_HEAD_BYTES`], and `http.idle_timeout` without a byte moving either way (a client
//! that stopped reading its answer).
//!
//! File descriptors: the node's other needs are the database pool (`database.max_connections`,
//! up to three files each on SQLite: database, WAL, shared memory), the admin socket (64
//! connections, `rpc::server::Limits`), SSH sessions (one per VPS), Redis, and a few dozen for
//! the runtime, logs and operators' commands. With the default 256 HTTP connections the node
//! fits a 1024 soft limit with room to spare, and `LimitNOFILE=65536` in the unit leaves far
//! more. So an HTTP flood can use up HTTP, never the admin socket or the database.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chom_actors::context::NodeContext;
use chom_actors::monitors::health::{self, HealthReport};
use chom_core::config::HttpConfig;
use chom_core::throttle::Throttle;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Door, ServerTask, accepted};

/// `/health?fresh=true`.
#[derive(Debug, Default, serde::Deserialize)]
struct HealthQuery {
    #[serde(default)]
    fresh: bool,
}

/// The HTTP door: `/health`, `/metrics` and the Alertmanager webhook.
#[derive(Default, Clone)]
pub struct Http;

impl Door for Http {
    type Listener = std::net::TcpListener;
    const GRACE: Duration = Duration::from_secs(5);

    fn open(&self, ctx: Arc<NodeContext>, listener: TcpListener) -> ServerTask {
        let limits = HttpLimits::from(&ctx.config.http);
        let app = router(ctx);
        ServerTask::spawn(|token| serve(listener, app, limits, token))
    }
}

/// Largest request head (request line and headers) read, in bytes; a longer one is answered
/// 431. The routes take no header of any size, so 16 KiB is generous.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What one client may hold of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to deliver a complete request head.
    pub header_timeout: Duration,
    /// Time without a byte moving either way.
    pub idle_timeout: Duration,
}

impl From<&HttpConfig> for HttpLimits {
    fn from(c: &HttpConfig) -> Self {
        HttpLimits {
            max_connections: c.max_connections as usize,
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// Sent, without waiting, to a connection over `max_connections` before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
    content-length: 28\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections; retry\n";

/// How often the refusals of a flood are logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Serve `app` on `listener` until `shutdown` is cancelled, then let the connections finish
/// their requests (graceful shutdown). Dropping the future drops every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let service = TowerToHyperService::new(app);
    let mut connections = JoinSet::new();
    // Refused connections are logged at most once per interval, with how many there were.
    let mut refused = Throttle::new(REFUSAL_LOG_INTERVAL);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections so that `len()` counts live ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accept = listener.accept() => match accepted(accept, "http").await {
                Some(stream) => stream,
                None => continue,
            },
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= limits.max_connections {
            // One non-blocking write into the fresh socket's empty buffer, then close: the
            // refused client learns why, and the node holds nothing for it.
            let _ = stream.try_write(BUSY);
            drop(stream);
            if let Some(refused) = refused.note(std::time::Instant::now()) {
                warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "http: connection limit reached; refusing connections (http.max_connections)"
                );
            }
            continue;
        }
        let service = WithPeer {
            inner: service.clone(),
            peer: stream.peer_addr().ok().map(Peer),
        };
        connections.spawn(connection(
            stream,
            builder.clone(),
            service,
            limits.idle_timeout,
            shutdown.clone(),
        ));
    }
    while connections.join_next().await.is_some() {}
}

/// Serve one connection until the client or hyper closes it, it stays idle for `idle`, or
/// `shutdown` asks it to finish its request in progress.
async fn connection(
    stream: TcpStream,
    builder: http1::Builder,
    service: WithPeer,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "http: connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last() + idle <= Instant::now() {
                    debug!("http: closing a connection idle for http.idle_timeout");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The client's address of a request, in its extensions (the console throttles sign-ins by
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// The router's service with the connection's [`Peer`] put into every request.
#[derive(Clone)]
struct WithPeer {
    inner: TowerToHyperService<Router>,
    peer: Option<Peer>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for WithPeer {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Future;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        self.inner.call(request)
    }
}

/// When bytes last moved on a connection, as an offset from its start.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that notes in [`Activity`] every read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The routes, over the shared context.
pub fn router(ctx: Arc<NodeContext>) -> Router {
    Router::new()
        .route("/health", get(health_report))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/prometheus/sd", get(super::prometheus_sd::prometheus_sd))
        .route(
            "/webhooks/alertmanager",
            post(super::webhook::alertmanager)
                .layer(DefaultBodyLimit::max(super::webhook::MAX_BODY_BYTES)),
        )
        .with_state(Routes {
            ctx,
            fresh: Arc::new(tokio::sync::Mutex::new(None)),
        })
}

/// What the handlers share: the node's context, and the last on-demand health run.
#[derive(Clone)]
struct Routes {
    ctx: Arc<NodeContext>,
    /// Held while a `?fresh=true` run is in progress; keeps when the last one finished.
    fresh: Arc<tokio::sync::Mutex<Option<(Instant, HealthReport)>>>,
}

impl FromRef<Routes> for Arc<NodeContext> {
    fn from_ref(routes: &Routes) -> Self {
        routes.ctx.clone()
    }
}

/// `/health` serves the health actor's last report (no database query per scrape) while it
/// is fresh (younger than two intervals); `?fresh=true`, or no recent report, runs the checks.
async fn health_report(State(routes): State<Routes>, Query(query): Query<HealthQuery>) -> Response {
    let max_age = routes.ctx.config.health.interval * 2;
    let cached = if query.fresh {
        None
    } else {
        routes.ctx.cached_health(max_age)
    };
    let report = match cached {
        Some(report) => report,
        None => fresh_report(&routes).await,
    };
    let status = StatusCode::from_u16(report.http_status()).expect("200 and 503 are valid");
    (status, axum::Json(report)).into_response()
}

/// Run the checks now, one run at a time: requests that arrive while a run is in progress
/// take the result of the next run that finishes after they asked. Without this, every
/// concurrent `?fresh=true` request (up to `http.max_connections`) would run the database
/// checks and spawn every operator check command on its own.
async fn fresh_report(routes: &Routes) -> HealthReport {
    let asked = Instant::now();
    let mut last = routes.fresh.lock().await;
    if let Some((finished, report)) = last.as_ref()
        && *finished >= asked
    {
        return report.clone();
    }
    let report = health::run_checks(&routes.ctx.checks()).await;
    *last = Some((Instant::now(), report.clone()));
    report
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio_util::sync::DropGuard;

    /// Serve a one-route app on a loopback port with the test limits changed by `set`; it
    /// stops when the guard drops.
    async fn start(set: impl FnOnce(&mut HttpLimits)) -> (std::net::SocketAddr, DropGuard) {
        let mut limits = limits();
        set(&mut limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, app, limits, token.clone()));
        (addr, token.drop_guard())
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
        }
    }

    /// Everything the server sends until it closes (or `limit` passes: then `None`).
    fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> Option<String> {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(_) => None,
        }
    }

    fn get_root(addr: std::net::SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_until_closed(&mut s, Duration::from_secs(5)).expect("answer and close")
    }

    /// `talk` over a fresh connection to `addr`, on a blocking thread.
    async fn over_connection<T: Send + 'static>(
        addr: std::net::SocketAddr,
        talk: impl FnOnce(&mut std::net::TcpStream) -> T + Send + 'static,
    ) -> T {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            talk(&mut s)
        })
        .await
        .unwrap()
    }

    /// The answer of `attempt` (on a blocking thread) once it starts with `status`, or its
    /// last answer after 5 s.
    async fn answer_once(attempt: impl Fn() -> String + Send + 'static, status: &str) -> String {
        let status = status.to_owned();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let answer = attempt();
                if answer.starts_with(&status) || std::time::Instant::now() > deadline {
                    return answer;
                }
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connections_over_the_limit_get_503_and_are_closed_at_once() {
        let (addr, _server) = start(|_| {}).await;
        let held: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Wait until the server has taken both (its answer to a third is then 503).
        let third = move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            read_until_closed(&mut s, Duration::from_secs(5)).unwrap()
        };
        let over = answer_once(third, "HTTP/1.1 503").await;
        assert!(over.starts_with("HTTP/1.1 503"), "{over:?}");
        assert!(over.ends_with("too many connections; retry\n"), "{over:?}");
        drop(held);
        let ok = answer_once(move || get_root(addr), "HTTP/1.1 200").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "slots come back: {ok:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_incomplete_head_is_closed_after_the_header_timeout() {
        let (addr, _server) = start(|l| l.header_timeout = Duration::from_millis(300)).await;
        let (answer, after) = over_connection(addr, |s| {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            let started = std::time::Instant::now();
            let answer = read_until_closed(s, Duration::from_secs(5));
            (answer, started.elapsed())
        })
        .await;
        assert!(answer.is_some(), "still open after 5 s");
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (addr, _server) = start(|l| l.idle_timeout = Duration::from_millis(300)).await;
        let closed = over_connection(addr, |s| read_until_closed(s, Duration::from_secs(5))).await;
        assert_eq!(closed.as_deref(), Some(""), "closed without an answer");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_head_over_the_size_limit_is_refused() {
        let (addr, _server) = start(|_| {}).await;
        let answer = over_connection(addr, |s| {
            let filler = "a".repeat(MAX_HEAD_BYTES);
            // The server may close before it has read everything; the answer still arrives.
            let _ = s.write_all(
                format!(
                    "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {filler}\r\n\r\n"
                )
                .as_bytes(),
            );
            read_until_closed(s, Duration::from_secs(5)).expect("closed at once")
        })
        .await;
        // 431, or a reset when the close overtook it (the client's bytes were not all read);
        // never served.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer:?}"
        );
    }
}
