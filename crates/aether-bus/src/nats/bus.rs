//! The NATS event bus: publish, live subscriptions, shutdown.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{
    Error, Event, EventBroadcaster, Result, SendOutcome, SubscribeOptions, Subscription,
    SubscriptionSender,
};
use aether_nats::{
    decode_namespace, namespace_subject, pattern_subject, round_trip, timeout_error,
    validate_prefix, Connection, ConnectionMonitor, Operation, PermissionWatch,
};
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, HeaderMap};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::config::{NatsBusConfig, DEFAULT_SUBSCRIPTION_CAPACITY};
use crate::metrics::{BusMetrics, MetricsSnapshot};
use crate::registry::SubscriberRegistry;

/// Header naming the bus instance that published a message.
pub const HEADER_PUBLISHER: &str = "Aether-Publisher";
/// Header carrying the publisher's sequence number within the message's namespace
/// (1, 2, 3, ... per publisher and namespace), used to detect lost messages.
pub const HEADER_SEQUENCE: &str = "Aether-Seq";

/// How long a publish refusal reported by the server makes further publishes to the same
/// subject fail at once. Bounded because the server's permissions may be reloaded: after this
/// long the next publish is sent again (and refused again, and remembered again, if nothing
/// changed).
pub const DENIED_PUBLISH_MEMORY: Duration = Duration::from_secs(30);

/// Bytes of the header block the bus adds, as NATS counts them against `max_payload`.
fn header_wire_len(publisher: &str, seq: u64) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
    b"NATS/1.0\r\n".len()
        + HEADER_PUBLISHER.len()
        + 2
        + publisher.len()
        + 2
        + HEADER_SEQUENCE.len()
        + 2
        + digits
        + 2
        + 2
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
    /// Per namespace: the last sequence number this bus published. The async mutex keeps
    /// "assign the number, hand the message to the client" atomic, so numbers go out in order.
    sequences: DashMap<String, Arc<tokio::sync::Mutex<u64>>>,
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
///   [`namespace_subject`](aether_nats::namespace_subject)); pattern tokens `*` and `>` become NATS's
///   native wildcards. [`SubscriptionFilter`](aether_core::SubscriptionFilter)s apply on the
///   receiving side.
/// - **Exactly once, locally too.** Subscribers of the publishing bus get the event directly
///   (with the same overflow policies as the local bus); the copy NATS echoes back is
///   recognised by the `Aether-Publisher` header and skipped. Subscribers of other buses get
///   it from NATS.
/// - **Ordering.** Events of one publisher to one namespace arrive in publish order.
/// - **No silent loss.** Each subscription has a bounded buffer and its
///   [`OverflowPolicy`](aether_core::OverflowPolicy). Backpressure holds back local publishers;
///   for events from other processes it holds back this bus's reading from NATS, and when the
///   NATS client's own buffer overflows the client drops messages (a "slow consumer"). Every
///   message carries a per-publisher, per-namespace sequence number (`Aether-Seq`): a gap is
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
            Some(stream) => Some(super::catchup::ensure_stream(client, &config, stream).await?),
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
                sequences: DashMap::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                closed: AtomicBool::new(false),
                baseline: (monitor.transport_errors(), monitor.permission_violations()),
            }),
        })
    }

    /// Connects to `url` and builds a bus, with a [`ConnectionMonitor`] installed and the
    /// client's per-subscription buffer set from [`NatsBusConfig::subscription_capacity`].
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
        Self::connect_with_options(url, options, config).await
    }

    /// Like [`connect`](Self::connect) with your own connect options (credentials, TLS,
    /// reconnect policy...). The monitor's event callback replaces any set in `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_options(
        url: &str,
        options: ConnectOptions,
        config: NatsBusConfig,
    ) -> Result<Self> {
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

    /// This bus instance's publisher id (the `Aether-Publisher` header of what it publishes).
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

    async fn send(&self, namespace: &str, subject: String, payload: Bytes) -> Result<()> {
        let inner = &self.inner;
        let slot = match inner.sequences.get(namespace) {
            Some(s) => s.clone(),
            None => inner
                .sequences
                .entry(namespace.to_string())
                .or_default()
                .clone(),
        };
        let mut last = slot.lock().await;
        let seq = *last + 1;
        let client = inner.connection.client();
        let limit = client.max_payload();
        let size = payload.len() + header_wire_len(&inner.ctx.publisher_id, seq);
        if limit > 0 && size > limit {
            return Err(Error::PayloadTooLarge { size, limit });
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_PUBLISHER, inner.ctx.publisher_id.as_str());
        headers.insert(HEADER_SEQUENCE, seq.to_string().as_str());
        let context = || format!("publishing to namespace {namespace:?}");
        match &inner.jetstream {
            None => {
                if let Err(e) = client.publish_with_headers(subject, headers, payload).await {
                    inner.ctx.metrics.record_transport_error();
                    return Err(map_publish_error(context(), e, size, limit));
                }
                *last = seq;
                Ok(())
            }
            Some(js) => {
                let context = context();
                let refused = subject.clone();
                // A refused publish gets no acknowledgement: without the guard it would wait
                // for the timeout and look like an unavailable server.
                let acked = inner
                    .connection
                    .permissions()
                    .guard(
                        || context.clone(),
                        |op, s| op == Operation::Publish && s == refused,
                        Some(inner.config.timeout()),
                        async {
                            let ack = js
                                .publish_with_headers(subject, headers, payload)
                                .await
                                .map_err(|e| Error::unavailable(&context, e))?;
                            // The message is on its way: the number is used even if the ack
                            // fails.
                            *last = seq;
                            drop(last);
                            ack.await
                                .map(drop)
                                .map_err(|e| Error::unavailable(&context, e))
                        },
                    )
                    .await;
                if let Err(e) = &acked {
                    if !matches!(e, Error::PermissionDenied { .. }) {
                        inner.ctx.metrics.record_transport_error();
                    }
                }
                acked
            }
        }
    }
}

