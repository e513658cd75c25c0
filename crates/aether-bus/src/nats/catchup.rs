//! Durable delivery from the bus's JetStream stream: replay from a checkpoint, then live.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aether_core::Backoff;
use aether_core::{
    validate_pattern, Error, Event, Result, SubscriptionFilter, DEFAULT_SUBSCRIPTION_BUFFER,
};
use aether_nats::backend::{ConsumerSpec, JsSubject, StartAt};
use aether_nats::subject::{decode_namespace, pattern_subject};
use aether_nats::{Operation, PermissionWatch};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::bus::{Ctx, NatsEventBus};
#[cfg(doc)]
use super::config::NatsBusConfig;
use super::config::StartFrom;
use crate::metrics::BusMetrics;

/// One event read from the bus stream, with its position for checkpointing.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableEvent {
    /// The event's stream sequence: store it as the checkpoint once the event is processed,
    /// and resume from `sequence + 1`.
    pub sequence: u64,
    /// The namespace the event was published to.
    pub namespace: String,
    /// The event.
    pub event: Arc<Event>,
}

/// Counts a durable subscription as closed exactly once: when its task ends (bus closed) or
/// when the subscriber drops it, whichever comes first.
#[derive(Debug, Clone)]
struct OpenCount {
    counted: Arc<AtomicBool>,
    metrics: Weak<BusMetrics>,
}

impl OpenCount {
    fn close(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            if let Some(m) = self.metrics.upgrade() {
                m.subscription_closed();
            }
        }
    }
}

/// Stops the task and counts the subscription as closed when it is dropped.
struct DurableGuard {
    _stop: DropGuard,
    open: OpenCount,
}

impl Drop for DurableGuard {
    fn drop(&mut self) {
        self.open.close();
    }
}

/// A subscription that reads the bus's JetStream stream from a start point and then keeps
/// receiving new events, each exactly once, in stream order.
///
/// Nothing is dropped: when the subscriber is slow, reading from the server simply waits (the
/// server holds the events), so there is no overflow policy and no lag. Events the filter
/// rejects or that cannot be decoded are skipped (the latter counted as transport errors).
///
/// For a projection: process each [`DurableEvent`], store its `sequence` as the checkpoint,
/// and after a restart subscribe again with `StartFrom::Sequence(checkpoint + 1)`
/// ([`resume_from`](Self::resume_from)).
pub struct DurableSubscription {
    rx: mpsc::Receiver<DurableEvent>,
    pattern: String,
    last_sequence: Option<u64>,
    _guard: DurableGuard,
}

impl fmt::Debug for DurableSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableSubscription")
            .field("pattern", &self.pattern)
            .field("last_sequence", &self.last_sequence)
            .finish()
    }
}

