//! Queues: `queue.stats`, `queue.pause`, `queue.resume`.

use serde::{Deserialize, Serialize};

use super::Method;

/// `queue.stats`: per-queue counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {}

/// The answer to `queue.stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueStatsReply {
    /// One row per configured queue, in priority order.
    pub queues: Vec<chom_core::job::QueueStats>,
}

impl Method for Stats {
    const NAME: &'static str = "queue.stats";
    type Reply = QueueStatsReply;
}

/// `queue.pause`: stop claiming from a queue on every node sharing the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// One of `queue.queues`.
    pub queue: String,
}

/// `queue.resume`: claim from a paused queue again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// One of `queue.queues`.
    pub queue: String,
}

/// The answer to `queue.pause` and `queue.resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paused {
    /// The queue.
    pub queue: String,
    /// Whether claims from it are paused now.
    pub paused: bool,
}

impl Method for Pause {
    const NAME: &'static str = "queue.pause";
    type Reply = Paused;
}

impl Method for Resume {
    const NAME: &'static str = "queue.resume";
    type Reply = Paused;
}
