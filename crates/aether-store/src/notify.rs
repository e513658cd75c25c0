//! `EventStored` notifications as a wrapper around any store.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_core::{
    ActorKey, Event, EventBroadcaster, EventLog, EventStore, EventStoreWithErrors, LogFilter,
    LogPage, LogPosition, LoggedEvent, ReplayResult, Result, Snapshot, SnapshotStore, Transaction,
};
use async_trait::async_trait;

/// Wraps any [`EventStore`] and publishes an `EventStored` notification (see
/// [`Event::event_stored`]) to a broadcaster after every successful save, one per stored event
/// and in order; never after a conflict or any other failed save.
///
/// The save has already succeeded when the notification is sent, so a save reports success
/// even if its notification could not be published: the failure is logged with `tracing` and
/// counted in [`failures`](Self::failures), never silently dropped. Reads and snapshots pass
/// straight through.
///
/// ```
/// use std::sync::Arc;
///
/// use aether_bus::EventBus;
/// use aether_core::{Delivery, Event, EventBroadcaster, EventStore};
/// use aether_store::{InMemoryEventStore, Notify};
///
/// # tokio_test_block(async {
/// let bus = Arc::new(EventBus::new());
/// let mut stored = bus.subscribe("stored").await?;
/// let store = Notify::new(InMemoryEventStore::new(), bus.clone(), "stored");
///
/// store.save_event(&Event::new("Opened", "acc-1", 1)).await?;
/// assert!(matches!(stored.try_recv(), Some(Delivery::Event(n)) if n.actor_id == "acc-1"));
///
/// // A conflict stores nothing and notifies nobody.
/// assert!(store.save_event(&Event::new("Opened", "acc-1", 1)).await.is_err());
/// assert!(stored.try_recv().is_none());
/// assert_eq!(store.failures(), 0);
/// # Ok::<(), aether_core::Error>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Notify<S> {
    inner: S,
    broadcaster: Arc<dyn EventBroadcaster>,
    namespace: Arc<str>,
    failures: AtomicU64,
}

impl<S: fmt::Debug> fmt::Debug for Notify<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("inner", &self.inner)
            .field("namespace", &self.namespace)
            .field("failures", &self.failures())
            .finish()
    }
}

impl<S> Notify<S> {
    /// Wraps `inner`, notifying `broadcaster` on `namespace`.
    pub fn new(
        inner: S,
        broadcaster: Arc<dyn EventBroadcaster>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            inner,
            broadcaster,
            namespace: Arc::from(namespace.into()),
            failures: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the store; notifications stop.
    pub fn into_inner(self) -> S {
        self.inner
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
    async fn notify(&self, stored: &[Event]) {
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

#[async_trait]
impl<S: EventStore> EventStore for Notify<S> {
    async fn save_event(&self, event: &Event) -> Result<()> {
        self.inner.save_event(event).await?;
        self.notify(std::slice::from_ref(event)).await;
        Ok(())
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        self.inner.save_events(actor_id, events).await?;
        self.notify(events).await;
        Ok(())
    }

    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        self.inner.events_of(actor, from_version).await
    }

    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.inner.latest_version_of(actor).await
    }

    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        self.inner.commit(transaction).await?;
        for append in transaction.appends() {
            self.notify(&append.events).await;
        }
        Ok(())
    }
}

#[async_trait]
impl<S: EventLog> EventLog for Notify<S> {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        self.inner.read_after(after, max).await
    }

    async fn head(&self) -> Result<Option<LogPosition>> {
        self.inner.head().await
    }

    async fn read_filtered(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        self.inner.read_filtered(after, max, filter).await
    }

    fn partitions(&self) -> Vec<std::sync::Arc<dyn EventLog>> {
        self.inner.partitions()
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for Notify<S> {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        self.inner.latest_snapshot_of(actor).await
    }

    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &aether_core::ReplayStart,
    ) -> Result<aether_core::SnapshotAndEvents> {
        self.inner.snapshot_and_events_of(actor, start).await
    }
}

#[async_trait]
impl<S: EventStoreWithErrors> EventStoreWithErrors for Notify<S> {
    async fn events_with_errors_of(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        self.inner.events_with_errors_of(actor, from_version).await
    }
}
