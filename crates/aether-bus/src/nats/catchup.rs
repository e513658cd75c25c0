//! Durable delivery from the bus's JetStream stream: replay from a checkpoint, then live.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::UNIX_EPOCH;

use aether_core::{
    validate_pattern, Error, Event, Result, SubscriptionFilter, DEFAULT_SUBSCRIPTION_BUFFER,
};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::bus::{timeout_error, Ctx, NatsEventBus, StopOnDrop};
use super::config::{BusStreamConfig, NatsBusConfig, StartFrom};
use super::subject::{decode_namespace, pattern_subject};
use crate::metrics::BusMetrics;

/// Creates the bus stream (capturing `<prefix>.>`) unless it exists, and returns the
/// JetStream context to publish with.
pub(crate) async fn ensure_stream(
    client: &Client,
    config: &NatsBusConfig,
    stream_config: &BusStreamConfig,
) -> Result<jetstream::Context> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(config.request_timeout);
    let wanted = stream::Config {
        name: stream_config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_age: stream_config.max_age.unwrap_or_default(),
        max_messages: stream_config.max_messages.unwrap_or(-1),
        num_replicas: stream_config.replicas.max(1),
        storage: if stream_config.memory_storage {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        },
        ..Default::default()
    };
    js.get_or_create_stream(wanted).await.map_err(|e| {
        Error::unavailable(
            format!(
                "creating the bus stream {:?} for {}.>",
                stream_config.stream_name, config.subject_prefix
            ),
            e,
        )
    })?;
    Ok(js)
}

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

/// Counts the subscription as closed when it is dropped.
struct DurableGuard {
    _stop: StopOnDrop,
    metrics: Weak<BusMetrics>,
}

impl Drop for DurableGuard {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.upgrade() {
            m.subscription_closed();
        }
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

fn deliver_policy(start: StartFrom) -> Result<consumer::DeliverPolicy> {
    Ok(match start {
        StartFrom::Beginning => consumer::DeliverPolicy::All,
        StartFrom::New => consumer::DeliverPolicy::New,
        StartFrom::Sequence(0) | StartFrom::Sequence(1) => consumer::DeliverPolicy::All,
        StartFrom::Sequence(start_sequence) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence }
        }
        StartFrom::Time(t) => {
            let nanos = t
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::invalid("start time is before 1970"))?
                .as_nanos();
            let nanos =
                i128::try_from(nanos).map_err(|_| Error::invalid("start time is out of range"))?;
            let start_time = async_nats::datetime::from_nanos(nanos)
                .map_err(|e| Error::invalid(format!("start time is out of range: {e}")))?;
            consumer::DeliverPolicy::ByStartTime { start_time }
        }
    })
}

impl NatsEventBus {
    /// Subscribes to the events of the namespaces matching `pattern` stored in the bus stream,
    /// starting at `start`, then continuing with new ones as they are published (by any bus
    /// on the same prefix and stream). Each stored event is delivered once, in stream order,
    /// with its stream sequence for checkpointing.
    ///
    /// Needs [`NatsBusConfig::jetstream`]. Durable subscriptions are independent of live ones:
    /// an event reaches both kinds.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed pattern or filter, or when the bus has no
    /// JetStream stream; [`Error::Unavailable`] when the consumer cannot be created;
    /// [`Error::Closed`] after [`close`](Self::close).
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
        let context = format!(
            "creating a durable subscription on {subject} in stream {:?}",
            stream_config.stream_name
        );
        let create = async {
            let stream = js
                .get_stream_no_info(&stream_config.stream_name)
                .await
                .map_err(|e| Error::unavailable(&context, e))?;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: deliver_policy(start)?,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::unavailable(&context, e))?;
            consumer
                .messages()
                .await
                .map_err(|e| Error::unavailable(&context, e))
        };
        let messages = match tokio::time::timeout(inner.config.request_timeout, create).await {
            Ok(r) => r?,
            Err(_) => return Err(timeout_error(&context)),
        };
        let (tx, rx) = mpsc::channel(DEFAULT_SUBSCRIPTION_BUFFER);
        let (stop_tx, stop_rx) = oneshot::channel();
        inner.ctx.metrics.subscription_opened();
        let guard = DurableGuard {
            _stop: StopOnDrop(stop_tx),
            metrics: Arc::downgrade(&inner.ctx.metrics),
        };
        inner.tasks.spawn(replay(
            messages,
            tx,
            pattern.to_string(),
            filter,
            inner.ctx.clone(),
            stop_rx,
            inner.shutdown.subscribe(),
        ));
        Ok(DurableSubscription {
            rx,
            pattern: pattern.to_string(),
            last_sequence: None,
            _guard: guard,
        })
    }
}

/// Pause after a consumer error before reading again, so a persistent failure does not spin.
const ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

async fn replay(
    mut messages: consumer::pull::Ordered,
    tx: mpsc::Sender<DurableEvent>,
    pattern: String,
    filter: SubscriptionFilter,
    ctx: Arc<Ctx>,
    mut stop: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = shutdown.wait_for(|s| *s) => break,
            next = messages.next() => next,
        };
        let msg = match next {
            None => {
                tracing::warn!(pattern, "durable bus subscription ended by the server");
                break;
            }
            Some(Err(e)) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(pattern, error = %e, "durable bus subscription: consumer error, continuing");
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(ERROR_BACKOFF) => continue,
                }
            }
            Some(Ok(m)) => m,
        };
        let sequence = match msg.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(error = %e, "durable bus message without stream metadata; skipped");
                continue;
            }
        };
        let Some(namespace) = decode_namespace(&ctx.prefix, msg.subject.as_str()) else {
            ctx.metrics.record_transport_error();
            tracing::warn!(subject = %msg.subject, sequence, "stream message on a subject that is not an encoded namespace; skipped");
            continue;
        };
        let event = match Event::from_json_bytes(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                ctx.metrics.record_transport_error();
                tracing::warn!(namespace, sequence, error = %e, "undecodable event in the bus stream; skipped");
                continue;
            }
        };
        if !aether_core::match_namespace_pattern(&pattern, &namespace) || !filter.matches(&event) {
            continue;
        }
        let item = DurableEvent {
            sequence,
            namespace,
            event: Arc::new(event),
        };
        let ns = item.namespace.clone();
        let sent = tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = shutdown.wait_for(|s| *s) => break,
            r = tx.send(item) => r,
        };
        if sent.is_err() {
            break;
        }
        ctx.metrics.record_delivered(&ns, 1);
    }
}
