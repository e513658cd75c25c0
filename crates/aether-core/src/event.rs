//! The immutable fact at the heart of event sourcing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::actor::{validate_actor_type, ActorKey};
use crate::error::{Error, Result};

/// JSON object carried by an [`Event`] (and the state of a [`Snapshot`](crate::Snapshot)).
pub type EventData = Map<String, Value>;

/// Free-form string metadata attached to an [`Event`]: correlation, causation, user and tracing
/// ids, or anything else an application needs to carry alongside the payload.
///
/// A `BTreeMap` so that the JSON form is deterministic (the same event always encodes to the
/// same bytes).
pub type Metadata = BTreeMap<String, String>;

/// Metadata key of the correlation id: ties together every event caused by one request.
pub const METADATA_CORRELATION_ID: &str = "correlationId";
/// Metadata key of the causation id: the id of the event or command that caused this event.
pub const METADATA_CAUSATION_ID: &str = "causationId";
/// Metadata key of the id of the user on whose behalf the event was produced.
pub const METADATA_USER_ID: &str = "userId";
/// Metadata key of the distributed-tracing trace id.
pub const METADATA_TRACE_ID: &str = "traceId";
/// Metadata key of the distributed-tracing span id.
pub const METADATA_SPAN_ID: &str = "spanId";
/// Metadata key: the id of the message (command) whose handling produced the event. A runtime
/// that sees this id again in an actor's recent events knows the message was already applied
/// and does not apply it twice when a sender retries it.
pub const METADATA_MESSAGE_ID: &str = "messageId";
/// Metadata key of the schema version the event's payload was written in (a decimal number;
/// absent means 1). Readers upcast older versions to the current shape before decoding.
pub const METADATA_SCHEMA_VERSION: &str = "schemaVersion";
/// Metadata key of the reply a command got, as JSON, on the last event the command caused:
/// written by earlier releases only. The actor runtime still reads a small one to answer a
/// retried command id with its first reply; it no longer writes it, so that what is stored
/// per event never grows with the state or the reply.
pub const METADATA_REPLY: &str = "reply";
/// Metadata key of the actor type whose runtime wrote the event (`Actor::TYPE` in
/// `aether-actor`). A reader of another type that meets it says the id holds another type's
/// events, rather than reporting a schema mismatch.
pub const METADATA_ACTOR_TYPE: &str = "actorType";

/// Event type of the notification a store publishes after it persisted an event.
///
/// The notification's `data` holds `eventId`, `actorId`, `version` and `timestamp` of the stored
/// event; see [`Event::event_stored`].
pub const EVENT_TYPE_EVENT_STORED: &str = "EventStored";

/// The event type of the final event of a retired actor: after it, the actor takes no more
/// commands and is never activated for writing (`aether_actor::ActorHost::retire`). Its data
/// is empty; its metadata says who retired it, as a command's would. Readers that decode every
/// event of an actor type skip it ([`Event::is_retirement`]): it belongs to no actor's own
/// event type.
pub const EVENT_TYPE_RETIRED: &str = "aether.Retired";

/// Something that happened to an actor, recorded once and never changed.
///
/// Events of one actor carry strictly increasing versions; an actor's state is whatever replaying
/// its events produces. The JSON form uses the field names `id`, `eventType`, `actorId`,
/// `version`, `data`, `timestamp` and `metadata` (omitted when empty). Timestamps are UTC with
/// nanosecond precision; an offset in the input is normalised to UTC.
///
/// ```
/// use aether_core::Event;
/// use serde_json::json;
///
/// let mut event = Event::new("Deposited", "account-42", 1)
///     .with_data(json!({ "amount": 100 }).as_object().cloned().unwrap_or_default());
/// event.set_correlation_id("req-7");
///
/// let json = serde_json::to_string(&event)?;
/// let back: Event = serde_json::from_str(&json)?;
/// assert_eq!(back, event);
/// assert_eq!(back.correlation_id(), Some("req-7"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique id of this event (a UUID v4 when built with [`Event::new`]).
    pub id: String,
    /// What happened, for example `OrderPlaced`.
    pub event_type: String,
    /// The type of the actor this event belongs to; `None` for an untyped actor (raw events,
    /// and every event written before actor types existed). Together with
    /// [`actor_id`](Self::actor_id) it names the actor ([`Event::actor_key`]): two actors of
    /// different types may share an id. Omitted from the JSON form when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<String>,
    /// The actor (aggregate) this event belongs to, within its type.
    pub actor_id: String,
    /// Position of this event in the actor's history; starts at 1 and strictly increases.
    pub version: u64,
    /// The payload: always a JSON object (absent or `null` in the input reads as empty).
    #[serde(default, deserialize_with = "object_or_null")]
    pub data: EventData,
    /// When the event was created, UTC, nanosecond precision.
    pub timestamp: DateTime<Utc>,
    /// Correlation, causation, user and tracing ids, and any other string annotations.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "map_or_null"
    )]
    pub metadata: Metadata,
}

