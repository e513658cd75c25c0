//! Subscriptions: what a subscriber receives, with a bounded buffer and an explicit overflow
//! policy so that no event is ever lost without the subscriber being told.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::event::Event;
use crate::pattern::{match_actor_pattern, match_namespace_pattern};

/// Default number of events a subscription buffers before its overflow policy applies.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1024;

/// Narrows a namespace subscription to some event types and/or actors.
///
/// An event passes when its type is one of `event_types` (any one; an empty list lets every
/// type through) **and** its actor id matches `actor_pattern` (see
/// [`match_actor_pattern`]; `None` lets every actor through).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Event types to deliver; empty means all.
    pub event_types: Vec<String>,
    /// Actor id pattern (`*` one token, `>` the rest); `None` means all actors.
    pub actor_pattern: Option<String>,
}

impl SubscriptionFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event type to deliver.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Restricts delivery to actors matching `pattern`.
    pub fn actor_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.actor_pattern = Some(pattern.into());
        self
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.actor_pattern.as_deref().is_none_or(str::is_empty)
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        let type_ok = self.event_types.is_empty() || self.event_types.contains(&event.event_type);
        let actor_ok = match self.actor_pattern.as_deref() {
            None | Some("") => true,
            Some(p) => match_actor_pattern(p, &event.actor_id),
        };
        type_ok && actor_ok
    }
}

/// What a subscription does when its buffer is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The publisher waits until the subscriber has room. Nothing is dropped; a slow subscriber
    /// slows its publishers down.
    #[default]
    Backpressure,
    /// The new event is dropped, counted, and the subscriber receives
    /// [`Delivery::Lagged`] with the number of events it missed, at the point of the gap.
    DropNewest,
}

/// How to subscribe: filter, buffer size and overflow policy.
///
/// ```
/// use aether_core::{OverflowPolicy, SubscribeOptions, SubscriptionFilter};
///
/// let opts = SubscribeOptions::default()
///     .filter(SubscriptionFilter::new().event_type("OrderPlaced"))
///     .buffer_size(10_000)
///     .overflow(OverflowPolicy::DropNewest);
/// assert_eq!(opts.buffer_size, 10_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Which events of the matching namespaces to deliver.
    pub filter: SubscriptionFilter,
    /// Events buffered before the overflow policy applies (0 falls back to the default).
    pub buffer_size: usize,
    /// What happens when the buffer is full.
    pub overflow: OverflowPolicy,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            filter: SubscriptionFilter::default(),
            buffer_size: DEFAULT_SUBSCRIPTION_BUFFER,
            overflow: OverflowPolicy::default(),
        }
    }
}

impl SubscribeOptions {
    /// Sets the filter.
    pub fn filter(mut self, filter: SubscriptionFilter) -> Self {
        self.filter = filter;
        self
    }
    /// Sets the buffer size (0 means the default).
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size;
        self
    }
    /// Sets the overflow policy.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }
    fn effective_buffer(&self) -> usize {
        if self.buffer_size == 0 {
            DEFAULT_SUBSCRIPTION_BUFFER
        } else {
            self.buffer_size
        }
    }
}

/// One item received from a [`Subscription`].
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An event.
    Event(Arc<Event>),
    /// This many events were dropped here (only under [`OverflowPolicy::DropNewest`], or when the
    /// transport itself reported loss).
    Lagged(u64),
}

impl Delivery {
    /// The event, if this is one.
    pub fn into_event(self) -> Option<Arc<Event>> {
        match self {
            Delivery::Event(e) => Some(e),
            Delivery::Lagged(_) => None,
        }
    }
}

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

/// The buffer between a bus and one subscriber.
///
/// A bounded lock-free queue plus two [`Notify`]s: one wakes the subscriber when an event
/// arrives, the other wakes publishers waiting for room under backpressure. Lag is tracked as a
/// monotonic count of drops: each queued event carries the count as it was when the event was
/// queued, so the subscriber learns of a gap exactly where it happened, with no
/// read-modify-write on the hot path.
#[derive(Debug)]
struct Chan {
    queue: ArrayQueue<Item>,
    /// Drops so far (monotonic).
    dropped: AtomicU64,
    /// Wakes the subscriber.
    ready: Notify,
    /// Wakes publishers waiting for room.
    room: Notify,
    /// Publishers currently waiting for room.
    waiting: AtomicUsize,
    receiver_gone: AtomicBool,
    senders_gone: AtomicBool,
}

