//! Cluster layer (placement, membership, routing).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod assignment;
mod config;
mod hash;
mod host;
mod leader;
mod membership;
#[cfg(feature = "nats")]
mod node;
mod registry;
mod ring;
pub mod routing;
mod shard;
mod vm;

pub use assignment::{Assignment, AssignmentTable, ASSIGNMENT_KEY};
pub use leader::{LeaderLease, LeaseTracker, LEADER_KEY};
pub use membership::{MemberInfo, MemberStatus, Membership, MembershipChange};
#[cfg(feature = "nats")]
pub use node::ClusterNode;

pub use config::{
    ActorConfig, ClusterConfig, DEFAULT_CLUSTER_NAME, DEFAULT_FAILURE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use hash::stable_hash64;
pub use host::{ActorHost, ActorVm, Fence, Handled};
pub use registry::DistributedVMRegistry;
pub use ring::{BoundedLoadPlacer, ConsistentHashRing};
pub use shard::{diff, rebalance, shard_for, ShardManager, ShardMove};
pub use vm::{NewEvent, RuntimeMessage, RuntimeModel, VMProvider, VMState, VirtualMachine};
