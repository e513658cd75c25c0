//! The bus's wire format: how an event and its origin (publisher id and per-namespace sequence
//! number, for echo suppression and gap detection) travel in one NATS message.
//!
//! Two forms are read; [`WireFormat`](crate::WireFormat) chooses which one is written:
//!
//! - **Framed** (the default): no headers; the payload is a fixed binary prefix followed by
//!   the event's JSON:
//!
//!   | bytes | content |
//!   |---|---|
//!   | 1 | marker `0xAE` (a JSON text can never start with it) |
//!   | 1 | frame version, `1` |
//!   | 1 | length `n` of the publisher id |
//!   | `n` | publisher id (ASCII) |
//!   | 8 | sequence number, big-endian |
//!   | rest | the event as JSON (`Event::to_json_bytes`) |
//!
//! - **Headers** (what every bus wrote before the framed form existed): the payload is the
//!   event's JSON alone, with the origin in the [`HEADER_PUBLISHER`] and [`HEADER_SEQUENCE`]
//!   headers.
//!
//! The framed form exists for speed: a header block costs the client a map with several small
//! allocations per message on both sides (freed on another thread than the one that made
//! them), and makes the server scan the headers of every message. A frame is one buffer.
//! Readers tell the two apart by the first byte, so durable bus streams written with headers
//! stay readable, and a rolling upgrade can keep writing headers until every reader knows
//! frames.

use aether_core::{Error, Event, Result};
use async_nats::HeaderMap;

use super::{HEADER_PUBLISHER, HEADER_SEQUENCE};

/// First byte of a framed message. Not a byte a JSON text may start with (JSON starts with
/// whitespace or a value's first character, all ASCII), so it tells the two forms apart.
pub(crate) const MARKER: u8 = 0xAE;
/// The frame version this bus writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Longest publisher id a frame can carry (its length is one byte).
pub(crate) const MAX_PUBLISHER_LEN: usize = u8::MAX as usize;

/// Where a message came from: the publishing bus and its sequence number in the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin<'a> {
    pub(crate) publisher: &'a str,
    pub(crate) seq: u64,
}

/// A received message taken apart: its origin, when it carries one, and the event's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    pub(crate) origin: Option<Origin<'a>>,
    pub(crate) json: &'a [u8],
}

/// Encodes `event` as a frame from `publisher` with sequence number `seq`.
///
/// # Errors
/// [`Error::Encoding`] when the event does not serialize; [`Error::InvalidInput`] for a
/// publisher id longer than [`MAX_PUBLISHER_LEN`] bytes.
pub(crate) fn encode(publisher: &str, seq: u64, event: &Event) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(prefix_len(publisher) + 256);
    write_prefix(&mut buf, publisher, seq)?;
    serde_json::to_writer(&mut buf, event).map_err(|e| Error::Encoding(e.to_string()))?;
    Ok(buf)
}

/// Bytes the frame adds in front of the JSON.
pub(crate) fn prefix_len(publisher: &str) -> usize {
    3 + publisher.len() + 8
}

fn write_prefix(buf: &mut Vec<u8>, publisher: &str, seq: u64) -> Result<()> {
    let len = u8::try_from(publisher.len()).map_err(|_| {
        Error::invalid(format!(
            "a bus publisher id is at most {MAX_PUBLISHER_LEN} bytes, got {}",
            publisher.len()
        ))
    })?;
    buf.extend_from_slice(&[MARKER, VERSION, len]);
    buf.extend_from_slice(publisher.as_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// Overwrites the sequence number of a frame made by [`encode`]: the number is assigned only
/// when the message is about to be sent, the JSON is encoded before that.
pub(crate) fn set_seq(frame: &mut [u8], publisher_len: usize, seq: u64) {
    let at = 3 + publisher_len;
    if let Some(slot) = frame.get_mut(at..at + 8) {
        slot.copy_from_slice(&seq.to_be_bytes());
    }
}

/// The header block of the legacy form for `publisher` and `seq`.
pub(crate) fn headers(publisher: &str, seq: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_PUBLISHER, publisher);
    headers.insert(HEADER_SEQUENCE, seq.to_string().as_str());
    headers
}

/// Bytes of the legacy header block, as NATS counts them against `max_payload`.
pub(crate) fn header_wire_len(publisher: &str, seq: u64) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
    b"NATS/1.0\r\n".len()
        + HEADER_PUBLISHER.len()
        + 2
        + publisher.len()
        + 2
        + HEADER_SEQUENCE.len()
        + 2
        + digits
        + 2
        + 2
}

