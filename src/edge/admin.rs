//! `edge/admin`: serves the admin RPC on the Unix socket bound by `chom node`.

use std::sync::Arc;
use std::time::Duration;

use chom_actors::context::NodeContext;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::ServerTask;
use crate::methods::NodeRpc;
use crate::rpc::server::{self, Limits};

/// The admin socket actor.
pub struct AdminActor;

/// Start-up arguments.
pub struct AdminArgs {
    /// The node's shared context.
    pub ctx: Arc<NodeContext>,
    /// The socket bound (and locked) by `chom node`.
    pub listener: Arc<std::os::unix::net::UnixListener>,
}

/// Running state: the accept loop.
pub struct AdminState {
    server: ServerTask,
}

/// The admin actor takes no messages; it owns (and is restarted with) the accept loop.
pub enum AdminMsg {}

impl Actor for AdminActor {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = AdminArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AdminMsg>,
        args: AdminArgs,
    ) -> Result<AdminState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let dispatch = Arc::new(NodeRpc::new(args.ctx));
        let server =
            ServerTask::spawn(|token| server::serve(listener, dispatch, Limits::default(), token));
        Ok(AdminState { server })
    }

    async fn handle(
        &self,
        _: ActorRef<AdminMsg>,
        message: AdminMsg,
        _: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }

    async fn post_stop(
        &self,
        _: ActorRef<AdminMsg>,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        state.server.stop(Duration::from_secs(2)).await;
        Ok(())
    }
}
