//! What an observer observes, and how much it holds.

use std::time::Duration;

use aether_core::{Error, Result};

use crate::config::{
    ClusterConfig, DEFAULT_CLUSTER_NAME, DEFAULT_FAILURE_TIMEOUT, DEFAULT_MAX_MEMBERS,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::routing::bucket_name;

#[cfg(doc)]
use super::{ClusterObserver, Presence};

/// Default time a node silent for that long stays in an observer's table
/// ([`ObserverConfig::forget_after`]): sixty default heartbeat intervals.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(60);

/// What to observe, and how much to hold.
///
/// ```
/// use std::time::Duration;
/// use aether_cluster::ObserverConfig;
///
/// let config = ObserverConfig::default()
///     .cluster_name("orders")
///     .failure_timeout(Duration::from_secs(3));
/// assert!(config.validate().is_ok());
/// assert_eq!(config.bucket_name(), "AETHER_CLUSTER_orders");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverConfig {
    /// The cluster's name ([`ClusterConfig::cluster_name`]).
    pub cluster_name: String,
    /// A member not heard for this long is shown as [`Presence::Silent`], and a leader lease
    /// not renewed for this long as expired: set it to the cluster's own failure timeout.
    /// Above zero.
    pub failure_timeout: Duration,
    /// A node not heard for this long is forgotten (the assignment table's members stay
    /// listed, as [`Presence::Unheard`]). At least the failure timeout.
    pub forget_after: Duration,
    /// Most nodes the table of nodes heard holds (see [`ClusterObserver`]). At least 1.
    pub max_members: usize,
    /// Most time one read of the bucket, or the confirmation of the subscription, may take.
    /// Above zero.
    pub request_timeout: Duration,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        Self {
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            forget_after: DEFAULT_FORGET_AFTER,
            max_members: DEFAULT_MAX_MEMBERS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The cluster a node's configuration describes, observed with the node's failure timeout,
/// member bound and request timeout.
impl From<&ClusterConfig> for ObserverConfig {
    fn from(config: &ClusterConfig) -> Self {
        Self {
            cluster_name: config.cluster_name.clone(),
            failure_timeout: config.failure_timeout,
            max_members: config.max_members,
            request_timeout: config.request_timeout,
            ..Self::default()
        }
    }
}

impl ObserverConfig {
    /// Sets the cluster's name.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }
    /// Sets the failure timeout.
    pub fn failure_timeout(mut self, d: Duration) -> Self {
        self.failure_timeout = d;
        self
    }
    /// Sets how long a silent node is remembered.
    pub fn forget_after(mut self, d: Duration) -> Self {
        self.forget_after = d;
        self
    }
    /// Sets the bound on the table of nodes heard.
    pub fn max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }
    /// Sets the request timeout.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// The name of the cluster's key-value bucket (`AETHER_CLUSTER_<cluster>`): for the NATS
    /// permissions of an observer or a node, for backups, and for removing the bucket of a
    /// cluster that is gone for good. (Its replicas are a node setting:
    /// [`ClusterConfig::bucket_replicas`](crate::ClusterConfig::bucket_replicas).)
    pub fn bucket_name(&self) -> String {
        bucket_name(&self.cluster_name)
    }

    /// Checks the settings; an observer refuses to open with settings that fail it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cluster name that breaks the naming rule
    /// ([`validate_name`](aether_placement::validate_name)), a zero timeout or member bound, or a
    /// `forget_after` shorter than the failure timeout.
    pub fn validate(&self) -> Result<()> {
        aether_placement::validate_name("cluster name", &self.cluster_name)?;
        if self.failure_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::invalid(
                "failure_timeout and request_timeout must be above zero",
            ));
        }
        if self.forget_after < self.failure_timeout {
            return Err(Error::invalid(format!(
                "forget_after {:?} must be at least the failure timeout ({:?})",
                self.forget_after, self.failure_timeout
            )));
        }
        if self.max_members == 0 {
            return Err(Error::invalid("max_members must be at least 1"));
        }
        Ok(())
    }
}
