//! Tenants: `tenants.list`, `tenants.add`.

use chom_core::inventory::{Tenant, Tier};
use chom_core::limits::{self, MAX_NAME_CHARS};

use super::{echo, ensure, invalid};
use crate::rpc::protocol::RpcError;

request! {
    /// `tenants.list`: every tenant.
    List("tenants.list") -> Tenants {}
}

reply! {
    /// The answer to `tenants.list`.
    Tenants {
        /// Every tenant.
        pub tenants: Vec<Tenant>,
    }
}

request! {
    /// `tenants.add`: create a tenant.
    Add("tenants.add") -> Tenant {
        /// Unique name (at most 200 characters, no control characters, not blank).
        pub name: String,
        /// `starter`, `pro` or `enterprise` (default `starter`). Text, not [`Tier`], so that the
        /// CLI passes it through and the node's message names the tiers.
        pub tier: Option<String>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            // Characters, not bytes: a name in Greek or Japanese gets the same room as one in English.
            limits::check_text("name", &self.name, MAX_NAME_CHARS).map_err(invalid)?;
            ensure(!self.name.trim().is_empty(), "`name` must not be blank")?;
            if let Some(t) = &self.tier
                && Tier::parse(t).is_none()
            {
                return Err(RpcError::invalid_params(format!(
                    "`tier`: unknown tier `{}` (starter, pro or enterprise)",
                    echo(t)
                )));
            }
            Ok(())
        }
    }
}

impl Add {
    /// The tier after [`Method::validate`](super::Method::validate).
    pub fn tier(&self) -> Tier {
        self.tier
            .as_deref()
            .and_then(Tier::parse)
            .unwrap_or(Tier::Starter)
    }
}