/// Takes a received message apart, whichever form it is in.
///
/// # Errors
/// A description of what is wrong with a frame: truncated, an unknown frame version, a
/// publisher id that is not UTF-8. A message that is not a frame is never an error here (its
/// JSON is checked when it is decoded).
pub(crate) fn parse<'a>(
    payload: &'a [u8],
    headers: Option<&'a HeaderMap>,
) -> std::result::Result<Parts<'a>, String> {
    let Some((&MARKER, rest)) = payload.split_first() else {
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let origin = match (
            header(HEADER_PUBLISHER),
            header(HEADER_SEQUENCE).and_then(|s| s.parse().ok()),
        ) {
            (Some(publisher), Some(seq)) => Some(Origin { publisher, seq }),
            _ => None,
        };
        // A legacy message with a publisher but no readable sequence still identifies an
        // echo: keep the publisher with sequence 0, which gap detection ignores.
        let origin = origin
            .or_else(|| header(HEADER_PUBLISHER).map(|publisher| Origin { publisher, seq: 0 }));
        return Ok(Parts {
            origin,
            json: payload,
        });
    };
    let (&version, rest) = rest
        .split_first()
        .ok_or_else(|| "a frame without its version byte".to_string())?;
    if version != VERSION {
        return Err(format!(
            "a frame of version {version}; this bus reads version {VERSION}"
        ));
    }
    let (&len, rest) = rest
        .split_first()
        .ok_or_else(|| "a frame without its publisher length".to_string())?;
    let len = usize::from(len);
    if rest.len() < len + 8 {
        return Err(format!(
            "a frame of {} bytes, too short for its {len}-byte publisher id and sequence number",
            payload.len()
        ));
    }
    let (publisher, rest) = rest.split_at(len);
    let publisher = std::str::from_utf8(publisher)
        .map_err(|_| "a frame whose publisher id is not UTF-8".to_string())?;
    let (seq, json) = rest.split_at(8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(seq);
    Ok(Parts {
        origin: Some(Origin {
            publisher,
            seq: u64::from_be_bytes(bytes),
        }),
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let event = Event::new("Deposited", "acc-1", 7).with_field("amount", 3);
        let mut frame = encode("pub-1", 0, &event).unwrap();
        assert_eq!(frame[0], MARKER);
        set_seq(&mut frame, "pub-1".len(), u64::MAX - 1);
        let parts = parse(&frame, None).unwrap();
        assert_eq!(
            parts.origin,
            Some(Origin {
                publisher: "pub-1",
                seq: u64::MAX - 1
            })
        );
        assert_eq!(Event::from_json_bytes(parts.json).unwrap(), event);
        assert_eq!(frame.len(), prefix_len("pub-1") + parts.json.len());
    }

    #[test]
    fn legacy_messages_are_read_from_their_headers() {
        let event = Event::new("Deposited", "acc-1", 7);
        let json = event.to_json_bytes().unwrap();
        let h = headers("old-pub", 42);
        let parts = parse(&json, Some(&h)).unwrap();
        assert_eq!(
            parts.origin,
            Some(Origin {
                publisher: "old-pub",
                seq: 42
            })
        );
        assert_eq!(parts.json, &json[..]);
        // No headers at all: no origin, the JSON as it is.
        assert_eq!(parse(&json, None).unwrap().origin, None);
        let mut bad_seq = HeaderMap::new();
        bad_seq.insert(HEADER_PUBLISHER, "p");
        bad_seq.insert(HEADER_SEQUENCE, "x");
        assert_eq!(
            parse(&json, Some(&bad_seq)).unwrap().origin,
            Some(Origin {
                publisher: "p",
                seq: 0
            })
        );
    }

    #[test]
    fn damaged_frames_are_errors() {
        let frame = encode("pub-1", 3, &Event::new("T", "a", 1)).unwrap();
        for cut in 1..prefix_len("pub-1") {
            assert!(parse(&frame[..cut], None).is_err(), "cut at {cut}");
        }
        let mut other_version = frame.clone();
        other_version[1] = 2;
        assert!(parse(&other_version, None)
            .unwrap_err()
            .contains("version 2"));
        let mut not_utf8 = frame;
        not_utf8[3] = 0xff;
        assert!(parse(&not_utf8, None).is_err());
        assert!(encode(&"p".repeat(256), 1, &Event::new("T", "a", 1)).is_err());
    }

    #[test]
    fn header_length_matches_the_client() {
        for seq in [1u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let h = headers("0123456789abcdef", seq);
            let mut expected = b"NATS/1.0\r\n".len() + 2;
            for (k, v) in h.iter() {
                for v in v {
                    expected += k.to_string().len() + 2 + v.as_str().len() + 2;
                }
            }
            assert_eq!(header_wire_len("0123456789abcdef", seq), expected, "{seq}");
        }
    }
}
