//! Commands that change several actors of one type at once, committed as one transaction.

use aether_core::{ActorKey, Error, Transaction};

use super::activation::{count_load_error, load};
use super::stats::bump;
use super::ActorHost;
use crate::actor::{Actor, CommandMeta};
use crate::error::CommandError;
use crate::reaction;

/// What a multi-actor decision returns: the events of each actor (in the order of the actor
/// ids given) and the reply.
pub type Decision<A, R> = Result<(Vec<Vec<<A as Actor>::Event>>, R), <A as Actor>::Error>;

impl<A: Actor> ActorHost<A> {
    /// Decides a change to several actors of this type at once (a transfer between two
    /// accounts) and appends all their events atomically: all or nothing, each actor at the
    /// version its state was read at ([`EventStore::commit`](aether_core::EventStore::commit)).
    ///
    /// `decide` gets the current state of every actor in `actor_ids` (in that order, rebuilt
    /// from the store, since another node may own them) and returns the events of each (same
    /// order; an actor may get none) and the reply, or a rejection. On a conflict (another
    /// writer changed one of the actors) the states are read again and `decide` runs again,
    /// under [`RuntimeConfig::retry`](crate::RuntimeConfig::retry); so `decide` must only read.
    /// A rejection is answered only once every actor is confirmed current. `meta` is stamped on
    /// every event; its command id, if set, becomes the transaction id.
    ///
    /// Afterwards this host's activations of the actors are passivated, so their next command
    /// sees the committed events. Activations on other nodes notice at their next write (a
    /// version conflict, then a reload); until then their read-only commands answer from the
    /// state they had (a cluster node's `transact` tells their owners to reload).
    ///
    /// For actors of several types at once, use [`Transact`](crate::Transact).
    ///
    /// # Errors
    /// [`CommandError::Rejected`]; [`CommandError::Conflict`] when conflicts outlast the retry
    /// policy; [`CommandError::Decode`]; [`CommandError::Infrastructure`] with
    /// [`Error::InvalidInput`] for no actors, an actor twice, or a decision whose shape does
    /// not match the actors, and [`Error::Unsupported`] from a store that cannot commit
    /// atomically (nats-server before 2.12).
    pub async fn transact<R, F>(
        &self,
        actor_ids: &[&str],
        meta: CommandMeta,
        mut decide: F,
    ) -> Result<R, CommandError<A::Error>>
    where
        F: FnMut(&[A::State]) -> Decision<A, R> + Send,
        R: Send,
    {
        if actor_ids.is_empty() {
            return Err(Error::invalid("a transaction needs at least one actor").into());
        }
        let shared = &self.shared;
        let policy = shared.config.retry;
        let mut attempts = 0u32;
        loop {
            let mut states = Vec::with_capacity(actor_ids.len());
            let mut versions = Vec::with_capacity(actor_ids.len());
            for id in actor_ids {
                let loaded = load(shared, id).await.map_err(|e| {
                    count_load_error(&shared.counters, &e);
                    CommandError::from(e)
                })?;
                versions.push(loaded.version);
                states.push(loaded.state);
            }
            attempts += 1;
            let (events, reply) = match decide(&states) {
                Ok(decided) => decided,
                Err(rejection) => {
                    let mut stale = false;
                    for (id, seen) in actor_ids.iter().zip(&versions) {
                        stale |= shared
                            .store
                            .latest_version_of(ActorKey::new(A::TYPE, id))
                            .await?
                            > *seen;
                    }
                    if stale && attempts <= policy.max_retries {
                        bump(&shared.counters.stale_rejections);
                        continue;
                    }
                    bump(&shared.counters.rejections);
                    return Err(CommandError::Rejected(rejection));
                }
            };
            if events.len() != actor_ids.len() {
                return Err(Error::invalid(format!(
                    "the decision has events for {} actors, but {} were named",
                    events.len(),
                    actor_ids.len()
                ))
                .into());
            }
            let mut txn = match &meta.command_id {
                Some(id) => Transaction::with_id(id.clone()),
                None => Transaction::new(),
            };
            for (((id, version), state), decided) in
                actor_ids.iter().zip(&versions).zip(&states).zip(&events)
            {
                if decided.is_empty() {
                    continue;
                }
                let mut stored = Vec::with_capacity(decided.len());
                for (event, v) in decided.iter().zip(version + 1..) {
                    let encoded = shared
                        .codec
                        .encode(event)
                        .map_err(|e| Error::Encoding(e.to_string()))?;
                    let mut e = encoded.into_event_of(ActorKey::new(A::TYPE, id), v);
                    meta.stamp(&mut e);
                    stored.push(e);
                }
                reaction::record_from::<A>(&|| shared.reactions(), id, state, decided, &mut stored)
                    .map_err(|e| {
                        bump(&shared.counters.reactions_refused);
                        CommandError::Reaction(e)
                    })?;
                txn = txn.append(*id, *version, stored);
            }
            if txn.appends().is_empty() {
                return Ok(reply);
            }
            match shared.store.commit(&txn).await {
                Ok(()) => {
                    for id in actor_ids {
                        self.passivate(id);
                    }
                    return Ok(reply);
                }
                Err(Error::TransactionConflict(conflict)) => {
                    bump(&shared.counters.conflicts);
                    if attempts > policy.max_retries {
                        bump(&shared.counters.conflicts_exhausted);
                        let last = conflict.conflicts.into_iter().next().unwrap_or_else(|| {
                            aether_core::VersionConflictError {
                                actor_id: actor_ids[0].to_string(),
                                attempted_version: versions[0] + 1,
                                current_version: versions[0],
                            }
                        });
                        return Err(CommandError::Conflict {
                            actor_id: last.actor_id.clone(),
                            attempts,
                            last,
                        });
                    }
                    tokio::time::sleep(policy.backoff(attempts)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
