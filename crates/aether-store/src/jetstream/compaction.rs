//! History that does not grow forever: [`JetStreamEventStore::compact`] makes an actor's
//! latest snapshot the start of its history in a compactable stream, moving the events before
//! it to the archive store; reads from before the cut read the archive too.

use std::sync::Arc;

use aether_core::{ActorKey, Error, Event, EventStore, Result, SnapshotStore};

use super::event_store::JetStreamEventStore;

/// What [`JetStreamEventStore::compact`] did to one actor, or would do on a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// The actor, as `type/id` (or the id of an untyped actor).
    pub actor: String,
    /// The version of the snapshot the history now starts from: the stream keeps the
    /// message holding this version and everything after it.
    pub snapshot_version: u64,
    /// Events copied to the archive by this call (on a dry run: that would be).
    pub archived_events: u64,
    /// Messages of the actor removed from the stream (on a dry run: that would be). A
    /// message holds one event, or a batch saved at once.
    pub removed_messages: u64,
    /// Older snapshots of the actor removed (the latest stays); 0 on a dry run.
    pub removed_snapshots: u64,
    /// Whether nothing was written.
    pub dry_run: bool,
}

impl JetStreamEventStore {
    /// Whether the store's history is compactable: its config says so, or its stream was
    /// created compactable (so that every reader of a compacted history, the tools included,
    /// reads it whole whatever its own config).
    pub fn compactable(&self) -> bool {
        self.config().compactable || self.parts_purgeable()
    }

    /// The archive store of this store's compactable history: the immutable stream
    /// `<stream>_ARCHIVE` ([`JetStreamConfig::archive_config`](super::JetStreamConfig::archive_config)),
    /// opened (and created when missing) on first use. It holds every event compaction moved
    /// out of this store's stream, per actor in version order; read it as any store (its
    /// [`EventLog`](aether_core::EventLog) is how a projection that needs the full history
    /// reads what was moved).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when this store's history is not compactable; as
    /// [`new`](Self::new).
    pub async fn archive(&self) -> Result<Arc<JetStreamEventStore>> {
        if !self.compactable() {
            return Err(Error::invalid(format!(
                "stream {} is not compactable, so it has no archive",
                self.stream_name()
            )));
        }
        let archive = self
            .archive
            .get_or_try_init(|| async {
                let store =
                    Self::from_context(self.context().clone(), self.config().archive_config())
                        .await?;
                Ok::<_, Error>(Arc::new(store))
            })
            .await?;
        Ok(archive.clone())
    }

    /// Prepends the archived events an actor's read from `from_version` is missing: the
    /// stream's first event read is above `from_version` (versions of the actors the runtime
    /// writes go up by one), so earlier ones may have been moved to the archive.
    pub(super) async fn with_archived(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
        hot: Vec<Event>,
    ) -> Result<Vec<Event>> {
        if !self.compactable() {
            return Ok(hot);
        }
        let Some(first) = hot.first().map(|e| e.version) else {
            // Compaction keeps the actor's last messages, so an empty read is the whole
            // answer.
            return Ok(hot);
        };
        if first <= from_version.max(1) {
            return Ok(hot);
        }
        let mut older = self.archive().await?.events_of(actor, from_version).await?;
        older.retain(|e| e.version < first);
        if older.is_empty() {
            return Ok(hot);
        }
        older.extend(hot);
        Ok(older)
    }

    /// Makes the actor's latest snapshot the start of its history in the stream: copies the
    /// events of the messages before the one holding the snapshot's version to the archive
    /// ([`archive`](Self::archive)), then removes those messages from the stream, and the
    /// actor's older snapshots. With `dry_run`, only counts.
    ///
    /// Nothing a reader sees changes: the actor's events from any version still read whole
    /// (from the archive, then the stream), its latest version and the server's
    /// expected-sequence checks are untouched (the stream keeps the actor's last message), and
    /// every other actor is left alone. Safe to run again after a crash at any step: the
    /// archive copy is checked by version, and removal follows it. Removed messages are gone
    /// from the stream's global order, so a projection rebuilt from scratch reads the archive
    /// first (see `docs/data-lifecycle.md`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the store's history is not compactable (the config, or a
    /// stream created denying purges) or the actor has no snapshot (take one first);
    /// [`Error::Decoding`] when a message to move does not decode (nothing is moved); backend
    /// errors as typed variants (run it again).
    pub async fn compact(&self, actor: ActorKey<'_>, dry_run: bool) -> Result<Compaction> {
        actor.validate()?;
        let part = self.part(actor);
        if !self.compactable() || !part.allows_purge().await? {
            return Err(Error::invalid(format!(
                "the history of stream {} cannot be compacted: open the store with \
                 JetStreamConfig::compactable(true) on a stream created that way (a stream \
                 that denies purges can never allow them)",
                self.stream_name()
            )));
        }
        let Some(snapshot) = self.part(actor).latest_snapshot_of(actor).await? else {
            return Err(Error::invalid(format!(
                "actor {actor} has no snapshot: compaction keeps the history from the latest \
                 snapshot on, so take one first"
            )));
        };
        let before = part.messages_before(actor, snapshot.version).await?;
        let Some(cut) = before.cut else {
            return Err(Error::invalid(format!(
                "actor {actor} has a snapshot at version {} but no event at or after it in \
                 stream {}",
                snapshot.version,
                self.stream_name()
            )));
        };
        let mut report = Compaction {
            actor: actor.to_string(),
            snapshot_version: snapshot.version,
            archived_events: 0,
            removed_messages: before.messages.len() as u64,
            removed_snapshots: 0,
            dry_run,
        };
        if dry_run {
            // What a run would copy: all of it, less what an earlier run copied already.
            let archived = match aether_nats::backend::get_stream(
                self.context(),
                &Self::stream_name_for(&self.config().archive_config()),
            )
            .await?
            {
                Some(_) => self.archive().await?.latest_version_of(actor).await?,
                None => 0,
            };
            report.archived_events = before
                .messages
                .iter()
                .flat_map(|m| &m.events)
                .filter(|e| e.version > archived)
                .count() as u64;
            return Ok(report);
        }
        let archive = self.archive().await?;
        let archived = archive.latest_version_of(actor).await?;
        for message in &before.messages {
            if message.events.last().is_some_and(|e| e.version <= archived) {
                continue;
            }
            // One message, one save: a batch stays one batch in the archive. The archive's
            // own version check makes a repeated copy (after a crash) a conflict, not a
            // duplicate.
            match archive.save_events(actor.actor_id, &message.events).await {
                Ok(()) => report.archived_events += message.events.len() as u64,
                Err(Error::VersionConflict(c)) if c.current_version >= last_version(message) => {}
                Err(e) => return Err(e),
            }
        }
        // Only what is safely in the archive goes.
        let copied = archive.latest_version_of(actor).await?;
        let last_before = before.messages.last().map(last_version).unwrap_or_default();
        if copied < last_before {
            return Err(Error::backend(
                format!("compacting actor {actor}"),
                format!(
                    "the archive holds versions up to {copied}, not {last_before}: nothing was \
                     removed"
                ),
            ));
        }
        if !before.messages.is_empty() {
            report.removed_messages = part.purge_events_below(actor, cut).await?;
        }
        report.removed_snapshots = part.purge_snapshots(actor, 1).await?;
        tracing::info!(
            actor = %report.actor,
            snapshot_version = report.snapshot_version,
            archived = report.archived_events,
            removed = report.removed_messages,
            "compacted an actor's history"
        );
        Ok(report)
    }
}

