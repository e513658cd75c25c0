//! The append path: a save published with the expected last subject sequence, and the loop
//! that turns the server's rejections into retries or version conflicts. Kept apart because
//! it is where the store's correctness under concurrent writers is decided.

use std::time::Duration;

use aether_core::Backoff;
use aether_core::{ActorKey, Error, Event, Result};

use super::super::codec;
use super::publish::PublishFailure;
use super::{
    check_actor, StreamStore, Tip, MAX_PUBLISH_ATTEMPTS, MAX_TRANSIENT_BACKOFF,
    MAX_TRANSIENT_RETRIES, TRANSIENT_BACKOFF,
};

/// Reads again of a history that ended before the tip the leader reported, before the check
/// of whether a refused save is stored gives up (see `history_holds`).
const HISTORY_CHECK_RETRIES: u32 = 5;

impl StreamStore {
    /// Records `tip` unless the cache already knows a later message (sequences only grow).
    pub(super) fn remember(&self, actor: ActorKey<'_>, tip: Tip) {
        self.saw(actor, tip.seq);
        // The actor is usually known already: update in place, without allocating its key.
        if let Some(mut known) = self.subjects.with_key(actor, |k| self.cache.get_mut(k)) {
            if tip.seq > known.seq {
                *known = tip;
            }
            return;
        }
        self.cache
            .entry(self.subjects.key(actor))
            .and_modify(|t| {
                if tip.seq > t.seq {
                    *t = tip;
                }
            })
            .or_insert(tip);
    }

    /// Records that the actor's history reaches stream sequence `seq` (replicated streams
    /// only; see `seen`).
    pub(super) fn saw(&self, actor: ActorKey<'_>, seq: u64) {
        if !self.replicated {
            return;
        }
        if let Some(mut known) = self.subjects.with_key(actor, |k| self.seen.get_mut(k)) {
            *known = (*known).max(seq);
            return;
        }
        self.seen
            .entry(self.subjects.key(actor))
            .and_modify(|s| *s = (*s).max(seq))
            .or_insert(seq);
    }

