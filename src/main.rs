//! `chom`: the CHOM operations node and its admin client. See README.md for every command.

mod api;
mod batch_enqueue;
mod bench_http;
mod bench_ssh;
mod cli;
mod config_file;
mod edge;
mod fleet_methods;
mod logging;
mod methods;
mod node;
mod output;
mod rpc;
mod sites;
mod wiring;

use std::process::ExitCode;

/// The node's version, reported by `chom status`, `/metrics` (`chom_build_info`) and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    cli::main()
}
