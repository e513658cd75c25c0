//! The cluster layer of Aether: nodes that find each other over NATS, own shards, host actors
//! ("virtual machines") and route messages to whichever node owns an actor. When a node goes
//! away, its actors come back on another node, rebuilt from their events.
//!
//! Placement logic (ring, shards, registry, actor runtime) works without NATS; the node itself
//! is behind the `nats` feature. The protocol is described in `docs/cluster.md`.
//!
//! # Layout
//! - [`stable_hash64`]: the documented hash every placement decision uses.
//! - [`ConsistentHashRing`], [`BoundedLoadPlacer`]: consistent hashing with virtual nodes, and
//!   bounded-load placement.
//! - [`ShardManager`], [`shard_for`], [`rebalance`]: actors hash to shards; shards are spread
//!   over nodes, moving only what must move.
//! - [`VirtualMachine`], [`VMState`], [`RuntimeModel`], [`RuntimeMessage`], [`VMProvider`]: the
//!   contracts between the cluster and the application's actors.
//! - [`ActorHost`]: runs actors: activation from snapshot + events, optimistic concurrency,
//!   fencing, passivation.
//! - [`DistributedVMRegistry`]: which node hosts which actor.
//! - [`Membership`], [`LeaseTracker`], [`Assignment`]: the pure logic of membership, leader
//!   lease expiry and the assignment table.
//! - [`routing`]: the versioned wire format and subjects.
//! - `ClusterNode` (feature `nats`): ties it all together over NATS and JetStream key-value.
//!
//! # Example
//! ```
//! use aether_cluster::{ConsistentHashRing, ShardManager};
//! use aether_core::ShardConfig;
//!
//! let ring = ConsistentHashRing::new();
//! for node in ["node-a", "node-b", "node-c"] {
//!     ring.add_node(node);
//! }
//! let owner = ring.get_node("user-42").expect("ring is not empty");
//!
//! let shards = ShardManager::new(ShardConfig::default());
//! let nodes: Vec<String> = ring.nodes();
//! shards.rebalance(&nodes);
//! let shard = shards.get_shard("user-42");
//! assert_eq!(shards.get_shard_nodes(shard).len(), 1);
//! assert!(nodes.iter().any(|n| n.as_str() == owner.as_ref()));
//! ```
//!
//! A running cluster (three nodes, routing and failover) is in `examples/cluster.rs`.
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
    validate_name, ActorConfig, ClusterConfig, DEFAULT_CLUSTER_NAME, DEFAULT_FAILURE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use hash::stable_hash64;
pub use host::{ActorHost, ActorVm, Fence, Handled, PassivationHook};
pub use registry::DistributedVMRegistry;
pub use ring::{BoundedLoadPlacer, ConsistentHashRing};
pub use shard::{diff, rebalance, shard_for, ShardManager, ShardMove};
pub use vm::{NewEvent, RuntimeMessage, RuntimeModel, VMProvider, VMState, VirtualMachine};