    pub(super) async fn append(&self, actor: ActorKey<'_>, events: &[Event]) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        check_actor(actor)?;
        let encoded = codec::encode_events(events)?;
        codec::check_size(&encoded, self.client.max_payload())?;
        let subject = async_nats::Subject::from(self.subjects.events(actor));

        let cached = self
            .subjects
            .with_key(actor, |k| self.cache.get(k).map(|t| *t));
        let mut from_cache = cached.is_some();
        let mut tip = match cached {
            Some(t) => t,
            // Boxed here and below: a future of a rarely taken path, kept out of the save's
            // own (every save pays for its size).
            None => Box::pin(self.read_tip(actor, false)).await?.tip,
        };
        // Set once a publish failed without an answer: it may have been stored after all, and
        // then the actor's last message is ours.
        let mut uncertain = false;
        // Set once anything was sent.
        let mut sent = false;
        let mut retry = Backoff::new(TRANSIENT_BACKOFF, MAX_TRANSIENT_BACKOFF);
        // 1, 2, 4 ... ms up to 64 ms, jittered so that contending writers spread out.
        let mut contention =
            Backoff::new(Duration::from_millis(2), Duration::from_millis(64)).with_jitter();
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            if first.version <= tip.version {
                if from_cache {
                    // Report the server's current version, not the cached one (and a cache
                    // from before the stream was recreated must not refuse a valid save).
                    tip = Box::pin(self.read_tip(actor, true)).await?.tip;
                    from_cache = false;
                    continue;
                }
                // A refusal does not prove the save is absent when it may have been stored
                // anyway: an attempt went unanswered, or, on a replicated stream, a refusal
                // came from a former leader that had not yet learned it was deposed (right
                // after a partition heals two servers can both answer for a moment, and the
                // real leader stores what the old one refuses).
                if uncertain || (sent && self.replicated) {
                    match Box::pin(self.history_holds(actor, first.version, &last.id, tip)).await {
                        // An attempt went in, and others have written after it.
                        Ok(true) => return Ok(()),
                        Ok(false) => {}
                        Err(e) => {
                            // Whether an attempt went in cannot be told: a conflict would say
                            // nothing was stored.
                            self.cache.remove(&self.subjects.key(actor));
                            return Err(Error::unavailable(
                                format!(
                                    "saving events of actor {actor} (refused, and whether \
                                     an earlier attempt was stored could not be read)"
                                ),
                                e,
                            ));
                        }
                    }
                }
                return Err(Error::version_conflict(
                    actor.actor_id,
                    first.version,
                    tip.version,
                ));
            }
            sent = true;
            let published = self
                .publish(&subject, &encoded.payload, &encoded.headers, tip.seq)
                .await;
            let failure = match published {
                Ok(seq) => {
                    self.remember(
                        actor,
                        Tip {
                            seq,
                            version: last.version,
                        },
                    );
                    return Ok(());
                }
                Err(PublishFailure::WrongLastSequence) => None,
                Err(PublishFailure::Other(e)) => {
                    // Retrying is safe: the expected sequence lets at most one of the attempts
                    // in, and the event id below tells whether an earlier one got in.
                    if e.is_retryable() && retry.attempts() < MAX_TRANSIENT_RETRIES {
                        uncertain = true;
                        tracing::debug!(error = %e, "publish failed without an answer; retrying");
                        retry.wait().await;
                        Some(e)
                    } else {
                        // The outcome is unknown: forget what we knew so the next save asks
                        // the server.
                        self.cache.remove(&self.subjects.key(actor));
                        if uncertain && !e.is_retryable() {
                            // This attempt was refused, but an earlier one went unanswered and
                            // may be stored: a definite error would say nothing was.
                            return Err(Error::unavailable(
                                format!(
                                    "saving events of actor {actor} (an earlier attempt went \
                                     unanswered and may be stored)"
                                ),
                                e,
                            ));
                        }
                        return Err(e);
                    }
                }
            };
            // Someone (maybe our own earlier attempt) appended since our view: re-read the
            // truth from the stream leader and decide again.
            let fresh = match Box::pin(self.read_tip(actor, true)).await {
                Ok(f) => f,
                Err(e) => {
                    self.cache.remove(&self.subjects.key(actor));
                    return Err(failure.unwrap_or(e));
                }
            };
            if (uncertain || self.replicated)
                && fresh.last_event_id(self.subjects.owner(actor)).as_deref()
                    == Some(last.id.as_str())
            {
                // Stored after all (see above for how a refusal can be wrong).
                return Ok(());
            }
            if failure.is_none() && fresh.tip == tip {
                // Rejected, yet the last message is the one we expected: another writer's
                // append is still being replicated (clustered streams reject against pending
                // writes). Give it a moment to land before deciding again.
                contention.wait().await;
            }
            tip = fresh.tip;
            from_cache = false;
            tracing::debug!(
                current_version = tip.version,
                attempted_version = first.version,
                "expected last sequence was stale"
            );
        }
        Err(Error::unavailable(
            format!("saving events of actor {actor}"),
            format!(
                "the actor's history kept changing under {MAX_PUBLISH_ATTEMPTS} attempts to append"
            ),
        ))
    }

    /// Whether the actor's history from `from_version` holds the event `event_id`, read up to
    /// at least `tip` (the actor's last message as the leader just reported it).
    ///
    /// A replay that stops short of `tip` was answered from behind: by a replica that lags,
    /// or, right after a partition heals, by a former leader that has not yet learned it was
    /// deposed (for a moment both answer). Such a replay proves nothing about the event, so
    /// it is read again, and if no read reaches `tip` within a few seconds the answer is an
    /// error: a conflict reported from a stale read could deny a save that is stored.
    pub(super) async fn history_holds(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
        event_id: &str,
        tip: Tip,
    ) -> Result<bool> {
        // 100 ms doubling to 1.6 s: about 5 s in all, longer than a deposed leader takes to
        // step down once it hears from the others.
        let mut again = Backoff::new(TRANSIENT_BACKOFF * 2, MAX_TRANSIENT_BACKOFF);
        loop {
            let why = match Box::pin(self.replay(actor, from_version)).await {
                Ok(r) => {
                    if r.events.iter().any(|e| e.id == event_id) {
                        return Ok(true);
                    }
                    let reached = r.events.iter().map(|e| e.version).max().unwrap_or(0);
                    if reached >= tip.version {
                        return Ok(false);
                    }
                    Error::unavailable(
                        format!("reading the history of actor {actor}"),
                        format!(
                            "the history read ends at version {reached}, before version {} \
                             that the stream leader reported",
                            tip.version
                        ),
                    )
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            if again.attempts() >= HISTORY_CHECK_RETRIES {
                return Err(why);
            }
            tracing::debug!(error = %why, "history read from behind; reading it again");
            again.wait().await;
        }
    }
}
