//! The NATS event bus: publish, live subscriptions, shutdown.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{
    Error, Event, EventBroadcaster, Result, SendOutcome, SubscribeOptions, Subscription,
    SubscriptionSender,
};
use aether_nats::{Operation, PermissionWatch};
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, HeaderMap};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::config::NatsBusConfig;
use super::monitor::TransportMonitor;
use super::subject::{decode_namespace, namespace_subject, pattern_subject, validate_prefix};
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

/// How long `subscribe` waits, after the server has processed the subscription, for the
/// refusal to be recorded. The server reports the refusal before it answers the round trip
/// that follows, so the report is already read by then; this only covers the hop to the task
/// that records it. Every successful subscription pays it once.
pub(crate) const SUBSCRIBE_PERMISSION_GRACE: Duration = Duration::from_millis(5);

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

/// Background tasks of one bus, so that `close` can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    handles: DashMap<u64, JoinHandle<()>>,
    next: AtomicU64,
}

impl Tasks {
    pub(crate) fn spawn<F>(self: &Arc<Self>, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let tasks = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            fut.await;
            if let Some(t) = tasks.upgrade() {
                t.handles.remove(&id);
            }
        });
        self.handles.insert(id, handle);
        // The task may have finished before it was inserted.
        self.handles.remove_if(&id, |_, h| h.is_finished());
    }

    fn take_all(&self) -> Vec<JoinHandle<()>> {
        let ids: Vec<u64> = self.handles.iter().map(|e| *e.key()).collect();
        ids.into_iter()
            .filter_map(|id| self.handles.remove(&id).map(|(_, h)| h))
            .collect()
    }
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) config: NatsBusConfig,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) registry: SubscriberRegistry,
    pub(crate) jetstream: Option<jetstream::Context>,
    /// Per namespace: the last sequence number this bus published. The async mutex keeps
    /// "assign the number, hand the message to the client" atomic, so numbers go out in order.
    sequences: DashMap<String, Arc<tokio::sync::Mutex<u64>>>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: Arc<Tasks>,
    closed: AtomicBool,
    pub(crate) monitor: TransportMonitor,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Tasks stop (and unsubscribe) on their own once they see this; local subscribers
        // get `None` after their buffers drain.
        self.shutdown.send_replace(true);
        self.registry.clear();
    }
}

/// An [`EventBroadcaster`] whose events travel between processes over NATS, with the same API
/// and semantics as the local [`EventBus`](crate::EventBus).
///
/// - **Subjects.** An event of namespace `ns` is published on `<prefix>.<ns>`, each namespace
///   token encoded so that no namespace can produce a wildcard or an extra token (see
///   [`namespace_subject`](super::namespace_subject)); pattern tokens `*` and `>` become NATS's
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
///   [`TransportMonitor`]).
/// - **No silent refusal.** NATS never answers a publish or subscription it refuses for lack
///   of permission: it drops it and reports a permissions violation asynchronously. The bus
///   (with a [`TransportMonitor`] installed, as [`connect`](Self::connect) does) records those
///   reports by subject: a subscription to a refused subject fails with
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

pub(crate) fn timeout_error(context: &str) -> Error {
    Error::unavailable(
        context,
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from NATS in time"),
    )
}

impl NatsEventBus {
    /// A bus on an existing client.
    ///
    /// The client's slow-consumer signal is not visible to the bus this way (NATS reports it
    /// only to the callback installed at connect time); use [`with_monitor`](Self::with_monitor)
    /// or [`connect`](Self::connect) to surface it. Lost messages are still detected and
    /// reported as lag.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad subject prefix; with JetStream configured, the errors
    /// of creating the stream.
    pub async fn new(client: Client, config: NatsBusConfig) -> Result<Self> {
        Self::with_monitor(client, config, TransportMonitor::new()).await
    }

