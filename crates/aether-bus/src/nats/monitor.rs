//! Surfacing the NATS client's own connection events (slow consumers, errors) in bus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::ConnectOptions;
use tokio::sync::watch;

use crate::metrics::BusMetrics;

#[derive(Debug, Default)]
struct Counts {
    slow_consumers: AtomicU64,
    disconnects: AtomicU64,
    connects: AtomicU64,
    errors: AtomicU64,
}

/// Watches a NATS connection's events for a bus: slow-consumer reports and client/server
/// errors are counted in the bus's
/// [`transport_errors`](crate::MetricsSnapshot::transport_errors) and logged.
///
/// The NATS client reports its events only to the callback given when it connects
/// ([`ConnectOptions::event_callback`]). [`NatsEventBus::connect`](super::NatsEventBus::connect)
/// installs a monitor itself. When you bring your own client, either create it with
/// [`install`](Self::install), or call [`observe`](Self::observe) from your own callback, and
/// pass the monitor to [`NatsEventBus::with_monitor`](super::NatsEventBus::with_monitor).
/// Without a monitor, the bus still detects lost messages itself (per-publisher sequence
/// numbers, reported as lag) but does not see the client's slow-consumer signal.
///
/// Cloning is cheap; clones share the counters.
#[derive(Debug, Clone)]
pub struct TransportMonitor {
    metrics: Arc<BusMetrics>,
    counts: Arc<Counts>,
    /// Bumped on every (re)connection, so durable subscriptions can re-create their consumer
    /// at once instead of waiting for missed heartbeats.
    connected: Arc<watch::Sender<u64>>,
}

impl Default for TransportMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportMonitor {
    /// A monitor with fresh metrics (the bus built with it counts into them).
    pub fn new() -> Self {
        Self {
            metrics: Arc::new(BusMetrics::new()),
            counts: Arc::default(),
            connected: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Changes on every (re)connection the monitor observes.
    pub(crate) fn connections(&self) -> watch::Receiver<u64> {
        self.connected.subscribe()
    }

    pub(crate) fn metrics(&self) -> &Arc<BusMetrics> {
        &self.metrics
    }

    /// Records one event of the NATS connection.
    pub fn observe(&self, event: &async_nats::Event) {
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                self.counts.slow_consumers.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_transport_error();
                tracing::warn!(
                    sid,
                    "NATS reports a slow consumer: messages for a bus subscription were dropped \
                     by the client; subscribers will see the gap as lag"
                );
            }
            async_nats::Event::ServerError(e) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_transport_error();
                tracing::warn!(error = %e, "NATS server error");
            }
            async_nats::Event::ClientError(e) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_transport_error();
                tracing::warn!(error = %e, "NATS client error");
            }
            async_nats::Event::Disconnected => {
                self.counts.disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("NATS connection lost; the client reconnects and resubscribes");
            }
            async_nats::Event::Connected => {
                self.counts.connects.fetch_add(1, Ordering::Relaxed);
                self.connected.send_modify(|n| *n += 1);
                tracing::debug!("NATS connection (re)established");
            }
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
    }

    /// `options` with an event callback feeding this monitor (replacing any callback set
    /// before; to keep your own, call [`observe`](Self::observe) from it instead).
    pub fn install(&self, options: ConnectOptions) -> ConnectOptions {
        let monitor = self.clone();
        options.event_callback(move |event| {
            monitor.observe(&event);
            async {}
        })
    }

    /// Slow-consumer reports seen so far.
    pub fn slow_consumer_events(&self) -> u64 {
        self.counts.slow_consumers.load(Ordering::Relaxed)
    }

    /// Disconnections seen so far.
    pub fn disconnects(&self) -> u64 {
        self.counts.disconnects.load(Ordering::Relaxed)
    }

    /// (Re)connections seen so far (the first connection may be missed, when it happened
    /// before the callback was installed).
    pub fn connects(&self) -> u64 {
        self.counts.connects.load(Ordering::Relaxed)
    }

    /// Client and server errors seen so far.
    pub fn errors(&self) -> u64 {
        self.counts.errors.load(Ordering::Relaxed)
    }
}
