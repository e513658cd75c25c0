//! Bus counters: what was published, delivered and dropped, per namespace.
//!
//! They are also exported through the `metrics` facade, for the exporter the application
//! installs (install it before creating the bus: each namespace's handles are taken once):
//! `aether_bus_published_total{namespace}`, `aether_bus_delivered_total{namespace}`,
//! `aether_bus_dropped_total{namespace}` (deliveries lost to a full subscriber buffer or the
//! transport: the lag subscribers are told of), `aether_bus_transport_errors_total` and the
//! gauge `aether_bus_subscriptions`. Permission violations are the connection's:
//! `aether_nats_permission_violations_total`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

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
    /// Per namespace (namespaces as published, not patterns).
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
    /// Counters of one namespace (zero when nothing happened there).
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
    active_subscriptions: AtomicU64,
    transport_errors: AtomicU64,
}

impl BusMetrics {
    /// Fresh, zeroed counters.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The counters of `namespace`, created on first use.
    pub(crate) fn counters(&self, namespace: &str) -> Arc<NamespaceCounters> {
        if let Some(c) = self.namespaces.get(namespace) {
            return c.clone();
        }
        self.namespaces
            .entry(namespace.to_string())
            .or_insert_with(|| Arc::new(NamespaceCounters::exported(namespace)))
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
        MetricsSnapshot {
            total: self.total.load(),
            namespaces: self
                .namespaces
                .iter()
                .map(|e| (e.key().clone(), e.value().load()))
                .collect(),
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
}
