//! Operators of the web console: `ui.user.add`, `ui.user.remove`.

use chom_core::config::{NAME_RULE, is_name};
use chom_core::limits::MAX_ID_CHARS;

use super::echo;
use crate::rpc::protocol::RpcError;

/// An operator's name: the same rule as ids (it is shown in pages and logs).
pub fn check_user_name(name: &str) -> Result<(), RpcError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!(
            "`name`: `{}` is not a valid operator name ({NAME_RULE}, at most {MAX_ID_CHARS} characters)",
            echo(name)
        )))
    }
}

request! {
    /// `ui.user.add`: make a console operator with a generated password. The reply is the
    /// only place the password ever appears: the node stores its Argon2id hash.
    UserAdd("ui.user.add") -> UserAdded {
        /// Sign-in name.
        pub name: String,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_user_name(&self.name)
        }
    }
}

reply! {
    /// The answer to `ui.user.add`.
    UserAdded {
        /// Sign-in name.
        pub name: String,
        /// The password, shown this once.
        pub password: String,
    }
}

request! {
    /// `ui.user.remove`: remove a console operator and end their sessions.
    UserRemove("ui.user.remove") -> UserRemoved {
        /// Sign-in name.
        pub name: String,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            check_user_name(&self.name)
        }
    }
}

reply! {
    /// The answer to `ui.user.remove`.
    UserRemoved {
        /// Sign-in name.
        pub name: String,
        /// `false` when there was no such operator.
        pub removed: bool,
    }
}
