//! The NATS event bus: the bus itself, how it is made and closed, and its [`EventBroadcaster`]
//! face.
//!
//! What each side does with a message is in child modules, so each can be read on its own:
//! `publish` (numbering and sending), `subscribe` (confirmed subscriptions and the task
//! forwarding messages to a subscriber), `gaps` (the sequence numbers' cost on the wire and the
//! tracker that finds gaps in them).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{
    Error, Event, EventBroadcaster, OverflowPolicy, Result, SubscribeOptions, Subscription,
};
use aether_nats::backend::timeout_error;
use aether_nats::subject::{namespace_subject, pattern_subject, validate_prefix};
use aether_nats::{Connection, ConnectionMonitor, Operation};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};
use async_trait::async_trait;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::config::{BusStreamConfig, NatsBusConfig, DEFAULT_SUBSCRIPTION_CAPACITY};
use crate::metrics::{BusMetrics, MetricsSnapshot, NamespaceCounters};
use crate::registry::SubscriberRegistry;

mod frame;
mod gaps;
mod publish;
mod subscribe;

#[cfg(feature = "fuzzing")]
pub(crate) use frame::encode as encode_frame;
pub(crate) use frame::parse as parse_message;
use gaps::GapTracker as Gaps;
#[cfg(feature = "fuzzing")]
pub(crate) use gaps::{GapTracker, MAX_TRACKED_SOURCES};
use subscribe::{forward, watch_refusals, NamespaceCache, NatsSource, Refusals, Wants};

/// Header naming the bus instance that published a message, in the
/// [`WireFormat::Headers`](crate::WireFormat::Headers) form.
pub const HEADER_PUBLISHER: &str = "Aether-Publisher";
/// Header carrying the publisher's sequence number within the message's namespace
/// (1, 2, 3, ... per publisher and namespace), used to detect lost messages, in the
/// [`WireFormat::Headers`](crate::WireFormat::Headers) form.
pub const HEADER_SEQUENCE: &str = "Aether-Seq";

/// How long a publish refusal reported by the server makes further publishes to the same
/// subject fail at once. Bounded because the server's permissions may be reloaded: after this
/// long the next publish is sent again (and refused again, and remembered again, if nothing
/// changed).
pub const DENIED_PUBLISH_MEMORY: Duration = Duration::from_secs(30);

/// A namespace this bus publishes to.
#[derive(Debug)]
pub(crate) struct NamespaceSlot {
    /// The namespace's subject, encoded and checked once (cloning it does not allocate).
    pub(crate) subject: async_nats::Subject,
    /// The last sequence number published. The async mutex keeps "assign the number, hand
    /// the message to the client" atomic, so numbers go out in order.
    pub(crate) last: tokio::sync::Mutex<u64>,
    /// The namespace's counters in the bus's metrics.
    pub(crate) counters: Arc<NamespaceCounters>,
}

/// What the forwarding and catch-up tasks need; deliberately not the bus itself, so that
/// dropping the last bus handle shuts the tasks down.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) prefix: String,
    pub(crate) publisher_id: String,
    pub(crate) metrics: Arc<BusMetrics>,
}

pub(crate) struct Inner {
    pub(crate) connection: Connection,
    pub(crate) config: NatsBusConfig,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) registry: SubscriberRegistry,
    pub(crate) jetstream: Option<jetstream::Context>,
    /// Per namespace this bus published to: its subject and the last sequence number.
    namespaces: DashMap<String, Arc<NamespaceSlot>>,
    /// Cancelled when the bus closes or is dropped; every subscription's task stops on a child
    /// of it.
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    closed: AtomicBool,
    /// The connection monitor's (transport errors, permission violations) when the bus was
    /// made: the bus's metrics count what happened since.
    baseline: (u64, u64),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Tasks stop (and unsubscribe) on their own once they see this; local subscribers
        // get `None` after their buffers drain.
        self.shutdown.cancel();
        self.registry.clear();
    }
}

