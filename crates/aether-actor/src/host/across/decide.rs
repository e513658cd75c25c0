//! The typed handle on one participant of a [`Transact`], and the view a decision gets of the
//! participants ([`Decide`]): their states and versions, and the events recorded for them.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use aether_core::ActorKey;

use super::rejection::Rejection;
#[cfg(doc)]
use super::Transact;
use crate::actor::Actor;
#[cfg(doc)]
use crate::error::CommandError;
#[cfg(doc)]
use aether_core::Error;

/// A typed handle on one participant of a [`Transact`]: reads its state and records its
/// events in the decision ([`Decide`]), and makes its rejection ([`reject`](Self::reject)).
/// Cheap to clone.
pub struct Participant<A: Actor> {
    pub(super) token: u64,
    pub(super) index: usize,
    pub(super) actor_id: Arc<str>,
    pub(super) _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Clone for Participant<A> {
    fn clone(&self) -> Self {
        Self {
            token: self.token,
            index: self.index,
            actor_id: Arc::clone(&self.actor_id),
            _actor: PhantomData,
        }
    }
}

impl<A: Actor> fmt::Debug for Participant<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant")
            .field("actor_type", &A::TYPE)
            .field("actor_id", &self.actor_id)
            .finish()
    }
}

impl<A: Actor> Participant<A> {
    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.actor_id
    }

    /// The actor: its type and id.
    pub fn key(&self) -> ActorKey<'_> {
        ActorKey::new(A::TYPE, &self.actor_id)
    }

    /// This actor's refusal, for the decision to return: the transaction writes nothing and
    /// answers [`CommandError::Rejected`] with it.
    pub fn reject(&self, error: A::Error) -> Rejection {
        Rejection {
            actor_type: A::TYPE,
            actor_id: Arc::clone(&self.actor_id),
            token: self.token,
            index: self.index,
            error: Box::new(error),
        }
    }
}

/// The participants' states, and the events the decision records for them: what the decision
/// of [`Transact::run`] gets.
pub struct Decide<'t> {
    pub(super) token: u64,
    pub(super) states: &'t [Box<dyn Any + Send + Sync>],
    pub(super) versions: &'t [u64],
    /// Per participant, its events so far (a `Vec<A::Event>`).
    pub(super) events: Vec<Option<Box<dyn Any + Send>>>,
    /// A handle of another transaction was used: reported once the decision returns.
    pub(super) misuse: Option<String>,
}

impl fmt::Debug for Decide<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decide")
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Decide<'_> {
    /// The participant's current state, rebuilt from the store.
    ///
    /// # Panics
    /// If `participant` was added to another [`Transact`]: a programming error, like an index
    /// out of bounds.
    pub fn state<A: Actor>(&self, participant: &Participant<A>) -> &A::State {
        let state = (participant.token == self.token)
            .then(|| self.states.get(participant.index))
            .flatten()
            .and_then(|s| s.downcast_ref::<A::State>());
        match state {
            Some(state) => state,
            None => panic!(
                "participant {} belongs to another transaction",
                participant.key()
            ),
        }
    }

    /// The participant's version when its state was read (0: no events yet).
    ///
    /// # Panics
    /// As [`state`](Self::state).
    pub fn version<A: Actor>(&self, participant: &Participant<A>) -> u64 {
        match (participant.token == self.token)
            .then(|| self.versions.get(participant.index))
            .flatten()
        {
            Some(v) => *v,
            None => panic!(
                "participant {} belongs to another transaction",
                participant.key()
            ),
        }
    }

    /// Records events for the participant, after any recorded before. A handle of another
    /// transaction is reported by [`Transact::run`] as [`Error::InvalidInput`].
    pub fn emit<A: Actor>(
        &mut self,
        participant: &Participant<A>,
        events: impl IntoIterator<Item = A::Event>,
    ) {
        let slot = if participant.token == self.token {
            self.events.get_mut(participant.index)
        } else {
            None
        };
        let recorded = slot.and_then(|slot| {
            slot.get_or_insert_with(|| Box::new(Vec::<A::Event>::new()))
                .downcast_mut::<Vec<A::Event>>()
        });
        match recorded {
            Some(recorded) => recorded.extend(events),
            None => {
                self.misuse.get_or_insert_with(|| {
                    format!(
                        "the decision recorded events for {}, a participant of another \
                         transaction",
                        participant.key()
                    )
                });
            }
        }
    }
}