impl DurableSubscription {
    /// The next event; `None` once the bus is closed (or dropped) and the buffer is drained.
    pub async fn recv(&mut self) -> Option<DurableEvent> {
        let ev = self.rx.recv().await?;
        self.last_sequence = Some(ev.sequence);
        Some(ev)
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<DurableEvent> {
        let ev = self.rx.try_recv().ok()?;
        self.last_sequence = Some(ev.sequence);
        Some(ev)
    }

    /// The stream sequence of the last event returned by [`recv`](Self::recv).
    pub fn last_sequence(&self) -> Option<u64> {
        self.last_sequence
    }

    /// Where a new subscription should start to continue after the last event returned
    /// (`None` before the first one).
    pub fn resume_from(&self) -> Option<StartFrom> {
        self.last_sequence.map(|s| StartFrom::Sequence(s + 1))
    }

    /// The namespace pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// The consumer start of a subscription's start point.
fn start_at(start: StartFrom) -> StartAt {
    match start {
        StartFrom::Beginning => StartAt::First,
        StartFrom::New => StartAt::New,
        StartFrom::Sequence(sequence) => StartAt::Sequence(sequence),
        StartFrom::Time(t) => StartAt::Time(t),
    }
}

/// What a durable subscription reads, so that it can open (and re-open) its consumer.
struct Source {
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    start: StartFrom,
    timeout: Duration,
    /// Turns a JetStream request the server refused into a permission error at once, instead
    /// of a timeout.
    permissions: PermissionWatch,
}

impl Source {
    fn context(&self) -> String {
        format!(
            "reading {} from stream {:?}",
            self.subject, self.stream_name
        )
    }

    /// Whether a refused publish to `subject` concerns a request of this subscription: a
    /// JetStream API call on its stream.
    fn is_own_request(&self, operation: Operation, subject: &str) -> bool {
        operation == Operation::Publish
            && JsSubject::parse(subject).is_some_and(|s| s.concerns_stream(&self.stream_name))
    }

    /// An ordered consumer starting after stream sequence `after`, or at the subscription's
    /// start point when nothing was read yet.
    async fn open(&self, after: Option<u64>) -> Result<consumer::pull::Ordered> {
        let spec = ConsumerSpec::new(
            self.subject.clone(),
            start_at(self.start).resume_after(after),
        );
        let context = self.context();
        let create = async {
            let stream = self
                .js
                .get_stream_no_info(&self.stream_name)
                .await
                .map_err(|e| Error::unavailable(&context, e))?;
            spec.open_ordered_pull(&stream, &context).await
        };
        self.permissions
            .guard(
                || context.clone(),
                |op, s| self.is_own_request(op, s),
                Some(self.timeout),
                create,
            )
            .await
    }

    /// The stream's last sequence (to turn [`StartFrom::New`] into an exact position that
    /// survives re-opening).
    async fn last_sequence(&self) -> Result<u64> {
        let context = self.context();
        let info = async {
            let mut stream = self
                .js
                .get_stream(&self.stream_name)
                .await
                .map_err(|e| Error::unavailable(&context, e))?;
            stream
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .map_err(|e| Error::unavailable(&context, e))
        };
        self.permissions
            .guard(
                || context.clone(),
                |op, s| self.is_own_request(op, s),
                Some(self.timeout),
                info,
            )
            .await
    }
}

impl NatsEventBus {
    /// Subscribes to the events of the namespaces matching `pattern` stored in the bus stream,
    /// starting at `start`, then continuing with new ones as they are published (by any bus
    /// on the same prefix and stream). Each stored event is delivered once, in stream order,
    /// with its stream sequence for checkpointing.
    ///
    /// Needs [`NatsBusConfig::jetstream`]. Durable subscriptions are independent of live ones:
    /// an event reaches both kinds. After a reconnection the subscription re-opens its
    /// consumer right after the last event it read (at once when the bus's connection has its
    /// [`ConnectionMonitor`](aether_nats::ConnectionMonitor) installed, otherwise when the
    /// consumer notices missed heartbeats).
    ///
    /// The pattern is first subscribed to live and at once unsubscribed (one round trip), so
    /// that a connection the server does not let subscribe to the pattern's subject gets
    /// [`Error::PermissionDenied`] here too: the stream is read through the JetStream API,
    /// which subject permissions do not cover. This is a consistency check, not a protection;
    /// deny the JetStream API of the bus stream to keep a client from reading it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed pattern or filter, or when the bus has no
    /// JetStream stream; [`Error::PermissionDenied`] when the server refuses the live
    /// subscription or a JetStream request of this one (naming the refused subject);
    /// [`Error::NotFound`] when the bus stream is gone; [`Error::Unavailable`] when the
    /// consumer cannot be created for lack of an answer; [`Error::Closed`] after
    /// [`close`](Self::close).
    pub async fn subscribe_durable(
        &self,
        pattern: &str,
        start: StartFrom,
        filter: SubscriptionFilter,
    ) -> Result<DurableSubscription> {
        self.check_open()?;
        let inner = &self.inner;
        let (Some(js), Some(stream_config)) = (&inner.jetstream, &inner.config.jetstream) else {
            return Err(Error::invalid(
                "durable subscriptions need a bus stream: set NatsBusConfig::jetstream",
            ));
        };
        let subject = pattern_subject(&inner.ctx.prefix, pattern)?;
        if let Some(p) = filter.actor_pattern.as_deref() {
            if !p.is_empty() {
                validate_pattern(p)?;
            }
        }
        let (mut probe, _) = self.subscribe_checked(&subject).await?;
        if let Err(e) = probe.unsubscribe().await {
            tracing::debug!(error = %e, "unsubscribing the permission probe of a durable subscription");
        }
        let source = Source {
            js: js.clone(),
            stream_name: stream_config.stream_name.clone(),
            subject,
            start,
            timeout: inner.config.timeout(),
            permissions: inner.connection.permissions().clone(),
        };
        // "New" is pinned to the current end of the stream, so that re-opening after a
        // reconnection neither skips nor repeats anything.
        let after = match start {
            StartFrom::New => Some(source.last_sequence().await?),
            _ => None,
        };
        let messages = source.open(after).await?;
        let (tx, rx) = mpsc::channel(DEFAULT_SUBSCRIPTION_BUFFER);
        // Cancelled when the subscription is dropped or the bus shuts down.
        let stop = inner.shutdown.child_token();
        inner.ctx.metrics.subscription_opened();
        let open = OpenCount {
            counted: Arc::new(AtomicBool::new(false)),
            metrics: Arc::downgrade(&inner.ctx.metrics),
        };
        let guard = DurableGuard {
            _stop: stop.clone().drop_guard(),
            open: open.clone(),
        };
        let mut connections = inner.connection.monitor().connections();
        connections.mark_unchanged();
        let span = tracing::info_span!("bus_durable_subscription", pattern, stream = %stream_config.stream_name);
        inner.tasks.spawn(
            replay(
                Replay {
                    source,
                    after,
                    tx,
                    pattern: pattern.to_string(),
                    filter,
                    ctx: inner.ctx.clone(),
                    open,
                },
                messages,
                Signals {
                    stop,
                    connections,
                    watch_connections: true,
                },
            )
            .instrument(span),
        );
        Ok(DurableSubscription {
            rx,
            pattern: pattern.to_string(),
            last_sequence: None,
            _guard: guard,
        })
    }
}

/// Pause before re-opening a consumer after a failure, so a persistent failure does not spin.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts to re-open a consumer.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// How long a durable subscription may sit without a message before it checks whether the
/// stream holds messages it has not read. An ordered consumer on a server that died can go
/// quiet without reporting an error; this catches that.
const IDLE_CHECK: Duration = Duration::from_secs(3);

struct Replay {
    source: Source,
    /// The last stream sequence read (delivered or skipped by the filter).
    after: Option<u64>,
    tx: mpsc::Sender<DurableEvent>,
    pattern: String,
    filter: SubscriptionFilter,
    ctx: Arc<Ctx>,
    open: OpenCount,
}

struct Signals {
    stop: CancellationToken,
    connections: watch::Receiver<u64>,
    watch_connections: bool,
}

enum Step {
    Message(Option<std::result::Result<Box<jetstream::Message>, consumer::pull::OrderedError>>),
    Reconnected,
    Idle,
    Stop,
}

impl Replay {
    /// Handles one stored message; `false` when the subscriber is gone.
    async fn handle(
        &mut self,
        msg: Box<jetstream::Message>,
        signals: &mut Signals,
    ) -> Option<bool> {
        let ctx = &self.ctx;
        let sequence = match msg.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(error = %e, "durable bus message without stream metadata; skipped");
                return Some(true);
            }
        };
        if self.after.is_some_and(|a| sequence <= a) {
            // Already read before the consumer was re-opened.
            return Some(true);
        }
        self.after = Some(sequence);
        let Some(namespace) = decode_namespace(&ctx.prefix, msg.subject.as_str()) else {
            ctx.metrics.record_transport_error();
            tracing::warn!(subject = %msg.subject, sequence, "stream message on a subject that is not an encoded namespace; skipped");
            return Some(true);
        };
        let json = match super::bus::parse_message(&msg.payload, msg.headers.as_ref()) {
            Ok(parts) => parts.json,
            Err(e) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(namespace, sequence, error = %e, "unreadable message in the bus stream; skipped");
                return Some(true);
            }
        };
        let event = match Event::from_json_bytes(json) {
            Ok(e) => e,
            Err(e) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(namespace, sequence, error = %e, "undecodable event in the bus stream; skipped");
                return Some(true);
            }
        };
        if !aether_core::match_namespace_pattern(&self.pattern, &namespace)
            || !self.filter.matches(&event)
        {
            return Some(true);
        }
        let ns = namespace.clone();
        let item = DurableEvent {
            sequence,
            namespace,
            event: Arc::new(event),
        };
        let sent = tokio::select! {
            biased;
            _ = signals.stop.cancelled() => return None,
            r = self.tx.send(item) => r,
        };
        if sent.is_err() {
            return Some(false);
        }
        ctx.metrics.record_delivered(&ns, 1);
        Some(true)
    }

    /// Re-opens the consumer after the last message read, retrying until it works or the
    /// subscription stops.
    async fn reopen(&self, signals: &mut Signals) -> Option<consumer::pull::Ordered> {
        let mut backoff = Backoff::new(RETRY_BACKOFF, MAX_RETRY_BACKOFF);
        loop {
            match self.source.open(self.after).await {
                Ok(m) => return Some(m),
                Err(e) => {
                    self.ctx.metrics.record_transport_error();
                    tracing::warn!(error = %e, "re-opening a durable bus subscription failed; retrying");
                }
            }
            tokio::select! {
                biased;
                _ = signals.stop.cancelled() => return None,
                _ = backoff.wait() => {}
            }
        }
    }
}

