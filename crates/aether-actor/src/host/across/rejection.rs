//! A participant's refusal in a transaction across actor types: which actor refused, and its
//! typed error.

use std::fmt;
use std::sync::Arc;

use aether_core::ActorKey;

use super::decide::Participant;
#[cfg(doc)]
use super::Transact;
use crate::actor::Actor;
#[cfg(doc)]
use crate::error::CommandError;

/// A participant's refusal in a [`Transact`]: which actor refused, and its typed error.
///
/// Handling: a business answer, as [`CommandError::Rejected`] says; nothing was written. Get
/// the typed error back with [`of`](Self::of) (`Some` only for the participant that refused)
/// or [`downcast_ref`](Self::downcast_ref).
pub struct Rejection {
    pub(super) actor_type: &'static str,
    pub(super) actor_id: Arc<str>,
    pub(super) token: u64,
    pub(super) index: usize,
    pub(super) error: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("actor_type", &self.actor_type)
            .field("actor_id", &self.actor_id)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.key(), self.error)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl Rejection {
    /// The actor that refused.
    pub fn key(&self) -> ActorKey<'_> {
        ActorKey::new(self.actor_type, &self.actor_id)
    }

    /// Whether `participant` refused.
    pub fn is_from<A: Actor>(&self, participant: &Participant<A>) -> bool {
        self.token == participant.token && self.index == participant.index
    }

    /// The typed error, when `participant` is the one that refused.
    pub fn of<A: Actor>(&self, participant: &Participant<A>) -> Option<&A::Error> {
        if self.is_from(participant) {
            self.error.downcast_ref::<A::Error>()
        } else {
            None
        }
    }

    /// The error, when it is an `E` (whichever participant refused).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref::<E>()
    }

    /// The error, when it is an `E`; otherwise the rejection back.
    ///
    /// # Errors
    /// The rejection itself, when its error is not an `E`.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, Self> {
        if self.error.is::<E>() {
            match self.error.downcast::<E>() {
                Ok(e) => Ok(*e),
                // Checked just above; rebuilt to keep the signature total.
                Err(error) => Err(Self { error, ..self }),
            }
        } else {
            Err(self)
        }
    }

    /// The error, untyped.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}
