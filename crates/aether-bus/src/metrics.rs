//! Bus counters: what was published, delivered and dropped, per namespace.
//!
//! They are also exported through the `metrics` facade, for the exporter the application
//! installs (install it before creating the bus: each namespace's handles are taken once):
//! `aether_bus_published_total{namespace}`, `aether_bus_delivered_total{namespace}`,
//! `aether_bus_dropped_total{namespace}` (deliveries lost to a full subscriber buffer or the
//! transport: the lag subscribers are told of), `aether_bus_transport_errors_total` and the
//! gauge `aether_bus_subscriptions`. Permission violations are the connection's:
//! `aether_nats_permission_violations_total`.
//!
//! Namespaces come from publishers, and a subscriber of `>` sees them all: one series per
//! namespace would let any publisher grow the exporter (and every scrape) without bound. So
//! the first 256 namespaces a bus sees get counters of their own; every other one is counted
//! under the namespace `_other`, in [`MetricsSnapshot::namespaces`] and in the exported series
//! alike (totals stay exact).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Most namespaces with counters (and exported series) of their own in one bus.
pub(crate) const MAX_NAMESPACE_SERIES: usize = 256;
/// The namespace every namespace beyond [`MAX_NAMESPACE_SERIES`] is counted under.
pub(crate) const OTHER_NAMESPACES: &str = "_other";

/// Counters of one namespace (or of the whole bus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceMetrics {
    /// Events published to the namespace.
    pub published: u64,
    /// Deliveries into subscriber buffers (one event to three subscribers counts three).
    pub delivered: u64,
    /// Deliveries dropped because a subscriber's buffer was full (drop policy) or the transport
    /// reported loss.
    pub dropped: u64,
}

/// A point-in-time copy of a bus's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Totals over every namespace.
    pub total: NamespaceMetrics,
    /// Per namespace (namespaces as published, not patterns): the first 256 the bus saw, and
    /// `_other` for every namespace after them.
    pub namespaces: BTreeMap<String, NamespaceMetrics>,
    /// Subscriptions currently open.
    pub active_subscriptions: u64,
    /// Transport errors observed (for example NATS slow-consumer signals or failed publishes).
    /// Permission violations are not transport errors: they are counted in
    /// [`permission_errors`](Self::permission_errors) only.
    pub transport_errors: u64,
    /// Permission violations the NATS server reported for the bus's connection: publishes and
    /// subscriptions it refused (each report once). Operations the bus refuses itself because
    /// of an earlier report never reach the server and are not counted again.
    pub permission_errors: u64,
}

impl MetricsSnapshot {
    /// Counters of one namespace (zero when nothing happened there, or when it came after the
    /// first 256 and is counted under `_other`).
    pub fn namespace(&self, namespace: &str) -> NamespaceMetrics {
        self.namespaces.get(namespace).copied().unwrap_or_default()
    }
}

/// Live counters of one namespace, looked up once and then updated without further lookups.
#[derive(Debug, Default)]
pub(crate) struct NamespaceCounters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    exported: Exported,
}

/// The namespace's handles in the `metrics` facade (no-ops for the bus-wide totals, which an
/// exporter sums itself).
#[derive(Debug)]
struct Exported {
    published: metrics::Counter,
    delivered: metrics::Counter,
    dropped: metrics::Counter,
}

impl Default for Exported {
    fn default() -> Self {
        Self {
            published: metrics::Counter::noop(),
            delivered: metrics::Counter::noop(),
            dropped: metrics::Counter::noop(),
        }
    }
}

impl NamespaceCounters {
    fn exported(namespace: &str) -> Self {
        let ns = namespace.to_string();
        Self {
            exported: Exported {
                published: metrics::counter!("aether_bus_published_total", "namespace" => ns.clone()),
                delivered: metrics::counter!("aether_bus_delivered_total", "namespace" => ns.clone()),
                dropped: metrics::counter!("aether_bus_dropped_total", "namespace" => ns),
            },
            ..Self::default()
        }
    }

