//! How events are laid out in JetStream messages.
//!
//! One message holds one save: a single event is its JSON object; a batch from
//! `save_events` is a JSON array of event objects, so that the whole batch lands in the stream
//! in one atomic append (see the module docs of `jetstream` for why). A header repeats the last
//! version so the latest version can be read without parsing the payload; a batch also carries
//! its first version, its count and its last event's id.

use async_nats::HeaderMap;
use bytes::Bytes;

use aether_core::{Error, Event, ReplayError, Result};

/// Header with the version of the last event in the message.
pub(crate) const HEADER_LAST_VERSION: &str = "Aether-Version";
/// Header with the version of the first event in the message.
pub(crate) const HEADER_FIRST_VERSION: &str = "Aether-First-Version";
/// Header with the id of the last event in the message: lets a writer whose publish went
/// unanswered recognise its own message.
pub(crate) const HEADER_LAST_EVENT_ID: &str = "Aether-Last-Event-Id";
/// Header with the number of events in the message.
pub(crate) const HEADER_COUNT: &str = "Aether-Count";
/// Header naming the transaction a message was committed in (every message of one).
pub(crate) const HEADER_TRANSACTION: &str = "Aether-Transaction";

/// An encoded save, ready to publish.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) payload: Bytes,
    pub(crate) headers: HeaderMap,
}

/// Encodes a non-empty, already validated run of events of one actor.
pub(crate) fn encode_events(events: &[Event]) -> Result<Encoded> {
    let (first, last) = match (events.first(), events.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(Error::invalid("nothing to encode")),
    };
    let payload = if events.len() == 1 {
        first.to_json_bytes()?
    } else {
        serde_json::to_vec(events).map_err(|e| Error::Encoding(e.to_string()))?
    };
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_LAST_VERSION, last.version.to_string().as_str());
    // A message of one event needs nothing more: its first version is its last, its count is
    // one (what readers assume when the headers are absent), and the id is in the payload.
    // Each header costs the client and the server work on every save.
    if events.len() > 1 {
        headers.insert(HEADER_FIRST_VERSION, first.version.to_string().as_str());
        headers.insert(HEADER_COUNT, events.len().to_string().as_str());
        // Ids are free-form; only header-safe ones travel in a header (readers fall back to
        // the payload).
        if !last.id.is_empty() && last.id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            headers.insert(HEADER_LAST_EVENT_ID, last.id.as_str());
        }
    }
    Ok(Encoded {
        payload: Bytes::from(payload),
        headers,
    })
}

/// Size of a message on the wire as the server counts it against `max_payload`: the payload
/// plus the serialized header block.
pub(crate) fn wire_size(headers: &HeaderMap, payload_len: usize) -> usize {
    let mut len = 0;
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            len += name.len() + 2 + v.as_str().len() + 2;
        }
    }
    // "NATS/1.0\r\n" ... "\r\n", plus headers the client adds (expected sequence) with slack.
    let expected_seq = "Nats-Expected-Last-Subject-Sequence: 18446744073709551615\r\n".len();
    payload_len + len + 12 + expected_seq
}

/// Rejects a message the server would refuse, before anything is sent.
pub(crate) fn check_size(encoded: &Encoded, max_payload: usize) -> Result<()> {
    let size = wire_size(&encoded.headers, encoded.payload.len());
    if max_payload > 0 && size > max_payload {
        return Err(Error::PayloadTooLarge {
            size,
            limit: max_payload,
        });
    }
    Ok(())
}

/// Reads the last version of a stored message from its header, if present and sound.
pub(crate) fn header_last_version(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(HEADER_LAST_VERSION)
        .and_then(|v| v.as_str().trim().parse().ok())
}

/// Reads the id of the last event of a stored message from its header.
pub(crate) fn header_last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HEADER_LAST_EVENT_ID)
        .map(|v| v.as_str().to_string())
}

/// Whose subject a message was read from: the actor id, the type the subject names (`None` for
/// an untyped subject) and the type reported for events of an untyped subject that carry none
/// (the store's legacy actor type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner<'a> {
    pub(crate) actor_id: &'a str,
    pub(crate) subject_type: Option<&'a str>,
    pub(crate) legacy_type: Option<&'a str>,
}

#[cfg(any(test, feature = "fuzzing"))]
impl<'a> Owner<'a> {
    /// The owner of an untyped subject of a store without a legacy type.
    pub(crate) fn untyped(actor_id: &'a str) -> Self {
        Self {
            actor_id,
            subject_type: None,
            legacy_type: None,
        }
    }
}

