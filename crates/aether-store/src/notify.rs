//! `EventStored` notifications, shared by every store.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_core::{Event, EventBroadcaster};

/// Publishes an `EventStored` notification (see [`Event::event_stored`]) to a broadcaster after
/// each successful save.
///
/// The save has already succeeded when the notification is sent, so a failed publish does not
/// fail the save; it is logged with `tracing` and counted in
/// [`failures`](Self::failures), never silently dropped.
#[derive(Clone)]
pub struct StoredNotifier {
    broadcaster: Arc<dyn EventBroadcaster>,
    namespace: Arc<str>,
    failures: Arc<AtomicU64>,
}

impl fmt::Debug for StoredNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredNotifier")
            .field("namespace", &self.namespace)
            .field("failures", &self.failures())
            .finish()
    }
}

impl StoredNotifier {
    /// Notifies `broadcaster` on `namespace`.
    pub fn new(broadcaster: Arc<dyn EventBroadcaster>, namespace: impl Into<String>) -> Self {
        Self {
            broadcaster,
            namespace: Arc::from(namespace.into()),
            failures: Arc::default(),
        }
    }

    /// The namespace notifications go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How many notifications could not be published.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Publishes the notification for each stored event, in order.
    pub async fn notify_all(&self, stored: &[Event]) {
        for event in stored {
            let note = event.event_stored();
            if let Err(error) = self.broadcaster.publish(&self.namespace, &note).await {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    actor_id = %event.actor_id,
                    version = event.version,
                    namespace = %self.namespace,
                    "event stored but its EventStored notification could not be published"
                );
            }
        }
    }
}
