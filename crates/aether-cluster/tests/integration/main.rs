//! The cluster crate's integration tests, in one binary so the NATS client is linked once.
//!
//! - `placement_props`: properties of the hash ring and the shard tables.
//! - `cluster` (feature `nats`): nodes forming a cluster over a real nats-server, routing,
//!   failover (also on a loaded machine), fencing, permissions.
//! - `faults` (feature `nats`): one node's connection cut and frozen through a proxy; decoders
//!   fed arbitrary bytes.

#[cfg(feature = "nats")]
mod cluster;
#[cfg(feature = "nats")]
mod faults;
mod placement_props;
#[cfg(feature = "nats")]
mod support;