fn map_publish_error(
    context: String,
    e: async_nats::client::PublishError,
    size: usize,
    limit: usize,
) -> Error {
    match e.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            Error::PayloadTooLarge { size, limit }
        }
        async_nats::client::PublishErrorKind::InvalidSubject => Error::invalid(e),
        _ => Error::unavailable(context, e),
    }
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
        let subject = namespace_subject(&self.inner.ctx.prefix, namespace)?;
        if let Some(v) = self.inner.connection.permissions().denied_within(
            Operation::Publish,
            &subject,
            DENIED_PUBLISH_MEMORY,
        ) {
            return Err(v.to_error(format!("publishing to namespace {namespace:?}")));
        }
        let payload = Bytes::from(event.to_json_bytes()?);
        self.send(namespace, subject, payload).await?;
        self.inner.ctx.metrics.record_published(namespace);
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
        let span = tracing::info_span!("bus_subscription", subject = %subject);
        let permissions = inner.connection.permissions();
        inner.tasks.spawn(
            forward(
                nats_sub,
                sender,
                inner.ctx.clone(),
                stop,
                Refusals {
                    watch: permissions.clone(),
                    signal: permissions.changes(),
                    subject,
                    since,
                },
            )
            .instrument(span),
        );
        Ok(sub)
    }
}

