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
//!   messages to actors. [`ClusterNode::transaction`] ([`ClusterTransact`]): one decision
//!   over actors of several types, committed atomically, after which every participant's
//!   owner reloads; [`ClusterNode::refresh`]: the same reload for applications that commit
//!   with `EventStore::commit` themselves.
//! - [`Actors`]: the actor types a node hosts (typed [`aether_actor::Actor`]s, each run by an
//!   [`aether_actor::ActorHost`] for the actors of the shards the node owns: activation,
//!   optimistic concurrency, command ids applied once, fencing, passivation).
//!   [`ClusterClient`]: the node as an [`aether_actor::ActorClient`].
//! - [`ClusterObserver`] (feature `nats`): a running cluster seen from outside, read-only:
//!   its members, leader and assignment table as typed data ([`ClusterSnapshot`]), and their
//!   changes as a stream ([`ClusterChange`]). Tools read a cluster through it, never through
//!   the wire format.
//! - [`Assignment`], [`AssignmentTable`]: which node owns which shard, as the leader wrote it.
//! - The rules the core applies are [`aether_placement`]'s, shared with the partitioned
//!   projections: [`Membership`](aether_placement::Membership) (what a node knows of its
//!   peers), [`LeaseTracker`](aether_placement::LeaseTracker) (lease expiry),
//!   [`shard_for`](aether_placement::shard_for) and [`rebalance`](aether_placement::rebalance)
//!   (actors hash to shards; shards are spread over nodes, moving only what must move), the
//!   name rule. [`ShardConfig`](aether_placement::ShardConfig), a field of [`ClusterConfig`],
//!   comes from there too.
//! - `routing`, `leader`, `assignment`: the versioned wire format, the subjects and the
//!   bucket's keys. They are the nodes' business and private; the feature `unstable-wire`
//!   makes `routing` public for the fuzz targets, the benchmarks and the tests that speak the
//!   protocol from outside a node. It is not part of the supported API.
//!
//! # Example
//! Three nodes in one process, no server: an actor answers from whichever node owns it.
//! ```
//! use std::sync::Arc;
//! use aether_actor::{Actor, DomainEvent};
//! use aether_cluster::{Actors, ClusterConfig, ClusterNode, LocalNetwork};
//! use aether_store::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Counter { value: i64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum CounterEvent { Added { by: i64 } }
//! impl DomainEvent for CounterEvent {
//!     fn event_type(&self) -> &'static str { "Added" }
//! }
//!
//! #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
//! #[error("counters refuse nothing")]
//! struct Never;
//!
//! struct Counters;
//! impl Actor for Counters {
//!     type State = Counter;
//!     type Command = i64;
//!     type Event = CounterEvent;
//!     type Reply = i64;
//!     type Error = Never;
//!     const TYPE: &'static str = "counter";
//!     async fn decide(&self, _: &str, _: &Counter, by: &i64) -> Result<Vec<CounterEvent>, Never> {
//!         Ok(vec![CounterEvent::Added { by: *by }])
//!     }
//!     fn apply(state: &mut Counter, CounterEvent::Added { by }: &CounterEvent) {
//!         state.value += by;
//!     }
//!     fn reply(state: &Counter, _: &i64, _: &[CounterEvent]) -> i64 {
//!         state.value
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = LocalNetwork::new();
//! let store = Arc::new(InMemoryEventStore::new());
//! let mut nodes = Vec::new();
//! for id in ["a", "b", "c"] {
//!     let config = ClusterConfig::default().cluster_name("demo").node_id(id);
//!     let actors = Actors::new(store.clone()).with(Counters);
//!     nodes.push(ClusterNode::start_local(&network, config, actors).await?);
//! }
//! for n in &nodes {
//!     n.wait_for_members(&["a", "b", "c"], std::time::Duration::from_secs(30)).await?;
//! }
//! assert_eq!(nodes[0].send::<Counters>("counter-1", 2).await?, 2);
//! assert_eq!(nodes[1].send::<Counters>("counter-1", 3).await?, 5);
//! for n in nodes {
//!     n.shutdown().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A cluster over NATS (three nodes, routing and failover) is in `examples/cluster.rs`.

mod actors;
mod assignment;
mod config;
mod core;
#[cfg(test)]
mod golden;
mod leader;
mod membership;
mod node;
#[cfg(feature = "nats")]
mod observer;
#[cfg(feature = "unstable-wire")]
#[doc(hidden)]
pub mod routing;
#[cfg(not(feature = "unstable-wire"))]
mod routing;
mod transport;

pub use actors::Actors;
pub use assignment::{Assignment, AssignmentTable};
pub use config::{
    ClusterConfig, DEFAULT_CLUSTER_NAME, DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_JOINS_PER_INTERVAL, DEFAULT_MAX_MEMBERS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use node::{ClusterClient, ClusterNode, ClusterTransact};
#[cfg(feature = "nats")]
pub use observer::{
    ClusterChange, ClusterObserver, ClusterRecord, ClusterSnapshot, GoneReason, ObservedLeader,
    ObservedMember, ObserverConfig, ObserverCounts, Presence, Unreadable, DEFAULT_FORGET_AFTER,
};
/// The newest and oldest cluster wire versions this release speaks (see
/// [`ClusterConfig::wire_version`]).
pub use routing::{MIN_WIRE_VERSION, WIRE_VERSION};
pub use transport::LocalNetwork;
