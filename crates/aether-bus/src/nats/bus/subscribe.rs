//! The receiving side of a live subscription: subscribing with the server's confirmation,
//! then one task per subscription that forwards NATS messages to the subscriber, skips the
//! bus's own echoes, reports gaps as lag and notices later refusals. Apart because it runs on
//! its own task, away from the callers.

use std::sync::Arc;
use std::time::Duration;

use aether_core::{Event, Result, SendOutcome, SubscriptionSender};
use aether_nats::{decode_namespace, subscribe_confirmed, Operation, PermissionWatch};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gaps::GapTracker;
use super::{Ctx, NatsEventBus, HEADER_PUBLISHER, HEADER_SEQUENCE};

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
pub(super) async fn forward(
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
