//! [`PrivateStore`]: any store, with personal fields sealed on the way in and opened (or
//! erased) on the way out.

use std::fmt;
use std::sync::Arc;

use aether_core::{
    ActorKey, Event, EventLog, EventStore, LogFilter, LogPage, LogPosition, LoggedEvent,
    ReplayStart, Result, Snapshot, SnapshotAndEvents, SnapshotStore, Transaction,
};
use async_trait::async_trait;

use crate::keys::KeyStore;
use crate::seal::{reveal, seal, Opener};

/// A store that seals personal fields ([`Personal`](crate::Personal)) with their subjects'
/// keys before the inner store writes them, and opens them when it reads: an erased subject's
/// fields read as erased. It implements whichever of [`EventStore`], [`SnapshotStore`] and
/// [`EventLog`] the inner store does, so actor hosts, projections and tools use it in place of
/// the inner store.
///
/// Events and snapshots without personal fields pass through unchanged (one walk of their
/// data each way).
///
/// ```
/// use std::sync::Arc;
/// use aether_core::{Event, EventStore};
/// use aether_privacy::{KeyStore, MemoryKeyStore, Personal, PrivateStore};
/// use aether_store::InMemoryEventStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let raw = Arc::new(InMemoryEventStore::new());
/// let keys = Arc::new(MemoryKeyStore::new());
/// let store = PrivateStore::new(raw.clone(), keys.clone());
///
/// let email = Personal::new("person-42", "ada@example.org".to_string());
/// store.save_event(&Event::new("Registered", "user-1", 1).with_field("email", serde_json::to_value(&email).unwrap())).await?;
///
/// // The inner store holds only ciphertext; the private store reads the value back.
/// let stored = raw.get_events("user-1", 1).await?;
/// assert!(!serde_json::to_string(&stored[0].data).unwrap().contains("ada@"));
/// let read = store.get_events("user-1", 1).await?;
/// let back: Personal<String> = serde_json::from_value(read[0].data["email"].clone()).unwrap();
/// assert_eq!(back, email);
///
/// // Erasing the subject deletes its key: the field now reads as erased.
/// keys.erase("person-42").await?;
/// let read = store.get_events("user-1", 1).await?;
/// let gone: Personal<String> = serde_json::from_value(read[0].data["email"].clone()).unwrap();
/// assert!(gone.is_erased());
/// # Ok::<(), aether_core::Error>(())
/// # }).unwrap();
/// ```
pub struct PrivateStore<S: ?Sized> {
    inner: Arc<S>,
    keys: Arc<dyn KeyStore>,
}

impl<S: ?Sized> PrivateStore<S> {
    /// `inner`, sealing with and opening by `keys`.
    pub fn new(inner: Arc<S>, keys: Arc<dyn KeyStore>) -> Self {
        Self { inner, keys }
    }

    /// The store underneath (which sees only sealed personal data).
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    async fn sealed(&self, event: &Event) -> Result<Option<Event>> {
        if !aether_core::personal::holds_personal(&event.data) {
            return Ok(None);
        }
        let mut sealed = event.clone();
        seal(&mut sealed.data, &*self.keys).await?;
        Ok(Some(sealed))
    }

    async fn open_all(&self, events: &mut [Event]) -> Result<()> {
        let mut opener = Opener::default();
        for e in events {
            opener.reveal(&mut e.data, &*self.keys).await?;
        }
        Ok(())
    }

    async fn open_logged(&self, events: &mut [LoggedEvent]) -> Result<()> {
        let mut opener = Opener::default();
        for e in events {
            opener.reveal(&mut e.event.data, &*self.keys).await?;
        }
        Ok(())
    }

    async fn open_snapshot(&self, snapshot: &mut Option<Snapshot>) -> Result<()> {
        if let Some(s) = snapshot {
            reveal(&mut s.state, &*self.keys).await?;
        }
        Ok(())
    }
}

impl<S: ?Sized> Clone for PrivateStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<S: ?Sized> fmt::Debug for PrivateStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for PrivateStore<S> {
    async fn save_event(&self, event: &Event) -> Result<()> {
        match self.sealed(event).await? {
            Some(sealed) => self.inner.save_event(&sealed).await,
            None => self.inner.save_event(event).await,
        }
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        if !events
            .iter()
            .any(|e| aether_core::personal::holds_personal(&e.data))
        {
            return self.inner.save_events(actor_id, events).await;
        }
        let mut sealed = Vec::with_capacity(events.len());
        for e in events {
            sealed.push(self.sealed(e).await?.unwrap_or_else(|| e.clone()));
        }
        self.inner.save_events(actor_id, &sealed).await
    }

    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        let mut events = self.inner.events_of(actor, from_version).await?;
        self.open_all(&mut events).await?;
        Ok(events)
    }

    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.inner.latest_version_of(actor).await
    }

    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        let personal = transaction.appends().iter().any(|a| {
            a.events
                .iter()
                .any(|e| aether_core::personal::holds_personal(&e.data))
        });
        if !personal {
            return self.inner.commit(transaction).await;
        }
        let mut sealed = Transaction::with_id(transaction.id());
        for append in transaction.appends() {
            let mut events = Vec::with_capacity(append.events.len());
            for e in &append.events {
                events.push(self.sealed(e).await?.unwrap_or_else(|| e.clone()));
            }
            sealed = sealed.append(append.actor_id.clone(), append.expected_version, events);
        }
        self.inner.commit(&sealed).await
    }
}

#[async_trait]
impl<S: SnapshotStore + ?Sized> SnapshotStore for PrivateStore<S> {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        if !aether_core::personal::holds_personal(&snapshot.state) {
            return self.inner.save_snapshot(snapshot).await;
        }
        let mut sealed = snapshot.clone();
        seal(&mut sealed.state, &*self.keys).await?;
        self.inner.save_snapshot(&sealed).await
    }

    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        let mut snapshot = self.inner.latest_snapshot_of(actor).await?;
        self.open_snapshot(&mut snapshot).await?;
        Ok(snapshot)
    }

    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &ReplayStart,
    ) -> Result<SnapshotAndEvents> {
        let mut read = self.inner.snapshot_and_events_of(actor, start).await?;
        self.open_snapshot(&mut read.snapshot).await?;
        self.open_all(&mut read.events).await?;
        Ok(read)
    }
}

#[async_trait]
impl<S: EventLog + ?Sized> EventLog for PrivateStore<S> {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        let mut read = self.inner.read_after(after, max).await?;
        self.open_logged(&mut read).await?;
        Ok(read)
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
        let mut page = self.inner.read_filtered(after, max, filter).await?;
        self.open_logged(&mut page.events).await?;
        Ok(page)
    }

    fn partitions(&self) -> Vec<Arc<dyn EventLog>> {
        self.inner
            .partitions()
            .into_iter()
            .map(|p| Arc::new(PrivateStore::new(p, self.keys.clone())) as Arc<dyn EventLog>)
            .collect()
    }
}
