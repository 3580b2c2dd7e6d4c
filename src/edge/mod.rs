//! `edge`: the node's doors to the outside — the HTTP server and the admin socket — one actor
//! each. Listeners are bound once by `chom node` (so a taken port or a live socket is a clear
//! start-up error) and each actor incarnation serves a clone, so restarting an edge actor never
//! loses the address.

pub mod admin;
pub mod http;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
