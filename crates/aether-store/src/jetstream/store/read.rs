//! The read path for an actor's tip: its last message (direct get or from the leader), the
//! (sequence, version) it holds, and telling a missing stream from one that is only
//! leaderless. Saves and snapshots start from here, so it is shared by both.

use aether_core::Backoff;
use aether_core::{ActorKey, Error, Result};
use aether_nats::backend::{classify, classify_api};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::ErrorCode;

use super::super::codec;
use super::errors::no_responders;
use super::{
    StreamStore, Tip, TipRead, MAX_TRANSIENT_BACKOFF, MAX_TRANSIENT_RETRIES, TRANSIENT_BACKOFF,
};

/// Leader reads asked again while they answer from behind what the store has seen, before
/// the read fails (100 ms doubling to 1.6 s: about 5 s, several times what a deposed leader
/// takes to step down once the partition heals).
const LEADER_BEHIND_RETRIES: u32 = 5;

impl StreamStore {
    /// The last message on `subject`, `None` when there is none. `leader` forces a read from the
    /// stream leader (a direct get may be answered by a lagging replica).
    pub(super) async fn last_message(
        &self,
        subject: &str,
        leader: bool,
    ) -> Result<Option<StreamMessage>> {
        let mut retry = Backoff::new(TRANSIENT_BACKOFF, MAX_TRANSIENT_BACKOFF);
        loop {
            match self.last_message_once(subject, leader).await {
                Err(e) if e.is_retryable() && retry.attempts() < MAX_TRANSIENT_RETRIES => {
                    // Older servers let a direct get for a deleted stream time out instead of
                    // answering "no responders": ask the JetStream API whether it still exists.
                    let connected =
                        self.client.connection_state() == async_nats::connection::State::Connected;
                    if connected {
                        if let Err(missing @ Error::NotFound(_)) =
                            Box::pin(self.stream_info()).await
                        {
                            return Err(missing);
                        }
                    }
                    tracing::debug!(subject, error = %e, "read failed without an answer; retrying");
                    retry.wait().await;
                }
                other => return other,
            }
        }
    }

    /// The actor's last message, from any replica, unless that replica is behind what this
    /// store has already seen of the actor: then from the stream leader. A replica can lag for
    /// a moment after each write, and for tens of seconds after a partition heals (it answers
    /// direct gets from where it was cut off until it has caught up), so without this one
    /// client's reads could go backwards.
    pub(super) async fn last_message_seen(
        &self,
        actor: ActorKey<'_>,
        subject: &str,
    ) -> Result<Option<StreamMessage>> {
        let known = if self.replicated {
            self.subjects
                .with_key(actor, |k| self.seen.get(k).map(|s| *s))
        } else {
            None
        };
        let message = self.last_message(subject, false).await?;
        match known {
            Some(seen) if message.as_ref().map_or(0, |m| m.sequence) < seen => {
                tracing::debug!(
                    subject,
                    seen,
                    "a replica answered from behind; asking the leader"
                );
                self.last_message_from_leader(actor, subject).await
            }
            _ => Ok(message),
        }
    }

    /// The actor's last message as the stream leader reports it, never from behind what this
    /// store has already seen of the actor unless the stream was recreated.
    ///
    /// Right after a partition heals, a former leader that has not yet heard of its successor
    /// still answers leader reads, from where it was cut off, for about a second. Its answer
    /// would make this store's reads go backwards (and a save's check think the actor has
    /// fewer events than it has), so an answer from behind is asked again, and after a few
    /// seconds of such answers the read fails with [`Error::Unavailable`]. A stream that was
    /// deleted and created again (its creation time changed) legitimately starts over: its
    /// answer is taken.
    async fn last_message_from_leader(
        &self,
        actor: ActorKey<'_>,
        subject: &str,
    ) -> Result<Option<StreamMessage>> {
        let mut again = Backoff::new(TRANSIENT_BACKOFF * 2, MAX_TRANSIENT_BACKOFF);
        loop {
            let message = self.last_message(subject, true).await?;
            let seen = if self.replicated {
                self.subjects
                    .with_key(actor, |k| self.seen.get(k).map(|s| *s))
            } else {
                None
            };
            let at = message.as_ref().map_or(0, |m| m.sequence);
            let Some(seen) = seen.filter(|seen| at < *seen) else {
                return Ok(message);
            };
            let created = Box::pin(self.stream_info()).await?.created;
            if created != self.stream.cached_info().created {
                return Ok(message);
            }
            if again.attempts() >= LEADER_BEHIND_RETRIES {
                return Err(Error::unavailable(
                    format!(
                        "reading the last message of {subject} on stream {}",
                        self.stream_name
                    ),
                    format!(
                        "the stream's leader answers from sequence {at}, behind sequence {seen} \
                         already read (a leader change is under way)"
                    ),
                ));
            }
            tracing::debug!(
                subject,
                seen,
                at,
                "the leader answered from behind; asking again"
            );
            again.wait().await;
        }
    }