/// An [`EventBroadcaster`] whose events travel between processes over NATS, with the same API
/// and semantics as the local [`EventBus`](crate::EventBus).
///
/// - **Subjects.** An event of namespace `ns` is published on `<prefix>.<ns>`, each namespace
///   token encoded so that no namespace can produce a wildcard or an extra token (see
///   [`namespace_subject`](aether_nats::subject::namespace_subject)); pattern tokens `*` and `>` become NATS's
///   native wildcards. [`SubscriptionFilter`](aether_core::SubscriptionFilter)s apply on the
///   receiving side.
/// - **Exactly once, locally too.** Subscribers of the publishing bus get the event directly
///   (with the same overflow policies as the local bus); the copy NATS echoes back is
///   recognised by the publisher id it carries and skipped. Subscribers of other buses get
///   it from NATS.
/// - **Ordering.** Events of one publisher to one namespace arrive in publish order.
/// - **No silent loss.** Each subscription has a bounded buffer and its
///   [`OverflowPolicy`](aether_core::OverflowPolicy). Backpressure holds back local publishers;
///   for events from other processes it holds back this bus's reading from NATS, and when the
///   NATS client's own buffer overflows the client drops messages (a "slow consumer"). Every
///   message carries a per-publisher, per-namespace sequence number (see [`WireFormat`](crate::WireFormat)): a gap is
///   reported to the subscription as [`Delivery::Lagged`](aether_core::Delivery::Lagged) and
///   counted as dropped, and the client's slow-consumer signal is counted in
///   [`transport_errors`](crate::MetricsSnapshot::transport_errors) (see
///   [`ConnectionMonitor`]).
/// - **No silent refusal.** NATS never answers a publish or subscription it refuses for lack
///   of permission: it drops it and reports a permissions violation asynchronously. The bus
///   (with its connection's [`ConnectionMonitor`] installed, as [`connect`](Self::connect)
///   does) sees those reports by subject: a subscription to a refused subject fails with
///   [`Error::PermissionDenied`] naming it, publishes to a subject refused in the last
///   [`DENIED_PUBLISH_MEMORY`] fail with it, and so do acknowledged (JetStream) publishes and
///   durable subscriptions the server refused. The very first publish to a refused subject
///   over core NATS returns `Ok`: nothing comes back before it returns. Every report is
///   counted in [`permission_errors`](crate::MetricsSnapshot::permission_errors).
/// - **Reconnection.** The NATS client reconnects and resubscribes by itself; subscriptions
///   keep receiving after a server restart without being made again. Messages published while
///   a subscriber's connection was down are lost for it, and reported as lag when the next
///   message of that publisher and namespace arrives.
/// - **Durable delivery.** With [`NatsBusConfig::jetstream`] set, events are also stored in a
///   JetStream stream and [`subscribe_durable`](Self::subscribe_durable) replays them from a
///   stream sequence or time, then continues live.
///
/// Cloning is cheap and every clone is the same bus. [`close`](Self::close) (or dropping the
/// last clone) stops every subscription.
///
/// # Security
/// Wildcard subscriptions (`*`, `>`) cross namespaces. They are for trusted, cross-cutting
/// consumers (audit, metrics); isolate tenants with exact namespaces, and on a shared NATS
/// server with NATS permissions on `<prefix>.<namespace>` subjects
/// ([`subject_for`](Self::subject_for) gives a namespace's subject). The bus's own checks are
/// for reporting, not enforcement: the server is what refuses. A durable subscription reads
/// the stream through the JetStream API, which subject permissions do not cover; the bus
/// refuses one on a pattern its connection may not subscribe to live, but only denying the
/// JetStream API of the bus stream keeps another client from reading it.
///
/// # Example
/// ```no_run
/// use aether_bus::{NatsBusConfig, NatsEventBus};
/// use aether_core::{Delivery, Event, EventBroadcaster};
///
/// # async fn run() -> aether_core::Result<()> {
/// let node_a = NatsEventBus::connect("nats://127.0.0.1:4222", NatsBusConfig::default()).await?;
/// let node_b = NatsEventBus::connect("nats://127.0.0.1:4222", NatsBusConfig::default()).await?;
/// let mut orders = node_b.subscribe("orders").await?;
/// node_a.publish("orders", &Event::new("OrderPlaced", "order-1", 1)).await?;
/// assert!(matches!(orders.recv().await, Some(Delivery::Event(e)) if e.version == 1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsEventBus {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for NatsEventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsEventBus")
            .field("subject_prefix", &self.inner.ctx.prefix)
            .field("publisher_id", &self.inner.ctx.publisher_id)
            .field("jetstream", &self.inner.jetstream.is_some())
            .field("subscriptions", &self.inner.registry.len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl NatsEventBus {
    /// A bus on an existing client.
    ///
    /// The client's slow-consumer signal and the server's permission violations are not
    /// visible to the bus this way (NATS reports them only to the callback installed at
    /// connect time); use [`open`](Self::open) on a [`Connection`] or
    /// [`connect`](Self::connect) to see them. Lost messages are still detected and reported
    /// as lag.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad subject prefix; with JetStream configured, the errors
    /// of creating the stream.
    pub async fn new(client: Client, config: NatsBusConfig) -> Result<Self> {
        Self::open(&Connection::from(client), config).await
    }

    /// A bus on `connection` (which may be shared with an event store): its monitor's
    /// slow-consumer and error reports count in this bus's metrics, and its permission
    /// violations fail the bus operations they concern.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn open(connection: &Connection, config: NatsBusConfig) -> Result<Self> {
        validate_prefix(&config.subject_prefix)?;
        let client = connection.client();
        let jetstream = match &config.jetstream {
            None => None,
            Some(stream) => Some(ensure_stream(client, &config, stream).await?),
        };
        let metrics = Arc::new(BusMetrics::new());
        let ctx = Arc::new(Ctx {
            prefix: config.subject_prefix.clone(),
            publisher_id: uuid::Uuid::new_v4().simple().to_string(),
            metrics: metrics.clone(),
        });
        let monitor = connection.monitor();
        Ok(Self {
            inner: Arc::new(Inner {
                connection: connection.clone(),
                config,
                ctx,
                registry: SubscriberRegistry::new(metrics),
                jetstream,
                namespaces: DashMap::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                closed: AtomicBool::new(false),
                baseline: (monitor.transport_errors(), monitor.permission_violations()),
            }),
        })
    }

    /// Connects to `url` and builds a bus, with a [`ConnectionMonitor`] installed and the
    /// client's per-subscription buffer set from [`NatsBusConfig::subscription_capacity`]:
    /// the quick start. For credentials, TLS or a connection shared with an event store,
    /// connect with [`Connection::connect`] (set the options' `subscription_capacity` there)
    /// and use [`open`](Self::open).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached;
    /// [`Error::PermissionDenied`] when it refuses the credentials; as [`new`](Self::new).
    pub async fn connect(url: &str, config: NatsBusConfig) -> Result<Self> {
        let options = ConnectOptions::new().subscription_capacity(
            config
                .subscription_capacity
                .unwrap_or(DEFAULT_SUBSCRIPTION_CAPACITY),
        );
        let connection = Connection::connect(url, options).await?;
        Self::open(&connection, config).await
    }

    /// A copy of the bus's counters, with the transport errors and permission violations its
    /// connection's monitor saw since the bus was made.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = self.inner.ctx.metrics.snapshot();
        let monitor = self.inner.connection.monitor();
        let (transport, refused) = self.inner.baseline;
        snapshot.transport_errors += monitor.transport_errors().saturating_sub(transport);
        snapshot.permission_errors += monitor.permission_violations().saturating_sub(refused);
        snapshot
    }

    /// Number of open live subscriptions (durable ones are counted in
    /// [`metrics`](Self::metrics) only).
    pub fn subscription_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// The NATS client the bus uses.
    pub fn client(&self) -> &Client {
        self.inner.connection.client()
    }

    /// The connection the bus uses.
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// The configuration the bus was built with.
    pub fn config(&self) -> &NatsBusConfig {
        &self.inner.config
    }

    /// The monitor of this bus's NATS connection events; its
    /// [`permissions`](ConnectionMonitor::permissions) are the refusals the server reported.
    pub fn monitor(&self) -> &ConnectionMonitor {
        self.inner.connection.monitor()
    }

    /// This bus instance's publisher id (carried by every message it publishes, see
    /// [`WireFormat`](crate::WireFormat)).
    pub fn publisher_id(&self) -> &str {
        &self.inner.ctx.publisher_id
    }

    /// The subject events of `namespace` are published on.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a namespace that cannot be published to.
    pub fn subject_for(&self, namespace: &str) -> Result<String> {
        namespace_subject(&self.inner.ctx.prefix, namespace)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The namespace's slot, made (and its subject checked) on the first publish to it.
    fn namespace_slot(&self, namespace: &str) -> Result<Arc<NamespaceSlot>> {
        if let Some(slot) = self.inner.namespaces.get(namespace) {
            return Ok(slot.clone());
        }
        let subject = namespace_subject(&self.inner.ctx.prefix, namespace)?;
        Ok(self
            .inner
            .namespaces
            .entry(namespace.to_string())
            .or_insert_with(|| {
                Arc::new(NamespaceSlot {
                    subject: async_nats::Subject::from(subject),
                    last: tokio::sync::Mutex::new(0),
                    counters: self.inner.ctx.metrics.counters(namespace),
                })
            })
            .clone())
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed("the NATS event bus was closed".into()))
        } else {
            Ok(())
        }
    }

    /// Stops the bus: every subscription (live and durable) is unsubscribed from NATS and its
    /// task stopped; subscribers receive what is already buffered, then `None`. Further
    /// publishes and subscribes fail with [`Error::Closed`]. The client is flushed but not
    /// closed (it may be shared). Calling it again does nothing.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the final flush fails or times out; the bus is closed anyway.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.registry.clear();
        // Only to send what is buffered; nothing here needs the server's confirmation.
        match tokio::time::timeout(self.inner.config.timeout(), self.client().flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable("flushing NATS while closing the bus", e)),
            Err(_) => Err(timeout_error("flushing NATS while closing the bus")),
        }
    }
}

