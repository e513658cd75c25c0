//! Typed domain events and their stored form.
//!
//! A [`DomainEvent`] is an application's event type, typically a serde enum whose variants are
//! the event types. Its stored form is an [`Event`]: the variant name becomes the event type,
//! the variant's fields the JSON payload, and the schema version goes into the metadata
//! ([`METADATA_SCHEMA_VERSION`]). [`EventCodec`] turns one into the other, upcasting older
//! payloads on the way in.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use aether_core::{ActorKey, Event, EventData, METADATA_ACTOR_TYPE, METADATA_SCHEMA_VERSION};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Serialize;
use serde_json::Value;

use crate::error::{DecodeError, WrongTypeError};
use crate::upcast::Upcasters;

/// An application's event type.
///
/// Write it as a serde enum in serde's default (externally tagged) form: each variant is one
/// event type, named by the variant (or by `#[serde(rename = "...")]`, which is how a name is
/// kept stable when the Rust name changes). Struct variants and unit variants are supported;
/// the payload of a struct variant is stored as a JSON object of its fields.
///
/// The usual way to implement it is `#[derive(DomainEvent)]`, which names each variant by its
/// serde name (`rename` and `rename_all` included), so the two cannot drift apart;
/// `#[domain_event(schema_version = N)]` on the enum sets
/// [`schema_version`](Self::schema_version).
///
/// ```
/// use aether_actor::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[serde(rename = "MoneyIn")]
///     Deposited { amount: i64 },
///     Closed,
/// }
///
/// assert_eq!(AccountEvent::Deposited { amount: 5 }.event_type(), "MoneyIn");
/// assert_eq!(AccountEvent::Closed.event_type(), "Closed");
/// ```
///
/// A hand-written impl is still possible, for example to compute the schema version per
/// variant; `event_type()` must then return exactly the serde name (encoding checks it):
///
/// ```
/// use aether_actor::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Closed,
/// }
///
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             Self::Opened { .. } => "Opened",
///             Self::Closed => "Closed",
///         }
///     }
/// }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stable name of this event's type: the enum variant's serde name.
    fn event_type(&self) -> &'static str;

    /// The schema version this event's payload is written in; 1 unless a variant's shape has
    /// changed. Raise it when a variant's fields change, and register an upcaster from the
    /// previous version ([`Upcasters`]).
    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a typed value could not be turned into its stored form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event of type {event_type:?} cannot be stored: {reason}")]
pub struct EncodeError {
    /// The type the event says it is.
    pub event_type: String,
    /// Why it cannot be stored.
    pub reason: String,
}

/// The stored form of a typed event, before the runtime gives it an actor, a version and an
/// id.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// The event type.
    pub event_type: &'static str,
    /// The payload.
    pub data: EventData,
    /// The schema version of the payload.
    pub schema_version: u32,
}

impl EncodedEvent {
    /// The stored [`Event`] for the untyped actor `actor_id` at `version`, with the schema
    /// version recorded.
    pub fn into_event(self, actor_id: &str, version: u64) -> Event {
        Event::new(self.event_type, actor_id, version)
            .with_data(self.data)
            .with_metadata(METADATA_SCHEMA_VERSION, self.schema_version.to_string())
    }

    /// The stored [`Event`] for `actor` (its type and id) at `version`, with the schema version
    /// recorded.
    pub fn into_event_of(self, actor: ActorKey<'_>, version: u64) -> Event {
        let mut event = self.into_event(actor.actor_id, version);
        event.actor_type = actor.actor_type.map(str::to_string);
        event
    }
}

