//! Tenants: `tenants.list`, `tenants.add`, `tenants.suspend`, `tenants.resume`, and their
//! API tokens: `tenants.token`, `tenants.tokens`, `tenants.revoke`.

use chom_core::inventory::{Tenant, Tier};
use chom_core::limits::{self, MAX_NAME_CHARS, MAX_TOKEN_NAME_CHARS};
use chom_core::token::{ApiToken, DEFAULT_TOKEN_NAME};

use super::{Id, echo, ensure, invalid};
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

request! {
    /// `tenants.suspend`: refuse the tenant's API requests (403) until resumed. Its sites
    /// and jobs are left as they are.
    Suspend("tenants.suspend") -> Tenant {
        /// The tenant's id.
        pub tenant: Id,
    }
}

request! {
    /// `tenants.resume`: let a suspended tenant use the API again.
    Resume("tenants.resume") -> Tenant {
        /// The tenant's id.
        pub tenant: Id,
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

request! {
    /// `tenants.token`: make an API token for a tenant. The reply is the only place the
    /// token ever appears: the node stores its SHA-256 and logs neither.
    Token("tenants.token") -> Issued {
        /// The tenant the token acts for.
        pub tenant: Id,
        /// A label for the operator (at most 100 characters, no control characters, not
        /// blank; default `default`).
        pub name: Option<String>,
    }
    impl {
        fn validate(&self) -> Result<(), RpcError> {
            if let Some(name) = &self.name {
                limits::check_text("name", name, MAX_TOKEN_NAME_CHARS).map_err(invalid)?;
                ensure(!name.trim().is_empty(), "`name` must not be blank")?;
            }
            Ok(())
        }
    }
}

impl Token {
    /// The token's name after [`Method::validate`](super::Method::validate).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_TOKEN_NAME)
    }
}

reply! {
    /// The answer to `tenants.token`.
    Issued {
        /// The token, shown this once (`chom_` and 64 hex digits).
        pub token: String,
        /// Its id (`tenants.revoke`).
        pub id: i64,
        /// The tenant it acts for.
        pub tenant: i64,
    }
}

request! {
    /// `tenants.tokens`: a tenant's API tokens, without their secrets.
    Tokens("tenants.tokens") -> TokenList {
        /// The tenant.
        pub tenant: Id,
    }
}

reply! {
    /// The answer to `tenants.tokens`.
    TokenList {
        /// Active tokens by id, then revoked ones, latest revoked first (at most 1,000).
        pub tokens: Vec<ApiToken>,
    }
}

request! {
    /// `tenants.revoke`: revoke an API token; it authenticates nothing from then on.
    Revoke("tenants.revoke") -> Revoked {
        /// The token's id.
        pub id: Id,
    }
}

reply! {
    /// The answer to `tenants.revoke` (an unknown id is an error instead).
    Revoked {
        /// The token's id.
        pub id: i64,
        /// The token is revoked (also when it was already).
        pub revoked: bool,
    }
}