    async fn last_message_once(
        &self,
        subject: &str,
        leader: bool,
    ) -> Result<Option<StreamMessage>> {
        let context = || {
            format!(
                "reading the last message of {subject} on stream {}",
                self.stream_name
            )
        };
        if self.direct && !leader {
            match self.stream.direct_get_last_for_subject(subject).await {
                Ok(m) => Ok(Some(m)),
                Err(e) => match e.kind() {
                    // async-nats reports "no message" as an error.
                    DirectGetErrorKind::NotFound => Ok(None),
                    DirectGetErrorKind::TimedOut => Err(Error::unavailable(context(), e)),
                    DirectGetErrorKind::ErrorResponse(status, _) if status.as_u16() == 503 => {
                        Err(self
                            .missing_or_unavailable(context(), "no responders")
                            .await)
                    }
                    _ if no_responders(&e) => Err(self
                        .missing_or_unavailable(context(), "no responders")
                        .await),
                    _ => Err(classify(context(), e)),
                },
            }
        } else {
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Ok(Some(m)),
                Err(e) => match e.kind() {
                    LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    LastRawMessageErrorKind::JetStream(ref api)
                        if api.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
                    {
                        Ok(None)
                    }
                    LastRawMessageErrorKind::JetStream(ref api) => {
                        Err(classify_api(context(), Some(api), e))
                    }
                    _ => Err(classify(context(), e)),
                },
            }
        }
    }

    /// Nobody answered for the stream: either it is gone (`NotFound`), or it exists and has no
    /// leader for the moment, as during an election in a cluster (`Unavailable`, retryable).
    /// Asks the JetStream API, on this error path only, which of the two it is.
    pub(super) async fn missing_or_unavailable(&self, context: String, what: &str) -> Error {
        match Box::pin(self.context.get_stream(&self.stream_name)).await {
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref api)
                        if api.error_code() == ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Error::NotFound(format!(
                    "{context}: {what}; stream {} does not exist",
                    self.stream_name
                ))
            }
            _ => Error::unavailable(
                context,
                format!(
                    "{what}; stream {} exists but did not answer (no leader yet, or JetStream not ready)",
                    self.stream_name
                ),
            ),
        }
    }

    /// Reads the actor's last (sequence, version) from the stream and caches it.
    pub(super) async fn read_tip(&self, actor: ActorKey<'_>, leader: bool) -> Result<TipRead> {
        let subject = self.subjects.events(actor);
        let last = if leader {
            self.last_message_from_leader(actor, &subject).await?
        } else {
            self.last_message_seen(actor, &subject).await?
        };
        let Some(msg) = last else {
            if leader {
                self.cache.remove(&self.subjects.key(actor));
                self.seen.remove(&self.subjects.key(actor));
            }
            return Ok(TipRead::default());
        };
        let header_version = codec::header_last_version(&msg.headers);
        let header_id = codec::header_last_event_id(&msg.headers);
        let (version, header_id) = match (header_version, header_id) {
            (Some(v), id) => (v, id),
            (None, _) => {
                match codec::decode_message(self.subjects.owner(actor), msg.sequence, &msg.payload)
                {
                    Ok(events) => events
                        .last()
                        .map_or((0, None), |e| (e.version, Some(e.id.clone()))),
                    Err(bad) => {
                        // A message this store did not write sits last: the actor's version is the
                        // last one among the messages that do decode.
                        tracing::warn!(
                            sequence = bad.sequence,
                            error = %bad.error,
                            "the actor's last message is malformed; scanning its history for the latest version"
                        );
                        let replay = Box::pin(self.replay(actor, 0)).await?;
                        (
                            replay.events.iter().map(|e| e.version).max().unwrap_or(0),
                            None,
                        )
                    }
                }
            }
        };
        let tip = Tip {
            seq: msg.sequence,
            version,
        };
        if leader {
            // The leader's answer is authoritative, even over a later-looking cache entry
            // (which can only come from a stream that was deleted and recreated).
            self.cache.insert(self.subjects.key(actor), tip);
            if self.replicated {
                self.seen.insert(self.subjects.key(actor), tip.seq);
            }
        } else {
            self.remember(actor, tip);
        }
        Ok(TipRead {
            tip,
            header_id,
            payload: Some(msg.payload),
        })
    }
}
