//! The nodes sharing this node's database: `cluster.nodes`.

use chom_store::ClusterNode;

request! {
    /// `cluster.nodes`: the live nodes (a heartbeat under 15 s old), by name.
    Nodes("cluster.nodes") -> ClusterNodes {}
}

reply! {
    /// The answer to `cluster.nodes`.
    ClusterNodes {
        /// Each live node: name, instance, host, pid, version, started, last heartbeat and
        /// the jobs it was running then.
        pub nodes: Vec<ClusterNode>,
    }
}
