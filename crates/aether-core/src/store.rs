//! Append-only store traits.
//!

use std::sync::Arc;

use async_trait::async_trait;

use crate::actor::ActorKey;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::snapshot::Snapshot;
use crate::transaction::Transaction;

/// Persists events, append-only, with optimistic concurrency per actor.
///
/// Implementations are thread-safe and usable as `Arc<dyn EventStore>`.
///
/// # Immutability
/// There is no update and no delete: by design, not by omission. Once an event is stored it is
/// part of the actor's history for good, which is what makes the history a trustworthy audit
/// trail and lets any number of readers rebuild the same state. A mistake is corrected by
/// appending a new event that compensates for it (`DepositCorrected`, `OrderCancelled`), never
/// by rewriting the old one.
///
/// # Versions
/// Each actor's events carry strictly increasing versions, starting at 1. A save succeeds only
/// if its version is greater than the actor's latest version; otherwise it fails with
/// [`Error::VersionConflict`], which carries the current version
/// so the caller can reload and retry. Versions need not be contiguous, but they never repeat.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends one event.
    ///
    /// # Errors
    /// - [`Error::InvalidInput`] if the event fails [`Event::validate`].
    /// - [`Error::VersionConflict`] if `event.version` is not greater than the actor's latest.
    /// - Backend errors ([`Error::Unavailable`], [`Error::PayloadTooLarge`], ...).
    async fn save_event(&self, event: &Event) -> Result<()>;

    /// Appends several events of one actor, all or nothing: readers see either all of them or
    /// none. Versions must strictly increase within the batch and the first must be greater
    /// than the actor's latest version. Every event names the same actor: `actor_id` and one
    /// actor type (or none). An empty batch does nothing.
    ///
    /// # Errors
    /// As [`save_event`](Self::save_event); [`Error::InvalidInput`] also when an event belongs to
    /// another actor or versions do not increase within the batch (see [`validate_batch`]).
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()>;

    /// The events of `actor` (its type and id) with `version >= from_version`, in ascending
    /// version order. An unknown actor has no events; an actor of another type with the same id
    /// is another actor.
    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>>;

    /// The latest version of `actor` (its type and id), 0 when it has no events.
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64>;

    /// The untyped actor's events with `version >= from_version`, in ascending version order
    /// ([`events_of`](EventStore::events_of) with [`ActorKey::untyped`]).
    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        self.events_of(ActorKey::untyped(actor_id), from_version)
            .await
    }

    /// The untyped actor's latest version, 0 when it has no events
    /// ([`latest_version_of`](Self::latest_version_of) with [`ActorKey::untyped`]).
    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        self.latest_version_of(ActorKey::untyped(actor_id)).await
    }

    /// Appends a transaction's events to all its actors, all or nothing, if every actor is at
    /// the version the transaction expects. Readers see all of it or none of it on every actor.
    /// A transaction that returned `Ok` is stored exactly once, also when the store had to
    /// retry it after a lost acknowledgement.
    ///
    /// The default implementation refuses: a store implements it only when it can make the
    /// append atomic.
    ///
    /// # Errors
    /// - [`Error::InvalidInput`] if the transaction fails [`Transaction::validate`] or exceeds
    ///   the backend's limits (events per transaction, payload size).
    /// - [`Error::TransactionConflict`] naming every actor not at its expected version.
    /// - [`Error::Unsupported`] if the backend cannot append atomically (a NATS server older
    ///   than 2.12, a store without transactions).
    /// - Backend errors as for [`save_events`](Self::save_events).
    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        Err(Error::unsupported(
            format!("transaction {}", transaction.id()),
            "this store does not implement atomic multi-actor appends",
        ))
    }
}

/// An [`EventStore`] that also keeps snapshots.
#[async_trait]
pub trait SnapshotStore: EventStore {
    /// Saves a snapshot. Snapshots are derived data; saving one never changes the events.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()>;

    /// The snapshot with the highest version for `actor` (its type and id), `Ok(None)` when
    /// there is none.
    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>>;