/// Encodes and decodes one [`DomainEvent`] type, applying its upcasters when decoding.
///
/// Cheap to clone (the upcasters are shared). Use it wherever stored events are read as typed
/// values: the actor runtime does on replay; a bus subscriber or a projection does the same
/// with [`decode`](Self::decode).
pub struct EventCodec<E> {
    upcasters: Arc<Upcasters>,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for EventCodec<E> {
    fn clone(&self) -> Self {
        Self {
            upcasters: Arc::clone(&self.upcasters),
            _event: PhantomData,
        }
    }
}

impl<E> fmt::Debug for EventCodec<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventCodec")
            .field("event", &std::any::type_name::<E>())
            .field("upcasters", &self.upcasters)
            .finish()
    }
}

impl<E: DomainEvent> Default for EventCodec<E> {
    fn default() -> Self {
        Self::new(Upcasters::new())
    }
}

impl<E: DomainEvent> EventCodec<E> {
    /// A codec applying `upcasters` to older payloads.
    pub fn new(upcasters: Upcasters) -> Self {
        Self {
            upcasters: Arc::new(upcasters),
            _event: PhantomData,
        }
    }

    /// The upcasters it applies.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// The stored form of `event`.
    ///
    /// # Errors
    /// [`EncodeError`] when the value does not serialise to a variant named
    /// [`DomainEvent::event_type`] with an object (or no) payload.
    pub fn encode(&self, event: &E) -> Result<EncodedEvent, EncodeError> {
        let event_type = event.event_type();
        let fail = |reason: String| EncodeError {
            event_type: event_type.to_string(),
            reason,
        };
        let data = match serde_json::to_value(event).map_err(|e| fail(e.to_string()))? {
            Value::String(name) if name == event_type => EventData::new(),
            Value::Object(mut outer) if outer.len() == 1 => match outer.remove(event_type) {
                Some(Value::Object(data)) => data,
                Some(other) => {
                    return Err(fail(format!(
                        "the payload must be a JSON object (a struct variant), not {other}"
                    )))
                }
                None => {
                    return Err(fail(format!(
                        "it serialises as variant {:?}; event_type() and the serde name must agree",
                        outer.keys().next().map(String::as_str).unwrap_or_default()
                    )))
                }
            },
            other => {
                return Err(fail(format!(
                    "it must serialise as an externally tagged enum variant, not {other}"
                )))
            }
        };
        Ok(EncodedEvent {
            event_type,
            data,
            schema_version: event.schema_version(),
        })
    }

    /// Checks a stored event was written by actor type `actor_type`: its
    /// [`Event::actor_type`] and, for events written before actor types, their `actorType`
    /// metadata. An event that names no type passes.
    ///
    /// # Errors
    /// [`WrongTypeError`] naming both types.
    pub fn check_type(actor_type: &str, event: &Event) -> Result<(), WrongTypeError> {
        // The writer's runtime recorded its type in the metadata before actor types were
        // part of the event; on a stream of that time the store reports the declared legacy
        // type, so both are checked.
        let found = [
            event.metadata_value(METADATA_ACTOR_TYPE),
            event.actor_type.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find(|t| *t != actor_type);
        match found {
            Some(t) => Err(WrongTypeError {
                actor_id: event.actor_id.clone(),
                expected: actor_type.to_string(),
                found: t.to_string(),
                version: event.version,
            }),
            _ => Ok(()),
        }
    }

    /// Decodes a stored event for the actor type `actor_type`: as [`decode`](Self::decode),
    /// but when the event does not decode and was written by another actor type (its
    /// `actorType` metadata), or its event type is none of `E`'s, the error says that the
    /// actor id may hold another type's events instead of pointing at upcasters alone.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_for(&self, actor_type: &str, event: &Event) -> Result<E, DecodeError> {
        self.decode(event).map_err(|mut e| {
            match event.metadata_value(METADATA_ACTOR_TYPE) {
                Some(writer) if writer != actor_type => {
                    e.reason = format!(
                        "actor id {:?} holds events of actor type {writer:?}, not {actor_type:?}:                          keep the ids of different actor types apart (the command went to                          the wrong id or the wrong type); {}",
                        event.actor_id, e.reason
                    );
                }
                Some(_) => {}
                None if e.reason.starts_with("unknown variant") => {
                    e.reason = format!(
                        "{}; the event type is none of actor type {actor_type:?}'s: if actor id                          {:?} holds another actor type's events, keep the ids of different                          types apart, else register an upcaster that renames it",
                        e.reason, event.actor_id
                    );
                }
                None => {}
            }
            e
        })
    }