/// An event and the drop count when it was queued.
type Item = (u64, Arc<Event>);

impl Chan {
    fn push(&self, event: Arc<Event>) -> std::result::Result<(), Arc<Event>> {
        let dropped = self.dropped.load(Ordering::Acquire);
        match self.queue.push((dropped, event)) {
            Ok(()) => {
                self.ready.notify_one();
                Ok(())
            }
            Err((_, event)) => Err(event),
        }
    }

    fn pop(&self) -> Option<Item> {
        let item = self.queue.pop()?;
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_one();
        }
        Some(item)
    }
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

/// Deliveries a transport hands a subscription from outside the process, pulled by the
/// subscriber itself in [`Subscription::recv`].
///
/// A bus whose events arrive from the network attaches one with
/// [`Subscription::with_source`] instead of forwarding each message through a task of its own:
/// the message is decoded on the subscriber's task and reaches it without a hop between
/// threads (and the memory of the decoded event is freed on the thread that made it).
/// Backpressure is the transport's own buffer: while the subscriber does not read, nothing is
/// taken from it.
pub trait DeliverySource: Send + Sync + 'static {
    /// The next delivery (an event, or [`Delivery::Lagged`] for events the transport lost), or
    /// `Poll::Ready(None)` once the source has ended (its transport closed, its bus shut
    /// down). When pending, `cx`'s waker is woken when a delivery may be ready.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>>;
}

/// A live subscription: receive with [`recv`](Self::recv); drop it (or call
/// [`unsubscribe`](Self::unsubscribe)) to stop.
pub struct Subscription {
    chan: Arc<Chan>,
    /// Drops already reported to this subscriber.
    reported: u64,
    pattern: Arc<str>,
    stashed: Option<Arc<Event>>,
    /// Deliveries from outside the process, when a transport attached some.
    source: Option<Box<dyn DeliverySource>>,
    /// Which side a receive looks at first, alternated so that neither can starve the other.
    source_first: bool,
    guard: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.chan.receiver_gone.store(true, Ordering::Release);
        // Publishers waiting for room must see that nobody will make any.
        self.chan.room.notify_waiters();
    }
}

impl Subscription {
    /// Creates a connected (sender, subscription) pair for a bus implementation.
    ///
    /// The buffer is allocated up front (`buffer_size` slots of two words each).
    pub fn channel(pattern: &str, options: SubscribeOptions) -> (SubscriptionSender, Subscription) {
        let chan = Arc::new(Chan {
            queue: ArrayQueue::new(options.effective_buffer()),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
            room: Notify::new(),
            waiting: AtomicUsize::new(0),
            receiver_gone: AtomicBool::new(false),
            senders_gone: AtomicBool::new(false),
        });
        let pattern: Arc<str> = Arc::from(pattern);
        let sender = SubscriptionSender {
            handle: Arc::new(SenderHandle { chan: chan.clone() }),
            policy: options.overflow,
            pattern: pattern.clone(),
            filter_is_empty: options.filter.is_empty(),
            filter: Arc::new(options.filter),
        };
        let sub = Subscription {
            chan,
            reported: 0,
            pattern,
            stashed: None,
            source: None,
            source_first: false,
            guard: None,
        };
        (sender, sub)
    }

    /// Attaches deliveries from outside the process (see [`DeliverySource`]): the
    /// subscription ends once both its senders and its source have ended.
    pub fn with_source(mut self, source: impl DeliverySource) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches a value dropped together with the subscription: a bus uses it to unregister
    /// the subscription or stop a network subscriber.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The namespace pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Total events dropped for this subscriber so far.
    pub fn dropped(&self) -> u64 {
        self.chan.dropped.load(Ordering::Relaxed)
    }

