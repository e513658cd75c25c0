//! Configuration of the NATS bus.

use std::time::{Duration, SystemTime};

use aether_core::StorageKind;

/// Default subject prefix: events of namespace `orders` travel on `aether.events.orders`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "aether.events";

/// Default name of the JetStream stream the bus publishes into when durable delivery is on.
pub const DEFAULT_BUS_STREAM: &str = "AETHER_BUS";

/// How long a NATS round trip may take when [`NatsBusConfig::request_timeout`] is not set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages the NATS client buffers per subscription when
/// [`NatsBusConfig::subscription_capacity`] is not set.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

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
    /// How long a NATS round trip (confirming a subscription, JetStream calls) may take before
    /// the operation fails with [`Error::Unavailable`](aether_core::Error::Unavailable);
    /// `None` means [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Option<Duration>,
    /// Messages the NATS client buffers per subscription before it reports a slow consumer and
    /// drops (only used by [`NatsEventBus::connect`](super::NatsEventBus::connect), which
    /// creates the client); `None` means [`DEFAULT_SUBSCRIPTION_CAPACITY`].
    pub subscription_capacity: Option<usize>,
    /// The form messages are written in (both forms are always read). The default,
    /// [`WireFormat::Framed`], is the fastest; [`WireFormat::Headers`] is what earlier
    /// versions read, for a rolling upgrade.
    pub wire_format: WireFormat,
}

impl Default for NatsBusConfig {
    fn default() -> Self {
        Self {
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_string(),
            jetstream: None,
            request_timeout: None,
            subscription_capacity: None,
            wire_format: WireFormat::default(),
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
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets the NATS client's per-subscription buffer (for [`NatsEventBus::connect`](super::NatsEventBus::connect)).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = Some(capacity);
        self
    }

    /// Sets the form messages are written in.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// The round-trip timeout in force.
    pub(crate) fn timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
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
    /// Replicas (1 on a single server, 3 in a cluster for fault tolerance); `None` means 1.
    pub replicas: Option<usize>,
    /// On disk (the default) or in memory (tests, caches).
    pub storage: StorageKind,
}

impl Default for BusStreamConfig {
    fn default() -> Self {
        Self {
            stream_name: DEFAULT_BUS_STREAM.to_string(),
            max_age: None,
            max_messages: None,
            replicas: None,
            storage: StorageKind::File,
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
        self.replicas = Some(n);
        self
    }
    /// Sets where the stream is kept.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
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

/// Which form of the wire format a [`NatsEventBus`](super::NatsEventBus) writes. Both are
/// always read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireFormat {
    /// One buffer: a binary prefix with the origin, then the event's JSON. The fastest;
    /// readable by buses of this version and later.
    #[default]
    Framed,
    /// The event's JSON with the origin in the `Aether-Publisher` and `Aether-Seq` headers:
    /// what earlier versions write and read. Use it while buses of an earlier version still
    /// subscribe (a rolling upgrade), or when programs outside Aether read the bus's subjects
    /// and expect plain JSON.
    Headers,
}
