//! Group commit: concurrent saves of different actors share one atomic batch (nats-server
//! 2.12+), so one server write (one replication round, one sync) acknowledges many saves.
//!
//! **No weaker check.** Every save in a group is its own message on its actor's subject,
//! carrying the expected last sequence of that subject, exactly as a lone save does; a group
//! never holds two saves of one actor, so every check sees the history before the batch. The
//! server stores the whole batch or none of it.
//!
//! **One conflict fails one save.** When the server refuses a group (one of its checks failed,
//! and the batch does not say which), no save of it is stored; each save is then published
//! again on its own, where the guilty one fails with its conflict and the others are stored.
//! When a group goes unanswered, its outcome is unknown; each save is then retried on its own
//! as an unanswered lone save is, recognising its own event if the group did go in.
//!
//! **No added latency for a lone writer.** A save that finds fewer than `max_in_flight`
//! publishes of the store under way is published at once, on its own. Only saves that arrive
//! while the store is busy wait, and the first save to finish hands the waiting ones to the
//! first of them, which publishes them together.
//!
//! The queue is a plain mutex never held across an await. A waiting caller that gives up
//! (its future dropped) is skipped; a leader that gives up hands its turn over on drop, and the
//! saves it was carrying learn that their outcome is unknown.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use aether_core::Error;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use tokio::sync::oneshot;

use super::batch::BatchMessage;
use super::publish::PublishFailure;
use super::JetStreamEventStore;
use crate::jetstream::config::GroupCommit;

/// One save waiting to be published: its actor, its message and its expectation.
pub(super) struct GroupSave {
    pub(super) actor: Arc<str>,
    pub(super) subject: Subject,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
    pub(super) expected_seq: u64,
}

/// What became of a save handed to the group.
pub(super) enum GroupOutcome {
    /// Stored, at this stream sequence when the server's acknowledgement tells it.
    Stored(Option<u64>),
    /// Not stored and no answer about the save itself: publish it on its own. `uncertain` when
    /// the group went unanswered and may have been stored after all.
    Alone { uncertain: bool },
    /// The save's own publish failed (a lone save: the server's answer concerns it alone).
    Failed(PublishFailure),
}

/// A turn given to a waiting save.
enum Turn {
    Done(GroupOutcome),
    /// Publish these saves (the receiver's own first) as one group, then hand over.
    Lead(Vec<Waiting>),
}

struct Waiting {
    save: GroupSave,
    reply: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    /// Publishes of the group under way.
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

/// What group commit has done so far in one store
/// ([`JetStreamEventStore::group_commit_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Groups of two or more saves sent as one atomic batch.
    pub groups: u64,
    /// Saves sent in those groups.
    pub grouped_saves: u64,
    /// Groups the server refused because a check of one of their saves failed (each save was
    /// then published again on its own).
    pub refused: u64,
    /// Groups that failed otherwise, answered or not (each save was then retried on its own).
    pub failed: u64,
}

/// The store's group commit queue.
pub(super) struct Group {
    stats: Mutex<GroupCommitStats>,
    queue: Mutex<Queue>,
    settings: GroupCommit,
    /// Batch ids are this prefix and a counter: unique per store, and across stores (the
    /// server keeps in-flight batches by id per stream).
    batch_prefix: String,
    next_batch: AtomicU64,
}

impl Group {
    pub(super) fn new(settings: GroupCommit) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            stats: Mutex::new(GroupCommitStats::default()),
            settings,
            batch_prefix: uuid::Uuid::new_v4().simple().to_string(),
            next_batch: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue's state stays consistent at every step, so a panic elsewhere while it was
        // held leaves nothing half-done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the next group off the queue (saves of distinct actors, in arrival order, up to
    /// `max_saves`), skipping callers that gave up. `None` when nothing waits.
    fn next_group(queue: &mut Queue, max_saves: usize) -> Option<Vec<Waiting>> {
        let mut group: Vec<Waiting> = Vec::new();
        let mut actors: HashSet<Arc<str>> = HashSet::new();
        let mut later = VecDeque::new();
        while let Some(w) = queue.waiting.pop_front() {
            if w.reply.is_closed() {
                continue;
            }
            if group.len() >= max_saves || actors.contains(&w.save.actor) {
                // A second save of an actor waits for the next group: its check must see
                // the first one's message.
                later.push_back(w);
                continue;
            }
            actors.insert(w.save.actor.clone());
            group.push(w);
        }
        queue.waiting = later;
        (!group.is_empty()).then_some(group)
    }

