//! Transactions: one message per event, all of them in one atomic batch (nats-server 2.12+),
//! the first message of each actor carrying the expected last subject sequence of that actor,
//! so the server appends all or nothing and checks every actor's version itself.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aether_core::Backoff;
use aether_core::{Error, Result, Transaction, TransactionConflictError, VersionConflictError};
use async_nats::header::HeaderMap;
use bytes::Bytes;

use super::super::codec::{self, HEADER_TRANSACTION};
use super::batch::{Ack, BatchMessage};
use super::publish::PublishFailure;
use super::{
    check_actor, server_older_than, StreamStore, Tip, MAX_PUBLISH_ATTEMPTS, MAX_TRANSIENT_BACKOFF,
    MAX_TRANSIENT_RETRIES, TRANSIENT_BACKOFF,
};

/// The server's default limit of messages in one atomic batch (`jetstream.limits.batch
/// .max_msgs`); a transaction has one message per event.
pub const MAX_TRANSACTION_EVENTS: usize = 1000;

/// One message of the batch.
struct Part {
    subject: async_nats::Subject,
    headers: HeaderMap,
    payload: Bytes,
}

impl StreamStore {
    pub(super) async fn commit_transaction(&self, txn: &Transaction) -> Result<()> {
        let operation = || format!("transaction {}", txn.id());
        let version = self.client.server_info().version;
        if server_older_than(&version, 2, 12) {
            return Err(Error::unsupported(
                operation(),
                format!(
                    "atomic appends to several actors need nats-server 2.12 or later (atomic \
                     batch publish); this server is {version}. Nothing was written"
                ),
            ));
        }
        if txn.event_count() > MAX_TRANSACTION_EVENTS {
            return Err(Error::invalid(format!(
                "transaction {} has {} events; one transaction holds at most \
                 {MAX_TRANSACTION_EVENTS} (the server's atomic batch limit)",
                txn.id(),
                txn.event_count()
            )));
        }
        let max_payload = self.client.server_info().max_payload;
        let mut parts: Vec<(usize, Part)> = Vec::with_capacity(txn.event_count());
        for (i, append) in txn.appends().iter().enumerate() {
            check_actor(append.actor_key())?;
            let subject = async_nats::Subject::from(self.subjects.events(append.actor_key()));
            for event in &append.events {
                let encoded = codec::encode_events(std::slice::from_ref(event))?;
                codec::check_size(&encoded, max_payload)?;
                parts.push((
                    i,
                    Part {
                        subject: subject.clone(),
                        headers: encoded.headers,
                        payload: encoded.payload,
                    },
                ));
            }
        }
        self.ensure_atomic_publish(txn).await?;

        // Each actor's tip, from the cache when it agrees with the expectation (the server
        // checks it anyway), else from the stream leader.
        let mut tips = Vec::with_capacity(txn.appends().len());
        for append in txn.appends() {
            let cached = self
                .cache
                .get(&self.subjects.key(append.actor_key()))
                .map(|t| *t);
            let tip = match cached {
                Some(t) if t.version == append.expected_version => t,
                _ => self.read_tip(append.actor_key(), true).await?.tip,
            };
            tips.push(tip);
        }
        self.conflicts(txn, &tips)?;

        let mut uncertain = false;
        let mut retry = Backoff::new(TRANSIENT_BACKOFF, MAX_TRANSIENT_BACKOFF);
        let mut contention =
            Backoff::new(Duration::from_millis(2), Duration::from_millis(64)).with_jitter();
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            match self.publish_batch(txn, &parts, &tips).await {
                Ok(ack) => {
                    self.remember_batch(txn, &parts, ack);
                    return Ok(());
                }
                Err(PublishFailure::WrongLastSequence) => {
                    // Someone wrote one of the actors, or our own unanswered attempt went in.
                    let fresh = self.leader_tips(txn).await?;
                    if let Err(conflict) = self.conflicts(txn, &fresh) {
                        // On a replicated stream a refusal may come from a deposed leader
                        // while the real one stored the batch (see `append`).
                        if (uncertain || self.replicated) && self.holds(txn, &fresh).await? {
                            self.forget_tips(txn);
                            return Ok(());
                        }
                        return Err(conflict);
                    }
                    if fresh == tips {
                        // Refused against a write still being replicated: let it land.
                        contention.wait().await;
                    }
                    tips = fresh;
                }
                Err(PublishFailure::Other(e)) => {
                    if !(e.is_retryable() && retry.attempts() < MAX_TRANSIENT_RETRIES) {
                        self.forget_tips(txn);
                        // An unanswered commit may have been stored: say so only if it was.
                        if e.is_retryable() && self.stored_after_all(txn).await {
                            return Ok(());
                        }
                        if uncertain && !e.is_retryable() {
                            // An earlier attempt went unanswered: it may still land, so this
                            // refusal does not mean nothing was stored.
                            return Err(Error::unavailable(
                                format!(
                                    "transaction {} (an earlier commit went unanswered and may \
                                     be stored)",
                                    txn.id()
                                ),
                                e,
                            ));
                        }
                        return Err(e);
                    }
                    uncertain = true;
                    tracing::debug!(error = %e, transaction = txn.id(), "commit unanswered; checking before retrying");
                    retry.wait().await;
                    tips = self.leader_tips(txn).await?;
                    if let Err(conflict) = self.conflicts(txn, &tips) {
                        // The actors moved: maybe by our own unanswered commit. The tips were
                        // just read, so the server answers again and the check can be trusted.
                        if self.holds(txn, &tips).await? {
                            self.forget_tips(txn);
                            return Ok(());
                        }
                        return Err(conflict);
                    }
                }
            }
        }
        Err(Error::unavailable(
            operation(),
            format!("the actors kept changing under {MAX_PUBLISH_ATTEMPTS} attempts to commit"),
        ))
    }

    /// Turns on atomic publish on a stream created without it (by an older release or on an
    /// older server), once.
    async fn ensure_atomic_publish(&self, txn: &Transaction) -> Result<()> {
        if self.atomic.load(Ordering::Acquire) {
            return Ok(());
        }
        let stream = self
            .context
            .get_stream(&self.stream_name)
            .await
            .map_err(|e| {
                aether_nats::backend::classify(format!("reading stream {}", self.stream_name), e)
            })?;
        let mut config = stream.cached_info().config.clone();
        if !config.allow_atomic_publish {
            config.allow_atomic_publish = true;
            if let Err(e) = self.context.update_stream(config).await {
                return Err(Error::unsupported(
                    format!("transaction {}", txn.id()),
                    format!(
                        "stream {} does not allow atomic publish and could not be updated to \
                         (it needs nats-server 2.12+ and permission to update the stream): {e}",
                        self.stream_name
                    ),
                ));
            }
            tracing::info!(stream = %self.stream_name, "atomic publish enabled for transactions");
        }
        self.atomic.store(true, Ordering::Release);
        Ok(())
    }

    /// Every actor whose tip is not at the transaction's expected version, as an error.
    fn conflicts(&self, txn: &Transaction, tips: &[Tip]) -> Result<()> {
        let conflicts: Vec<VersionConflictError> = txn
            .appends()
            .iter()
            .zip(tips)
            .filter(|(a, t)| t.version != a.expected_version)
            .map(|(a, t)| VersionConflictError {
                actor_id: a.actor_id.clone(),
                attempted_version: a.expected_version + 1,
                current_version: t.version,
            })
            .collect();
        if conflicts.is_empty() {
            return Ok(());
        }
        Err(TransactionConflictError {
            transaction_id: txn.id().to_string(),
            conflicts,
        }
        .into())
    }

    async fn leader_tips(&self, txn: &Transaction) -> Result<Vec<Tip>> {
        let mut tips = Vec::with_capacity(txn.appends().len());
        for append in txn.appends() {
            tips.push(self.read_tip(append.actor_key(), true).await?.tip);
        }
        Ok(tips)
    }

    /// Whether the transaction is stored: the history of an actor whose tip moved past its
    /// expectation holds the last event of that actor's append (event ids are unique, and a
    /// batch is stored whole or not at all), read up to at least that tip. `tips` are the
    /// leader's, in the transaction's order. No actor moved: not stored.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no read of the history reaches that tip: the outcome stays
    /// unknown, and no conflict may be reported for a transaction that might be stored.
    async fn holds(&self, txn: &Transaction, tips: &[Tip]) -> Result<bool> {
        let moved = txn
            .appends()
            .iter()
            .zip(tips)
            .find(|(append, tip)| tip.version > append.expected_version);
        let Some((append, tip)) = moved else {
            return Ok(false);
        };
        let Some(last) = append.events.last() else {
            return Ok(false);
        };
        self.history_holds(
            append.actor_key(),
            append.expected_version + 1,
            &last.id,
            *tip,
        )
        .await
        .map_err(|e| {
            Error::unavailable(
                format!(
                    "checking whether transaction {} went in after its commit went unanswered",
                    txn.id()
                ),
                e,
            )
        })
    }

    /// After the last unanswered attempt: whether the transaction is stored, as far as a read
    /// of the leader's tips and a history can tell (any failure counts as no, and the caller
    /// reports the outcome as unknown).
    async fn stored_after_all(&self, txn: &Transaction) -> bool {
        match self.leader_tips(txn).await {
            Ok(tips) => self.holds(txn, &tips).await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The batch is acknowledged only as a whole, so the involved actors' tips are read again
    /// when next needed.
    fn forget_tips(&self, txn: &Transaction) {
        for append in txn.appends() {
            self.cache.remove(&self.subjects.key(append.actor_key()));
        }
    }

    /// Caches each actor's new tip. A batch is stored as consecutive messages ending at the
    /// acknowledged sequence; should that ever not hold, the next save's expectation is
    /// refused by the server and the tip read again, so the cache stays a guess.
    fn remember_batch(&self, txn: &Transaction, parts: &[(usize, Part)], ack: Ack) {
        let Some(first_seq) = ack.first_sequence(parts.len()) else {
            self.forget_tips(txn);
            return;
        };
        for (i, append) in txn.appends().iter().enumerate() {
            let (Some(last_index), Some(last)) = (
                parts.iter().rposition(|(actor, _)| *actor == i),
                append.events.last(),
            ) else {
                continue;
            };
            self.remember(
                append.actor_key(),
                Tip {
                    seq: first_seq + last_index as u64,
                    version: last.version,
                },
            );
        }
    }

    async fn publish_batch(
        &self,
        txn: &Transaction,
        parts: &[(usize, Part)],
        tips: &[Tip],
    ) -> std::result::Result<Ack, PublishFailure> {
        let mut seen = vec![false; tips.len()];
        let messages = parts
            .iter()
            .map(|(actor, part)| {
                let mut headers = part.headers.clone();
                headers.insert(HEADER_TRANSACTION, txn.id());
                // Only the first message of an actor may carry its check: later ones would
                // see the batch's own earlier message.
                let expected_seq =
                    (!std::mem::replace(&mut seen[*actor], true)).then(|| tips[*actor].seq);
                BatchMessage {
                    subject: part.subject.clone(),
                    headers,
                    payload: part.payload.clone(),
                    expected_seq,
                }
            })
            .collect();
        self.send_batch(txn.id(), messages, &|| {
            format!("committing transaction {}", txn.id())
        })
        .await
    }
}