    /// Decodes a stored event, upcasting an older payload first.
    ///
    /// # Errors
    /// [`DecodeError`] naming the actor, version and event when the schema version is not a
    /// number, an upcaster fails, the payload does not fit the type, or the event was written
    /// in a schema version no upcaster leads from.
    pub fn decode(&self, event: &Event) -> Result<E, DecodeError> {
        let fail = |schema_version: u32, reason: String| DecodeError {
            actor_id: event.actor_id.clone(),
            version: event.version,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            schema_version,
            reason,
        };
        let stored_version = match event.metadata_value(METADATA_SCHEMA_VERSION) {
            None => 1,
            Some(v) => v.parse::<u32>().map_err(|_| {
                fail(
                    0,
                    format!("schema version {v:?} in the metadata is not a number"),
                )
            })?,
        };
        let (value, version) = if self.upcasters.handles(&event.event_type, stored_version) {
            let (event_type, version, data) = self
                .upcasters
                .apply(&event.event_type, stored_version, event.data.clone())
                .map_err(|reason| fail(stored_version, reason))?;
            let value = E::deserialize(Tagged {
                tag: &event_type,
                data: &data,
            })
            .map_err(|e| fail(stored_version, e.to_string()))?;
            (value, version)
        } else {
            let value = E::deserialize(Tagged {
                tag: &event.event_type,
                data: &event.data,
            })
            .map_err(|e| fail(stored_version, e.to_string()))?;
            (value, stored_version)
        };
        let current = value.schema_version();
        if current != version {
            return Err(fail(
                stored_version,
                format!(
                    "stored in schema version {version}, but the type is at version {current} \
                     and no upcaster leads from {version}"
                ),
            ));
        }
        Ok(value)
    }
}

/// Deserialises an externally tagged enum from a borrowed event type and payload, without
/// building an intermediate JSON value.
struct Tagged<'a> {
    tag: &'a str,
    data: &'a EventData,
}

/// A borrowed JSON value as a deserializer for [`de::value::MapDeserializer`].
struct ValueRef<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for ValueRef<'de> {
    type Deserializer = &'de Value;
    fn into_deserializer(self) -> &'de Value {
        self.0
    }
}

type Fields<'a> = de::value::MapDeserializer<
    'a,
    std::iter::Map<
        serde_json::map::Iter<'a>,
        fn((&'a String, &'a Value)) -> (&'a str, ValueRef<'a>),
    >,
    serde_json::Error,
>;

fn fields<'a>(data: &'a EventData) -> Fields<'a> {
    fn pair<'a>((k, v): (&'a String, &'a Value)) -> (&'a str, ValueRef<'a>) {
        (k.as_str(), ValueRef(v))
    }
    let pair: fn((&'a String, &'a Value)) -> (&'a str, ValueRef<'a>) = pair;
    de::value::MapDeserializer::new(data.iter().map(pair))
}

impl<'de> de::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;
    type Variant = Payload<'de>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let tag: de::value::BorrowedStrDeserializer<'de, serde_json::Error> =
            de::value::BorrowedStrDeserializer::new(self.tag);
        let variant = seed.deserialize(tag)?;
        Ok((variant, Payload(self.data)))
    }
}

struct Payload<'a>(&'a EventData);

impl<'de> de::VariantAccess<'de> for Payload<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // A unit variant stores an empty payload; fields added later by hand are ignored.
        Ok(())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(fields(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "tuple variants cannot be events; use a struct variant",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut map = fields(self.0);
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
