//! What compaction needs of one stream: an actor's messages with their sequences up to a
//! version, and purges of one subject below a sequence (the store's `compact` drives them).

use aether_core::{ActorKey, Error, Event, Result};
use aether_nats::backend::classify;
use async_nats::jetstream::stream::DirectGetErrorKind;

use super::super::codec;
use super::{check_actor, StreamStore};

/// One stored message of an actor: its events (one, or a batch saved at once).
pub(crate) struct StoredMessage {
    pub(crate) events: Vec<Event>,
}

/// An actor's messages before a cut, and the cut.
pub(crate) struct BeforeCut {
    /// The messages wholly before the message holding the cut version, in order.
    pub(crate) messages: Vec<StoredMessage>,
    /// The sequence of the first message whose last version reaches the cut version: the
    /// first message kept. `None` when the actor has no such message.
    pub(crate) cut: Option<u64>,
}

impl StreamStore {
    /// Whether the stream allows purges (a compactable stream), as the server has it.
    pub(crate) async fn allows_purge(&self) -> Result<bool> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| {
            classify(
                format!("reading the settings of stream {}", self.stream_name),
                e,
            )
        })?;
        Ok(!info.config.deny_purge)
    }

    /// The actor's messages before the first message whose last version is at least
    /// `version`, read one by one with direct gets (compaction is maintenance: it reads what
    /// it removes once).
    pub(crate) async fn messages_before(
        &self,
        actor: ActorKey<'_>,
        version: u64,
    ) -> Result<BeforeCut> {
        check_actor(actor)?;
        if !self.direct {
            return Err(Error::unsupported(
                format!("compacting actor {actor}"),
                "the stream does not allow direct gets",
            ));
        }
        let subject = self.subjects.events(actor);
        let context = || format!("reading {subject} on stream {}", self.stream_name);
        let mut before = BeforeCut {
            messages: Vec::new(),
            cut: None,
        };
        let mut next = 1;
        loop {
            let msg = match self
                .stream
                .direct_get_next_for_subject(&subject, Some(next))
                .await
            {
                Ok(msg) => msg,
                Err(e) => match e.kind() {
                    DirectGetErrorKind::NotFound => return Ok(before),
                    DirectGetErrorKind::TimedOut => return Err(Error::unavailable(context(), e)),
                    _ => return Err(classify(context(), e)),
                },
            };
            let events =
                codec::decode_message(self.subjects.owner(actor), msg.sequence, &msg.payload)
                    .map_err(|bad| {
                        Error::Decoding(format!(
                            "message {} of {subject} does not decode ({}); compaction moves only \
                         what it can read back",
                            bad.sequence, bad.error
                        ))
                    })?;
            if events.last().is_some_and(|e| e.version >= version) {
                before.cut = Some(msg.sequence);
                return Ok(before);
            }
            before.messages.push(StoredMessage { events });
            next = msg.sequence + 1;
        }
    }

    /// Removes the messages of the actor's event subject below stream sequence `below`;
    /// returns how many went.
    pub(crate) async fn purge_events_below(&self, actor: ActorKey<'_>, below: u64) -> Result<u64> {
        let subject = self.subjects.events(actor);
        let purged = self
            .stream
            .purge()
            .filter(subject.clone())
            .sequence(below)
            .await
            .map_err(|e| {
                classify(
                    format!(
                        "purging {subject} below {below} on stream {}",
                        self.stream_name
                    ),
                    e,
                )
            })?;
        Ok(purged.purged)
    }

    /// Removes the actor's snapshots, all but the latest `keep` (every one with 0); returns
    /// how many went.
    pub(crate) async fn purge_snapshots(&self, actor: ActorKey<'_>, keep: u64) -> Result<u64> {
        let subject = self.subjects.snapshots(actor);
        let what = || format!("purging snapshots {subject} on stream {}", self.stream_name);
        let purge = self.stream.purge().filter(subject.clone());
        let purged = if keep == 0 {
            purge.await
        } else {
            purge.keep(keep).await
        }
        .map_err(|e| classify(what(), e))?;
        Ok(purged.purged)
    }
}
