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
//! - `nats` (feature `nats`): `NatsEventBus` and its config, namespace <-> subject encoding,
//!   `TransportMonitor` (the client's slow-consumer reports and the server's permission
//!   violations), durable catch-up from JetStream
//!   (`subscribe_durable`, `DurableSubscription`). See `docs/bus.md`.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod local;
mod metrics;
mod registry;

pub use local::EventBus;
pub use metrics::{MetricsSnapshot, NamespaceMetrics};

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
pub use nats::{
    decode_namespace, namespace_subject, pattern_subject, validate_prefix, BusStreamConfig,
    DurableEvent, DurableSubscription, NatsBusConfig, NatsEventBus, StartFrom, TransportMonitor,
    DEFAULT_BUS_STREAM, DEFAULT_SUBJECT_PREFIX, DENIED_PUBLISH_MEMORY, HEADER_PUBLISHER,
    HEADER_SEQUENCE,
};

/// The permission violations a [`TransportMonitor`] records
/// ([`TransportMonitor::permissions`]), re-exported so that callers need no direct dependency.
#[cfg(feature = "nats")]
pub use aether_nats::{Operation, PermissionViolation, PermissionWatch};

/// The per-subscription bookkeeping of incoming messages, reachable only with the `fuzzing`
/// feature so that the fuzz targets can drive it with arbitrary headers. Not part of the
/// supported API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use nats::fuzzing;