fn object_or_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<EventData, D::Error> {
    Ok(Option::<EventData>::deserialize(d)?.unwrap_or_default())
}

fn map_or_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Metadata, D::Error> {
    Ok(Option::<Metadata>::deserialize(d)?.unwrap_or_default())
}

impl Event {
    /// A new event with a fresh UUID v4 id, the current time, empty data and no metadata.
    pub fn new(event_type: impl Into<String>, actor_id: impl Into<String>, version: u64) -> Self {
        Self {
            id: Uuid::new_v4().to_string(),
            event_type: event_type.into(),
            actor_type: None,
            actor_id: actor_id.into(),
            version,
            data: EventData::new(),
            timestamp: Utc::now(),
            metadata: Metadata::new(),
        }
    }

    /// The final event of a retired actor of type `actor_type`, at `version` (the one after its
    /// last): see [`EVENT_TYPE_RETIRED`].
    pub fn retirement(
        actor_type: impl Into<String>,
        actor_id: impl Into<String>,
        version: u64,
    ) -> Self {
        Self::new(EVENT_TYPE_RETIRED, actor_id, version).with_actor_type(actor_type)
    }

    /// Whether this is the final event of a retired actor ([`EVENT_TYPE_RETIRED`]).
    pub fn is_retirement(&self) -> bool {
        self.event_type == EVENT_TYPE_RETIRED
    }

    /// Sets the actor type (see [`actor_type`](Self::actor_type)).
    pub fn with_actor_type(mut self, actor_type: impl Into<String>) -> Self {
        self.actor_type = Some(actor_type.into());
        self
    }

