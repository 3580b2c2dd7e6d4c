//! `edge`: the node's doors to the outside — the HTTP server and the admin socket — one actor
//! each. Listeners are bound once by `chom node` (so a taken port or a live socket is a clear
//! start-up error) and each actor incarnation serves a clone, so restarting an edge actor never
//! loses the address.

pub mod admin;
pub mod http;

use std::time::Duration;

use chom_core::config::Config;
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
    // Up to three files per pooled SQLite connection (database, WAL, shared memory).
    let needed = u64::from(config.http.max_connections)
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
