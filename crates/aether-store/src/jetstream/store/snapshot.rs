//! Snapshots: one subject per actor, the highest version kept, written with the same
//! expected-sequence check as events. Apart from events because nothing else reads them.

use aether_core::{ActorKey, Error, Result, Snapshot, SnapshotAndEvents, SnapshotStore};
use async_nats::jetstream::message::StreamMessage;
use async_trait::async_trait;

use super::super::codec::{self, Encoded};
use super::publish::PublishFailure;
use super::{check_actor, StreamStore, MAX_PUBLISH_ATTEMPTS};

#[async_trait]
impl SnapshotStore for StreamStore {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let actor = snapshot.actor_key();
        self.guard(
            "save_snapshot",
            Some(actor),
            true,
            || format!("saving a snapshot of actor {actor}"),
            self.store_snapshot(snapshot),
        )
        .await
    }

    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        self.guard(
            "get_latest_snapshot",
            Some(actor),
            false,
            || format!("reading the latest snapshot of actor {actor}"),
            self.load_snapshot(actor),
        )
        .await
    }

    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &aether_core::ReplayStart,
    ) -> Result<SnapshotAndEvents> {
        self.guard(
            "snapshot_and_events",
            Some(actor),
            false,
            || format!("reading the snapshot and events of actor {actor}"),
            self.load_snapshot_and_events(actor, start),
        )
        .await
    }
}

impl StreamStore {
    async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.validate()?;
        check_actor(snapshot.actor_key())?;
        let subject = self.subjects.snapshots(snapshot.actor_key());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            codec::HEADER_LAST_VERSION,
            snapshot.version.to_string().as_str(),
        );
        let encoded = Encoded {
            payload: snapshot.to_json_bytes()?.into(),
            headers,
        };
        codec::check_size(&encoded, self.client.max_payload())?;
        let mut leader = false;
        let publish_subject = async_nats::Subject::from(subject.clone());
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            let last = self.last_message(&subject, leader).await?;
            let (seq, version) = match &last {
                Some(m) => (m.sequence, snapshot_version(m)),
                None => (0, 0),
            };
            // Keep the highest version: an older snapshot arriving late is dropped.
            if version > snapshot.version {
                return Ok(());
            }
            match self
                .publish(&publish_subject, &encoded.payload, &encoded.headers, seq)
                .await
            {
                Ok(_) => return Ok(()),
                Err(PublishFailure::WrongLastSequence) => leader = true,
                Err(PublishFailure::Other(e)) => return Err(e),
            }
        }
        Err(Error::unavailable(
            format!("saving a snapshot of actor {}", snapshot.actor_key()),
            "snapshots kept changing under repeated attempts",
        ))
    }

    /// A rebuild's reads: the snapshot and the actor's last message at once (two direct gets,
    /// one round trip), then the events from where the snapshot lies in the stream. The
    /// actor's writer saves a snapshot right after the event of its version and before the
    /// next one, so the events after a snapshot usually start right after its message; the
    /// replay checks that (see [`replay_to`](Self::replay_to)) and searches when it is not so.
    async fn load_snapshot_and_events(
        &self,
        actor: ActorKey<'_>,
        start: &aether_core::ReplayStart,
    ) -> Result<SnapshotAndEvents> {
        check_actor(actor)?;
        let subject = self.subjects.events(actor);
        let (snapshot, last) = futures::future::join(
            self.load_snapshot_at(actor),
            self.last_message_seen(actor, &subject),
        )
        .await;
        let (snapshot, last) = (snapshot?, last?);
        let from_version = start(snapshot.as_ref().map(|(s, _)| s));
        let hint = snapshot
            .as_ref()
            .filter(|(s, _)| from_version == s.version.saturating_add(1))
            .map(|(_, seq)| seq + 1);
        let read = self
            .replay_to(actor, &subject, from_version, last, hint)
            .await?;
        self.count_malformed(actor, &read);
        Ok(SnapshotAndEvents {
            snapshot: snapshot.map(|(s, _)| s),
            from_version,
            events: read.events,
        })
    }

    async fn load_snapshot(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        Ok(self.load_snapshot_at(actor).await?.map(|(s, _)| s))
    }

    /// The actor's latest snapshot and its stream sequence.
    async fn load_snapshot_at(&self, actor: ActorKey<'_>) -> Result<Option<(Snapshot, u64)>> {
        check_actor(actor)?;
        let subject = self.subjects.snapshots(actor);
        let Some(msg) = self.last_message(&subject, false).await? else {
            return Ok(None);
        };
        let owner = self.subjects.owner(actor);
        match Snapshot::from_json_bytes(&msg.payload) {
            // The subject names the actor; a snapshot naming another (or, on a typed subject,
            // another type) was not written by this store.
            Ok(mut s)
                if s.actor_id == actor.actor_id
                    && (owner.subject_type.is_none()
                        || s.actor_type
                            .as_deref()
                            .is_none_or(|t| Some(t) == owner.subject_type)) =>
            {
                if s.actor_type.is_none() {
                    s.actor_type = owner.subject_type.or(owner.legacy_type).map(str::to_string);
                }
                Ok(Some((s, msg.sequence)))
            }
            Ok(s) => Err(Error::Decoding(format!(
                "snapshot at sequence {} belongs to actor {}, not {actor}",
                msg.sequence,
                s.actor_key()
            ))),
            Err(e) => Err(Error::Decoding(format!(
                "snapshot at sequence {} of actor {actor}: {e}",
                msg.sequence
            ))),
        }
    }
}

fn snapshot_version(msg: &StreamMessage) -> u64 {
    codec::header_last_version(&msg.headers)
        .or_else(|| {
            Snapshot::from_json_bytes(&msg.payload)
                .ok()
                .map(|s| s.version)
        })
        .unwrap_or(0)
}
