//! The replay path: streaming an actor's history through a short-lived pull consumer, from a
//! start found by a search of direct gets, resuming after gaps and lost consumers. It is the longest and
//! most failure-prone read, so it has its own module and tuning constants.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aether_core::Backoff;
use aether_core::{ActorKey, Error, ReplayResult, Result};
use aether_nats::backend::{classify, ConsumerSpec, StartAt};
use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;

use super::super::codec;
use super::errors::BoxedCause;
use super::{check_actor, StreamStore, Tip, MAX_TRANSIENT_BACKOFF, TRANSIENT_BACKOFF};

/// Histories shorter than this (by their last version) are replayed from the start rather than
/// searched for the first wanted message.
const SEARCH_MIN_HISTORY: u64 = 512;
/// A history whose last version is within this many of the first wanted one is read with
/// direct gets (at most this many) rather than a consumer.
const SHORT_HISTORY_MESSAGES: u64 = 4;
/// Points probed at once in each round of the search for a replay's start.
const SEARCH_FANOUT: u64 = 8;
/// Messages requested per pull while replaying.
const REPLAY_BATCH: u64 = 1000;
/// How long one pull may wait for messages the server said are pending.
const REPLAY_PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Empty pulls in a row tolerated before a replay gives up.
const REPLAY_MAX_EMPTY_PULLS: usize = 3;
/// How often a replay resumes with a new consumer after losing one to a failed server (the
/// wait doubles each time from 100 ms: about 3 s in all, longer than an election takes).
/// Consumer creation retries share the count.
const MAX_REPLAY_RESUMES: u32 = 5;
/// How long the server keeps a replay consumer whose reader vanished.
const REPLAY_CONSUMER_INACTIVITY: Duration = Duration::from_secs(30);

impl StreamStore {
    /// The last version held by the first message on the actor's subject at or after `seq`.
    async fn probe(&self, subject: &str, actor: ActorKey<'_>, seq: u64) -> Option<(u64, u64)> {
        let msg = self
            .stream
            .direct_get_next_for_subject(subject, Some(seq))
            .await
            .ok()?;
        let version = match codec::header_last_version(&msg.headers) {
            Some(v) => v,
            None => {
                codec::decode_message(self.subjects.owner(actor), msg.sequence, &msg.payload)
                    .ok()?
                    .last()?
                    .version
            }
        };
        Some((msg.sequence, version))
    }

    /// The stream sequence to start a replay from: the first message of the actor whose last
    /// version is at least `from_version`, found by a k-ary search over stream sequences (a
    /// message's versions grow with its sequence). Falls back to 1 when anything is unclear.
    async fn start_sequence(
        &self,
        subject: &str,
        actor: ActorKey<'_>,
        from_version: u64,
        tip: u64,
        last_version: Option<u64>,
    ) -> u64 {
        if from_version <= 1 || !self.direct {
            return 1;
        }
        // Each probe costs a round trip, about as much as streaming a few hundred messages, so
        // search only when the versions suggest a long history of which most can be skipped.
        // Versions need not be contiguous: a wrong guess costs time, never correctness.
        if let Some(last) = last_version {
            let to_read = last.saturating_sub(from_version);
            if last < SEARCH_MIN_HISTORY || to_read >= last / 2 {
                return 1;
            }
        }
        // A k-ary search: each round probes several points at once (one round trip for all
        // of them, pipelined on the connection), so a long history costs about log9 of its
        // length in round trips instead of log2.
        let (mut lo, mut hi) = (1u64, tip);
        while lo < hi {
            let span = hi - lo;
            let points: Vec<u64> = (1..=SEARCH_FANOUT)
                // In u128: no overflow whatever the stream's sequences.
                .map(|i| {
                    lo + (u128::from(span) * u128::from(i) / u128::from(SEARCH_FANOUT + 1)) as u64
                })
                .filter(|p| *p < hi)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let points = if points.is_empty() { vec![lo] } else { points };
            let probes =
                futures::future::join_all(points.iter().map(|p| self.probe(subject, actor, *p)))
                    .await;
            for (point, probe) in points.iter().zip(probes) {
                match probe {
                    // Starting here reaches a wanted message: the start is at most here.
                    Some((_, version)) if version >= from_version => hi = hi.min(*point),
                    // Everything up to the message found is unwanted.
                    Some((seq, _)) => lo = lo.max(seq.max(*point) + 1),
                    None => return 1,
                }
            }
            if lo > hi {
                // Only a history that changed under the search gets here: read it all.
                return 1;
            }
        }
        lo
    }

