//! The NATS event bus (feature `nats`): [`NatsEventBus`], the same API and semantics as the
//! local bus across processes, with optional durable delivery from JetStream.
//!
//! - `bus`: [`NatsEventBus`], how it is made (and its JetStream stream set up), publish and
//!   live subscriptions, shutdown.
//! - `catchup`: [`NatsEventBus::subscribe_durable`], [`DurableSubscription`]. It builds on
//!   `bus` (the bus's context, its checked subscribe, the wire format); `bus` does not use it.
//! - `config`: [`NatsBusConfig`], [`BusStreamConfig`], [`StartFrom`], [`WireFormat`].
//!
//! The connection and its events, the permission guard, the round trip, the namespace <->
//! subject codec, stream setup and retry backoff come from `aether_nats`.

mod bus;
mod catchup;
mod config;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use bus::{NatsEventBus, DENIED_PUBLISH_MEMORY, HEADER_PUBLISHER, HEADER_SEQUENCE};
pub use catchup::{DurableEvent, DurableSubscription};
pub use config::{
    BusStreamConfig, NatsBusConfig, StartFrom, WireFormat, DEFAULT_BUS_STREAM,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBJECT_PREFIX, DEFAULT_SUBSCRIPTION_CAPACITY,
};