    /// The actor this event belongs to: its type and id.
    pub fn actor_key(&self) -> ActorKey<'_> {
        ActorKey {
            actor_type: self.actor_type.as_deref(),
            actor_id: &self.actor_id,
        }
    }

    /// Replaces the payload.
    pub fn with_data(mut self, data: EventData) -> Self {
        self.data = data;
        self
    }

    /// Sets one payload field.
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Sets one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Copies every metadata entry of `source` into this event (entries already here with the
    /// same key are overwritten), so a chain of events keeps its correlation and tracing ids.
    ///
    /// To record that `source` caused this event, also call
    /// [`set_causation_id`](Self::set_causation_id) with `source.id`.
    pub fn with_metadata_from(mut self, source: &Event) -> Self {
        self.copy_metadata_from(source);
        self
    }

    /// In-place form of [`with_metadata_from`](Self::with_metadata_from).
    pub fn copy_metadata_from(&mut self, source: &Event) {
        for (k, v) in &source.metadata {
            self.metadata.insert(k.clone(), v.clone());
        }
    }

    /// Reads one metadata entry.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Sets one metadata entry.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata_value(METADATA_CORRELATION_ID)
    }
    /// Sets the correlation id.
    pub fn set_correlation_id(&mut self, id: impl Into<String>) {
        self.set_metadata(METADATA_CORRELATION_ID, id);
    }
    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&str> {
        self.metadata_value(METADATA_CAUSATION_ID)
    }
    /// Sets the causation id.
    pub fn set_causation_id(&mut self, id: impl Into<String>) {
        self.set_metadata(METADATA_CAUSATION_ID, id);
    }
    /// The user id, if set.
    pub fn user_id(&self) -> Option<&str> {
        self.metadata_value(METADATA_USER_ID)
    }
    /// Sets the user id.
    pub fn set_user_id(&mut self, id: impl Into<String>) {
        self.set_metadata(METADATA_USER_ID, id);
    }
    /// The trace id, if set.
    pub fn trace_id(&self) -> Option<&str> {
        self.metadata_value(METADATA_TRACE_ID)
    }
    /// Sets the trace id.
    pub fn set_trace_id(&mut self, id: impl Into<String>) {
        self.set_metadata(METADATA_TRACE_ID, id);
    }
    /// The span id, if set.
    pub fn span_id(&self) -> Option<&str> {
        self.metadata_value(METADATA_SPAN_ID)
    }
    /// Sets the span id.
    pub fn set_span_id(&mut self, id: impl Into<String>) {
        self.set_metadata(METADATA_SPAN_ID, id);
    }

    /// Checks what every store requires of an event before saving it: a non-empty actor id and
    /// event type, a valid actor type when one is set
    /// ([`validate_actor_type`](crate::validate_actor_type)), a version of at least 1, and no
    /// personal field in clear in its data ([`personal`](crate::personal)).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.actor_id.is_empty() {
            return Err(Error::invalid("event actor id must not be empty"));
        }
        if let Some(t) = &self.actor_type {
            validate_actor_type(t)?;
        }
        if self.event_type.is_empty() {
            return Err(Error::invalid("event type must not be empty"));
        }
        if self.version == 0 {
            return Err(Error::invalid(format!(
                "event version must be at least 1 (actor {:?})",
                self.actor_id
            )));
        }
        if crate::personal::holds_clear_personal(&self.data) {
            return Err(Error::invalid(format!(
                "event {} of actor {:?} holds a personal field in clear (or a malformed one): \
                 save it through a store that seals personal data (aether-privacy's PrivateStore)",
                self.event_type, self.actor_id
            )));
        }
        Ok(())
    }

    /// Encodes the event as JSON bytes.
    ///
    /// # Errors
    /// [`Error::Encoding`] (cannot happen for events built through this API, since every field
    /// is JSON-representable, but a store should not assume it).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Encoding(e.to_string()))
    }

    /// Decodes an event from JSON bytes.
    ///
    /// # Errors
    /// [`Error::Decoding`] with the parser's message, for any input that is not an event.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Decoding(e.to_string()))
    }

    /// The `EventStored` notification for this (just persisted) event.
    ///
    /// It carries the stored event's actor id and version; its `data` holds `eventId`,
    /// `actorId`, `version` and `timestamp`, and it copies the stored event's metadata so that
    /// correlation and tracing ids follow the notification.
    pub fn event_stored(&self) -> Event {
        let mut data = EventData::new();
        data.insert("eventId".into(), Value::String(self.id.clone()));
        data.insert("actorId".into(), Value::String(self.actor_id.clone()));
        data.insert("version".into(), Value::from(self.version));
        data.insert(
            "timestamp".into(),
            serde_json::to_value(self.timestamp).unwrap_or(Value::Null),
        );
        let mut note = Event::new(EVENT_TYPE_EVENT_STORED, self.actor_id.clone(), self.version)
            .with_data(data)
            .with_metadata_from(self);
        note.actor_type.clone_from(&self.actor_type);
        note.set_causation_id(self.id.clone());
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};
    use serde_json::json;

    fn obj(v: Value) -> EventData {
        v.as_object().cloned().expect("object literal")
    }

    #[test]
    fn json_field_names_are_camel_case_and_metadata_is_omitted_when_empty() {
        let e = Event::new("OrderPlaced", "order-1", 3).with_field("total", 12);
        let v: Value = serde_json::to_value(&e).unwrap();
        let o = v.as_object().unwrap();
        let mut keys: Vec<_> = o.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["actorId", "data", "eventType", "id", "timestamp", "version"]
        );
        let e = e.with_metadata("k", "v");
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["metadata"], json!({"k": "v"}));
    }

    #[test]
    fn new_fills_a_uuid_and_a_recent_timestamp() {
        let before = Utc::now();
        let a = Event::new("T", "a", 1);
        let b = Event::new("T", "a", 1);
        assert_ne!(a.id, b.id);
        assert!(Uuid::parse_str(&a.id).is_ok());
        assert!(a.timestamp >= before && a.timestamp <= Utc::now());
    }

    #[test]
    fn absent_or_null_data_and_metadata_read_as_empty() {
        let absent = r#"{"id":"1","eventType":"T","actorId":"a","version":1,"timestamp":"2024-01-01T00:00:00Z"}"#;
        let e: Event = serde_json::from_str(absent).unwrap();
        assert!(e.data.is_empty() && e.metadata.is_empty());
        let null = r#"{"id":"1","eventType":"T","actorId":"a","version":1,"data":null,"metadata":null,"timestamp":"2024-01-01T00:00:00Z"}"#;
        let e: Event = serde_json::from_str(null).unwrap();
        assert!(e.data.is_empty() && e.metadata.is_empty());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["data"], json!({}));
    }

    #[test]
    fn data_must_be_an_object() {
        let bad = r#"{"id":"1","eventType":"T","actorId":"a","version":1,"data":[1,2],"timestamp":"2024-01-01T00:00:00Z"}"#;
        assert!(matches!(
            Event::from_json_bytes(bad.as_bytes()),
            Err(Error::Decoding(_))
        ));
    }

    #[test]
    fn nanoseconds_survive_a_round_trip_and_offsets_are_normalised() {
        let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        let mut e = Event::new("T", "a", 1);
        e.timestamp = ts;
        let back = Event::from_json_bytes(&e.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back.timestamp, ts);
        assert_eq!(back.timestamp.timestamp_subsec_nanos(), 123_456_789);

        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let local = plus2.timestamp_opt(1_700_000_000, 5).unwrap();
        let json = format!(
            r#"{{"id":"1","eventType":"T","actorId":"a","version":1,"timestamp":"{}"}}"#,
            local.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
        );
        let e = Event::from_json_bytes(json.as_bytes()).unwrap();
        assert_eq!(e.timestamp, Utc.timestamp_opt(1_700_000_000, 5).unwrap());
        let out = serde_json::to_value(&e).unwrap();
        assert!(out["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn large_versions_unicode_control_characters_nested_and_big_payloads() {
        let big = "x".repeat(100 * 1024);
        let e = Event::new("Ünïcødé ✓", "актор/😀", u64::MAX)
            .with_data(obj(json!({
                "ctrl": "a\u{0000}b\u{001f}c\n\t\"\\",
                "nested": {"deep": {"list": [1, 2.5, null, true, {"x": "y"}]}},
                "big": big,
                "max": u64::MAX,
                "neg": i64::MIN,
            })))
            .with_metadata("ключ", "значение\u{0007}");
        let bytes = e.to_json_bytes().unwrap();
        assert!(bytes.len() > 100 * 1024);
        let back = Event::from_json_bytes(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.version, u64::MAX);
    }

    #[test]
    fn validate_rejects_empty_ids_and_version_zero() {
        assert!(Event::new("T", "a", 1).validate().is_ok());
        for e in [
            Event::new("T", "", 1),
            Event::new("", "a", 1),
            Event::new("T", "a", 0),
        ] {
            assert!(matches!(e.validate(), Err(Error::InvalidInput(_))));
        }
    }

    #[test]
    fn metadata_helpers_and_copy() {
        let mut cause = Event::new("A", "x", 1);
        cause.set_correlation_id("c");
        cause.set_causation_id("z");
        cause.set_user_id("u");
        cause.set_trace_id("t");
        cause.set_span_id("s");
        assert_eq!(cause.correlation_id(), Some("c"));
        assert_eq!(cause.causation_id(), Some("z"));
        assert_eq!(cause.user_id(), Some("u"));
        assert_eq!(cause.trace_id(), Some("t"));
        assert_eq!(cause.span_id(), Some("s"));
        let mut effect = Event::new("B", "y", 1)
            .with_metadata(METADATA_USER_ID, "old")
            .with_metadata("own", "kept")
            .with_metadata_from(&cause);
        effect.set_causation_id(cause.id.clone());
        assert_eq!(effect.user_id(), Some("u"));
        assert_eq!(effect.metadata_value("own"), Some("kept"));
        assert_eq!(effect.causation_id(), Some(cause.id.as_str()));
        assert_eq!(effect.trace_id(), Some("t"));
        assert_eq!(Event::new("C", "z", 1).correlation_id(), None);
    }

    #[test]
    fn event_stored_notification_describes_the_stored_event() {
        let stored = Event::new("Deposited", "acc", 7).with_metadata(METADATA_TRACE_ID, "tr");
        let note = stored.event_stored();
        assert_eq!(note.event_type, EVENT_TYPE_EVENT_STORED);
        assert_eq!(note.actor_id, "acc");
        assert_eq!(note.version, 7);
        assert_eq!(note.data["eventId"], json!(stored.id));
        assert_eq!(note.data["actorId"], json!("acc"));
        assert_eq!(note.data["version"], json!(7));
        assert_eq!(note.trace_id(), Some("tr"));
        assert_eq!(note.causation_id(), Some(stored.id.as_str()));
        let ts: DateTime<Utc> = serde_json::from_value(note.data["timestamp"].clone()).unwrap();
        assert_eq!(ts, stored.timestamp);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1.0e12f64..1.0e12).prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(".*", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_events_round_trip_losslessly(
            event_type in ".+",
            actor_id in ".+",
            version in 1u64..,
            secs in -62_000_000_000i64..250_000_000_000i64,
            nanos in 0u32..1_000_000_000,
            data in proptest::collection::btree_map(".*", json_value(), 0..6),
            metadata in proptest::collection::btree_map(".*", ".*", 0..4),
        ) {
            let mut e = Event::new(event_type, actor_id, version)
                .with_data(data.into_iter().collect());
            e.metadata = metadata;
            e.timestamp = Utc.timestamp_opt(secs, nanos).unwrap();
            let back = Event::from_json_bytes(&e.to_json_bytes().unwrap()).unwrap();
            proptest::prop_assert_eq!(back, e);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Event::from_json_bytes(&bytes);
        }
    }
}