    /// The next event or lag notice; `None` once the bus is gone and the buffer is drained.
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            if let Some(d) = self.try_recv() {
                return Some(d);
            }
            if self.source.is_none() && self.chan.senders_gone.load(Ordering::Acquire) {
                // The last sender may have pushed just before leaving.
                return self.try_recv();
            }
            // A notification sent since the failed attempt is kept as a permit, so this
            // cannot sleep through an event.
            let chan = self.chan.clone();
            let notified = chan.ready.notified();
            let mut notified = std::pin::pin!(notified);
            let from_source = std::future::poll_fn(|cx| {
                if self.source.is_some() {
                    match self.poll_source(cx) {
                        Poll::Ready(Some(d)) => return Poll::Ready(Some(d)),
                        // Ended just now: look at the buffer again.
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => {}
                    }
                }
                notified.as_mut().poll(cx).map(|()| None)
            })
            .await;
            if let Some(d) = from_source {
                return Some(d);
            }
        }
    }

    /// Like [`recv`](Self::recv) but without waiting: `None` when nothing is buffered.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.source_first = !self.source_first;
        if self.source_first {
            if let Some(d) = self.try_recv_source() {
                return Some(d);
            }
            self.try_recv_buffer()
        } else {
            if let Some(d) = self.try_recv_buffer() {
                return Some(d);
            }
            self.try_recv_source()
        }
    }

    /// The source's next delivery if it has one ready.
    fn try_recv_source(&mut self) -> Option<Delivery> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_source(&mut cx) {
            Poll::Ready(d) => d,
            Poll::Pending => None,
        }
    }

    /// Polls the source, dropping it once it has ended.
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = source.poll_next(cx);
        if let Poll::Ready(None) = polled {
            self.source = None;
        }
        polled
    }

    /// The next delivery from the in-process buffer.
    fn try_recv_buffer(&mut self) -> Option<Delivery> {
        if let Some(ev) = self.stashed.take() {
            return Some(Delivery::Event(ev));
        }
        match self.chan.pop() {
            Some((dropped, ev)) => {
                if dropped > self.reported {
                    let lag = dropped - self.reported;
                    self.reported = dropped;
                    self.stashed = Some(ev);
                    Some(Delivery::Lagged(lag))
                } else {
                    Some(Delivery::Event(ev))
                }
            }
            None => {
                // The buffer is empty, so every drop counted so far happened after everything
                // already received: report it now, in order.
                let dropped = self.chan.dropped.load(Ordering::Acquire);
                if dropped > self.reported {
                    let lag = dropped - self.reported;
                    self.reported = dropped;
                    Some(Delivery::Lagged(lag))
                } else {
                    None
                }
            }
        }
    }

    /// Stops the subscription (the same as dropping it).
    pub fn unsubscribe(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: u64) -> Arc<Event> {
        Arc::new(Event::new("T", "a", v))
    }

    #[test]
    fn filter_rules() {
        let e = Event::new("OrderPlaced", "order.1", 1);
        assert!(SubscriptionFilter::new().matches(&e));
        assert!(SubscriptionFilter::new().is_empty());
        assert!(SubscriptionFilter::new()
            .event_type("X")
            .event_type("OrderPlaced")
            .matches(&e));
        assert!(!SubscriptionFilter::new().event_type("X").matches(&e));
        assert!(SubscriptionFilter::new()
            .actor_pattern("order.*")
            .matches(&e));
        assert!(!SubscriptionFilter::new()
            .actor_pattern("user.*")
            .matches(&e));
        assert!(!SubscriptionFilter::new()
            .event_type("OrderPlaced")
            .actor_pattern("user.>")
            .matches(&e));
        assert!(SubscriptionFilter::new().actor_pattern("").matches(&e));
    }

    #[tokio::test]
    async fn drop_newest_reports_the_gap_in_order() {
        let opts = SubscribeOptions::default()
            .buffer_size(2)
            .overflow(OverflowPolicy::DropNewest);
        let (tx, mut rx) = Subscription::channel("ns", opts);
        assert_eq!(tx.send(ev(1)).await, SendOutcome::Delivered);
        assert_eq!(tx.send(ev(2)).await, SendOutcome::Delivered);
        assert_eq!(tx.send(ev(3)).await, SendOutcome::Dropped);
        assert_eq!(tx.send(ev(4)).await, SendOutcome::Dropped);
        let got = |d: Option<Delivery>| match d {
            Some(Delivery::Event(e)) => format!("e{}", e.version),
            Some(Delivery::Lagged(n)) => format!("lag{n}"),
            None => "none".into(),
        };
        assert_eq!(got(rx.recv().await), "e1");
        assert_eq!(tx.send(ev(5)).await, SendOutcome::Delivered);
        assert_eq!(got(rx.recv().await), "e2");
        assert_eq!(got(rx.recv().await), "lag2");
        assert_eq!(got(rx.recv().await), "e5");
        assert_eq!(rx.dropped(), 2);
        // trailing drops with nothing after them are still reported
        assert_eq!(tx.send(ev(6)).await, SendOutcome::Delivered);
        assert_eq!(tx.send(ev(7)).await, SendOutcome::Delivered);
        assert_eq!(tx.send(ev(8)).await, SendOutcome::Dropped);
        assert_eq!(got(rx.recv().await), "e6");
        assert_eq!(got(rx.recv().await), "e7");
        assert_eq!(got(rx.recv().await), "lag1");
        drop(tx);
        assert_eq!(got(rx.recv().await), "none");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backpressure_loses_nothing() {
        let (tx, mut rx) = Subscription::channel("ns", SubscribeOptions::default().buffer_size(1));
        let producer = tokio::spawn(async move {
            for v in 1..=1000 {
                assert_eq!(tx.send(ev(v)).await, SendOutcome::Delivered);
            }
        });
        let mut next = 1;
        while let Some(d) = rx.recv().await {
            match d {
                Delivery::Event(e) => {
                    assert_eq!(e.version, next);
                    next += 1;
                }
                Delivery::Lagged(n) => panic!("lagged {n} under backpressure"),
            }
        }
        producer.await.unwrap();
        assert_eq!(next, 1001);
        assert_eq!(rx.dropped(), 0);
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
    fn guard_is_dropped_with_the_subscription() {
        struct Flag(Arc<AtomicU64>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(1, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(AtomicU64::new(0));
        let (_tx, rx) = Subscription::channel("ns", SubscribeOptions::default());
        let rx = rx.with_guard(Flag(flag.clone()));
        assert_eq!(flag.load(Ordering::SeqCst), 0);
        drop(rx);
        assert_eq!(flag.load(Ordering::SeqCst), 1);
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

    /// A source fed through a channel, as a network transport would be.
    struct ChannelSource(tokio::sync::mpsc::UnboundedReceiver<Delivery>);

    impl DeliverySource for ChannelSource {
        fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
            self.0.poll_recv(cx)
        }
    }

    #[tokio::test]
    async fn a_source_is_read_next_to_the_buffer_and_ends_the_subscription_with_it() {
        let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, sub) = Subscription::channel("ns", SubscribeOptions::default());
        let mut sub = sub.with_source(ChannelSource(rx));
        // Both sides have something: neither starves the other.
        for v in 1..=3 {
            tx.try_send(ev(v));
            feed.send(Delivery::Event(ev(100 + v))).unwrap();
        }
        feed.send(Delivery::Lagged(2)).unwrap();
        let mut got = Vec::new();
        while let Some(d) = sub.try_recv() {
            got.push(match d {
                Delivery::Event(e) => e.version,
                Delivery::Lagged(n) => 1000 + n,
            });
        }
        let local: Vec<_> = got.iter().copied().filter(|v| *v < 100).collect();
        let remote: Vec<_> = got.iter().copied().filter(|v| *v >= 100).collect();
        assert_eq!(local, [1, 2, 3]);
        assert_eq!(remote, [101, 102, 103, 1002], "the source's order is kept");
        assert!(got[..2].iter().any(|v| *v < 100) && got[..2].iter().any(|v| *v >= 100));

        // A receive waiting on both wakes for either.
        let waiter = tokio::spawn(async move {
            let first = sub.recv().await;
            let second = sub.recv().await;
            (sub, first, second)
        });
        tokio::task::yield_now().await;
        feed.send(Delivery::Event(ev(7))).unwrap();
        tx.try_send(ev(8));
        let (mut sub, first, second) = waiter.await.unwrap();
        let mut versions =
            [first, second].map(|d| d.and_then(Delivery::into_event).unwrap().version);
        versions.sort();
        assert_eq!(versions, [7, 8]);

        // The senders gone, the subscription lasts as long as its source.
        drop(tx);
        let late = tokio::spawn(async move { (sub.recv().await, sub) });
        feed.send(Delivery::Event(ev(9))).unwrap();
        let (d, mut sub) = late.await.unwrap();
        assert_eq!(d.and_then(Delivery::into_event).unwrap().version, 9);
        drop(feed);
        assert!(sub.recv().await.is_none());
    }
}
