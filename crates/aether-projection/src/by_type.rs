//! Decoding a projection's events by the actor type that wrote them ([`ActorEvents`]).

use std::fmt;
use std::sync::Arc;

use aether_actor::{Actor, DecodeError, EventCodec};
use aether_core::Event;

type DecodeFn<E> = Arc<dyn Fn(&Event) -> Result<E, DecodeError> + Send + Sync>;

/// How a projection over several actor types decodes: each stored event with the codec of the
/// actor type that wrote it (that type's own upcasters applied), then wrapped into the
/// projection's event enum. Decoding goes by the event's actor type, never by trying one
/// shape after another, so two types may both have an event named `Created`.
///
/// The projection reads only these types ([`Projection::decode_by_type`]).
///
/// ```
/// use aether_actor::{Actor, DomainEvent};
/// use aether_projection::ActorEvents;
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # enum ShowEvent { Reserved { seat: u32 } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # enum CustomerEvent { Charged { cents: i64 } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// # #[error("no")] struct No;
/// # struct Shows; struct Customers;
/// # impl Actor for Shows {
/// #     type State = (); type Command = (); type Event = ShowEvent; type Reply = (); type Error = No;
/// #     const TYPE: &'static str = "show";
/// #     async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<ShowEvent>, No> { Ok(vec![]) }
/// #     fn apply(_: &mut (), _: &ShowEvent) {}
/// #     fn reply(_: &(), _: &(), _: &[ShowEvent]) {}
/// # }
/// # impl Actor for Customers {
/// #     type State = (); type Command = (); type Event = CustomerEvent; type Reply = (); type Error = No;
/// #     const TYPE: &'static str = "customer";
/// #     async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<CustomerEvent>, No> { Ok(vec![]) }
/// #     fn apply(_: &mut (), _: &CustomerEvent) {}
/// #     fn reply(_: &(), _: &(), _: &[CustomerEvent]) {}
/// # }
///
/// /// What the booking read model sees: the events of both types. Never stored itself.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum Booking {
///     Show(ShowEvent),
///     Customer(CustomerEvent),
/// }
///
/// let events = ActorEvents::<Booking>::new()
///     .actor::<Shows>(Booking::Show)
///     .actor::<Customers>(Booking::Customer);
/// assert_eq!(events.types(), ["show", "customer"]);
/// ```
pub struct ActorEvents<E> {
    decoders: Vec<(&'static str, DecodeFn<E>)>,
}

impl<E> Clone for ActorEvents<E> {
    fn clone(&self) -> Self {
        Self {
            decoders: self.decoders.clone(),
        }
    }
}

impl<E> fmt::Debug for ActorEvents<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorEvents")
            .field(
                "types",
                &self.decoders.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<E> Default for ActorEvents<E> {
    fn default() -> Self {
        Self {
            decoders: Vec::new(),
        }
    }
}

impl<E: 'static> ActorEvents<E> {
    /// No types yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds actor type `A`: its events are decoded with `A`'s upcasters and wrapped by `wrap`
    /// (an enum variant's constructor, say). Adding a type twice keeps the first.
    #[must_use]
    pub fn actor<A: Actor>(mut self, wrap: fn(A::Event) -> E) -> Self {
        if self.decoders.iter().any(|(t, _)| *t == A::TYPE) {
            return self;
        }
        let codec = EventCodec::<A::Event>::new(A::upcasters());
        let decode: DecodeFn<E> = Arc::new(move |event: &Event| {
            EventCodec::<A::Event>::check_type(A::TYPE, event).map_err(|w| DecodeError {
                actor_id: event.actor_id.clone(),
                version: event.version,
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                schema_version: 0,
                reason: w.to_string(),
            })?;
            codec.decode_for(A::TYPE, event).map(wrap)
        });
        self.decoders.push((A::TYPE, decode));
        self
    }

    /// Adds actor type `actor_type`, its events handed over by `decode` from their stored form
    /// (for a reader that needs no typed payload, such as one that reads only metadata, or a
    /// type whose Rust events are not at hand). Adding a type twice keeps the first.
    #[must_use]
    pub fn stored<F>(mut self, actor_type: &'static str, decode: F) -> Self
    where
        F: Fn(&Event) -> Result<E, DecodeError> + Send + Sync + 'static,
    {
        if self.decoders.iter().any(|(t, _)| *t == actor_type) {
            return self;
        }
        self.decoders.push((actor_type, Arc::new(decode)));
        self
    }

    /// The actor types, in the order they were added.
    pub fn types(&self) -> Vec<&'static str> {
        self.decoders.iter().map(|(t, _)| *t).collect()
    }

    /// Decodes `event` with the codec of its actor type.
    ///
    /// # Errors
    /// [`DecodeError`] when the event's type is none of these (or it has none), or its
    /// payload does not fit that type's events.
    pub fn decode(&self, event: &Event) -> Result<E, DecodeError> {
        let decoder = event
            .actor_type
            .as_deref()
            .and_then(|t| self.decoders.iter().find(|(known, _)| *known == t));
        match decoder {
            Some((_, decode)) => decode(event),
            None => Err(DecodeError {
                actor_id: event.actor_id.clone(),
                version: event.version,
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                schema_version: 0,
                reason: format!(
                    "the event's actor type {:?} is none of this projection's ({:?})",
                    event.actor_type,
                    self.types()
                ),
            }),
        }
    }
}

#[cfg(doc)]
use crate::Projection;
