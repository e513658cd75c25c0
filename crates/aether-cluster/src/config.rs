//! Cluster settings.

use std::time::Duration;

use aether_core::{Error, Result};
pub(crate) use aether_placement::validate_name;
use aether_placement::ShardConfig;

/// Default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "aether";
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default failure timeout: a member silent for this long is declared failed.
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time one routed request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time `send` keeps retrying while ownership moves.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound on a node's member table ([`ClusterConfig::max_members`]): far more nodes than
/// a cluster of 1024 shards can usefully spread over, far fewer than a flood of made-up ids.
pub const DEFAULT_MAX_MEMBERS: usize = 256;
/// Default number of new members admitted per heartbeat interval
/// ([`ClusterConfig::joins_per_interval`]).
pub const DEFAULT_JOINS_PER_INTERVAL: u32 = 4;

/// Settings of a cluster node.
///
/// ```
/// use std::time::Duration;
/// use aether_cluster::ClusterConfig;
///
/// let config = ClusterConfig::default()
///     .cluster_name("orders")
///     .node_id("node-a")
///     .heartbeat_interval(Duration::from_millis(100))
///     .failure_timeout(Duration::from_secs(1));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Name of the cluster: nodes with the same name on the same NATS system form one cluster.
    /// Letters, digits, `-` and `_`.
    pub cluster_name: String,
    /// This node's id, unique in the cluster (letters, digits, `-`, `_`). `None`: a random one.
    pub node_id: Option<String>,
    /// How often a node says it is alive (also the pace of the leader's duties). Above zero.
    pub heartbeat_interval: Duration,
    /// A member not heard from for this long is declared failed, and a leader lease not
    /// renewed for this long may be taken over. At least two heartbeat intervals.
    pub failure_timeout: Duration,
    /// Time one routed request may take. Above zero.
    pub request_timeout: Duration,
    /// Time `send` keeps retrying while the actor's owner is unknown, unreachable or changing.
    /// Above zero.
    pub send_timeout: Duration,
    /// Shard count and replication factor; every node of a cluster must use the same.
    pub shards: ShardConfig,
    /// Most other nodes this node's member table holds at once: live members, nodes waiting
    /// to be admitted, and failed or departed ones not yet forgotten. Heartbeats of further
    /// new nodes are refused (and counted) until room is made, so a flood of made-up node ids
    /// costs bounded memory and never reaches the assignment table. At least 1; raise it
    /// above the largest cluster you run.
    pub max_members: usize,
    /// Most new members this node admits per heartbeat interval (at least 1). A new node is
    /// admitted once heard on two heartbeats most of an interval apart, so a burst of
    /// made-up ids admits nobody; this bounds how fast even a sustained one could move
    /// shards. Nodes beyond it wait for the next interval.
    pub joins_per_interval: u32,
    /// Where the server keeps the cluster's key-value bucket when a node creates it over NATS:
    /// on disk by default; in memory for tests. (An in-process cluster has no bucket.)
    pub storage: aether_core::StorageKind,
    /// Replicas of the cluster's key-value bucket (1 to 5), which holds the assignment table
    /// and the leader's lease: with one replica, the NATS server holding it is a single point
    /// of failure for membership changes and the leader's duties. `None`: 3 when the NATS
    /// server is part of a cluster and runs 2.11 or later, 1 otherwise (on a cluster that
    /// cannot place 3, the bucket is created with 1 and a warning logged).
    ///
    /// Set, a node starting with it moves an existing bucket to this count; unset, an
    /// existing bucket is used as it is. More than one replica needs nats-server 2.11 or
    /// later (the node fails to start with [`Error::Unsupported`] otherwise): before it,
    /// compare-and-set on a replicated stream is not safe across leader changes.
    pub bucket_replicas: Option<usize>,
    /// The newest cluster wire version this node speaks (from
    /// [`MIN_WIRE_VERSION`](crate::MIN_WIRE_VERSION) to [`WIRE_VERSION`](crate::WIRE_VERSION)).
    /// `None`: the newest. Nodes agree on a version pair by pair from what their heartbeats
    /// announce, so a rolling upgrade needs no setting; this holds a node at the previous
    /// release's version, for a cautious upgrade that moves every node to the new binary
    /// before any speaks the new format, or to run a mixed cluster in a test.
    pub wire_version: Option<u16>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            node_id: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            shards: ShardConfig::default(),
            max_members: DEFAULT_MAX_MEMBERS,
            joins_per_interval: DEFAULT_JOINS_PER_INTERVAL,
            storage: aether_core::StorageKind::default(),
            bucket_replicas: None,
            wire_version: None,
        }
    }
}

