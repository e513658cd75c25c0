//! Incoming-message bookkeeping for the fuzz targets (feature `fuzzing`).
//!
//! Every subscription takes each message it receives apart (a frame, or JSON with the
//! `Aether-Publisher` and `Aether-Seq` headers, which any client on the server can send) and
//! feeds the origin into a gap tracker. Both are crate-private and need a subscription around
//! them; these wrappers let the fuzzer drive the very same code with arbitrary input.

use aether_core::{Event, Result};
use async_nats::HeaderMap;

use super::bus;
use super::{HEADER_PUBLISHER, HEADER_SEQUENCE};

/// What a subscription reads from a message: its origin (publisher id and sequence number,
/// 0 when the headers carry none that parses) and the event's JSON.
pub type ParsedMessage = (Option<(String, u64)>, Vec<u8>);

/// Takes a received message apart as a subscription does: `payload`, and the values of the
/// `Aether-Publisher` and `Aether-Seq` headers when the message has them.
///
/// # Errors
/// What is wrong with a damaged frame.
pub fn parse_message(
    payload: &[u8],
    publisher_header: Option<&str>,
    seq_header: Option<&str>,
) -> std::result::Result<ParsedMessage, String> {
    let mut headers = HeaderMap::new();
    if let Some(p) = publisher_header {
        headers.insert(HEADER_PUBLISHER, p);
    }
    if let Some(s) = seq_header {
        headers.insert(HEADER_SEQUENCE, s);
    }
    let parts = bus::parse_message(payload, Some(&headers))?;
    Ok((
        parts.origin.map(|o| (o.publisher.to_string(), o.seq)),
        parts.json.to_vec(),
    ))
}

/// Encodes `event` as the framed wire form, as a bus with publisher id `publisher` does for
/// its `seq`-th message in a namespace.
///
/// # Errors
/// As the bus's publish: a publisher id over 255 bytes, an event that does not serialize.
pub fn encode_frame(publisher: &str, seq: u64, event: &Event) -> Result<Vec<u8>> {
    bus::encode_frame(publisher, seq, event)
}

/// Most (publisher, namespace) pairs one subscription remembers.
pub const MAX_TRACKED_SOURCES: usize = bus::MAX_TRACKED_SOURCES;

/// The gap tracker of one subscription.
#[derive(Debug, Default)]
pub struct GapTracker(bus::GapTracker);

impl GapTracker {
    /// Records `seq` from `publisher` in `namespace`; returns how many messages before it were
    /// never seen (what the subscription reports as lag).
    pub fn observe(&mut self, publisher: &str, namespace: &str, seq: u64) -> u64 {
        self.0.observe(publisher, namespace, seq)
    }

    /// How many (publisher, namespace) pairs are remembered.
    pub fn tracked(&self) -> usize {
        self.0.tracked()
    }
}
