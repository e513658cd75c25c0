//! The stored-message codec for the fuzz targets (feature `fuzzing`).
//!
//! Reads of the JetStream store decode whatever bytes the stream holds, and anyone with access
//! to the stream can write there, so the decoder is fuzzed. Reaching it through the store
//! would need a NATS server for every input; these thin wrappers give the fuzzer the same
//! functions the store calls, and nothing else.

use aether_core::{Event, ReplayError, Result};

use super::codec;

/// What the store would publish for a save of `events`, as far as readers look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The message payload.
    pub payload: Vec<u8>,
    /// The last version, read back from the headers the way the store reads it.
    pub header_last_version: Option<u64>,
    /// The last event id, read back from the headers the way the store reads it.
    pub header_last_event_id: Option<String>,
}

/// Decodes one stored message of `actor_id` exactly as the store's reads do.
///
/// # Errors
/// The [`ReplayError`] the store would report for this message.
pub fn decode_message(
    actor_id: &str,
    sequence: u64,
    payload: &[u8],
) -> std::result::Result<Vec<Event>, ReplayError> {
    codec::decode_message(codec::Owner::untyped(actor_id), sequence, payload)
}

/// Encodes a save of `events` exactly as the store's writes do.
///
/// # Errors
/// What the store's encoder reports (an empty run, an unencodable event).
pub fn encode_message(events: &[Event]) -> Result<EncodedMessage> {
    let encoded = codec::encode_events(events)?;
    Ok(EncodedMessage {
        payload: encoded.payload.to_vec(),
        header_last_version: codec::header_last_version(&encoded.headers),
        header_last_event_id: codec::header_last_event_id(&encoded.headers),
    })
}
