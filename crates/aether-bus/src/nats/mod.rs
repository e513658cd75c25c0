//! The NATS event bus (feature `nats`): [`NatsEventBus`], the same API and semantics as the
//! local bus across processes, with optional durable delivery from JetStream.
//!
//! - `bus`: [`NatsEventBus`], publish and live subscriptions, shutdown.
//! - `subject`: namespace <-> subject encoding ([`namespace_subject`], [`pattern_subject`],
//!   [`decode_namespace`]).
//! - `catchup`: [`NatsEventBus::subscribe_durable`], [`DurableSubscription`].
//! - `monitor`: [`TransportMonitor`], the NATS client's slow-consumer and error reports and
//!   the server's permission violations.
//! - `config`: [`NatsBusConfig`], [`BusStreamConfig`], [`StartFrom`].

mod bus;
mod catchup;
mod config;
mod monitor;
mod subject;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use bus::{NatsEventBus, DENIED_PUBLISH_MEMORY, HEADER_PUBLISHER, HEADER_SEQUENCE};
pub use catchup::{DurableEvent, DurableSubscription};
pub use config::{
    BusStreamConfig, NatsBusConfig, StartFrom, DEFAULT_BUS_STREAM, DEFAULT_SUBJECT_PREFIX,
};
pub use monitor::TransportMonitor;
pub use subject::{decode_namespace, namespace_subject, pattern_subject, validate_prefix};
