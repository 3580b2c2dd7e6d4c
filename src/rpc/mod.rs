//! The admin RPC: JSON-RPC 2.0, one JSON object per line in each direction, over a Unix socket.
//!
//! `protocol` holds the wire types and request validation, `server` the connection handling
//! with its limits (line size, slow clients, connection count), `client` what `chom` commands
//! use to talk to a running node.

pub mod client;
pub mod protocol;
pub mod server;
