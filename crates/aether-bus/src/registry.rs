//! The subscriber table shared by the local and the NATS bus: who wants which namespaces, and
//! delivery into their buffers with the metrics kept.

use std::sync::{Arc, RwLock, Weak};

use aether_core::{
    is_wildcard_pattern, validate_pattern, Event, Result, SendOutcome, SubscribeOptions,
    Subscription, SubscriptionSender,
};
use dashmap::DashMap;

use crate::metrics::{BusMetrics, NamespaceCounters};

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    sender: SubscriptionSender,
}

/// Counts of one dispatch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DispatchReport {
    /// Subscribers the event reached.
    pub(crate) delivered: u64,
    /// Subscribers whose full buffer dropped it.
    pub(crate) dropped: u64,
}

#[derive(Debug, Default)]
struct Table {
    // Exact subscriptions are found by one hash lookup; only wildcard ones are scanned.
    exact: DashMap<String, Vec<Entry>, foldhash::fast::RandomState>,
    wildcard: RwLock<Vec<Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Subscriptions of one bus, indexed by namespace, with delivery and metrics.
///
/// Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub(crate) struct SubscriberRegistry {
    table: Arc<Table>,
    metrics: Arc<BusMetrics>,
}

/// Removes the subscription from the table when the [`Subscription`] is dropped.
struct Unregister {
    table: Weak<Table>,
    metrics: Weak<BusMetrics>,
    id: u64,
    pattern: String,
    wildcard: bool,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            if remove(&table, &self.pattern, self.wildcard, self.id) {
                if let Some(m) = self.metrics.upgrade() {
                    m.subscription_closed();
                }
            }
        }
    }
}

fn remove(table: &Table, pattern: &str, wildcard: bool, id: u64) -> bool {
    if wildcard {
        let mut w = table.wildcard.write().unwrap_or_else(|p| p.into_inner());
        let before = w.len();
        w.retain(|e| e.id != id);
        before != w.len()
    } else {
        let mut removed = false;
        if let Some(mut v) = table.exact.get_mut(pattern) {
            let before = v.len();
            v.retain(|e| e.id != id);
            removed = before != v.len();
        }
        table.exact.remove_if(pattern, |_, v| v.is_empty());
        removed
    }
}

impl SubscriberRegistry {
    /// An empty registry counting into `metrics`.
    pub(crate) fn new(metrics: Arc<BusMetrics>) -> Self {
        Self {
            table: Arc::default(),
            metrics,
        }
    }

    /// The metrics this registry counts into.
    pub(crate) fn metrics(&self) -> &Arc<BusMetrics> {
        &self.metrics
    }

    /// Adds a subscription; it is removed again when the returned [`Subscription`] is dropped.
    ///
    /// # Errors
    /// [`aether_core::Error::InvalidInput`] for a malformed pattern.
    pub(crate) fn subscribe(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        self.subscribe_with_guard(pattern, options, ())
            .map(|(_, sub)| sub)
    }

    /// Like [`subscribe`](Self::subscribe), and also returns a sender feeding the same
    /// subscription (for a transport that delivers events arriving from elsewhere) and attaches
    /// `guard`, dropped together with the subscription (to stop that transport's task).
    ///
    /// # Errors
    /// [`aether_core::Error::InvalidInput`] for a malformed pattern.
    pub(crate) fn subscribe_with_guard(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        guard: impl std::any::Any + Send + Sync,
    ) -> Result<(SubscriptionSender, Subscription)> {
        validate_pattern(pattern)?;
        if let Some(p) = options.filter.actor_pattern.as_deref() {
            if !p.is_empty() {
                validate_pattern(p)?;
            }
        }
        let (sender, sub) = Subscription::channel(pattern, options);
        let id = self
            .table
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wildcard = is_wildcard_pattern(pattern);
        let entry = Entry {
            id,
            sender: sender.clone(),
        };
        if wildcard {
            self.table
                .wildcard
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
        } else {
            self.table
                .exact
                .entry(pattern.to_string())
                .or_default()
                .push(entry);
        }
        self.metrics.subscription_opened();
        let unregister = Unregister {
            table: Arc::downgrade(&self.table),
            metrics: Arc::downgrade(&self.metrics),
            id,
            pattern: pattern.to_string(),
            wildcard,
        };
        // Unregister first, then the caller's guard: the tuple drops in field order.
        Ok((sender, sub.with_guard((unregister, guard))))
    }

