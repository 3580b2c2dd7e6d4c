//! The `monitors` subtree: what watches the node and heals what does not crash.
//!
//! - [`health`]: the checks and the `/health` document they make up;
//! - [`health_actor`]: `monitors/health`, which runs the checks, caches the report for
//!   `/health` and restarts or remediates what keeps failing;
//! - [`memory`]: `monitors/memory`, which recycles the workers near the memory limit and then
//!   drains the node (exit 75);
//! - [`watchdog`]: `monitors/watchdog`, which sends systemd `WATCHDOG=1` only while every
//!   supervisor answers.

pub mod health;
pub mod health_actor;
pub mod memory;
pub mod watchdog;