impl ClusterConfig {
    /// Sets the cluster name.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }
    /// Sets the node id.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }
    /// Sets the heartbeat interval.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }
    /// Sets the failure timeout.
    pub fn failure_timeout(mut self, d: Duration) -> Self {
        self.failure_timeout = d;
        self
    }
    /// Sets the request timeout.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }
    /// Sets the send timeout.
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }
    /// Sets the shard settings.
    pub fn shards(mut self, shards: ShardConfig) -> Self {
        self.shards = shards;
        self
    }
    /// Sets the bound on the member table.
    pub fn max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }
    /// Sets how many new members are admitted per heartbeat interval.
    pub fn joins_per_interval(mut self, n: u32) -> Self {
        self.joins_per_interval = n;
        self
    }
    /// Sets where the server keeps the cluster's bucket.
    pub fn storage(mut self, storage: aether_core::StorageKind) -> Self {
        self.storage = storage;
        self
    }
    /// Sets the newest wire version this node speaks.
    pub fn wire_version(mut self, version: u16) -> Self {
        self.wire_version = Some(version);
        self
    }
    /// The newest wire version this node speaks: [`wire_version`](Self::wire_version), or the
    /// newest this release knows.
    pub fn wire_max(&self) -> u16 {
        self.wire_version.unwrap_or(crate::WIRE_VERSION)
    }
    /// Sets the replicas of the cluster's bucket.
    pub fn bucket_replicas(mut self, replicas: usize) -> Self {
        self.bucket_replicas = Some(replicas);
        self
    }

    /// Checks the settings; a node refuses to start with settings that fail it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cluster name or node id that is empty or has characters
    /// other than letters, digits, `-` and `_` (they become NATS subject tokens and key
    /// names); a zero interval or timeout; a failure timeout shorter than two heartbeat
    /// intervals (one late heartbeat would declare a live member failed); a zero shard count,
    /// replication factor, member bound or join rate; bucket replicas outside 1 to 5; a wire
    /// version this release does not speak.
    pub fn validate(&self) -> Result<()> {
        validate_name("cluster name", &self.cluster_name)?;
        if let Some(id) = &self.node_id {
            validate_name("node id", id)?;
        }
        for (what, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("failure_timeout", self.failure_timeout),
            ("request_timeout", self.request_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(format!("{what} must be above zero")));
            }
        }
        if self.failure_timeout < self.heartbeat_interval * 2 {
            return Err(Error::invalid(format!(
                "failure_timeout {:?} must be at least two heartbeat intervals ({:?})",
                self.failure_timeout,
                self.heartbeat_interval * 2
            )));
        }
        if self.shards.shard_count == 0 || self.shards.replication_factor == 0 {
            return Err(Error::invalid(
                "shard_count and replication_factor must be at least 1",
            ));
        }
        if self.max_members == 0 || self.joins_per_interval == 0 {
            return Err(Error::invalid(
                "max_members and joins_per_interval must be at least 1",
            ));
        }
        if let Some(v) = self.wire_version {
            if !(crate::MIN_WIRE_VERSION..=crate::WIRE_VERSION).contains(&v) {
                return Err(Error::invalid(format!(
                    "wire_version must be between {} and {}, not {v}",
                    crate::MIN_WIRE_VERSION,
                    crate::WIRE_VERSION
                )));
            }
        }
        if let Some(n) = self.bucket_replicas {
            if n == 0 || n > 5 {
                return Err(Error::invalid(format!(
                    "bucket_replicas must be between 1 and 5, not {n}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_what_validation_refuses() {
        let c = ClusterConfig::default();
        assert_eq!(c.cluster_name, "aether");
        assert_eq!(c.shards.shard_count, 1024);
        assert_eq!(
            (c.max_members, c.joins_per_interval),
            (DEFAULT_MAX_MEMBERS, DEFAULT_JOINS_PER_INTERVAL)
        );
        assert!(c.validate().is_ok());
        for bad in [
            ClusterConfig::default().heartbeat_interval(Duration::ZERO),
            ClusterConfig::default().request_timeout(Duration::ZERO),
            ClusterConfig::default().send_timeout(Duration::ZERO),
            ClusterConfig::default().failure_timeout(Duration::ZERO),
            ClusterConfig::default()
                .heartbeat_interval(Duration::from_millis(500))
                .failure_timeout(Duration::from_millis(900)),
            ClusterConfig::default().shards(ShardConfig::default().shard_count(0)),
            ClusterConfig::default().shards(ShardConfig::default().replication_factor(0)),
            ClusterConfig::default().max_members(0),
            ClusterConfig::default().joins_per_interval(0),
            ClusterConfig::default().bucket_replicas(0),
            ClusterConfig::default().bucket_replicas(6),
            ClusterConfig::default().wire_version(1),
            ClusterConfig::default().wire_version(crate::WIRE_VERSION + 1),
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        use aether_placement::is_valid_name;
        assert!(ClusterConfig::default().node_id("a-1_B").validate().is_ok());
        assert!(is_valid_name(&"x".repeat(64)));
        for bad in [
            "",
            "a.b",
            "a b",
            "a*",
            "a>",
            "<img src=x>",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
            assert!(
                ClusterConfig::default().node_id(bad).validate().is_err(),
                "{bad:?}"
            );
            assert!(ClusterConfig::default()
                .cluster_name(bad)
                .validate()
                .is_err());
        }
    }
}