    /// Removes every subscription (a bus shutting down): once their buffers are drained, their
    /// `recv` returns `None`. Returns how many were removed.
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn clear(&self) -> usize {
        let mut removed = 0;
        self.table.exact.retain(|_, v| {
            removed += v.len();
            false
        });
        {
            let mut w = self
                .table
                .wildcard
                .write()
                .unwrap_or_else(|p| p.into_inner());
            removed += w.len();
            w.clear();
        }
        for _ in 0..removed {
            self.metrics.subscription_closed();
        }
        removed
    }

    /// Number of open subscriptions.
    pub(crate) fn len(&self) -> usize {
        let exact: usize = self.table.exact.iter().map(|e| e.value().len()).sum();
        exact
            + self
                .table
                .wildcard
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len()
    }

    /// Whether any subscription could want an event of `namespace` (ignoring filters).
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn has_subscribers_for(&self, namespace: &str) -> bool {
        self.table.exact.contains_key(namespace)
            || self
                .table
                .wildcard
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|e| aether_core::match_namespace_pattern(e.sender.pattern(), namespace))
    }

    /// Delivers `event` of `namespace` to every matching subscriber, applying each one's
    /// overflow policy, and counts deliveries and drops (not the publish itself).
    ///
    /// Buffers with room are filled without waiting; subscribers under backpressure whose buffer
    /// is full are then awaited one by one, with no lock held.
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) async fn dispatch(&self, namespace: &str, event: Arc<Event>) -> DispatchReport {
        let counters = self.metrics.counters(namespace);
        self.dispatch_counted(namespace, &counters, event).await
    }

    /// Counts a publish to `namespace` and delivers `event` to the local subscribers, with a
    /// single metrics lookup.
    pub(crate) async fn publish_local(&self, namespace: &str, event: Arc<Event>) -> DispatchReport {
        let counters = self.metrics.counters(namespace);
        self.metrics.add_published(&counters);
        self.dispatch_counted(namespace, &counters, event).await
    }

    async fn dispatch_counted(
        &self,
        namespace: &str,
        counters: &NamespaceCounters,
        event: Arc<Event>,
    ) -> DispatchReport {
        let mut report = DispatchReport::default();
        let mut waiting: Vec<SubscriptionSender> = Vec::new();
        let mut closed: Vec<(u64, bool, String)> = Vec::new();
        let mut offer = |e: &Entry, wildcard: bool, report: &mut DispatchReport| {
            // Exact entries are keyed by the namespace itself: only the filter is left to check.
            let wanted = if wildcard {
                e.sender.wants(namespace, &event)
            } else {
                e.sender.wants_event(&event)
            };
            if !wanted {
                return;
            }
            match e.sender.try_deliver(&event) {
                Some(SendOutcome::Delivered) => report.delivered += 1,
                Some(SendOutcome::Dropped) => report.dropped += 1,
                Some(SendOutcome::Closed) => {
                    closed.push((e.id, wildcard, e.sender.pattern().to_string()))
                }
                None => waiting.push(e.sender.clone()),
            }
        };
        if let Some(list) = self.table.exact.get(namespace) {
            for e in list.iter() {
                offer(e, false, &mut report);
            }
        }
        {
            let w = self
                .table
                .wildcard
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for e in w.iter() {
                offer(e, true, &mut report);
            }
        }
        for sender in waiting {
            match sender.send(event.clone()).await {
                SendOutcome::Delivered => report.delivered += 1,
                SendOutcome::Dropped => report.dropped += 1,
                SendOutcome::Closed => {}
            }
        }
        for (id, wildcard, pattern) in closed {
            if remove(&self.table, &pattern, wildcard, id) {
                self.metrics.subscription_closed();
            }
        }
        self.metrics
            .add_dispatch(counters, report.delivered, report.dropped);
        report
    }
}