    /// Reads the actor's messages with versions from `from_version`, decoding what decodes and
    /// collecting the rest as replay errors.
    /// [`replay`](Self::replay) under the permission watch, as the public reads run it.
    pub(super) async fn guarded_replay(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        self.guard(
            "replay",
            Some(actor),
            false,
            || format!("replaying actor {actor}"),
            self.replay(actor, from_version),
        )
        .await
    }

    pub(super) async fn replay(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        check_actor(actor)?;
        let subject = self.subjects.events(actor);
        let last = self.last_message_seen(actor, &subject).await?;
        self.replay_to(actor, &subject, from_version, last, None)
            .await
    }

    /// Reads the actor's messages with versions from `from_version` up to `last`, its last
    /// message as read when the replay began (`None`: it has none). `hint` is a stream
    /// sequence at or after which the wanted messages probably start (right after a snapshot
    /// of version `from_version - 1`): it is tried first and kept only if the first event read
    /// there is the one at `from_version`, which proves nothing wanted lies before it
    /// (versions grow with the stream sequence); otherwise the replay searches as usual.
    pub(super) async fn replay_to(
        &self,
        actor: ActorKey<'_>,
        subject: &str,
        from_version: u64,
        last: Option<StreamMessage>,
        hint: Option<u64>,
    ) -> Result<ReplayResult> {
        let Some(last) = last else {
            return Ok(ReplayResult::default());
        };
        let last_version = codec::header_last_version(&last.headers);
        if let Some(version) = last_version {
            // What this replay will show, so that later reads of this store never show less.
            self.remember(
                actor,
                Tip {
                    seq: last.sequence,
                    version,
                },
            );
        }
        if last_version.is_some_and(|v| v < from_version) {
            return Ok(ReplayResult::default());
        }
        if let Some(start) = hint.filter(|s| from_version > 1 && *s > 1 && *s <= last.sequence) {
            let read = self
                .replay_from(actor, subject, from_version, &last, start)
                .await?;
            let found = read.errors.is_empty()
                && read
                    .events
                    .first()
                    .is_some_and(|e| e.version == from_version);
            if found {
                return Ok(read);
            }
            tracing::debug!(
                subject,
                start,
                from_version,
                "the wanted events did not start at the hint; searching"
            );
        }
        let start = self
            .start_sequence(subject, actor, from_version, last.sequence, last_version)
            .await;
        self.replay_from(actor, subject, from_version, &last, start)
            .await
    }

