//! W3C trace context: the trace a command belongs to, carried across nodes as a
//! `traceparent` header and recorded on the events it causes (`traceId`, `spanId`).
//!
//! Aether does not pick a tracing backend: an application hands the context of its current
//! request (from its own `traceparent` header, or from its OpenTelemetry span) to a command's
//! metadata, and Aether carries it to the owning node, puts it on that node's span and on the
//! stored events.

use serde::{Deserialize, Serialize};

/// The NATS header (and HTTP header) that carries a [`TraceContext`].
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A W3C trace context (version 00): a 16-byte trace id and the 8-byte id of the span that
/// asked, both lower-case hex, and whether the trace is sampled.
///
/// ```
/// use aether_core::TraceContext;
///
/// let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(ctx.span_id(), "00f067aa0ba902b7");
/// assert_eq!(ctx.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceContext {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    sampled: bool,
}

impl TraceContext {
    /// A context from its parts; `None` unless the trace id is 32 and the span id 16
    /// lower-case hex digits, not all zero (the W3C rules).
    pub fn new(trace_id: &str, span_id: &str, sampled: bool) -> Option<Self> {
        let ok = |s: &str, len: usize| {
            s.len() == len
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && s.bytes().any(|b| b != b'0')
        };
        (ok(trace_id, 32) && ok(span_id, 16)).then(|| Self {
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
            sampled,
        })
    }

    /// Reads a `traceparent` header value; `None` for anything malformed (a header from
    /// outside is never trusted further than that).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Self::new(trace, span, flags & 1 == 1)
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The id of the span that carried the context here (16 hex digits).
    pub fn span_id(&self) -> &str {
        &self.span_id
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

impl std::fmt::Display for TraceContext {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\u{e9}-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_context_round_trips_through_its_header() {
        let ctx = TraceContext::new(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            false,
        )
        .unwrap();
        assert_eq!(TraceContext::parse(&ctx.to_string()), Some(ctx));
    }
}
