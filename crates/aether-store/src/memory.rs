//! The embedded, thread-safe in-memory store.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

use aether_core::{
    validate_batch, ActorKey, Error, Event, EventLog, EventStore, EventStoreWithErrors,
    LogPosition, LoggedEvent, Metadata, ReplayResult, Result, Snapshot, SnapshotStore, Transaction,
    TransactionConflictError, VersionConflictError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::key::{owned_key, split_key, with_key};
use dashmap::DashMap;
// Fast, randomly seeded hashing: actor ids come from callers, so the seed must not be fixed.
use foldhash::fast::RandomState;

/// An event as kept in memory: the payload as its JSON text and no copy of the actor id (the
/// map key), which takes a fraction of the memory of a decoded [`Event`] (whose payload map
/// allocates a whole B-tree node even for one field).
#[derive(Debug)]
struct Stored {
    id: Box<str>,
    event_type: Box<str>,
    version: u64,
    timestamp: DateTime<Utc>,
    data: Box<str>,
    metadata: Option<Box<Metadata>>,
}

impl Stored {
    fn from_event(e: &Event) -> Result<Self> {
        Ok(Self {
            id: e.id.as_str().into(),
            event_type: e.event_type.as_str().into(),
            version: e.version,
            timestamp: e.timestamp,
            data: serde_json::to_string(&e.data)
                .map_err(|err| Error::Encoding(err.to_string()))?
                .into_boxed_str(),
            metadata: (!e.metadata.is_empty()).then(|| Box::new(e.metadata.clone())),
        })
    }

    fn to_event(&self, actor: ActorKey<'_>) -> Result<Event> {
        Ok(Event {
            id: self.id.to_string(),
            event_type: self.event_type.to_string(),
            actor_type: actor.actor_type.map(str::to_string),
            actor_id: actor.actor_id.to_string(),
            version: self.version,
            data: serde_json::from_str(&self.data).map_err(|e| Error::Decoding(e.to_string()))?,
            timestamp: self.timestamp,
            metadata: self.metadata.as_deref().cloned().unwrap_or_default(),
        })
    }
}

/// A thread-safe event store in process memory: the embedded default.
///
/// Each actor's check-and-append runs under that actor's map shard lock, with no `.await`
/// inside, so concurrent saves of the same version give exactly one success and conflicts for
/// the rest, while different actors rarely contend. Latest-version lookups are O(1).
/// A transaction ([`EventStore::commit`]) checks and appends all its actors under a store-wide
/// lock that every read and save shares, so nobody sees part of it.
/// Events are kept compactly (payload as JSON text) and decoded on read.
///
/// Nothing survives the process: use the JetStream store for durability.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    actors: DashMap<String, Vec<Stored>, RandomState>,
    snapshots: DashMap<String, Snapshot, RandomState>,
    /// Shared by reads and single-actor saves, exclusive for a transaction's commit.
    commits: RwLock<()>,
    /// The global order ([`EventLog`]): for each stored event, its actor and its index in the
    /// actor's log. Appended under the actor's shard lock, so each actor's events keep their
    /// version order here.
    order: Mutex<Vec<(Arc<str>, u32)>>,
}

impl InMemoryEventStore {
    /// An empty store. Wrap it in [`Notify`](crate::Notify) to publish `EventStored` after
    /// every save.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of actors with at least one event.
    pub fn actor_count(&self) -> usize {
        self.actors.len()
    }

    /// Total number of stored events.
    pub fn event_count(&self) -> usize {
        self.actors.iter().map(|e| e.value().len()).sum()
    }