/// Decodes the events of one stored message of `owner`'s subject. Events that carry no actor
/// type get the subject's (or, on an untyped subject, the legacy type).
///
/// # Errors
/// A [`ReplayError`] with the message's sequence when the payload is not an event or an array
/// of events of the owner (its id, and its type on a typed subject) with strictly increasing
/// versions.
pub(crate) fn decode_message(
    owner: Owner<'_>,
    sequence: u64,
    payload: &[u8],
) -> std::result::Result<Vec<Event>, ReplayError> {
    let fail = |error: String| ReplayError {
        sequence,
        raw: payload.to_vec(),
        error,
    };
    let first_byte = payload.iter().find(|b| !b.is_ascii_whitespace());
    let mut events = if first_byte == Some(&b'[') {
        let events: Vec<Event> =
            serde_json::from_slice(payload).map_err(|e| fail(e.to_string()))?;
        if events.is_empty() {
            return Err(fail("empty batch".into()));
        }
        events
    } else {
        vec![Event::from_json_bytes(payload).map_err(|e| fail(e.to_string()))?]
    };
    let mut prev = 0;
    for e in &mut events {
        // The subject already names the actor; a message whose events name another actor was
        // not written by this store and must not leak into this actor's history.
        if e.actor_id != owner.actor_id {
            return Err(fail(format!(
                "event {} belongs to actor {:?}, found on the subject of {:?}",
                e.id, e.actor_id, owner.actor_id
            )));
        }
        match (owner.subject_type, e.actor_type.as_deref()) {
            (Some(t), Some(u)) if t != u => {
                return Err(fail(format!(
                    "event {} is of actor type {u:?}, found on a subject of type {t:?}",
                    e.id
                )))
            }
            (Some(t), None) => e.actor_type = Some(t.to_string()),
            (None, None) => e.actor_type = owner.legacy_type.map(str::to_string),
            _ => {}
        }
        if e.version <= prev {
            return Err(fail(format!(
                "versions do not increase within the message ({} after {prev})",
                e.version
            )));
        }
        prev = e.version;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch_round_trip() {
        let one = [Event::new("T", "a.b", 3)];
        let enc = encode_events(&one).unwrap();
        assert_eq!(enc.payload.first(), Some(&b'{'));
        assert_eq!(header_last_version(&enc.headers), Some(3));
        assert_eq!(
            decode_message(Owner::untyped("a.b"), 7, &enc.payload).unwrap(),
            one
        );

        let batch = [
            Event::new("T", "a.b", 4),
            Event::new("T", "a.b", 5),
            Event::new("U", "a.b", 9),
        ];
        let enc = encode_events(&batch).unwrap();
        assert_eq!(enc.payload.first(), Some(&b'['));
        assert_eq!(header_last_version(&enc.headers), Some(9));
        assert_eq!(
            decode_message(Owner::untyped("a.b"), 8, &enc.payload).unwrap(),
            batch
        );
        assert!(encode_events(&[]).is_err());
    }

    #[test]
    fn malformed_payloads_are_reported_with_their_sequence() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"[{\"oops\":1}]",
            b"\xff\xfe",
        ] {
            let err = decode_message(Owner::untyped("a"), 42, bad).unwrap_err();
            assert_eq!(err.sequence, 42);
            assert_eq!(err.raw, bad);
            assert!(!err.error.is_empty());
        }
        let other = Event::new("T", "b", 1).to_json_bytes().unwrap();
        assert!(decode_message(Owner::untyped("a"), 1, &other)
            .unwrap_err()
            .error
            .contains("belongs to actor"));
        let unordered =
            serde_json::to_vec(&[Event::new("T", "a", 2), Event::new("T", "a", 2)]).unwrap();
        assert!(decode_message(Owner::untyped("a"), 1, &unordered).is_err());
    }

    #[test]
    fn the_subject_gives_events_their_type() {
        let typed = Owner {
            actor_id: "a",
            subject_type: Some("show"),
            legacy_type: None,
        };
        let bare = encode_events(&[Event::new("T", "a", 1)]).unwrap().payload;
        let got = decode_message(typed, 1, &bare).unwrap();
        assert_eq!(got[0].actor_type.as_deref(), Some("show"));
        let other = encode_events(&[Event::new("T", "a", 1).with_actor_type("customer")])
            .unwrap()
            .payload;
        assert!(decode_message(typed, 1, &other)
            .unwrap_err()
            .error
            .contains("actor type"));
        let legacy = Owner {
            actor_id: "a",
            subject_type: None,
            legacy_type: Some("account"),
        };
        let got = decode_message(legacy, 1, &bare).unwrap();
        assert_eq!(got[0].actor_type.as_deref(), Some("account"));
        // A stored type on an untyped subject is kept as stored.
        let got = decode_message(legacy, 1, &other).unwrap();
        assert_eq!(got[0].actor_type.as_deref(), Some("customer"));
    }

    #[test]
    fn size_check_counts_headers() {
        let enc =
            encode_events(&[Event::new("T", "a", 1).with_field("x", "y".repeat(500))]).unwrap();
        let size = wire_size(&enc.headers, enc.payload.len());
        assert!(size > enc.payload.len());
        assert!(check_size(&enc, size).is_ok());
        match check_size(&enc, size - 1) {
            Err(Error::PayloadTooLarge { size: s, limit }) => {
                assert_eq!((s, limit), (size, size - 1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