    fn add_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.exported.published.increment(1);
    }

    fn add_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.exported.delivered.increment(n);
    }

    fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.exported.dropped.increment(n);
    }

    fn load(&self) -> NamespaceMetrics {
        NamespaceMetrics {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Live, lock-free bus counters. Shared by the local and the NATS bus.
#[derive(Debug, Default)]
pub(crate) struct BusMetrics {
    total: NamespaceCounters,
    namespaces: DashMap<String, Arc<NamespaceCounters>, foldhash::fast::RandomState>,
    /// Namespaces given counters of their own (at most [`MAX_NAMESPACE_SERIES`]); counted
    /// apart from the map's length so that concurrent first uses cannot overshoot the cap.
    named: AtomicUsize,
    /// The counters of every namespace beyond the cap, made on the first of them.
    other: OnceLock<Arc<NamespaceCounters>>,
    active_subscriptions: AtomicU64,
    transport_errors: AtomicU64,
}

impl BusMetrics {
    /// Fresh, zeroed counters.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The counters of `namespace`, created on first use; beyond [`MAX_NAMESPACE_SERIES`]
    /// namespaces, the shared counters of [`OTHER_NAMESPACES`].
    pub(crate) fn counters(&self, namespace: &str) -> Arc<NamespaceCounters> {
        if let Some(c) = self.namespaces.get(namespace) {
            return c.clone();
        }
        // Full: no allocation and no write lock for a namespace that will not get its own.
        if self.named.load(Ordering::Relaxed) >= MAX_NAMESPACE_SERIES {
            return self.other();
        }
        match self.namespaces.entry(namespace.to_string()) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let reserved = self
                    .named
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < MAX_NAMESPACE_SERIES).then_some(n + 1)
                    })
                    .is_ok();
                if reserved {
                    e.insert(Arc::new(NamespaceCounters::exported(namespace)))
                        .clone()
                } else {
                    drop(e);
                    self.other()
                }
            }
        }
    }

    fn other(&self) -> Arc<NamespaceCounters> {
        self.other
            .get_or_init(|| Arc::new(NamespaceCounters::exported(OTHER_NAMESPACES)))
            .clone()
    }

    /// Counts one publish to the namespace whose `counters` the caller kept (saves the lookup
    /// on a hot path).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn record_published_to(&self, counters: &NamespaceCounters) {
        self.total.add_published();
        counters.add_published();
    }

    /// Counts one delivery of an event of the namespace whose `counters` the caller kept.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn record_delivered_to(&self, counters: &NamespaceCounters) {
        self.total.add_delivered(1);
        counters.add_delivered(1);
    }

    /// Counts `n` deliveries of events of `namespace`.
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn record_delivered(&self, namespace: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total.add_delivered(n);
        self.counters(namespace).add_delivered(n);
    }

    /// Counts `n` dropped deliveries of events of `namespace`.
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn record_dropped(&self, namespace: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total.add_dropped(n);
        self.counters(namespace).add_dropped(n);
    }

    /// Counts one publish on an already looked-up namespace.
    pub(crate) fn add_published(&self, counters: &NamespaceCounters) {
        self.total.add_published();
        counters.add_published();
    }

    /// Counts deliveries and drops on an already looked-up namespace.
    pub(crate) fn add_dispatch(&self, counters: &NamespaceCounters, delivered: u64, dropped: u64) {
        if delivered > 0 {
            self.total.add_delivered(delivered);
            counters.add_delivered(delivered);
        }
        if dropped > 0 {
            self.total.add_dropped(dropped);
            counters.add_dropped(dropped);
        }
    }

    /// Counts a transport error.
    // Used by the NATS bus only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn record_transport_error(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("aether_bus_transport_errors_total").increment(1);
    }

    /// Counts a new subscription.
    pub(crate) fn subscription_opened(&self) {
        self.active_subscriptions.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("aether_bus_subscriptions").increment(1.0);
    }

    /// Counts a closed subscription.
    pub(crate) fn subscription_closed(&self) {
        // Saturating: a close is only counted once per open, but never wrap if misused.
        if self
            .active_subscriptions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
            .is_ok()
        {
            metrics::gauge!("aether_bus_subscriptions").decrement(1.0);
        }
    }

    /// A copy of every counter.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut namespaces: BTreeMap<String, NamespaceMetrics> = self
            .namespaces
            .iter()
            .map(|e| (e.key().clone(), e.value().load()))
            .collect();
        if let Some(other) = self.other.get() {
            // A namespace really named `_other` among the first ones shares the entry (and the
            // exported series, whose labels are the same).
            let o = other.load();
            let entry = namespaces.entry(OTHER_NAMESPACES.to_string()).or_default();
            entry.published += o.published;
            entry.delivered += o.delivered;
            entry.dropped += o.dropped;
        }
        MetricsSnapshot {
            total: self.total.load(),
            namespaces,
            active_subscriptions: self.active_subscriptions.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            // Reported by the NATS connection's monitor; the NATS bus adds them to its copy.
            permission_errors: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_namespace_and_total() {
        let m = BusMetrics::new();
        m.record_published_to(&m.counters("a"));
        m.record_published_to(&m.counters("b"));
        m.record_delivered("a", 3);
        m.record_dropped("b", 2);
        m.subscription_opened();
        m.subscription_opened();
        m.subscription_closed();
        m.subscription_closed();
        m.subscription_closed();
        m.record_transport_error();
        let s = m.snapshot();
        assert_eq!(
            s.total,
            NamespaceMetrics {
                published: 2,
                delivered: 3,
                dropped: 2
            }
        );
        assert_eq!(s.namespace("a").delivered, 3);
        assert_eq!(s.namespace("b").dropped, 2);
        assert_eq!(s.namespace("zzz"), NamespaceMetrics::default());
        assert_eq!(s.active_subscriptions, 0);
        assert_eq!(s.transport_errors, 1);
        assert_eq!(s.permission_errors, 0);
    }

    /// Counts the distinct series registered through the `metrics` facade.
    #[derive(Default)]
    struct SeriesCounter(std::sync::Mutex<std::collections::HashSet<metrics::Key>>);

    impl metrics::Recorder for SeriesCounter {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            self.0.lock().unwrap().insert(key.clone());
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            self.0.lock().unwrap().insert(key.clone());
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            self.0.lock().unwrap().insert(key.clone());
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn namespaces_beyond_the_cap_share_one_other_series() {
        let recorder = SeriesCounter::default();
        let m = metrics::with_local_recorder(&recorder, || {
            let m = BusMetrics::new();
            // As a `>` subscriber sees 5 000 publishes to as many namespaces.
            for i in 0..5000 {
                let ns = format!("tenant-{i}");
                m.record_published_to(&m.counters(&ns));
                m.record_delivered(&ns, 1);
                m.record_dropped(&ns, 1);
            }
            m
        });
        let series = recorder.0.lock().unwrap().len();
        assert_eq!(series, 3 * (MAX_NAMESPACE_SERIES + 1), "{series} series");
        let s = m.snapshot();
        assert_eq!(s.namespaces.len(), MAX_NAMESPACE_SERIES + 1);
        assert_eq!(s.total.published, 5000);
        assert_eq!(s.namespace("tenant-0").published, 1);
        assert_eq!(s.namespace("tenant-4999"), NamespaceMetrics::default());
        let other = s.namespace(OTHER_NAMESPACES);
        assert_eq!(other.published, 5000 - MAX_NAMESPACE_SERIES as u64);
        assert_eq!(other.delivered, other.published);
        assert_eq!(other.dropped, other.published);
    }

    #[test]
    fn concurrent_first_uses_never_exceed_the_cap() {
        let m = Arc::new(BusMetrics::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        m.record_published_to(&m.counters(&format!("ns-{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.snapshot();
        assert_eq!(s.namespaces.len(), MAX_NAMESPACE_SERIES + 1);
        assert_eq!(s.total.published, 4000);
        let sum: u64 = s.namespaces.values().map(|n| n.published).sum();
        assert_eq!(sum, 4000);
    }
}