    /// The actor's latest version (0 when none), without going through the async trait: a
    /// single map lookup.
    pub fn latest_version<'a>(&self, actor: impl Into<ActorKey<'a>>) -> u64 {
        with_key(actor.into(), |key| {
            self.actors.get(key).map_or(0, |log| Self::latest(&log))
        })
    }

    /// Runs `f` on the actor's log under its shard lock, creating the log if needed. Whatever
    /// `f` appends is added to the global order before the lock is released.
    fn with_log<R>(&self, actor: ActorKey<'_>, f: impl FnOnce(&mut Vec<Stored>) -> R) -> R {
        // The key is only allocated when the actor is new.
        let found = with_key(actor, |key| self.actors.get_mut(key));
        let mut log = match found {
            Some(log) => log,
            None => self.actors.entry(owned_key(actor)).or_default(),
        };
        let before = log.len();
        let r = f(&mut log);
        if log.len() > before {
            let actor: Arc<str> = with_key(actor, |k| Arc::<str>::from(k));
            let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            order.extend((before..log.len()).map(|i| (Arc::clone(&actor), i as u32)));
        }
        r
    }

    fn latest(events: &[Stored]) -> u64 {
        events.last().map_or(0, |e| e.version)
    }

    /// Keeps transactions out while an operation runs (held without `.await`).
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.commits.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The operations, without their metrics (the trait's methods record them).
impl InMemoryEventStore {
    fn save_event_now(&self, event: &Event) -> Result<()> {
        event.validate()?;
        let stored = Stored::from_event(event)?;
        let _shared = self.shared();
        self.with_log(event.actor_key(), |log| {
            let current = Self::latest(log);
            if event.version <= current {
                return Err(Error::version_conflict(
                    event.actor_id.clone(),
                    event.version,
                    current,
                ));
            }
            log.push(stored);
            Ok(())
        })
    }

    fn save_events_now(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        validate_batch(actor_id, events)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let stored = events
            .iter()
            .map(Stored::from_event)
            .collect::<Result<Vec<_>>>()?;
        let _shared = self.shared();
        self.with_log(first.actor_key(), |log| {
            let current = Self::latest(log);
            if first.version <= current {
                return Err(Error::version_conflict(actor_id, first.version, current));
            }
            log.extend(stored);
            Ok(())
        })
    }

    fn get_events_now(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        let _shared = self.shared();
        Ok(match with_key(actor, |key| self.actors.get(key)) {
            Some(log) => {
                let start = log.partition_point(|e| e.version < from_version);
                log[start..]
                    .iter()
                    .map(|e| e.to_event(actor))
                    .collect::<Result<Vec<_>>>()?
            }
            None => Vec::new(),
        })
    }

    fn get_latest_version_now(&self, actor: ActorKey<'_>) -> Result<u64> {
        let _shared = self.shared();
        Ok(with_key(actor, |key| {
            self.actors.get(key).map_or(0, |log| Self::latest(&log))
        }))
    }

    fn commit_now(&self, transaction: &Transaction) -> Result<()> {
        transaction.validate()?;
        let appends = transaction
            .appends()
            .iter()
            .map(|a| {
                let stored = a
                    .events
                    .iter()
                    .map(Stored::from_event)
                    .collect::<Result<Vec<_>>>()?;
                Ok((a, stored))
            })
            .collect::<Result<Vec<_>>>()?;
        let _exclusive = self.commits.write().unwrap_or_else(|e| e.into_inner());
        let conflicts: Vec<VersionConflictError> = appends
            .iter()
            .filter_map(|(a, _)| {
                let current = self.latest_version(a.actor_key());
                (current != a.expected_version).then(|| VersionConflictError {
                    actor_id: a.actor_id.clone(),
                    attempted_version: a.expected_version + 1,
                    current_version: current,
                })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(TransactionConflictError {
                transaction_id: transaction.id().to_string(),
                conflicts,
            }
            .into());
        }
        for (a, stored) in appends {
            self.with_log(a.actor_key(), |log| log.extend(stored));
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn save_event(&self, event: &Event) -> Result<()> {
        let started = Instant::now();
        let result = self.save_event_now(event);
        crate::metrics::record("memory", "save_event", started, &result);
        crate::metrics::saved("memory", 1, &result);
        result
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        let started = Instant::now();
        let result = self.save_events_now(actor_id, events);
        crate::metrics::record("memory", "save_events", started, &result);
        crate::metrics::saved("memory", events.len(), &result);
        result
    }

    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        let started = Instant::now();
        let result = self.get_events_now(actor, from_version);
        crate::metrics::record("memory", "get_events", started, &result);
        result
    }

    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        // Not timed: a map lookup, on the hot path of every command.
        self.get_latest_version_now(actor)
    }

    // Overridden so that the id-only reads box one future, not two.
    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        self.get_latest_version_now(ActorKey::untyped(actor_id))
    }

    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        let started = Instant::now();
        let result = self.get_events_now(ActorKey::untyped(actor_id), from_version);
        crate::metrics::record("memory", "get_events", started, &result);
        result
    }

    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        let started = Instant::now();
        let result = self.commit_now(transaction);
        crate::metrics::record("memory", "commit", started, &result);
        let events = transaction.appends().iter().map(|a| a.events.len()).sum();
        crate::metrics::saved("memory", events, &result);
        result
    }
}

/// The global order is the order saves were acknowledged in; a position's `sequence` is the
/// event's place in it (from 1) and its `index` is 0.
#[async_trait]
impl EventLog for InMemoryEventStore {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        let start = after.map_or(0, |p| p.sequence) as usize;
        let slots: Vec<(Arc<str>, u32)> = {
            let order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            order.iter().skip(start).take(max).cloned().collect()
        };
        let mut events = Vec::with_capacity(slots.len());
        for (n, (actor, index)) in slots.iter().enumerate() {
            let Some(log) = self.actors.get(actor.as_ref()) else {
                continue;
            };
            if let Some(stored) = log.get(*index as usize) {
                events.push(LoggedEvent {
                    position: LogPosition::new((start + n + 1) as u64, 0),
                    event: stored.to_event(split_key(actor))?,
                });
            }
        }
        Ok(events)
    }

    async fn head(&self) -> Result<Option<LogPosition>> {
        let len = self.order.lock().unwrap_or_else(|e| e.into_inner()).len();
        Ok((len > 0).then(|| LogPosition::new(len as u64, 0)))
    }
}

#[async_trait]
impl SnapshotStore for InMemoryEventStore {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.validate()?;
        let mut slot = self
            .snapshots
            .entry(owned_key(snapshot.actor_key()))
            .or_insert_with(|| snapshot.clone());
        if snapshot.version >= slot.version {
            *slot = snapshot.clone();
        }
        Ok(())
    }

    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        Ok(with_key(actor, |key| {
            self.snapshots.get(key).map(|s| s.clone())
        }))
    }
}

#[async_trait]
impl EventStoreWithErrors for InMemoryEventStore {
    async fn events_with_errors_of(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        // Events are kept decoded, so nothing here can be malformed.
        Ok(ReplayResult {
            events: self.events_of(actor, from_version).await?,
            errors: Vec::new(),
        })
    }
}
