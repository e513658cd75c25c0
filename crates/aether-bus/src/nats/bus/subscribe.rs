//! The receiving side of a live subscription: subscribing with the server's confirmation,
//! then one task per subscription that forwards NATS messages to the subscriber, skips the
//! bus's own echoes, reports gaps as lag and notices later refusals. Apart because it runs on
//! its own task, away from the callers.

use std::sync::Arc;
use std::time::Duration;

use std::task::{Context, Poll};

use aether_core::{
    match_namespace_pattern, Delivery, DeliverySource, Event, Result, SendOutcome,
    SubscriptionFilter, SubscriptionSender,
};
use aether_nats::backend::subscribe_confirmed;
use aether_nats::subject::decode_namespace;
use aether_nats::{Operation, PermissionWatch};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame;
use super::gaps::GapTracker;
use super::{Ctx, NatsEventBus};
use crate::metrics::{BusMetrics, NamespaceCounters};

impl NatsEventBus {
    /// Subscribes to `subject` on NATS and waits until the server has processed it, so that
    /// nothing published afterwards is missed; fails with [`Error::PermissionDenied`] when the
    /// server refused it. Returns the subscription and when it was made.
    pub(crate) async fn subscribe_checked(
        &self,
        subject: &str,
    ) -> Result<(async_nats::Subscriber, Instant)> {
        subscribe_confirmed(
            self.inner.connection.client(),
            self.inner.connection.permissions(),
            subject,
            self.inner.config.timeout(),
        )
        .await
    }
}

/// What a live subscription needs to notice that the server refused its subject later (its
/// permissions were reloaded): the server then drops the subscription and reports it, and
/// nothing more arrives.
pub(crate) struct Refusals {
    pub(super) watch: PermissionWatch,
    pub(super) signal: watch::Receiver<u64>,
    pub(super) subject: String,
    /// Reports from before this were already dealt with.
    pub(super) since: Instant,
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

/// What one NATS message brings a subscription.
struct Accepted {
    /// The event, when it is for this subscription.
    event: Option<Arc<Event>>,
    /// Messages of its publisher and namespace lost before it (they may have been for this
    /// subscription, so they count even when this event is not).
    missed: u64,
}

/// Takes one NATS message apart for a subscription; `None` when it brings nothing (own echo,
/// unreadable).
fn accept(
    ctx: &Ctx,
    wants: &Wants,
    gaps: &mut GapTracker,
    names: &mut NamespaceCache,
    msg: &async_nats::Message,
) -> Option<Accepted> {
    let parts = match frame::parse(&msg.payload, msg.headers.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            ctx.metrics.record_transport_error();
            tracing::warn!(subject = %msg.subject, error = %e, "unreadable bus message; skipped");
            return None;
        }
    };
    let publisher = parts.origin.map(|o| o.publisher);
    if publisher == Some(ctx.publisher_id.as_str()) {
        return None;
    }
    let Some(namespace) = names.decode(&ctx.prefix, &msg.subject) else {
        ctx.metrics.record_transport_error();
        tracing::warn!(subject = %msg.subject, "bus message on a subject that is not an encoded namespace; skipped");
        return None;
    };
    let mut missed = 0;
    // Sequence numbers start at 1: 0 marks a message without a readable one.
    if let Some(origin) = parts.origin.filter(|o| o.seq > 0) {
        missed = gaps.observe(origin.publisher, namespace, origin.seq);
        if missed > 0 {
            tracing::warn!(
                namespace,
                publisher = origin.publisher,
                missed,
                "bus messages lost in transport; reported to the subscriber as lag"
            );
            ctx.metrics.record_dropped(namespace, missed);
        }
    }
    let event = match Event::from_json_bytes(parts.json) {
        Ok(event) => wants.matches(namespace, &event).then(|| Arc::new(event)),
        Err(e) => {
            ctx.metrics.record_transport_error();
            tracing::warn!(namespace, error = %e, "undecodable event on the bus; skipped");
            None
        }
    };
    Some(Accepted { event, missed })
}

/// The namespace of the subject last seen: a subscription mostly receives runs of messages
/// on one subject, and decoding it again for each would allocate each time.
#[derive(Default)]
pub(super) struct NamespaceCache {
    last: Option<(async_nats::Subject, String)>,
    /// The counters of the namespace decoded last, once asked for.
    counters: Option<Arc<NamespaceCounters>>,
}