    /// A bus on an existing client created with `monitor`
    /// ([`TransportMonitor::install`]) so that the client's slow-consumer and error reports are
    /// counted in this bus's metrics.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn with_monitor(
        client: Client,
        config: NatsBusConfig,
        monitor: TransportMonitor,
    ) -> Result<Self> {
        validate_prefix(&config.subject_prefix)?;
        let jetstream = match &config.jetstream {
            None => None,
            Some(stream) => Some(super::catchup::ensure_stream(&client, &config, stream).await?),
        };
        let metrics = monitor.metrics().clone();
        let (shutdown, _) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            prefix: config.subject_prefix.clone(),
            publisher_id: uuid::Uuid::new_v4().simple().to_string(),
            metrics: metrics.clone(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                ctx,
                registry: SubscriberRegistry::new(metrics),
                jetstream,
                sequences: DashMap::new(),
                shutdown,
                tasks: Arc::default(),
                closed: AtomicBool::new(false),
                monitor,
            }),
        })
    }

    /// Connects to `url` and builds a bus, with a [`TransportMonitor`] installed and the
    /// client's per-subscription buffer set from [`NatsBusConfig::subscription_capacity`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached;
    /// [`Error::PermissionDenied`] when it refuses the credentials; as [`new`](Self::new).
    pub async fn connect(url: &str, config: NatsBusConfig) -> Result<Self> {
        let options = ConnectOptions::new().subscription_capacity(config.subscription_capacity);
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
        let monitor = TransportMonitor::new();
        let client = monitor
            .install(options)
            .connect(url)
            .await
            .map_err(|e| aether_nats::connect_error(url, e))?;
        Self::with_monitor(client, config, monitor).await
    }

    /// A copy of the bus's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.ctx.metrics.snapshot()
    }

    /// Number of open live subscriptions (durable ones are counted in
    /// [`metrics`](Self::metrics) only).
    pub fn subscription_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// The NATS client the bus uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The configuration the bus was built with.
    pub fn config(&self) -> &NatsBusConfig {
        &self.inner.config
    }

    /// The monitor counting this bus's NATS connection events; its
    /// [`permissions`](TransportMonitor::permissions) are the refusals the server reported.
    pub fn monitor(&self) -> &TransportMonitor {
        &self.inner.monitor
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
        self.inner.shutdown.send_replace(true);
        for handle in self.inner.tasks.take_all() {
            if let Err(e) = handle.await {
                tracing::warn!(error = %e, "a bus subscription task failed while closing");
            }
        }
        self.inner.registry.clear();
        match tokio::time::timeout(self.inner.config.request_timeout, self.inner.client.flush())
            .await
        {
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
        let limit = inner.client.max_payload();
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
                if let Err(e) = inner
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                {
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
                    .monitor
                    .guard(
                        &context,
                        inner.config.request_timeout,
                        |op, s| op == Operation::Publish && s == refused,
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

/// Waits until the server has processed everything this client sent so far.
///
/// `Client::flush` only empties the socket buffer; the server handles a connection's
/// operations in order, so a message the client sends to itself and gets back proves that
/// every earlier operation (a SUB in particular) took effect.
pub(crate) async fn round_trip(
    client: &Client,
    timeout: std::time::Duration,
) -> Result<(), RoundTripError> {
    let probe = async {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| RoundTripError(Error::unavailable("", e)))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| RoundTripError(Error::unavailable("", e)))?;
        match sub.next().await {
            Some(_) => {
                // Explicitly, so the probe is gone before later commands are processed.
                let _ = sub.unsubscribe().await;
                Ok(())
            }
            None => Err(RoundTripError(Error::Closed("NATS connection".into()))),
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(RoundTripError(timeout_error(""))),
    }
}

/// A failed [`round_trip`], to be given the context of the operation that needed it.
#[derive(Debug)]
pub(crate) struct RoundTripError(Error);

impl RoundTripError {
    pub(crate) fn in_context(self, context: &str) -> Error {
        match self.0 {
            Error::Unavailable { source, .. } => Error::Unavailable {
                context: context.to_string(),
                source,
            },
            other => other,
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
    /// [`TransportMonitor`] installed (as [`NatsEventBus::connect`] does).
    /// [`Error::PayloadTooLarge`], [`Error::InvalidInput`], [`Error::Unavailable`],
    /// [`Error::Closed`] as their names say.
    async fn publish(&self, namespace: &str, event: &Event) -> Result<()> {
        self.check_open()?;
        let subject = namespace_subject(&self.inner.ctx.prefix, namespace)?;
        if let Some(v) = self.inner.monitor.permissions().denied_within(
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
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (sender, sub) =
            inner
                .registry
                .subscribe_with_guard(namespace_pattern, options, StopOnDrop(stop_tx))?;
        inner.tasks.spawn(forward(
            nats_sub,
            sender,
            inner.ctx.clone(),
            stop_rx,
            inner.shutdown.subscribe(),
            Refusals {
                watch: inner.monitor.permissions().clone(),
                signal: inner.monitor.violation_signal(),
                subject,
                since,
            },
        ));
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
        let inner = &self.inner;
        let context = format!("subscribing to {subject}");
        let signal = inner.monitor.violation_signal();
        let since = Instant::now();
        let mut nats_sub = inner
            .client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| Error::unavailable(&context, e))?;
        // The server handles a connection's operations in order and reports a refused
        // subscription at once, so the refusal (if any) is read before the round trip's answer.
        let flushed = inner
            .monitor
            .violation_during(
                signal,
                since,
                |op, s| op == Operation::Subscribe && s == subject,
                round_trip(&inner.client, inner.config.request_timeout),
                SUBSCRIBE_PERMISSION_GRACE,
            )
            .await;
        match flushed {
            Ok(Ok(())) => Ok((nats_sub, since)),
            Ok(Err(e)) => Err(e.in_context(&context)),
            Err(v) => {
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
            tracing::error!(
                subject,
                "the NATS server refused a live bus subscription (permissions changed?): it \
                 receives nothing more from other processes"
            );
        }
    }
}

/// Dropped with a subscription: its task sees the channel close and stops.
pub(crate) struct StopOnDrop(#[allow(dead_code)] pub(crate) oneshot::Sender<()>);

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
    mut stop: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
    mut refusals: Refusals,
) {
    let mut gaps = GapTracker::default();
    let mut watching = true;
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = shutdown.wait_for(|s| *s) => break,
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
            _ = &mut stop => break,
            _ = shutdown.wait_for(|s| *s) => break,
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