impl NatsEventBus {
    /// Subscribes to `subject` on NATS and waits until the server has processed it, so that
    /// nothing published afterwards is missed; fails with [`Error::PermissionDenied`] when the
    /// server refused it. Returns the subscription and when it was made.
    pub(crate) async fn subscribe_checked(
        &self,
        subject: &str,
    ) -> Result<(async_nats::Subscriber, Instant)> {
        let client = self.inner.connection.client();
        let watch = self.inner.connection.permissions();
        let timeout = self.inner.config.timeout();
        let context = format!("subscribing to {subject}");
        let refused = |op: Operation, s: &str| op == Operation::Subscribe && s == subject;
        let since = Instant::now();
        let mut nats_sub = client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| Error::unavailable(&context, e))?;
        // The server handles a connection's operations in order and reports a refused
        // subscription at once, so the refusal (if any) is read before the first round trip's
        // answer. The client hands it to the event callback on another task, though: the
        // second round trip gives that task its turn before the answer is trusted.
        let confirmed = watch
            .refused_during(since, refused, async {
                round_trip(client, timeout, &context).await?;
                tokio::task::yield_now().await;
                round_trip(client, timeout, &context).await
            })
            .await;
        let refusal = match confirmed {
            Ok(result) => match watch.find_since(since, refused) {
                Some(v) => Some(v),
                None => {
                    result?;
                    None
                }
            },
            Err(v) => Some(v),
        };
        match refusal {
            None => Ok((nats_sub, since)),
            Some(v) => {
                if let Err(e) = nats_sub.unsubscribe().await {
                    tracing::debug!(error = %e, "unsubscribing a refused bus subscription");
                }
                Err(v.to_error(context))
            }
        }
    }
}

/// What a live subscription needs to notice that the server refused its subject later (its
/// permissions were reloaded): the server then drops the subscription and reports it, and
/// nothing more arrives.
pub(crate) struct Refusals {
    watch: PermissionWatch,
    signal: watch::Receiver<u64>,
    subject: String,
    /// Reports from before this were already dealt with.
    since: Instant,
}

impl Refusals {
    /// Logs a refusal of this subscription's subject reported since the last call.
    fn check(&mut self) {
        let subject = self.subject.as_str();
        if let Some(v) = self.watch.find_since(self.since, |op, s| {
            op == Operation::Subscribe && s == subject
        }) {
            self.since = v.at + Duration::from_nanos(1);
            // `Subscription` has no way to carry an error to the subscriber, so the log (and
            // the `permission_errors` count the monitor already made) is what reports it.
            // The subscription's span names the subject.
            tracing::error!(
                "the NATS server refused a live bus subscription (permissions changed?): it \
                 receives nothing more from other processes"
            );
        }
    }
}

/// Most (publisher, namespace) pairs a subscription remembers for gap detection; beyond it the
/// memory is reset (a gap spanning the reset goes unnoticed).
pub(crate) const MAX_TRACKED_SOURCES: usize = 65_536;

/// Gap detection: the last sequence seen per (publisher, namespace).
///
/// Nested by publisher so that a message from a known pair is looked up by `&str`, without
/// allocating a key: this runs for every message a subscription receives.
#[derive(Debug, Default)]
pub(crate) struct GapTracker {
    last: HashMap<
        String,
        HashMap<String, u64, foldhash::fast::RandomState>,
        foldhash::fast::RandomState,
    >,
    /// (publisher, namespace) pairs in `last`.
    pairs: usize,
}

impl GapTracker {
    /// Records `seq` from `publisher` in `namespace`; returns how many messages before it were
    /// never seen.
    pub(crate) fn observe(&mut self, publisher: &str, namespace: &str, seq: u64) -> u64 {
        if let Some(last) = self
            .last
            .get_mut(publisher)
            .and_then(|per_namespace| per_namespace.get_mut(namespace))
        {
            let missed = seq.saturating_sub(*last).saturating_sub(1);
            if seq > *last {
                *last = seq;
            }
            return missed;
        }
        if self.pairs >= MAX_TRACKED_SOURCES {
            self.last.clear();
            self.pairs = 0;
        }
        self.last
            .entry(publisher.to_string())
            .or_default()
            .insert(namespace.to_string(), seq);
        self.pairs += 1;
        0
    }

    /// How many (publisher, namespace) pairs are remembered: the fuzz targets check it stays
    /// bounded whatever the headers say.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn tracked(&self) -> usize {
        self.pairs
    }
}

