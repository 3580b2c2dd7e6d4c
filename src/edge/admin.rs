//! `edge/admin`: serves the admin RPC on the Unix socket bound by `chom node`.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::NodeContext;

use super::{Door, ServerTask};
use crate::methods::NodeRpc;
use crate::rpc::server::{self, Limits};

/// The admin socket's door: JSON-RPC over the socket.
#[derive(Default, Clone)]
pub struct Admin;

impl Door for Admin {
    type Listener = std::os::unix::net::UnixListener;
    const GRACE: Duration = Duration::from_secs(2);

    fn open(&self, ctx: Arc<NodeContext>, listener: tokio::net::UnixListener) -> ServerTask {
        let dispatch = Arc::new(NodeRpc::new(ctx));
        ServerTask::spawn(|token| server::serve(listener, dispatch, Limits::default(), token))
    }
}