    /// The untyped actor's latest snapshot ([`latest_snapshot_of`](Self::latest_snapshot_of)
    /// with [`ActorKey::untyped`]).
    async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        self.latest_snapshot_of(ActorKey::untyped(actor_id)).await
    }

    /// A rebuild's reads in one call: the latest snapshot of `actor` and its events from the
    /// version `start` picks for that snapshot (`None`: there is none), in ascending version
    /// order.
    ///
    /// The default reads [`latest_snapshot_of`](Self::latest_snapshot_of), then
    /// [`events_of`](EventStore::events_of). A store that keeps snapshots in the same ordered
    /// log as events can do better: the JetStream store reads the snapshot and the actor's
    /// last message at once, and starts reading events where the snapshot lies (checked,
    /// never trusted) instead of searching the stream for the first one wanted.
    ///
    /// # Errors
    /// As [`latest_snapshot_of`](Self::latest_snapshot_of) and
    /// [`events_of`](EventStore::events_of).
    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &ReplayStart,
    ) -> Result<SnapshotAndEvents> {
        let snapshot = self.latest_snapshot_of(actor).await?;
        let from_version = start(snapshot.as_ref());
        let events = self.events_of(actor, from_version).await?;
        Ok(SnapshotAndEvents {
            snapshot,
            from_version,
            events,
        })
    }
}

/// Picks the version a rebuild reads events from, given the actor's latest snapshot (`None`:
/// there is none); see [`SnapshotStore::snapshot_and_events_of`].
pub type ReplayStart = dyn for<'a> Fn(Option<&'a Snapshot>) -> u64 + Send + Sync;

/// What [`SnapshotStore::snapshot_and_events_of`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotAndEvents {
    /// The actor's latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The version the events were read from (what `start` picked).
    pub from_version: u64,
    /// The actor's events with versions from `from_version`, in ascending version order.
    pub events: Vec<Event>,
}

/// A stored message that could not be decoded as an event during replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    /// Position of the message in the store (the stream sequence for JetStream).
    pub sequence: u64,
    /// The raw bytes as stored.
    pub raw: Vec<u8>,
    /// Why decoding failed.
    pub error: String,
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed event at sequence {} ({} bytes): {}",
            self.sequence,
            self.raw.len(),
            self.error
        )
    }
}

impl std::error::Error for ReplayError {}

/// Everything a replay found: the events that decoded, and every message that did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayResult {
    /// Decoded events, in order.
    pub events: Vec<Event>,
    /// Malformed messages, in order.
    pub errors: Vec<ReplayError>,
}

