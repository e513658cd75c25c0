//! The cluster layer of Aether: nodes that find each other, own shards, host actors and route
//! messages to whichever node owns an actor. When a node goes away, its actors come back on
//! another node, rebuilt from their events.
//!
//! The node's protocol logic is an I/O-free core; the same node runs over NATS (feature
//! `nats`) or, with no server at all, over an in-process network. The protocol is described
//! in `docs/cluster.md`.
//!
//! # Layout
//! - [`ClusterNode`]: a member of a cluster, the public face. It drives an I/O-free core
//!   (`core`: membership, leader lease, assignment table and fencing decisions as one state
//!   machine, inputs in, actions out) over a transport: NATS ([`ClusterNode::start`], feature
//!   `nats`) or an in-process [`LocalNetwork`] ([`ClusterNode::start_local`]), and routes
//!   messages to actors.
//! - [`RuntimeModel`], [`RuntimeMessage`], [`NewEvent`]: the contract between the cluster and
//!   the application's actors.
//! - [`ActorHost`]: runs actors: activation from snapshot + events, optimistic concurrency,
//!   at-most-once per message id, fencing, passivation.
//! - [`Assignment`], [`AssignmentTable`], [`LeaderLease`], [`Membership`]: the data of the
//!   protocol (what the bucket holds, what a node knows of its peers).
//! - [`stable_hash64`], [`shard_for`], [`rebalance`], [`diff`]: actors hash to shards; shards
//!   are spread over nodes, moving only what must move. [`ConsistentHashRing`] and
//!   [`ShardManager`] are placement utilities for applications (the node does not use them).
//! - [`routing`]: the versioned wire format and subjects.
//!
//! # Example
//! Three nodes in one process, no server: an actor answers from whichever node owns it.
//! ```
//! use std::sync::Arc;
//! use aether_cluster::{ClusterConfig, ClusterNode, LocalNetwork, NewEvent, RuntimeMessage, RuntimeModel};
//! use aether_core::{Event, Result};
//! use aether_store::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Add(i64);
//! impl RuntimeMessage for Add {}
//!
//! struct Counter;
//! impl RuntimeModel for Counter {
//!     type State = serde_json::Map<String, serde_json::Value>;
//!     type Message = Add;
//!     type Reply = i64;
//!     fn name(&self) -> &str { "counter" }
//!     fn handle(&self, _: &str, _: &Self::State, m: &Add) -> Result<Vec<NewEvent>> {
//!         Ok(vec![NewEvent::new("Added").with_field("n", m.0)])
//!     }
//!     fn apply(&self, s: &mut Self::State, e: &Event) {
//!         let n = s.get("n").and_then(|v| v.as_i64()).unwrap_or(0);
//!         let add = e.data.get("n").and_then(|v| v.as_i64()).unwrap_or(0);
//!         s.insert("n".into(), (n + add).into());
//!     }
//!     fn reply(&self, s: &Self::State, _: &Add) -> i64 {
//!         s.get("n").and_then(|v| v.as_i64()).unwrap_or(0)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let network = LocalNetwork::new();
//! let store = Arc::new(InMemoryEventStore::new());
//! let mut nodes = Vec::new();
//! for id in ["a", "b", "c"] {
//!     let config = ClusterConfig::default().cluster_name("demo").node_id(id);
//!     nodes.push(ClusterNode::start_local(&network, config, Counter, store.clone()).await?);
//! }
//! for n in &nodes {
//!     n.wait_for_members(&["a", "b", "c"], std::time::Duration::from_secs(30)).await?;
//! }
//! assert_eq!(nodes[0].send("counter-1", Add(2)).await?, 2);
//! assert_eq!(nodes[1].send("counter-1", Add(3)).await?, 5);
//! for n in nodes {
//!     n.shutdown().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A cluster over NATS (three nodes, routing and failover) is in `examples/cluster.rs`.

mod assignment;
mod config;
mod core;
mod hash;
mod host;
mod leader;
mod membership;
mod node;
mod ring;
pub mod routing;
mod shard;
mod transport;
mod vm;

/// Where the server keeps the cluster's bucket ([`ClusterConfig::storage`]).
#[cfg(feature = "nats")]
pub use aether_nats::StorageKind;
/// The NATS client this crate's API takes ([`ClusterNode::start`]), re-exported so that an
/// application uses the matching version without pinning it by hand.
#[cfg(feature = "nats")]
pub use async_nats;

pub use assignment::{Assignment, AssignmentTable, ASSIGNMENT_KEY};
pub use config::{
    validate_name, ActorConfig, ClusterConfig, ShardConfig, DEFAULT_CLUSTER_NAME,
    DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SEND_TIMEOUT, DEFAULT_SHARD_COUNT,
};
pub use hash::stable_hash64;
pub use host::{ActorHost, Fence, Handled, PassivationHook};
pub use leader::{LeaderLease, LEADER_KEY};
pub use membership::{MemberInfo, MemberStatus, Membership, MembershipChange};
pub use node::ClusterNode;
pub use ring::{BoundedLoadPlacer, ConsistentHashRing, HashRingConfig, DEFAULT_VIRTUAL_NODES};
pub use shard::{diff, rebalance, shard_for, ShardManager, ShardMove};
pub use transport::LocalNetwork;
pub use vm::{NewEvent, RuntimeMessage, RuntimeModel, VMState, VirtualMachine};
