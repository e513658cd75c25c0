//! Subscriptions: what a subscriber receives, with a bounded buffer and an explicit overflow
//! policy so that no event is ever lost without the subscriber being told.
//!
//! - this module: the receiving side ([`Subscription`], [`Delivery`], [`DeliverySource`]) and
//!   the buffer both sides share.
//! - `options`: [`SubscribeOptions`], [`SubscriptionFilter`], [`OverflowPolicy`].
//! - `sender`: the sending side, held by a bus ([`SubscriptionSender`], [`SendOutcome`]).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::event::Event;

mod options;
mod sender;

pub use options::{
    OverflowPolicy, SubscribeOptions, SubscriptionFilter, DEFAULT_SUBSCRIPTION_BUFFER,
};
pub use sender::{SendOutcome, SubscriptionSender};

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
        let sender = SubscriptionSender::new(chan.clone(), pattern.clone(), options);
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
