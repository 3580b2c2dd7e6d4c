//! `edge`: the node's doors to the outside — the HTTP server, the admin socket, the tenant
//! API and the operator console — one actor each. Listeners are bound once by `chom node` (so a taken port or a live socket is a clear
//! start-up error) and each actor incarnation serves a clone, so restarting an edge actor never
//! loses the address.

pub mod admin;
pub mod api;
pub mod http;
pub mod prometheus_sd;
pub mod ui;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::NodeContext;
use chom_core::config::Config;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// File descriptors the node needs beside its HTTP connections and the database pool: the
/// admin socket's connections, the runtime, logs, SSH sessions and operators' commands.
const FD_BASE: u64 = 64 + 128;

/// Raise the soft open-file limit to the hard limit and log it; warn when even that cannot
/// hold HTTP's `max_connections` plus what the rest of the node needs, since then a flood of
/// HTTP connections could starve the admin socket or the database of file descriptors.
pub fn raise_fd_limit(config: &Config) {
    let limit = match chom_actors::sys::raise_nofile_limit() {
        Ok(limit) => limit,
        Err((limit, error)) => {
            warn!(%error, soft = limit.soft, hard = limit.hard, "cannot raise the open-file limit");
            limit
        }
    };
    // Up to three files per pooled SQLite connection (database, WAL, shared memory); the
    // tenant API's listener has its own `http.max_connections`.
    let needed = 2 * u64::from(config.http.max_connections)
        + 3 * u64::from(config.database.max_connections)
        + FD_BASE;
    info!(
        soft = limit.soft,
        hard = limit.hard,
        "open-file limit (RLIMIT_NOFILE)"
    );
    if limit.soft < needed {
        warn!(
            limit = limit.soft,
            needed,
            "open-file limit below what http.max_connections and the database pool may use; raise LimitNOFILE or lower http.max_connections"
        );
    }
}

/// A server task owned by an actor: cancelled and awaited (bounded) on a graceful stop,
/// cancelled and aborted when dropped (the actor was killed).
pub struct ServerTask {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl ServerTask {
    /// Spawn `run(token)`.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(token.clone()));
        ServerTask {
            token,
            handle: Some(handle),
        }
    }

    /// Ask the task to finish and wait up to `grace` for it.
    pub async fn stop(&mut self, grace: Duration) {
        self.token.cancel();
        if let Some(handle) = self.handle.take() {
            let abort = handle.abort_handle();
            if tokio::time::timeout(grace, handle).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// A listener bound once by `chom node`, served by each incarnation of its edge actor as a
/// non-blocking clone registered with tokio.
pub trait Listener: Send + Sync + 'static {
    /// The tokio listener over the clone.
    type Tokio;
    /// A clone for one incarnation to serve.
    fn serve_clone(&self) -> std::io::Result<Self::Tokio>;
}

macro_rules! listener {
    ($std:ty => $tokio:ty) => {
        impl Listener for $std {
            type Tokio = $tokio;
            fn serve_clone(&self) -> std::io::Result<$tokio> {
                let listener = self.try_clone()?;
                listener.set_nonblocking(true)?;
                <$tokio>::from_std(listener)
            }
        }
    };
}

listener!(std::net::TcpListener => tokio::net::TcpListener);
listener!(std::os::unix::net::UnixListener => tokio::net::UnixListener);

/// What an edge actor serves: the server task it starts on its listener, and how long a
/// graceful stop waits for that task.
pub trait Door: Send + Sync + 'static {
    /// The kind of listener served.
    type Listener: Listener;
    /// How long a graceful stop waits for the server task.
    const GRACE: Duration;
    /// Start serving `listener` for the node.
    fn open(
        &self,
        ctx: Arc<NodeContext>,
        listener: <Self::Listener as Listener>::Tokio,
    ) -> ServerTask;
}

/// Start-up arguments of an edge actor.
pub struct EdgeArgs<L> {
    /// The node's shared context: the edges are its control surface.
    pub ctx: Arc<NodeContext>,
    /// The listener bound by `chom node`.
    pub listener: Arc<L>,
}

/// An edge actor: it takes no messages; it exists to own (and be restarted with) the server
/// task of its door.
pub struct EdgeActor<D>(pub D);

/// Edge actors take no messages.
pub enum EdgeMsg {}

impl<D: Door> Actor for EdgeActor<D> {
    type Msg = EdgeMsg;
    type State = ServerTask;
    type Arguments = EdgeArgs<D::Listener>;

    async fn pre_start(
        &self,
        _myself: ActorRef<EdgeMsg>,
        args: EdgeArgs<D::Listener>,
    ) -> Result<ServerTask, ActorProcessingErr> {
        let listener = args.listener.serve_clone()?;
        Ok(self.0.open(args.ctx, listener))
    }

    async fn handle(
        &self,
        _: ActorRef<EdgeMsg>,
        message: EdgeMsg,
        _: &mut ServerTask,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }

    async fn post_stop(
        &self,
        _: ActorRef<EdgeMsg>,
        server: &mut ServerTask,
    ) -> Result<(), ActorProcessingErr> {
        server.stop(D::GRACE).await;
        Ok(())
    }
}

/// What an accept loop does with the result of one accept: the stream, or `None` after a
/// failure, logged and followed by a short pause, since the usual causes (EMFILE and friends)
/// would otherwise make the loop spin on accept.
pub async fn accepted<S, A>(accept: std::io::Result<(S, A)>, server: &str) -> Option<S> {
    match accept {
        Ok((stream, _)) => Some(stream),
        Err(error) => {
            warn!(%error, "{server}: accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
