//! The sending half of a subscription ([`SubscriptionSender`]), held by a bus, and what became
//! of an event it offered ([`SendOutcome`]).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Chan, OverflowPolicy, SubscribeOptions, SubscriptionFilter};
use crate::event::Event;
use crate::pattern::match_namespace_pattern;

#[cfg(doc)]
use super::Delivery;

/// Result of offering an event to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The event is in the subscriber's buffer.
    Delivered,
    /// The buffer was full and the policy is [`OverflowPolicy::DropNewest`]: the event was
    /// dropped and the subscriber will be told.
    Dropped,
    /// The subscription is gone.
    Closed,
}

/// Marks the sending side closed when the last [`SubscriptionSender`] clone goes away.
#[derive(Debug)]
struct SenderHandle {
    chan: Arc<Chan>,
}

impl Drop for SenderHandle {
    fn drop(&mut self) {
        self.chan.senders_gone.store(true, Ordering::Release);
        self.chan.ready.notify_one();
    }
}

/// The sending half of a subscription, held by a bus.
///
/// Cloning is cheap; every clone feeds the same subscriber.
#[derive(Clone)]
pub struct SubscriptionSender {
    handle: Arc<SenderHandle>,
    policy: OverflowPolicy,
    pattern: Arc<str>,
    filter: Arc<SubscriptionFilter>,
    filter_is_empty: bool,
}

impl fmt::Debug for SubscriptionSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionSender")
            .field("pattern", &self.pattern)
            .field("policy", &self.policy)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl SubscriptionSender {
    /// The sending half for the subscription to `pattern` buffered in `chan`.
    pub(super) fn new(chan: Arc<Chan>, pattern: Arc<str>, options: SubscribeOptions) -> Self {
        Self {
            handle: Arc::new(SenderHandle { chan }),
            policy: options.overflow,
            pattern,
            filter_is_empty: options.filter.is_empty(),
            filter: Arc::new(options.filter),
        }
    }

    fn chan(&self) -> &Chan {
        &self.handle.chan
    }

    /// The namespace pattern the subscription was made with.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The subscription's filter.
    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    /// The overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.policy
    }

    /// Whether an event published to `namespace` is for this subscription (pattern and filter).
    pub fn wants(&self, namespace: &str, event: &Event) -> bool {
        match_namespace_pattern(&self.pattern, namespace) && self.wants_event(event)
    }

    /// Whether `event` passes the filter (the namespace already known to match).
    pub fn wants_event(&self, event: &Event) -> bool {
        self.filter_is_empty || self.filter.matches(event)
    }

    /// Whether the subscriber has gone away.
    pub fn is_closed(&self) -> bool {
        self.chan().receiver_gone.load(Ordering::Acquire)
    }

    /// Offers an event, applying the overflow policy. Under backpressure this waits for room.
    pub async fn send(&self, event: Arc<Event>) -> SendOutcome {
        if self.policy == OverflowPolicy::DropNewest {
            return self.try_send(event);
        }
        let chan = self.chan();
        let mut event = event;
        loop {
            if self.is_closed() {
                return SendOutcome::Closed;
            }
            event = match chan.push(event) {
                Ok(()) => return SendOutcome::Delivered,
                Err(e) => e,
            };
            // Register for a wake-up before trying again, so a pop between the failed push
            // and the wait cannot be missed.
            let room = chan.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            chan.waiting.fetch_add(1, Ordering::AcqRel);
            let retried = chan.push(event);
            event = match retried {
                Ok(()) => {
                    chan.waiting.fetch_sub(1, Ordering::AcqRel);
                    return SendOutcome::Delivered;
                }
                Err(e) => e,
            };
            if self.is_closed() {
                chan.waiting.fetch_sub(1, Ordering::AcqRel);
                return SendOutcome::Closed;
            }
            room.await;
            chan.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Offers an event without waiting, honouring the policy: `Some(outcome)` when done, `None`
    /// when the buffer is full under [`OverflowPolicy::Backpressure`] and the caller must
    /// [`send`](Self::send) (wait) instead. Lets a bus deliver to many subscribers without an
    /// `.await` on the fast path.
    pub fn try_deliver(&self, event: &Arc<Event>) -> Option<SendOutcome> {
        if self.is_closed() {
            return Some(SendOutcome::Closed);
        }
        match self.chan().push(event.clone()) {
            Ok(()) => Some(SendOutcome::Delivered),
            Err(_) => match self.policy {
                OverflowPolicy::Backpressure => None,
                OverflowPolicy::DropNewest => {
                    self.record_lag(1);
                    Some(SendOutcome::Dropped)
                }
            },
        }
    }

    /// Offers an event without waiting: when the buffer is full the event is dropped and
    /// counted, whatever the policy (for transports that must never block).
    pub fn try_send(&self, event: Arc<Event>) -> SendOutcome {
        if self.is_closed() {
            return SendOutcome::Closed;
        }
        match self.chan().push(event) {
            Ok(()) => SendOutcome::Delivered,
            Err(_) => {
                self.record_lag(1);
                SendOutcome::Dropped
            }
        }
    }

    /// Records that `n` events meant for this subscriber were lost before reaching it (for
    /// example reported by the transport); the subscriber receives [`Delivery::Lagged`].
    pub fn record_lag(&self, n: u64) {
        self.chan().dropped.fetch_add(n, Ordering::AcqRel);
        // A subscriber waiting on an empty buffer must learn of the gap now.
        self.chan().ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Subscription;
    use super::*;

    fn ev(v: u64) -> Arc<Event> {
        Arc::new(Event::new("T", "a", v))
    }

    #[tokio::test]
    async fn closed_after_subscription_dropped() {
        let (tx, rx) = Subscription::channel("ns", SubscribeOptions::default());
        rx.unsubscribe();
        assert!(tx.is_closed());
        assert_eq!(tx.send(ev(1)).await, SendOutcome::Closed);
        assert_eq!(tx.try_send(ev(1)), SendOutcome::Closed);
    }

    #[test]
    fn sender_wants_checks_pattern_and_filter() {
        let (tx, _rx) = Subscription::channel(
            "prod.*",
            SubscribeOptions::default().filter(SubscriptionFilter::new().event_type("A")),
        );
        assert!(tx.wants("prod.orders", &Event::new("A", "x", 1)));
        assert!(!tx.wants("prod.orders", &Event::new("B", "x", 1)));
        assert!(!tx.wants("dev.orders", &Event::new("A", "x", 1)));
    }
}
