//! One participant of a transaction with its actor type erased: how a transaction over
//! several types loads, encodes, passivates and counts each of them through one interface.

use std::any::Any;
use std::sync::Arc;

use aether_core::{ActorKey, Error, Event, SnapshotStore};
use async_trait::async_trait;

use super::super::activation::{count_load_error, load};
use super::super::stats::{bump, Count, Counters};
use super::super::ActorHost;
use super::rejection::Rejection;
use crate::actor::{Actor, CommandMeta};
use crate::error::CommandError;
use crate::reaction;
use crate::retry::RetryPolicy;

/// A participant as loaded for one decision.
pub(super) struct LoadedPart {
    pub(super) state: Box<dyn Any + Send + Sync>,
    pub(super) version: u64,
    /// Its recent history holds the transaction's command id.
    pub(super) applied: bool,
}

/// One participant with its type erased: what a transaction over several types needs.
#[async_trait]
pub(super) trait Part: Send + Sync {
    fn actor_type(&self) -> &'static str;
    fn actor_id(&self) -> &str;
    fn store(&self) -> &Arc<dyn SnapshotStore>;
    fn retry(&self) -> RetryPolicy;
    async fn load(&self, command_id: Option<&str>) -> Result<LoadedPart, CommandError<Rejection>>;
    /// The stored form of the events (a `Vec<A::Event>`) after `version`, decided on `state`
    /// (an `A::State`), `meta` stamped, their timers and effects recorded.
    fn encode(
        &self,
        state: &(dyn Any + Send + Sync),
        events: Box<dyn Any + Send>,
        version: u64,
        meta: &CommandMeta,
    ) -> Result<Vec<Event>, CommandError<Rejection>>;
    fn passivate(&self);
    fn bump(&self, counter: fn(&Counters) -> &Count);
}

pub(super) struct Member<A: Actor> {
    pub(super) host: ActorHost<A>,
    pub(super) actor_id: Arc<str>,
}

#[async_trait]
impl<A: Actor> Part for Member<A> {
    fn actor_type(&self) -> &'static str {
        A::TYPE
    }

    fn actor_id(&self) -> &str {
        &self.actor_id
    }

    fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.host.shared.store
    }

    fn retry(&self) -> RetryPolicy {
        self.host.shared.config.retry
    }

    async fn load(&self, command_id: Option<&str>) -> Result<LoadedPart, CommandError<Rejection>> {
        let shared = &self.host.shared;
        let loaded = load(shared, &self.actor_id).await.map_err(|e| {
            count_load_error(&shared.counters, &e);
            CommandError::from(e)
        })?;
        Ok(LoadedPart {
            applied: command_id.is_some_and(|id| loaded.recent.get(id).is_some()),
            version: loaded.version,
            state: Box::new(loaded.state),
        })
    }

    fn encode(
        &self,
        state: &(dyn Any + Send + Sync),
        events: Box<dyn Any + Send>,
        version: u64,
        meta: &CommandMeta,
    ) -> Result<Vec<Event>, CommandError<Rejection>> {
        let (Ok(events), Some(state)) = (
            events.downcast::<Vec<A::Event>>(),
            state.downcast_ref::<A::State>(),
        ) else {
            return Err(Error::invalid(format!(
                "events recorded for {} are not of its type",
                ActorKey::new(A::TYPE, &self.actor_id)
            ))
            .into());
        };
        let key = ActorKey::new(A::TYPE, &self.actor_id);
        let mut stored = Vec::with_capacity(events.len());
        for (event, v) in events.iter().zip(version + 1..) {
            let encoded = self
                .host
                .shared
                .codec
                .encode(event)
                .map_err(|e| Error::Encoding(e.to_string()))?;
            let mut e = encoded.into_event_of(key, v);
            meta.stamp(&mut e);
            stored.push(e);
        }
        let shared = &self.host.shared;
        reaction::record_from::<A>(
            &|| shared.reactions(),
            &self.actor_id,
            state,
            &events,
            &mut stored,
        )
        .map_err(|e| {
            bump(&shared.counters.reactions_refused);
            CommandError::Reaction(e)
        })?;
        Ok(stored)
    }

    fn passivate(&self) {
        self.host.passivate(&self.actor_id);
    }

    fn bump(&self, counter: fn(&Counters) -> &Count) {
        bump(counter(&self.host.shared.counters));
    }
}
