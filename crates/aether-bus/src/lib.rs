//! Event buses for Aether: publish events to namespaces, subscribe by namespace pattern and
//! filter, and never lose an event without telling the subscriber.
//!
//! - [`EventBus`]: in-process, the embedded default.
//! - `NatsEventBus` (feature `nats`): the same API and semantics across processes over NATS.
//!
//! Both implement [`EventBroadcaster`](aether_core::EventBroadcaster), count what they publish,
//! deliver and drop ([`MetricsSnapshot`]), and share one subscriber table (internal).
//!
//! # Layout
//! - `local`: [`EventBus`].
//! - `registry`: the subscriber table, delivery with overflow policies (internal).
//! - `metrics`: the live counters (internal) and their read-only copy, [`MetricsSnapshot`].
//! - `nats` (feature `nats`): `NatsEventBus` and its config, durable catch-up from JetStream
//!   (`subscribe_durable`, `DurableSubscription`). The connection, its events (slow consumers,
//!   permission violations, reconnects), the namespace <-> subject codec and the rest of the
//!   NATS plumbing are `aether_nats`'s, re-exported here where the bus's API uses them. See
//!   `docs/bus.md`.

mod local;
mod metrics;
mod registry;

pub use local::EventBus;
pub use metrics::{MetricsSnapshot, NamespaceMetrics};

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
pub use nats::{
    BusStreamConfig, DurableEvent, DurableSubscription, NatsBusConfig, NatsEventBus, StartFrom,
    WireFormat, DEFAULT_BUS_STREAM, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBJECT_PREFIX,
    DEFAULT_SUBSCRIPTION_CAPACITY, DENIED_PUBLISH_MEMORY, HEADER_PUBLISHER, HEADER_SEQUENCE,
};

/// The per-subscription bookkeeping of incoming messages, reachable only with the `fuzzing`
/// feature so that the fuzz targets can drive it with arbitrary headers. Not part of the
/// supported API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use nats::fuzzing;