/// Creates the bus stream (capturing `<prefix>.>`) unless it exists, and returns the
/// JetStream context to publish with.
async fn ensure_stream(
    client: &Client,
    config: &NatsBusConfig,
    stream_config: &BusStreamConfig,
) -> Result<jetstream::Context> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(config.timeout());
    let wanted = stream::Config {
        name: stream_config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_age: stream_config.max_age.unwrap_or_default(),
        max_messages: stream_config.max_messages.unwrap_or(-1),
        num_replicas: stream_config.replicas.unwrap_or(1).max(1),
        storage: aether_nats::backend::storage_type(stream_config.storage),
        ..Default::default()
    };
    aether_nats::backend::ensure_stream(&js, wanted).await?;
    Ok(js)
}

#[async_trait]
impl EventBroadcaster for NatsEventBus {
    /// Publishes `event` to `namespace`: to this bus's matching subscribers directly, and to
    /// NATS (through JetStream, acknowledged, when the bus has a stream).
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] (its source names the refused subject) when the server
    /// refused a publish to the namespace's subject within the last [`DENIED_PUBLISH_MEMORY`],
    /// or refused this acknowledged publish. Over core NATS a publish is fire-and-forget: the
    /// server reports a refusal only after the publish returned, so **the first publish to a
    /// refused subject returns `Ok`** (the event reaches nobody on NATS, but this bus's own
    /// subscribers receive it) and the ones after the report arrives fail. Needs a
    /// [`ConnectionMonitor`] installed (as [`NatsEventBus::connect`] does).
    /// [`Error::PayloadTooLarge`], [`Error::InvalidInput`], [`Error::Unavailable`],
    /// [`Error::Closed`] as their names say.
    async fn publish(&self, namespace: &str, event: &Event) -> Result<()> {
        self.check_open()?;
        let slot = self.namespace_slot(namespace)?;
        if let Some(v) = self.inner.connection.permissions().denied_within(
            Operation::Publish,
            slot.subject.as_str(),
            DENIED_PUBLISH_MEMORY,
        ) {
            return Err(v.to_error(format!("publishing to namespace {namespace:?}")));
        }
        let body = self.encode(event)?;
        let span = tracing::debug_span!(
            "bus_publish",
            namespace,
            event_type = %event.event_type,
            actor_id = %event.actor_id,
            trace_id = event.trace_id(),
        );
        self.send(namespace, &slot, body).instrument(span).await?;
        self.inner.ctx.metrics.record_published_to(&slot.counters);
        // Local subscribers get it here, once; NATS's echo of it is skipped. The copy is made
        // only when someone here may want it.
        if self.inner.registry.has_subscribers_for(namespace) {
            self.inner
                .registry
                .dispatch(namespace, Arc::new(event.clone()))
                .await;
        }
        Ok(())
    }

    async fn subscribe_with_options(
        &self,
        namespace_pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        self.check_open()?;
        let inner = &self.inner;
        let subject = pattern_subject(&inner.ctx.prefix, namespace_pattern)?;
        if let Some(p) = options.filter.actor_pattern.as_deref() {
            if !p.is_empty() {
                aether_core::validate_pattern(p)?;
            }
        }
        let (nats_sub, since) = self.subscribe_checked(&subject).await?;
        // Cancelled when the subscription is dropped or the bus shuts down.
        let stop = inner.shutdown.child_token();
        let (sender, sub) = inner.registry.subscribe_with_guard(
            namespace_pattern,
            options,
            stop.clone().drop_guard(),
        )?;
        let source = NatsSource {
            nats_sub,
            ctx: inner.ctx.clone(),
            wants: Wants::of(&sender),
            gaps: Gaps::default(),
            names: NamespaceCache::default(),
            stop: stop.clone(),
            stashed: None,
        };
        let span = tracing::info_span!("bus_subscription", subject = %subject);
        let sub = if sender.policy() == OverflowPolicy::DropNewest {
            inner
                .tasks
                .spawn(forward(source, sender).instrument(span.clone()));
            sub
        } else {
            // The subscriber reads from NATS itself. Only the registry keeps a sender: when it
            // goes (the bus closes), the subscriber is woken and finds the source stopped.
            drop(sender);
            sub.with_source(source)
        };
        let permissions = inner.connection.permissions();
        inner.tasks.spawn(
            watch_refusals(
                Refusals {
                    watch: permissions.clone(),
                    signal: permissions.changes(),
                    subject,
                    since,
                },
                stop,
            )
            .instrument(span),
        );
        Ok(sub)
    }
}