async fn replay(mut r: Replay, mut messages: consumer::pull::Ordered, mut signals: Signals) {
    loop {
        let step = tokio::select! {
            biased;
            _ = signals.stop.cancelled() => Step::Stop,
            changed = signals.connections.changed(), if signals.watch_connections => match changed {
                Ok(()) => Step::Reconnected,
                // The monitor is gone: rely on the consumer's own recovery from now on.
                Err(_) => {
                    signals.watch_connections = false;
                    continue;
                }
            },
            next = messages.next() => Step::Message(next.map(|r| r.map(Box::new))),
            _ = tokio::time::sleep(IDLE_CHECK) => Step::Idle,
        };
        match step {
            Step::Stop => break,
            Step::Message(Some(Ok(msg))) => match r.handle(msg, &mut signals).await {
                Some(true) => {}
                Some(false) | None => break,
            },
            Step::Idle => {
                // Quiet is normal; quiet while the stream moved past what we read may be a
                // consumer that lost its server. Re-opening after `after` is always safe:
                // anything already read is skipped.
                let behind = match r.source.last_sequence().await {
                    Ok(last) => last > r.after.unwrap_or(0),
                    Err(_) => false,
                };
                if behind {
                    tracing::debug!(after = ?r.after, "durable bus subscription idle while the stream moved on; re-opening");
                    drop(messages);
                    match r.reopen(&mut signals).await {
                        Some(m) => messages = m,
                        None => break,
                    }
                }
            }
            Step::Reconnected => {
                tracing::debug!(after = ?r.after, "reconnected; re-opening the durable bus subscription");
                drop(messages);
                match r.reopen(&mut signals).await {
                    Some(m) => messages = m,
                    None => break,
                }
            }
            Step::Message(Some(Err(e))) => {
                r.ctx.metrics.record_transport_error();
                tracing::warn!(error = %e, "durable bus subscription: consumer error; re-opening");
                drop(messages);
                match r.reopen(&mut signals).await {
                    Some(m) => messages = m,
                    None => break,
                }
            }
            Step::Message(None) => {
                tracing::warn!("durable bus consumer ended; re-opening");
                drop(messages);
                match r.reopen(&mut signals).await {
                    Some(m) => messages = m,
                    None => break,
                }
            }
        }
    }
    r.open.close();
}