impl ReplayResult {
    /// Whether any message was malformed.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// An [`EventStore`] whose replay reports malformed messages instead of skipping them silently.
#[async_trait]
pub trait EventStoreWithErrors: EventStore {
    /// Like [`EventStore::events_of`], but every message that failed to decode is returned in
    /// [`ReplayResult::errors`] with its sequence, raw bytes and the decode error.
    async fn events_with_errors_of(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult>;

    /// [`events_with_errors_of`](Self::events_with_errors_of) for the untyped actor.
    async fn get_events_with_errors(
        &self,
        actor_id: &str,
        from_version: u64,
    ) -> Result<ReplayResult> {
        self.events_with_errors_of(ActorKey::untyped(actor_id), from_version)
            .await
    }
}

/// Checks a batch for [`EventStore::save_events`]: every event valid, all of `actor_id` and of the
/// first event's actor type, versions strictly increasing.
///
/// # Errors
/// [`Error::InvalidInput`] describing the first problem.
pub fn validate_batch(actor_id: &str, events: &[Event]) -> Result<()> {
    if actor_id.is_empty() {
        return Err(Error::invalid("actor id must not be empty"));
    }
    let mut prev = 0u64;
    for (i, e) in events.iter().enumerate() {
        e.validate()?;
        if e.actor_id != actor_id {
            return Err(Error::invalid(format!(
                "event {i} of the batch belongs to actor {:?}, not {actor_id:?}",
                e.actor_id
            )));
        }
        if let Some(first) = events.first() {
            if e.actor_type != first.actor_type {
                return Err(Error::invalid(format!(
                    "event {i} of the batch is of actor type {:?}, the first of {:?}",
                    e.actor_type, first.actor_type
                )));
            }
        }
        if e.version <= prev {
            return Err(Error::invalid(format!(
                "versions must strictly increase within a batch: event {i} has version {} after {prev}",
                e.version
            )));
        }
        prev = e.version;
    }
    Ok(())
}

macro_rules! forward_event_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: EventStore + ?Sized> EventStore for $ty {
            async fn save_event(&self, event: &Event) -> Result<()> {
                (**self).save_event(event).await
            }
            async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
                (**self).save_events(actor_id, events).await
            }
            async fn events_of(
                &self,
                actor: ActorKey<'_>,
                from_version: u64,
            ) -> Result<Vec<Event>> {
                (**self).events_of(actor, from_version).await
            }
            async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
                (**self).latest_version_of(actor).await
            }
            async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
                (**self).get_events(actor_id, from_version).await
            }
            async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
                (**self).get_latest_version(actor_id).await
            }
            async fn commit(&self, transaction: &Transaction) -> Result<()> {
                (**self).commit(transaction).await
            }
        }

        #[async_trait]
        impl<T: SnapshotStore + ?Sized> SnapshotStore for $ty {
            async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
                (**self).save_snapshot(snapshot).await
            }
            async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
                (**self).latest_snapshot_of(actor).await
            }
            async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
                (**self).get_latest_snapshot(actor_id).await
            }
            async fn snapshot_and_events_of(
                &self,
                actor: ActorKey<'_>,
                start: &ReplayStart,
            ) -> Result<SnapshotAndEvents> {
                (**self).snapshot_and_events_of(actor, start).await
            }
        }

        #[async_trait]
        impl<T: EventStoreWithErrors + ?Sized> EventStoreWithErrors for $ty {
            async fn events_with_errors_of(
                &self,
                actor: ActorKey<'_>,
                from_version: u64,
            ) -> Result<ReplayResult> {
                (**self).events_with_errors_of(actor, from_version).await
            }
        }
    };
}

macro_rules! forward_event_log {
    ($ty:ty) => {
        #[async_trait]
        impl<T: crate::log::EventLog + ?Sized> crate::log::EventLog for $ty {
            async fn read_after(
                &self,
                after: Option<crate::log::LogPosition>,
                max: usize,
            ) -> Result<Vec<crate::log::LoggedEvent>> {
                (**self).read_after(after, max).await
            }
            async fn head(&self) -> Result<Option<crate::log::LogPosition>> {
                (**self).head().await
            }
            async fn read_filtered(
                &self,
                after: Option<crate::log::LogPosition>,
                max: usize,
                filter: &crate::log::LogFilter,
            ) -> Result<crate::log::LogPage> {
                (**self).read_filtered(after, max, filter).await
            }
            fn partitions(&self) -> Vec<Arc<dyn crate::log::EventLog>> {
                (**self).partitions()
            }
        }
    };
}

forward_event_log!(Arc<T>);
forward_event_log!(Box<T>);
forward_event_store!(Arc<T>);
forward_event_store!(Box<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_validation() {
        let ok = [Event::new("T", "a", 1), Event::new("T", "a", 3)];
        assert!(validate_batch("a", &ok).is_ok());
        assert!(validate_batch("a", &[]).is_ok());
        assert!(validate_batch("", &[]).is_err());
        let other = [Event::new("T", "a", 1), Event::new("T", "b", 2)];
        assert!(validate_batch("a", &other).is_err());
        let order = [Event::new("T", "a", 2), Event::new("T", "a", 2)];
        assert!(validate_batch("a", &order).is_err());
        let zero = [Event::new("T", "a", 0)];
        assert!(validate_batch("a", &zero).is_err());
    }

    #[test]
    fn replay_error_display() {
        let e = ReplayError {
            sequence: 9,
            raw: b"{".to_vec(),
            error: "EOF".into(),
        };
        assert!(e.to_string().contains("sequence 9"));
        assert!(!ReplayResult::default().has_errors());
    }
}