impl NamespaceCache {
    /// The namespace `subject` encodes under `prefix`, `None` when it encodes none.
    fn decode(&mut self, prefix: &str, subject: &async_nats::Subject) -> Option<&str> {
        let known = matches!(&self.last, Some((s, _)) if s == subject);
        if !known {
            let namespace = decode_namespace(prefix, subject.as_str())?;
            self.last = Some((subject.clone(), namespace));
            self.counters = None;
        }
        self.last.as_ref().map(|(_, n)| n.as_str())
    }

    /// The namespace decoded last.
    fn current(&self) -> &str {
        self.last.as_ref().map_or("", |(_, n)| n.as_str())
    }

    /// The counters of the namespace decoded last.
    fn counters(&mut self, metrics: &BusMetrics) -> &NamespaceCounters {
        let namespace = self.last.as_ref().map_or("", |(_, n)| n.as_str());
        self.counters
            .get_or_insert_with(|| metrics.counters(namespace))
    }
}

/// The subscription's pattern and filter, as the source applies them to what arrives.
pub(super) struct Wants {
    pattern: String,
    filter: SubscriptionFilter,
}

impl Wants {
    pub(super) fn of(sender: &SubscriptionSender) -> Self {
        Self {
            pattern: sender.pattern().to_string(),
            filter: sender.filter().clone(),
        }
    }

    fn matches(&self, namespace: &str, event: &Event) -> bool {
        match_namespace_pattern(&self.pattern, namespace)
            && (self.filter.is_empty() || self.filter.matches(event))
    }
}

/// What a live subscription receives from other processes: read from the NATS subscription
/// when the subscriber asks (see [`DeliverySource`]), so that each message is decoded on the
/// subscriber's own task, with no hop through another one. Dropping it unsubscribes.
pub(super) struct NatsSource {
    pub(super) nats_sub: async_nats::Subscriber,
    pub(super) ctx: Arc<Ctx>,
    pub(super) wants: Wants,
    pub(super) gaps: GapTracker,
    pub(super) names: NamespaceCache,
    /// Cancelled when the subscription is dropped or the bus shuts down.
    pub(super) stop: CancellationToken,
    /// An event held back while the lag before it is reported.
    pub(super) stashed: Option<Arc<Event>>,
}

impl DeliverySource for NatsSource {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if let Some(event) = self.stashed.take() {
            return Poll::Ready(Some(Delivery::Event(event)));
        }
        loop {
            if self.stop.is_cancelled() {
                return Poll::Ready(None);
            }
            let msg = match self.nats_sub.poll_next_unpin(cx) {
                Poll::Ready(Some(m)) => m,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let Some(accepted) = accept(
                &self.ctx,
                &self.wants,
                &mut self.gaps,
                &mut self.names,
                &msg,
            ) else {
                continue;
            };
            if let Some(event) = &accepted.event {
                let metrics = &self.ctx.metrics;
                metrics.record_delivered_to(self.names.counters(metrics));
                if accepted.missed == 0 {
                    return Poll::Ready(Some(Delivery::Event(event.clone())));
                }
            }
            if accepted.missed > 0 {
                self.stashed = accepted.event;
                return Poll::Ready(Some(Delivery::Lagged(accepted.missed)));
            }
        }
    }
}

/// Forwards one NATS subscription into a subscription's buffer until either is closed or the
/// bus shuts down: for [`OverflowPolicy::DropNewest`](aether_core::OverflowPolicy), whose
/// promise (never hold the transport back; drop what does not fit, and say so) needs messages
/// taken from NATS whether or not the subscriber reads. Dropping the NATS subscription at the
/// end unsubscribes.
pub(super) async fn forward(mut source: NatsSource, sender: SubscriptionSender) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = source.stop.cancelled() => break,
            msg = source.nats_sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let Some(accepted) = accept(
            &source.ctx,
            &source.wants,
            &mut source.gaps,
            &mut source.names,
            &msg,
        ) else {
            continue;
        };
        let namespace = source.names.current();
        if accepted.missed > 0 {
            sender.record_lag(accepted.missed);
        }
        let Some(event) = accepted.event else {
            continue;
        };
        match sender.try_send(event) {
            SendOutcome::Delivered => source.ctx.metrics.record_delivered(namespace, 1),
            SendOutcome::Dropped => source.ctx.metrics.record_dropped(namespace, 1),
            SendOutcome::Closed => break,
        }
    }
}

/// Watches for the server refusing the subscription's subject later (its permissions were
/// reloaded) until the subscription stops.
pub(super) async fn watch_refusals(mut refusals: Refusals, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = refusals.signal.changed() => match changed {
                Ok(()) => refusals.check(),
                Err(_) => return,
            },
        }
    }
}