/// Turns one NATS message into an event for `sender`, or `None` when it is not for it (own
/// echo, filtered out, undecodable). Gaps are reported to `sender` as lag.
fn accept(
    ctx: &Ctx,
    sender: &SubscriptionSender,
    gaps: &mut GapTracker,
    msg: &async_nats::Message,
) -> Option<(String, Arc<Event>)> {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    };
    let publisher = header(HEADER_PUBLISHER);
    if publisher == Some(ctx.publisher_id.as_str()) {
        return None;
    }
    let Some(namespace) = decode_namespace(&ctx.prefix, msg.subject.as_str()) else {
        ctx.metrics.record_transport_error();
        tracing::warn!(subject = %msg.subject, "bus message on a subject that is not an encoded namespace; skipped");
        return None;
    };
    if let (Some(p), Some(seq)) = (
        publisher,
        header(HEADER_SEQUENCE).and_then(|s| s.parse().ok()),
    ) {
        let missed = gaps.observe(p, &namespace, seq);
        if missed > 0 {
            tracing::warn!(
                namespace,
                publisher = p,
                missed,
                "bus messages lost in transport; reported to the subscriber as lag"
            );
            sender.record_lag(missed);
            ctx.metrics.record_dropped(&namespace, missed);
        }
    }
    match Event::from_json_bytes(&msg.payload) {
        Ok(event) => {
            if sender.wants(&namespace, &event) {
                Some((namespace, Arc::new(event)))
            } else {
                None
            }
        }
        Err(e) => {
            ctx.metrics.record_transport_error();
            tracing::warn!(namespace, error = %e, "undecodable event on the bus; skipped");
            None
        }
    }
}

/// Forwards one NATS subscription into one bus subscription until either is closed or the
/// bus shuts down, then unsubscribes.
async fn forward(
    mut nats_sub: async_nats::Subscriber,
    sender: SubscriptionSender,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    mut refusals: Refusals,
) {
    let mut gaps = GapTracker::default();
    let mut watching = true;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = refusals.signal.changed(), if watching => {
                match changed {
                    Ok(()) => refusals.check(),
                    Err(_) => watching = false,
                }
                continue;
            }
            msg = nats_sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let Some((namespace, event)) = accept(&ctx, &sender, &mut gaps, &msg) else {
            continue;
        };
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            o = sender.send(event) => o,
        };
        match outcome {
            SendOutcome::Delivered => ctx.metrics.record_delivered(&namespace, 1),
            SendOutcome::Dropped => ctx.metrics.record_dropped(&namespace, 1),
            SendOutcome::Closed => break,
        }
    }
    if let Err(e) = nats_sub.unsubscribe().await {
        tracing::debug!(error = %e, "unsubscribing a bus subscription from NATS");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_matches_the_client() {
        for seq in [1u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut h = HeaderMap::new();
            h.insert(HEADER_PUBLISHER, "0123456789abcdef");
            h.insert(HEADER_SEQUENCE, seq.to_string().as_str());
            let mut expected = b"NATS/1.0\r\n".len() + 2;
            for (k, v) in h.iter() {
                for v in v {
                    expected += k.to_string().len() + 2 + v.as_str().len() + 2;
                }
            }
            assert_eq!(header_wire_len("0123456789abcdef", seq), expected, "{seq}");
        }
    }

    #[test]
    fn gaps_are_counted_per_publisher_and_namespace() {
        let mut g = GapTracker::default();
        assert_eq!(g.observe("p", "a", 5), 0, "first sight is the baseline");
        assert_eq!(g.observe("p", "a", 6), 0);
        assert_eq!(g.observe("p", "a", 9), 2);
        assert_eq!(g.observe("p", "b", 1), 0);
        assert_eq!(g.observe("q", "a", 1), 0);
        assert_eq!(g.observe("p", "a", 10), 0);
        assert_eq!(g.observe("p", "a", 10), 0, "a repeat is not a gap");
        assert_eq!(g.observe("p", "a", 8), 0, "a late message is not a gap");
        assert_eq!(g.observe("p", "a", 11), 0);
        // Memory stays bounded however many publishers and namespaces show up.
        for i in 0..MAX_TRACKED_SOURCES + 10 {
            g.observe(&format!("p{}", i % 7), &i.to_string(), 1);
            assert!(g.pairs <= MAX_TRACKED_SOURCES);
        }
        assert_eq!(
            g.last.values().map(|m| m.len()).sum::<usize>(),
            g.pairs,
            "the pair count matches the map"
        );
    }
}
