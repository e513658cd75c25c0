//! Surfacing the NATS client's own connection events (slow consumers, errors, permission
//! violations) in bus metrics.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::Result;
use aether_nats::{Operation, PermissionViolation, PermissionWatch};
use async_nats::ConnectOptions;
use tokio::sync::watch;

use super::bus::timeout_error;
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
/// [`transport_errors`](crate::MetricsSnapshot::transport_errors) and logged; permission
/// violations (a publish or subscription the server refused) are recorded by subject in a
/// [`PermissionWatch`] ([`permissions`](Self::permissions)) and counted in
/// [`permission_errors`](crate::MetricsSnapshot::permission_errors) instead, so that the bus
/// can fail the operations they concern with
/// [`Error::PermissionDenied`](aether_core::Error::PermissionDenied).
///
/// The NATS client reports its events only to the callback given when it connects
/// ([`ConnectOptions::event_callback`]). [`NatsEventBus::connect`](super::NatsEventBus::connect)
/// installs a monitor itself. When you bring your own client, either create it with
/// [`install`](Self::install), or call [`observe`](Self::observe) from your own callback, and
/// pass the monitor to [`NatsEventBus::with_monitor`](super::NatsEventBus::with_monitor).
/// Without a monitor, the bus still detects lost messages itself (per-publisher sequence
/// numbers, reported as lag) but sees neither the client's slow-consumer signal nor the
/// server's permission violations (denied publishes then return `Ok` and denied
/// subscriptions silently receive nothing).
///
/// Cloning is cheap; clones share the counters.
#[derive(Debug, Clone)]
pub struct TransportMonitor {
    metrics: Arc<BusMetrics>,
    counts: Arc<Counts>,
    /// Bumped on every (re)connection, so durable subscriptions can re-create their consumer
    /// at once instead of waiting for missed heartbeats.
    connected: Arc<watch::Sender<u64>>,
    permissions: PermissionWatch,
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
            permissions: PermissionWatch::new(),
        }
    }

    /// The permission violations the server reported on this connection, by operation and
    /// subject.
    pub fn permissions(&self) -> &PermissionWatch {
        &self.permissions
    }

    /// Changes on every permission violation the monitor observes, so that an operation
    /// waiting for an answer can stop waiting as soon as the server reports that it refused it.
    pub(crate) fn violation_signal(&self) -> watch::Receiver<u64> {
        self.permissions.changes()
    }

    /// Runs `op`, an operation that waits for an answer from the server (a JetStream request
    /// or acknowledged publish), for at most `timeout`. The server does not answer a request
    /// it refused, so without this a refusal would look like a timeout: as soon as a violation
    /// reported since the start satisfies `relevant`, the operation fails with a permission
    /// error naming the refused subject; so does a failure or timeout that such a violation
    /// explains.
    pub(crate) async fn guard<T>(
        &self,
        context: &str,
        timeout: Duration,
        relevant: impl Fn(Operation, &str) -> bool,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut signal = self.violation_signal();
        let started = Instant::now();
        let denied = || {
            self.permissions
                .find_since(started, &relevant)
                .map(|v| v.to_error(context))
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(op, deadline);
        let mut signal_open = true;
        loop {
            tokio::select! {
                r = &mut op => return match r {
                    Ok(v) => Ok(v),
                    Err(e) => Err(denied().unwrap_or(e)),
                },
                changed = signal.changed(), if signal_open => {
                    if let Some(e) = denied() {
                        return Err(e);
                    }
                    signal_open = changed.is_ok();
                }
                _ = &mut deadline => return Err(denied().unwrap_or_else(|| timeout_error(context))),
            }
        }
    }

    /// Runs `done` (the round trip proving the server processed an operation) while watching
    /// for a violation since `since` that satisfies `relevant`, then waits `grace` more: the
    /// server reports a refusal before it answers what follows, but the callback that records
    /// it runs on its own task, so a report the connection already read may not be recorded
    /// yet. `Err` with the violation when one was seen (`done` is then abandoned).
    pub(crate) async fn violation_during<T>(
        &self,
        mut signal: watch::Receiver<u64>,
        since: Instant,
        relevant: impl Fn(Operation, &str) -> bool,
        done: impl Future<Output = T>,
        grace: Duration,
    ) -> std::result::Result<T, PermissionViolation> {
        let find = || self.permissions.find_since(since, &relevant);
        tokio::pin!(done);
        let mut signal_open = true;
        let result = loop {
            tokio::select! {
                r = &mut done => break r,
                changed = signal.changed(), if signal_open => {
                    if let Some(v) = find() {
                        return Err(v);
                    }
                    signal_open = changed.is_ok();
                }
            }
        };
        // Let the callback task run before waiting on the clock.
        tokio::task::yield_now().await;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            if let Some(v) = find() {
                return Err(v);
            }
            tokio::select! {
                changed = signal.changed(), if signal_open => signal_open = changed.is_ok(),
                _ = &mut deadline => return match find() {
                    Some(v) => Err(v),
                    None => Ok(result),
                },
            }
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
                let refused = match e {
                    async_nats::ServerError::Other(text) => PermissionViolation::parse(text),
                    _ => None,
                };
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                match refused {
                    Some((operation, subject)) => {
                        // Counted before it is recorded: recording wakes whoever waits for
                        // the refusal, and they may look at the metrics next.
                        self.metrics.record_permission_error();
                        tracing::warn!(%operation, subject, "NATS refused an operation: permissions violation");
                        self.permissions.record(operation, subject);
                    }
                    None => {
                        self.metrics.record_transport_error();
                        tracing::warn!(error = %e, "NATS server error");
                    }
                }
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

    /// Client and server errors seen so far, permission violations included.
    pub fn errors(&self) -> u64 {
        self.counts.errors.load(Ordering::Relaxed)
    }
}
