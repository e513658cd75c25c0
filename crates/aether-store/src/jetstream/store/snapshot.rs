//! Snapshots: one subject per actor, the highest version kept, written with the same
//! expected-sequence check as events. Apart from events because nothing else reads them.

use aether_core::{Error, Result, Snapshot, SnapshotStore};
use aether_nats::subject::validate_actor_id as check_actor_id;
use async_nats::jetstream::message::StreamMessage;
use async_trait::async_trait;

use super::super::codec::{self, Encoded};
use super::publish::PublishFailure;
use super::{JetStreamEventStore, MAX_PUBLISH_ATTEMPTS};

#[async_trait]
impl SnapshotStore for JetStreamEventStore {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let actor_id = snapshot.actor_id.as_str();
        self.guard(
            "save_snapshot",
            Some(actor_id),
            true,
            || format!("saving a snapshot of actor {actor_id:?}"),
            self.store_snapshot(snapshot),
        )
        .await
    }

    async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        self.guard(
            "get_latest_snapshot",
            Some(actor_id),
            false,
            || format!("reading the latest snapshot of actor {actor_id:?}"),
            self.load_snapshot(actor_id),
        )
        .await
    }
}

impl JetStreamEventStore {
    async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.validate()?;
        check_actor_id(&snapshot.actor_id)?;
        let subject = self.subjects.snapshots(&snapshot.actor_id);
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
            format!("saving a snapshot of actor {:?}", snapshot.actor_id),
            "snapshots kept changing under repeated attempts",
        ))
    }

    async fn load_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        check_actor_id(actor_id)?;
        let subject = self.subjects.snapshots(actor_id);
        let Some(msg) = self.last_message(&subject, false).await? else {
            return Ok(None);
        };
        match Snapshot::from_json_bytes(&msg.payload) {
            Ok(s) if s.actor_id == actor_id => Ok(Some(s)),
            Ok(s) => Err(Error::Decoding(format!(
                "snapshot at sequence {} belongs to actor {:?}, not {actor_id:?}",
                msg.sequence, s.actor_id
            ))),
            Err(e) => Err(Error::Decoding(format!(
                "snapshot at sequence {} of actor {actor_id:?}: {e}",
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
