//! Rebuilding an actor's state from its events alone.

use aether_core::{ActorKey, EventStore};

use crate::actor::Actor;
use crate::error::LoadError;
use crate::event::EventCodec;

/// Rebuilds the state of actor `actor_id` of type `A::TYPE` by decoding (through `codec`'s upcasters) and applying every
/// stored event from version 1, ignoring snapshots. Returns the state and its version.
///
/// This is what a snapshot saves; use it to check a snapshot, to rebuild a read model, or in
/// tests. A retired actor's final event ends the history: the state is the one it was retired
/// with, and the version the final event's.
///
/// # Errors
/// [`LoadError::Decode`] naming the first event that does not fit `A::Event`;
/// [`LoadError::WrongType`] when the history was written by another actor type;
/// [`LoadError::Store`] for store errors.
pub async fn replay<A: Actor>(
    store: &dyn EventStore,
    codec: &EventCodec<A::Event>,
    actor_id: &str,
) -> Result<(A::State, u64), LoadError> {
    let mut state = A::State::default();
    let mut version = 0;
    for stored in store.events_of(ActorKey::new(A::TYPE, actor_id), 1).await? {
        EventCodec::<A::Event>::check_type(A::TYPE, &stored)?;
        if stored.is_retirement() {
            version = stored.version;
            break;
        }
        let event = codec.decode_for(A::TYPE, &stored)?;
        A::apply(&mut state, &event);
        version = stored.version;
    }
    Ok((state, version))
}