    /// Gives the store's turn to the next waiting group, or frees it.
    fn hand_over(&self) {
        let mut queue = self.lock();
        while let Some(mut group) = Self::next_group(&mut queue, self.settings.max_saves.max(1)) {
            // The first save leads: it receives the group, its own save first.
            let leader = std::mem::replace(&mut group[0].reply, oneshot::channel().0);
            match leader.send(Turn::Lead(group)) {
                Ok(()) => return,
                // The leader gave up since the check: drop its save (never sent), and put the
                // others back in front.
                Err(Turn::Lead(mut group)) => {
                    group.remove(0);
                    for w in group.into_iter().rev() {
                        queue.waiting.push_front(w);
                    }
                }
                Err(Turn::Done(_)) => {}
            }
        }
        queue.in_flight = queue.in_flight.saturating_sub(1);
    }

    pub(super) fn stats(&self) -> GroupCommitStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, saves: usize, result: &Result<super::batch::Ack, PublishFailure>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.groups += 1;
        stats.grouped_saves += saves as u64;
        match result {
            Ok(_) => {}
            Err(PublishFailure::WrongLastSequence) => stats.refused += 1,
            Err(PublishFailure::Other(_)) => stats.failed += 1,
        }
    }

    fn batch_id(&self) -> String {
        let n = self.next_batch.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.batch_prefix)
    }
}

/// Hands the turn over when the publish it guards ends, or is dropped.
struct TurnGuard<'a>(&'a Group);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.hand_over();
    }
}

impl JetStreamEventStore {
    /// Publishes `save` through the group: at once on its own when the store is not busy,
    /// else together with the other saves waiting.
    pub(super) async fn publish_grouped(&self, group: &Group, save: GroupSave) -> GroupOutcome {
        let turn = {
            let mut queue = group.lock();
            if queue.in_flight < group.settings.max_in_flight.max(1) {
                queue.in_flight += 1;
                Err(save)
            } else {
                let (reply, turn) = oneshot::channel();
                queue.waiting.push_back(Waiting { save, reply });
                Ok(turn)
            }
        };
        let turn = match turn {
            Ok(turn) => turn,
            Err(save) => {
                let _turn = TurnGuard(group);
                return match self
                    .publish(
                        &save.subject,
                        &save.payload,
                        &save.headers,
                        save.expected_seq,
                    )
                    .await
                {
                    Ok(seq) => GroupOutcome::Stored(Some(seq)),
                    Err(failure) => GroupOutcome::Failed(failure),
                };
            }
        };
        match turn.await {
            Ok(Turn::Done(outcome)) => outcome,
            Ok(Turn::Lead(saves)) => {
                let _turn = TurnGuard(group);
                self.publish_group(group, saves).await
            }
            // The save was taken into a group whose leader gave up: it may have been sent.
            Err(_) => GroupOutcome::Alone { uncertain: true },
        }
    }

    /// Publishes a group whose first save is the caller's own; answers the others and returns
    /// the caller's outcome.
    async fn publish_group(&self, group: &Group, mut saves: Vec<Waiting>) -> GroupOutcome {
        if saves.len() == 1 {
            let own = saves.remove(0).save;
            return match self
                .publish(&own.subject, &own.payload, &own.headers, own.expected_seq)
                .await
            {
                Ok(seq) => GroupOutcome::Stored(Some(seq)),
                Err(failure) => GroupOutcome::Failed(failure),
            };
        }
        let count = saves.len();
        let (messages, replies): (Vec<BatchMessage>, Vec<oneshot::Sender<Turn>>) = saves
            .into_iter()
            .map(|w| {
                (
                    BatchMessage {
                        subject: w.save.subject,
                        headers: w.save.headers,
                        payload: w.save.payload,
                        expected_seq: Some(w.save.expected_seq),
                    },
                    w.reply,
                )
            })
            .unzip();
        let id = group.batch_id();
        let result = self
            .send_batch(&id, messages, &|| format!("group commit of {count} saves"))
            .await;
        metrics::histogram!("aether_store_group_commit_saves").record(count as f64);
        group.count(count, &result);
        let outcome = |i: usize| match &result {
            Ok(ack) => GroupOutcome::Stored(ack.first_sequence(count).map(|s| s + i as u64)),
            Err(PublishFailure::WrongLastSequence) => GroupOutcome::Alone { uncertain: false },
            Err(PublishFailure::Other(e)) => GroupOutcome::Alone {
                uncertain: unanswered(e),
            },
        };
        match &result {
            Ok(_) => tracing::trace!(saves = count, "group committed"),
            Err(PublishFailure::WrongLastSequence) => {
                tracing::debug!(saves = count, "group refused by a check; saves retry alone")
            }
            Err(PublishFailure::Other(e)) => {
                tracing::debug!(saves = count, error = %e, "group failed; saves retry alone")
            }
        }
        for (i, reply) in replies.into_iter().enumerate().skip(1) {
            // A caller that gave up no longer needs its answer.
            let _ = reply.send(Turn::Done(outcome(i)));
        }
        outcome(0)
    }
}

/// Whether a failed publish may have been stored after all: no answer came back.
fn unanswered(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
}
