//! Cluster and actor runtime settings.

use std::time::Duration;

use aether_core::{Error, HashRingConfig, Result, ShardConfig};

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

/// Settings of the actor runtime on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorConfig {
    /// Messages queued per active actor before senders wait (0 means 256).
    pub mailbox_capacity: usize,
    /// An actor with no message for this long is passivated (zero: never).
    pub idle_timeout: Duration,
    /// Take a snapshot after every this many events of an actor (0: not while it is active).
    pub snapshot_every: u64,
    /// Save a snapshot when an actor with unsnapshotted events is passivated.
    pub snapshot_on_passivate: bool,
    /// How often a message is re-decided after a version conflict before giving up.
    pub max_conflict_retries: u32,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 256,
            idle_timeout: Duration::from_secs(300),
            snapshot_every: 100,
            snapshot_on_passivate: true,
            max_conflict_retries: 5,
        }
    }
}

impl ActorConfig {
    /// Sets the mailbox capacity.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n;
        self
    }
    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Sets the snapshot interval in events.
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = n;
        self
    }
    /// Sets whether passivation snapshots.
    pub fn snapshot_on_passivate(mut self, on: bool) -> Self {
        self.snapshot_on_passivate = on;
        self
    }
    /// Sets the conflict retry bound.
    pub fn max_conflict_retries(mut self, n: u32) -> Self {
        self.max_conflict_retries = n;
        self
    }
    /// The mailbox capacity in force.
    pub fn effective_mailbox_capacity(&self) -> usize {
        if self.mailbox_capacity == 0 {
            256
        } else {
            self.mailbox_capacity
        }
    }
}

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
    /// How often a node says it is alive (also the pace of the leader's duties).
    pub heartbeat_interval: Duration,
    /// A member not heard from for this long is declared failed, and a leader lease not
    /// renewed for this long may be taken over. Several heartbeat intervals.
    pub failure_timeout: Duration,
    /// Time one routed request may take.
    pub request_timeout: Duration,
    /// Time `send` keeps retrying while the actor's owner is unknown, unreachable or changing.
    pub send_timeout: Duration,
    /// Shard count and replication factor; every node of a cluster must use the same.
    pub shards: ShardConfig,
    /// Hash ring settings of the ring of live members a node keeps (`ClusterNode::ring`).
    pub ring: HashRingConfig,
    /// The actor runtime.
    pub actors: ActorConfig,
    /// Keep the cluster's key-value bucket in server memory instead of on disk (tests).
    pub memory_storage: bool,
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
            ring: HashRingConfig::default(),
            actors: ActorConfig::default(),
            memory_storage: false,
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
    /// Sets the ring settings.
    pub fn ring(mut self, ring: HashRingConfig) -> Self {
        self.ring = ring;
        self
    }
    /// Sets the actor runtime settings.
    pub fn actors(mut self, actors: ActorConfig) -> Self {
        self.actors = actors;
        self
    }
    /// Sets memory storage for the bucket.
    pub fn memory_storage(mut self, on: bool) -> Self {
        self.memory_storage = on;
        self
    }

    /// The heartbeat interval in force (zero means the default).
    pub fn effective_heartbeat_interval(&self) -> Duration {
        nonzero(self.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL)
    }
    /// The failure timeout in force (zero means the default; never below two heartbeats).
    pub fn effective_failure_timeout(&self) -> Duration {
        nonzero(self.failure_timeout, DEFAULT_FAILURE_TIMEOUT)
            .max(self.effective_heartbeat_interval() * 2)
    }
    /// The request timeout in force.
    pub fn effective_request_timeout(&self) -> Duration {
        nonzero(self.request_timeout, DEFAULT_REQUEST_TIMEOUT)
    }
    /// The send timeout in force.
    pub fn effective_send_timeout(&self) -> Duration {
        nonzero(self.send_timeout, DEFAULT_SEND_TIMEOUT)
    }

    /// Checks the names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cluster name or node id that is empty or has characters
    /// other than letters, digits, `-` and `_` (they become NATS subject tokens and key names).
    pub fn validate(&self) -> Result<()> {
        validate_name("cluster name", &self.cluster_name)?;
        if let Some(id) = &self.node_id {
            validate_name("node id", id)?;
        }
        Ok(())
    }
}

fn nonzero(d: Duration, default: Duration) -> Duration {
    if d.is_zero() {
        default
    } else {
        d
    }
}

/// Checks a cluster name or node id: 1 to 64 letters, digits, `-` or `_` (they become parts
/// of NATS subjects and key-value bucket names). `what` names the value in the error.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is allowed.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {name:?} must be 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_builders_and_fallbacks() {
        let c = ClusterConfig::default();
        assert_eq!(c.cluster_name, "aether");
        assert_eq!(c.shards.effective_shard_count(), 1024);
        assert_eq!(c.ring.effective_virtual_nodes(), 150);
        let z = ClusterConfig {
            heartbeat_interval: Duration::ZERO,
            failure_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            send_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(z.effective_heartbeat_interval(), DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(z.effective_failure_timeout(), DEFAULT_FAILURE_TIMEOUT);
        assert_eq!(z.effective_request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(z.effective_send_timeout(), DEFAULT_SEND_TIMEOUT);
        let short = ClusterConfig::default()
            .heartbeat_interval(Duration::from_millis(500))
            .failure_timeout(Duration::from_millis(100));
        assert_eq!(short.effective_failure_timeout(), Duration::from_secs(1));
        assert_eq!(
            ActorConfig::default()
                .mailbox_capacity(0)
                .effective_mailbox_capacity(),
            256
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(ClusterConfig::default().node_id("a-1_B").validate().is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
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
