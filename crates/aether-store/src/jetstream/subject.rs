//! Subject-safe actor ids and stream names.
//!
//! A NATS subject is a dot-separated list of tokens, and `*` and `>` are wildcards, so an actor
//! id used verbatim as a subject token could address another actor's messages (`a.*` would match
//! `a.b`) or be rejected outright (spaces, empty tokens). Every actor id is therefore encoded
//! into exactly one token with base64url without padding (RFC 4648 §5): the alphabet is
//! `A-Z a-z 0-9 - _`, which holds no dot, no wildcard and no whitespace, and the encoding is
//! injective, so two different ids can never share a subject.

use aether_core::{Error, Result};

/// Longest actor id accepted, in UTF-8 bytes. The encoded id ends up in the subject of every
/// publish and read request, and NATS limits the protocol line a subject travels in (4 KiB by
/// default), so longer ids are rejected up front with a clear error.
pub const MAX_ACTOR_ID_BYTES: usize = 1024;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes an actor id into a single subject token (base64url of its UTF-8 bytes, no padding).
///
/// The result holds only `A-Z a-z 0-9 - _` and is never empty for a non-empty id. Use
/// [`decode_actor_id`] to get the id back.
///
/// ```
/// use aether_store::{decode_actor_id, encode_actor_id};
///
/// let token = encode_actor_id("orders.>");
/// assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
/// assert_eq!(decode_actor_id(&token).unwrap(), "orders.>");
/// ```
pub fn encode_actor_id(actor_id: &str) -> String {
    let bytes = actor_id.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        // 1 byte -> 2 chars, 2 bytes -> 3 chars, 3 bytes -> 4 chars.
        for s in &sextets[..chunk.len() + 1] {
            out.push(char::from(ALPHABET[*s as usize]));
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes a token made by [`encode_actor_id`] back into the actor id.
///
/// Decoding is strict: only the exact output of [`encode_actor_id`] is accepted (no padding, no
/// other alphabet, no non-zero trailing bits), so every actor id has exactly one token.
///
/// # Errors
/// [`Error::Decoding`] if `token` is not such an encoding or not UTF-8.
pub fn decode_actor_id(token: &str) -> Result<String> {
    let bad = || Error::Decoding(format!("{token:?} is not an encoded actor id"));
    let chars = token.as_bytes();
    if chars.len() % 4 == 1 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3 + 2);
    for chunk in chars.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c).ok_or_else(bad)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // Bits beyond the kept bytes must be zero, or two tokens would decode to one id.
        if bytes[keep..].iter().any(|b| *b != 0) {
            return Err(bad());
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Checks an actor id is usable with the JetStream store: non-empty and at most
/// [`MAX_ACTOR_ID_BYTES`] long. Any UTF-8 content is fine.
pub(crate) fn check_actor_id(actor_id: &str) -> Result<()> {
    if actor_id.is_empty() {
        return Err(Error::invalid("actor id must not be empty"));
    }
    if actor_id.len() > MAX_ACTOR_ID_BYTES {
        return Err(Error::invalid(format!(
            "actor id is {} bytes long; the JetStream store accepts at most {MAX_ACTOR_ID_BYTES}",
            actor_id.len()
        )));
    }
    Ok(())
}

/// Makes a string usable as (part of) a JetStream stream name: every character other than ASCII
/// letters, digits, `-` and `_` (spaces, dots, `*`, `>`, path separators, non-ASCII...) becomes
/// `_`.
///
/// Different inputs can give the same result (`a.b` and `a_b`), so pick namespaces that differ
/// in their letters and digits.
///
/// ```
/// assert_eq!(aether_store::sanitize_stream_name("tenant a.orders>*"), "tenant_a_orders__");
/// ```
pub fn sanitize_stream_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The subjects of one stream: events and snapshots under separate prefixes, one token per actor.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    events_prefix: String,
    snapshots_prefix: String,
}

impl Subjects {
    /// Subjects for `stream_name` (already sanitised): `<stream>.events.<actor>` and
    /// `<stream>.snapshots.<actor>`. Prefixing with the stream name keeps the subjects of
    /// different streams (namespaces) apart, which JetStream requires.
    pub(crate) fn new(stream_name: &str) -> Self {
        Self {
            events_prefix: format!("{stream_name}.events"),
            snapshots_prefix: format!("{stream_name}.snapshots"),
        }
    }

    /// The subjects the stream captures.
    pub(crate) fn stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.*", self.events_prefix),
            format!("{}.*", self.snapshots_prefix),
        ]
    }

    pub(crate) fn events(&self, actor_id: &str) -> String {
        format!("{}.{}", self.events_prefix, encode_actor_id(actor_id))
    }

    pub(crate) fn snapshots(&self, actor_id: &str) -> String {
        format!("{}.{}", self.snapshots_prefix, encode_actor_id(actor_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors_match_rfc4648_base64url() {
        for (plain, enc) in [
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
            ("\u{fb}\u{ff}", "w7vDvw"),
        ] {
            assert_eq!(encode_actor_id(plain), enc);
            assert_eq!(decode_actor_id(enc).unwrap(), plain);
        }
        assert_eq!(encode_actor_id(""), "");
    }

    #[test]
    fn tricky_ids_become_one_safe_token() {
        for id in [
            "a.b", "a.*", "a.>", "a b", "ключ", ">", "*", "a\tb\n", "..", "a\0b",
        ] {
            let t = encode_actor_id(id);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id:?} -> {t}"
            );
            assert_eq!(decode_actor_id(&t).unwrap(), id);
        }
    }

    #[test]
    fn non_canonical_tokens_are_rejected() {
        assert!(decode_actor_id("Zh").is_err()); // trailing bits set
        assert!(decode_actor_id("Z").is_err());
        assert!(decode_actor_id("Zg==").is_err());
        assert!(decode_actor_id("a.b").is_err());
        assert!(decode_actor_id("_w").is_err()); // 0xff is not UTF-8
    }

    #[test]
    fn actor_id_checks_and_stream_names() {
        assert!(check_actor_id("").is_err());
        assert!(check_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES)).is_ok());
        assert!(check_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES + 1)).is_err());
        assert_eq!(sanitize_stream_name("a b.c*d>e/f\\g"), "a_b_c_d_e_f_g");
        assert_eq!(sanitize_stream_name("ok-Name_1"), "ok-Name_1");
        assert_eq!(sanitize_stream_name("ключ"), "____");
        let s = Subjects::new("NS_EVENTS");
        assert_eq!(s.events("a.b"), "NS_EVENTS.events.YS5i");
        assert_eq!(s.snapshots("a.b"), "NS_EVENTS.snapshots.YS5i");
        assert_eq!(
            s.stream_subjects(),
            ["NS_EVENTS.events.*", "NS_EVENTS.snapshots.*"]
        );
    }

    proptest! {
        #[test]
        fn every_string_round_trips(id in any::<String>()) {
            let t = encode_actor_id(&id);
            prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode_actor_id(&t).unwrap(), id);
        }

        #[test]
        fn distinct_ids_get_distinct_tokens(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(encode_actor_id(&a), encode_actor_id(&b));
        }

        #[test]
        fn garbage_never_panics(s in "[A-Za-z0-9_=.-]{0,12}") {
            if let Ok(id) = decode_actor_id(&s) {
                prop_assert_eq!(encode_actor_id(&id), s);
            }
        }
    }
}
