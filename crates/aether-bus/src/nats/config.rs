//! Configuration of the NATS bus.

use std::time::{Duration, SystemTime};

/// Default subject prefix: events of namespace `orders` travel on `aether.events.orders`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "aether.events";

/// Default name of the JetStream stream the bus publishes into when durable delivery is on.
pub const DEFAULT_BUS_STREAM: &str = "AETHER_BUS";

/// How a [`NatsEventBus`](super::NatsEventBus) uses NATS.
///
/// ```
/// use std::time::Duration;
/// use aether_bus::{BusStreamConfig, NatsBusConfig};
///
/// let config = NatsBusConfig::default()
///     .subject_prefix("shop.events")
///     .jetstream(BusStreamConfig::default().max_age(Duration::from_secs(7 * 24 * 3600)));
/// assert_eq!(config.subject_prefix, "shop.events");
/// ```
#[derive(Debug, Clone)]
pub struct NatsBusConfig {
    /// Subject prefix; every namespace lives below it. Tokens of `[A-Za-z0-9_-]` separated by
    /// `.`. Buses that should see each other's events must use the same prefix.
    pub subject_prefix: String,
    /// When set, events are published through JetStream into this stream (acknowledged by
    /// the server), which makes [`subscribe_durable`](super::NatsEventBus::subscribe_durable)
    /// possible. When `None`, events are plain NATS messages: fast, not stored.
    pub jetstream: Option<BusStreamConfig>,
    /// How long a NATS round trip (flush after subscribing, JetStream calls) may take before
    /// the operation fails with [`Error::Unavailable`](aether_core::Error::Unavailable).
    pub request_timeout: Duration,
    /// Messages the NATS client buffers per subscription before it reports a slow consumer and
    /// drops (only used by [`NatsEventBus::connect`](super::NatsEventBus::connect), which
    /// creates the client).
    pub subscription_capacity: usize,
}

impl Default for NatsBusConfig {
    fn default() -> Self {
        Self {
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_string(),
            jetstream: None,
            request_timeout: Duration::from_secs(10),
            subscription_capacity: 64 * 1024,
        }
    }
}

impl NatsBusConfig {
    /// Sets the subject prefix.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Publishes through JetStream into the stream described by `stream`.
    pub fn jetstream(mut self, stream: BusStreamConfig) -> Self {
        self.jetstream = Some(stream);
        self
    }

    /// Sets the timeout of NATS round trips.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the NATS client's per-subscription buffer (for [`NatsEventBus::connect`](super::NatsEventBus::connect)).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity;
        self
    }
}

/// The JetStream stream a bus publishes into for durable delivery.
///
/// The bus creates the stream if it does not exist, capturing `<prefix>.>`; an existing stream
/// of that name is used as it is.
#[derive(Debug, Clone)]
pub struct BusStreamConfig {
    /// Stream name.
    pub stream_name: String,
    /// Events older than this are removed by the server; `None` keeps them (subject to
    /// `max_messages`).
    pub max_age: Option<Duration>,
    /// Maximum number of events kept; `None` means no limit.
    pub max_messages: Option<i64>,
    /// Replicas (1 on a single server, 3 in a cluster for fault tolerance).
    pub replicas: usize,
    /// Keep the stream in memory instead of on disk (tests, caches).
    pub memory_storage: bool,
}

impl Default for BusStreamConfig {
    fn default() -> Self {
        Self {
            stream_name: DEFAULT_BUS_STREAM.to_string(),
            max_age: None,
            max_messages: None,
            replicas: 1,
            memory_storage: false,
        }
    }
}

impl BusStreamConfig {
    /// Sets the stream name.
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.stream_name = name.into();
        self
    }
    /// Sets the retention age.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
    /// Sets the maximum number of events kept.
    pub fn max_messages(mut self, n: i64) -> Self {
        self.max_messages = Some(n);
        self
    }
    /// Sets the number of replicas.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    /// Keeps the stream in memory.
    pub fn memory_storage(mut self, on: bool) -> Self {
        self.memory_storage = on;
        self
    }
}

/// Where a durable subscription starts reading the bus stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartFrom {
    /// The first event still in the stream.
    Beginning,
    /// The event at this stream sequence (the checkpoint of a projection plus one; see
    /// [`DurableSubscription::resume_from`](super::DurableSubscription::resume_from)).
    Sequence(u64),
    /// The first event stored at or after this time.
    Time(SystemTime),
    /// Only events stored after the subscription was made.
    New,
}
