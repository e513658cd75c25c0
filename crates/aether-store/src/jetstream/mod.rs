//! The JetStream event store (feature `nats`).
//!
//! # Layout
//! - [`JetStreamEventStore`] (`event_store`): the public store, routing each actor to its
//!   partition's stream.
//! - `store`: one stream's store and its read and write paths.
//! - `config`: [`JetStreamConfig`]; `partition`: [`PartitionKey`], which partition an actor
//!   lives in; [`leaders`]: spreading the partitions' stream leaders over a cluster.
//! - [`mirror`]: a standby copy of the streams in another JetStream domain, its lag, and its
//!   promotion when the primary is gone.
//! - `setup`: the stream's name and configuration, attaching to an existing one.
//! - `subject`: the stream's subjects (the actor-id codec itself is in `aether_nats`).
//! - `codec`: how a save is laid out in one message (headers, single event or batch).
//! - `view`: [`LatestVersions`], every actor's latest version kept locally by a watch on the
//!   stream, read with bounded staleness.
//!
//! Connection events, the permission guard, stream creation, error sorting and retry backoff
//! come from `aether_nats`.
//!
//! # Why a batch is one message
//! `save_events` must be all-or-nothing. NATS 2.12 added atomic multi-message publish
//! (ADR-50), but older servers, Debian's 2.9 among them, have nothing like it, and a store that
//! behaves differently per server version is hard to reason about. A batch is therefore one
//! message holding a JSON array of events: JetStream appends a message atomically on every
//! version, the expected-last-subject-sequence check covers the whole batch, and one
//! acknowledgement settles it. The price: a batch must fit in the server's `max_payload`
//! (1 MiB by default), and tools reading the stream directly must accept an array where they
//! expect an event. Reads expand it into its events.

mod codec;
mod compaction;
mod config;
mod event_store;
pub mod leaders;
pub mod mirror;
mod partition;
mod setup;
mod store;
mod subject;
mod view;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use compaction::{Compaction, Removal};
pub use config::{JetStreamConfig, DEFAULT_STREAM_NAME};
pub use event_store::JetStreamEventStore;
pub use partition::{partition_marker, partition_stream_name, PartitionKey, MAX_PARTITIONS};
pub use store::MAX_TRANSACTION_EVENTS;
pub use view::LatestVersions;