    /// Reads the actor's messages from stream sequence `next_seq` up to `last`, keeping the
    /// events with versions from `from_version`.
    async fn replay_from(
        &self,
        actor: ActorKey<'_>,
        subject: &str,
        from_version: u64,
        last: &StreamMessage,
        mut next_seq: u64,
    ) -> Result<ReplayResult> {
        let mut result = ReplayResult::default();
        // A short history is read with direct gets, one round trip per message, instead of a
        // consumer (created, read and deleted: several round trips and server work that
        // dominate the rebuild of a young actor, as after a failover of many of them).
        // Versions grow by at least one per message this store writes, so a last version of
        // `v` bounds the messages to read: `v` from the start, `v - from_version + 1` from a
        // later start. (Messages of other writers can break the bound: then the direct reads
        // give up and the consumer reads everything.)
        let last_version = codec::header_last_version(&last.headers);
        let short = last_version.is_some_and(|v| {
            v <= SHORT_HISTORY_MESSAGES
                || (next_seq > 1 && v.saturating_sub(from_version) < SHORT_HISTORY_MESSAGES)
        });
        if self.direct && short {
            match self
                .read_directly(subject, actor, from_version, next_seq, last.sequence)
                .await
            {
                Some(read) => return Ok(read),
                // Anything unexpected: the consumer below reads it all again.
                None => tracing::debug!(subject, "short replay by direct gets fell back"),
            }
        }
        let context = || format!("replaying {subject} on stream {}", self.stream_name);
        // Messages left to read, as the server counted them when the replay began; the replay
        // returns the history as of its start.
        let mut remaining: Option<u64> = None;
        // A replay consumer lives on one server: when that server goes (a failover), the
        // replay resumes after the last message received with a new consumer.
        let mut resumes = Backoff::new(TRANSIENT_BACKOFF * 2, MAX_TRANSIENT_BACKOFF * 2);
        loop {
            // From the search's start, then right after the last message received.
            let created = ConsumerSpec::new(subject.to_string(), StartAt::Sequence(next_seq))
                .create_pull(&self.stream, REPLAY_CONSUMER_INACTIVITY, &context())
                .await;
            let consumer = match created {
                Ok(c) => c,
                Err(e) if e.is_retryable() && resumes.attempts() < MAX_REPLAY_RESUMES => {
                    tracing::debug!(subject, error = %e, "could not create a replay consumer; retrying");
                    resumes.wait().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let consumer_name = consumer.cached_info().name.clone();
            let pending = consumer.cached_info().num_pending;
            let mut left = *remaining.get_or_insert(pending);
            let outcome = self
                .drain(
                    &consumer,
                    actor,
                    from_version,
                    &mut left,
                    &mut result,
                    &mut next_seq,
                )
                .await;
            remaining = Some(left);
            // Best effort, off the caller's path: the server also removes it once idle, and
            // waiting for the answer would add a round trip to every replay (or a whole request
            // timeout for a user who may not delete consumers).
            let stream = self.stream.clone();
            self.cleanups.spawn(async move {
                if let Err(e) = stream.delete_consumer(&consumer_name).await {
                    tracing::debug!(error = %e, consumer = %consumer_name, "could not delete a replay consumer");
                }
            });
            match outcome {
                Ok(Drained::Done) if self.replicated && next_seq <= last.sequence => {
                    // The consumer's server is behind the actor's last message, which the
                    // stream leader (or this store) has seen: a replica still catching up,
                    // as after a partition heals. Its history would be short; ask again.
                    if resumes.attempts() >= MAX_REPLAY_RESUMES {
                        return Err(Error::unavailable(
                            context(),
                            format!(
                                "the replay's server is behind: it ended before stream sequence \
                                 {}, the actor's last message",
                                last.sequence
                            ),
                        ));
                    }
                    tracing::debug!(subject, next_seq, "replay served from behind; retrying");
                    remaining = None;
                    resumes.wait().await;
                }
                Ok(Drained::Done) => {
                    // The consumer may have delivered past the last message read at the start
                    // (that read can come from a replica that lags): later reads of this store
                    // must not show less than this replay did.
                    if next_seq > 1 {
                        self.saw(actor, next_seq - 1);
                    }
                    return Ok(result);
                }
                Ok(Drained::Gap) => {
                    tracing::debug!(
                        subject,
                        next_seq,
                        "gap in a replay; resuming with a new consumer"
                    );
                }
                Err(e) if e.is_retryable() && resumes.attempts() < MAX_REPLAY_RESUMES => {
                    tracing::debug!(
                        subject,
                        next_seq,
                        error = %e,
                        "replay consumer lost; resuming with a new consumer"
                    );
                    resumes.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the actor's messages from stream sequence `from_seq` up to `last_seq` (its last
    /// message when the replay began) by direct gets; `None` when that took more gets than a
    /// short history has, or a get failed.
    async fn read_directly(
        &self,
        subject: &str,
        actor: ActorKey<'_>,
        from_version: u64,
        from_seq: u64,
        last_seq: u64,
    ) -> Option<ReplayResult> {
        let mut result = ReplayResult::default();
        let mut next = from_seq.max(1);
        for _ in 0..SHORT_HISTORY_MESSAGES {
            let msg = self
                .stream
                .direct_get_next_for_subject(subject, Some(next))
                .await
                .ok()?;
            if msg.sequence > last_seq {
                // Written after the replay began: the replay returns the history as of its
                // start, and the last message was below this one.
                return Some(result);
            }
            match codec::decode_message(self.subjects.owner(actor), msg.sequence, &msg.payload) {
                Ok(events) => result
                    .events
                    .extend(events.into_iter().filter(|e| e.version >= from_version)),
                Err(bad) => result.errors.push(bad),
            }
            if msg.sequence == last_seq {
                return Some(result);
            }
            next = msg.sequence + 1;
        }
        None
    }

    async fn drain(
        &self,
        consumer: &async_nats::jetstream::consumer::PullConsumer,
        actor: ActorKey<'_>,
        from_version: u64,
        left: &mut u64,
        result: &mut ReplayResult,
        next_seq: &mut u64,
    ) -> Result<Drained> {
        let context = || format!("replaying actor {actor} on stream {}", self.stream_name);
        let mut consumer_seq = 0u64;
        // A continuous pull stream keeps the next batch in flight while this one is decoded,
        // instead of one round trip per batch.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(REPLAY_BATCH as usize)
            .expires(REPLAY_PULL_EXPIRY)
            .messages()
            .await
            .map_err(|e| classify(context(), e))?;
        let idle_limit = REPLAY_PULL_EXPIRY * REPLAY_MAX_EMPTY_PULLS as u32;
        while *left > 0 {
            let msg = match tokio::time::timeout(idle_limit, messages.next()).await {
                Ok(Some(msg)) => msg.map_err(|e| classify(context(), e))?,
                Ok(None) | Err(_) => {
                    // Messages counted as pending never came: they may have aged out.
                    let mut c = consumer.clone();
                    let info = c.info().await.map_err(|e| classify(context(), e))?;
                    if info.num_pending == 0 {
                        break;
                    }
                    return Err(Error::unavailable(
                        context(),
                        format!("{} pending messages were not delivered", info.num_pending),
                    ));
                }
            };
            let info = msg.info().map_err(|e| classify(context(), BoxedCause(e)))?;
            if info.consumer_sequence != consumer_seq + 1 {
                // A message was lost between server and client; start again after the last
                // one received so nothing is skipped or repeated.
                return Ok(Drained::Gap);
            }
            consumer_seq = info.consumer_sequence;
            *next_seq = info.stream_sequence + 1;
            let caught_up = info.pending == 0;
            let sequence = info.stream_sequence;
            *left -= 1;
            match codec::decode_message(self.subjects.owner(actor), sequence, &msg.payload) {
                Ok(events) => result
                    .events
                    .extend(events.into_iter().filter(|e| e.version >= from_version)),
                Err(bad) => result.errors.push(bad),
            }
            if caught_up {
                *left = 0;
            }
        }
        Ok(Drained::Done)
    }

    pub(super) fn count_malformed(&self, actor: ActorKey<'_>, result: &ReplayResult) {
        for bad in &result.errors {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                actor = %actor,
                stream = %self.stream_name,
                sequence = bad.sequence,
                bytes = bad.raw.len(),
                error = %bad.error,
                "skipping a malformed event message"
            );
        }
    }
}

enum Drained {
    Done,
    /// Resume after a gap.
    Gap,
}
