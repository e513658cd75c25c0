//! Membership: which nodes are alive. The rules (heartbeats, leave notices, the failure
//! timeout, admission within bounds) are [`aether_placement::Membership`]'s; this module sets
//! a node's admission policy from its configuration.

pub(crate) use aether_placement::{Membership, MembershipChange, Refusal};

use crate::config::ClusterConfig;

/// The admission policy a node's configuration asks for: [`aether_placement::Admission`]
/// filled from [`ClusterConfig`], which lives here in the cluster, not in the pure crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission(pub(crate) aether_placement::Admission);

impl Admission {
    /// The policy `config` asks for.
    pub(crate) fn of(config: &ClusterConfig) -> Self {
        Self(aether_placement::Admission {
            max_members: config.max_members,
            joins_per_interval: config.joins_per_interval,
            heartbeat_interval: config.heartbeat_interval,
        })
    }
}
