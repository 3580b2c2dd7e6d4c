//! Queues: `queue.stats`, `queue.pause`, `queue.resume`.

request! {
    /// `queue.stats`: per-queue counts.
    Stats("queue.stats") -> QueueStatsReply {}
}

reply! {
    /// The answer to `queue.stats`.
    QueueStatsReply {
        /// One row per configured queue, in priority order.
        pub queues: Vec<chom_core::job::QueueStats>,
    }
}

request! {
    /// `queue.pause`: stop claiming from a queue on every node sharing the database.
    Pause("queue.pause") -> Paused {
        /// One of `queue.queues`.
        pub queue: String,
    }
}

request! {
    /// `queue.resume`: claim from a paused queue again.
    Resume("queue.resume") -> Paused {
        /// One of `queue.queues`.
        pub queue: String,
    }
}

reply! {
    /// The answer to `queue.pause` and `queue.resume`.
    Paused {
        /// The queue.
        pub queue: String,
        /// Whether claims from it are paused now.
        pub paused: bool,
    }
}