/// What [`JetStreamEventStore::remove_retired`] did to one actor, or would do on a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The actor, as `type/id` (or the id of an untyped actor).
    pub actor: String,
    /// The version of its final event (`aether.Retired`), which stays.
    pub retired_version: u64,
    /// Messages of the actor removed from the stream (on a dry run: that would be).
    pub removed_messages: u64,
    /// Snapshots of the actor removed; 0 on a dry run.
    pub removed_snapshots: u64,
    /// Whether nothing was written.
    pub dry_run: bool,
}

impl JetStreamEventStore {
    /// Removes a retired actor's events from a compactable stream once `grace` has passed
    /// since its retirement: every message before its final event (`aether.Retired`, which
    /// stays, so the actor stays retired at the same version and no write can reuse a
    /// version), and all its snapshots. Nothing is archived: this is removal. Events an earlier
    /// [`compact`](Self::compact) moved to the archive stay there (the archive is immutable);
    /// erase personal data with its subject's key instead (`aether-privacy`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the history is not compactable, the actor is not retired
    /// (its last event is not the final event), or it was retired less than `grace` ago;
    /// backend errors as typed variants (run it again).
    pub async fn remove_retired(
        &self,
        actor: ActorKey<'_>,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> Result<Removal> {
        actor.validate()?;
        let part = self.part(actor);
        if !self.compactable() || !part.allows_purge().await? {
            return Err(Error::invalid(format!(
                "the events of stream {} cannot be removed: open the store with \
                 JetStreamConfig::compactable(true) on a stream created that way",
                self.stream_name()
            )));
        }
        let latest = part.latest_version_of(actor).await?;
        let last = part.events_of(actor, latest.max(1)).await?;
        let Some(final_event) = last.last().filter(|e| e.is_retirement()) else {
            return Err(Error::invalid(format!(
                "actor {actor} is not retired: only a retired actor's events can be removed"
            )));
        };
        let retired_at = final_event.timestamp;
        let grace_ends = chrono::Duration::from_std(grace)
            .ok()
            .and_then(|g| retired_at.checked_add_signed(g));
        if grace_ends.is_none_or(|end| chrono::Utc::now() < end) {
            let seconds = chrono::SecondsFormat::Secs;
            let until = grace_ends.map_or_else(
                || "never".to_string(),
                |end| end.to_rfc3339_opts(seconds, true),
            );
            return Err(Error::invalid(format!(
                "actor {actor} was retired at {}, within the grace period (it ends {until})",
                retired_at.to_rfc3339_opts(seconds, true)
            )));
        }
        let before = part.messages_before(actor, final_event.version).await?;
        let mut report = Removal {
            actor: actor.to_string(),
            retired_version: final_event.version,
            removed_messages: before.messages.len() as u64,
            removed_snapshots: 0,
            dry_run,
        };
        if dry_run {
            return Ok(report);
        }
        if let (Some(cut), false) = (before.cut, before.messages.is_empty()) {
            report.removed_messages = part.purge_events_below(actor, cut).await?;
        }
        report.removed_snapshots = part.purge_snapshots(actor, 0).await?;
        tracing::info!(
            actor = %report.actor,
            removed = report.removed_messages,
            "removed a retired actor's events"
        );
        Ok(report)
    }
}

fn last_version(message: &super::store::compact::StoredMessage) -> u64 {
    message.events.last().map_or(0, |e| e.version)
}
