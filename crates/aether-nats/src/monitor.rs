//! The one place that listens to a NATS connection's events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::ConnectOptions;
use tokio::sync::watch;

use crate::PermissionWatch;

#[derive(Debug)]
struct Counts {
    slow_consumers: AtomicU64,
    disconnects: AtomicU64,
    connects: AtomicU64,
    errors: AtomicU64,
    transport_errors: AtomicU64,
    /// Bumped on every (re)connection.
    connected: watch::Sender<u64>,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            slow_consumers: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
            connected: watch::Sender::new(0),
        }
    }
}

/// Watches a NATS connection's events: permission violations (recorded by subject in its
/// [`PermissionWatch`]), (re)connections and disconnections (counted, and signalled by
/// [`connections`](Self::connections)), slow-consumer reports and other client and server
/// errors (counted and logged).
///
/// The NATS client reports its events only to the callback given when it connects: create the
/// client with [`install`](Self::install) (as [`Connection::connect`](crate::Connection::connect)
/// does), or call [`observe`](Self::observe) from your own callback. A monitor that was never
/// installed sees nothing: refused operations then look like timeouts.
///
/// Cloning is cheap; clones share what was seen.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMonitor {
    counts: Arc<Counts>,
    permissions: PermissionWatch,
}

impl ConnectionMonitor {
    /// A monitor that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
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

    /// Records one event of the connection.
    pub fn observe(&self, event: &async_nats::Event) {
        let c = &self.counts;
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                c.slow_consumers.fetch_add(1, Ordering::Relaxed);
                c.transport_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("aether_nats_slow_consumers_total").increment(1);
                tracing::warn!(
                    sid,
                    "NATS reports a slow consumer: the client dropped messages of a subscription"
                );
            }
            async_nats::Event::ServerError(e) => {
                // Counted before a violation is recorded: recording wakes whoever waits for
                // the refusal, and they may look at the counts next.
                c.errors.fetch_add(1, Ordering::Relaxed);
                if self.permissions.observe(event) {
                    metrics::counter!("aether_nats_permission_violations_total").increment(1);
                } else {
                    c.transport_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "NATS server error");
                }
            }
            async_nats::Event::ClientError(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                c.transport_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "NATS client error");
            }
            async_nats::Event::Disconnected => {
                c.disconnects.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("aether_nats_disconnects_total").increment(1);
                tracing::info!("NATS connection lost; the client reconnects and resubscribes");
            }
            async_nats::Event::Connected => {
                c.connects.fetch_add(1, Ordering::Relaxed);
                c.connected.send_modify(|n| *n = n.wrapping_add(1));
                tracing::debug!("NATS connection (re)established");
            }
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
    }

    /// The permission violations the server reported on this connection, by operation and
    /// subject.
    pub fn permissions(&self) -> &PermissionWatch {
        &self.permissions
    }

    /// A receiver that changes on every (re)connection, so that a long-lived subscription can
    /// re-create what the server lost at once instead of waiting for missed heartbeats.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.counts.connected.subscribe()
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

    /// Slow-consumer reports and client and server errors other than permission violations:
    /// what a layer on this connection reports as transport errors.
    pub fn transport_errors(&self) -> u64 {
        self.counts.transport_errors.load(Ordering::Relaxed)
    }

    /// Permission violations reported so far (every report, repeats included).
    pub fn permission_violations(&self) -> u64 {
        self.permissions.violations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_events() {
        let m = ConnectionMonitor::new();
        let connections = m.connections();
        let server =
            |s: &str| async_nats::Event::ServerError(async_nats::ServerError::Other(s.into()));
        m.observe(&async_nats::Event::SlowConsumer(1));
        m.observe(&server("Stale Connection"));
        m.observe(&server(r#"Permissions Violation for Publish to "a.b""#));
        m.observe(&async_nats::Event::Disconnected);
        m.observe(&async_nats::Event::Connected);
        assert_eq!(m.slow_consumer_events(), 1);
        assert_eq!(m.errors(), 2);
        assert_eq!(m.transport_errors(), 2);
        assert_eq!(m.permission_violations(), 1);
        assert!(m
            .permissions()
            .denied(crate::Operation::Publish, "a.b")
            .is_some());
        assert_eq!((m.disconnects(), m.connects()), (1, 1));
        assert!(connections.has_changed().unwrap());
    }
}
