//! The cluster crate's integration tests, in one binary so the NATS client is linked once.
//!
//! - `across` (feature `nats`): transactions across actor types on the JetStream store: eight
//!   writers on their own connections conserve a total across two types (2.12+), and a
//!   server before 2.12 refuses with `Unsupported`.
//! - `bucket` (feature `nats`): the cluster's bucket on a three-server NATS cluster, three
//!   replicas by default, outliving the server that leads it (a typed refusal before 2.11).
//! - `cluster` (feature `nats`): nodes forming a cluster over a real nats-server, routing,
//!   failover, fencing, permissions (the failover under CPU load runs in its own binary,
//!   `tests/loaded`).
//! - `faults` (feature `nats`): one node's connection cut and frozen through a proxy; decoders
//!   fed arbitrary bytes.
//! - `hostile` (feature `nats`): a client floods the heartbeat subject with made-up node ids
//!   while real nodes run: no shard moves, refusals are counted, a real node still joins.
//! - `observer` (feature `nats`): the read-only `ClusterObserver`: members, leader and table
//!   seen without joining, a missing cluster not created, hostile heartbeats refused and
//!   bounded, leader and table changes on its stream, the documented read-only permissions.
//! - `mixed` (feature `nats`): a rolling upgrade: a node held at the previous wire version
//!   among nodes of the new one, through commands, transactions, a failover and its upgrade.
//! - `permissions` (feature `nats`): the NATS permissions of `docs/operations.md` let nodes
//!   work and applications only send commands.
//! - `large_state` (feature `nats`): an actor with a 900 KB state taking commands with ids
//!   on the JetStream store; a local send bounded by its send timeout when the server is gone.
//! - `trace` (feature `nats`): a command's trace context crossing nodes to the owner's span
//!   and the stored events.
//! - `typed` (feature `nats`): typed actors over the JetStream store: upcasting events of an
//!   older schema, skipping snapshots of an older state schema, typed decoding errors.

#[cfg(feature = "nats")]
mod across;
#[cfg(feature = "nats")]
mod bucket;
#[cfg(feature = "nats")]
mod cluster;
#[cfg(feature = "nats")]
mod faults;
#[cfg(feature = "nats")]
mod hostile;
#[cfg(feature = "nats")]
mod large_state;
#[cfg(feature = "nats")]
mod mixed;
#[cfg(feature = "nats")]
mod observer;
#[cfg(feature = "nats")]
mod permissions;
#[cfg(feature = "nats")]
mod recorder;
#[cfg(feature = "nats")]
mod support;
#[cfg(feature = "nats")]
mod trace;
#[cfg(feature = "nats")]
mod typed;
