//! Namespaces and namespace patterns as NATS subjects.
//!
//! An event of namespace `ns` travels on the subject `<prefix>.<encoded ns>`. The namespace is
//! split into its `.`-separated tokens and each token is encoded on its own:
//!
//! - ASCII letters, digits, `-` and `_` stand for themselves;
//! - every other byte of the token's UTF-8 form (including `%`, `*`, `>`, whitespace, control
//!   characters and every byte of a non-ASCII character) becomes `%XX`, two upper-case hex
//!   digits.
//!
//! So an encoded token contains only `[A-Za-z0-9_%-]`: it can never be a NATS wildcard, never
//! contain whitespace, and never split into more tokens. Encoding is injective (two different
//! namespaces never share a subject) and [`decode_namespace`] inverts it, rejecting anything
//! that is not the canonical form. `tenant-1.orders` stays `tenant-1.orders`; `order*` becomes
//! `order%2A`, a literal token that matches only itself.
//!
//! In a subscription pattern, a token that is exactly `*` or `>` becomes NATS's own `*` or `>`,
//! and every other token is encoded as above. A pattern without wildcard tokens therefore
//! subscribes to exactly one subject, the one its namespace publishes to.

use aether_core::{validate_namespace, validate_pattern, Error, Result};

const SINGLE: &str = "*";
/// Longest subject the bus publishes or subscribes to. A subject travels in the protocol line
/// of every publish and subscription, which the server limits (`max_control_line`, 4 KiB by
/// default) and answers by closing the whole connection when exceeded; longer namespaces are
/// refused up front instead.
const MAX_SUBJECT_BYTES: usize = 2048;
const TAIL: &str = ">";

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn encode_token(token: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in token.as_bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            let v = (hi << 4) | lo;
            // Only the canonical form decodes, so decoding is the exact inverse of encoding. A
            // token never holds a `.` (namespaces are split on it before encoding), so `%2E`
            // would make `a%2Eb` a second subject of the namespace `a.b`.
            if is_plain(v) || v == b'.' {
                return None;
            }
            out.push(v);
            i += 3;
        } else if is_plain(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    // A lone `*` or `>` is a wildcard, never a publishable namespace token, so no namespace
    // encodes to `%2A` or `%3E` alone.
    if out.is_empty() || out == b"*" || out == b">" {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Checks that `prefix` is a usable subject prefix: non-empty tokens of `[A-Za-z0-9_-]`
/// separated by `.` (no wildcards, no whitespace, nothing that needs encoding).
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::invalid("subject prefix must not be empty"));
    }
    for t in prefix.split('.') {
        if t.is_empty() || !t.bytes().all(is_plain) {
            return Err(Error::invalid(format!(
                "subject prefix {prefix:?}: every token must be non-empty and use only \
                 ASCII letters, digits, '-' and '_'"
            )));
        }
    }
    Ok(())
}

/// The subject events of `namespace` are published on.
///
/// # Errors
/// [`Error::InvalidInput`] when the namespace is not publishable (empty, empty tokens,
/// wildcard tokens; see [`validate_namespace`]) or its subject would be longer than 2048 bytes.
pub fn namespace_subject(prefix: &str, namespace: &str) -> Result<String> {
    validate_namespace(namespace)?;
    let mut s = String::with_capacity(prefix.len() + 1 + namespace.len() * 3);
    s.push_str(prefix);
    for t in namespace.split('.') {
        s.push('.');
        encode_token(t, &mut s);
    }
    check_length(s, "namespace")
}

fn check_length(subject: String, what: &str) -> Result<String> {
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(Error::invalid(format!(
            "{what} too long: its subject would be {} bytes; at most {MAX_SUBJECT_BYTES} are \
             accepted (the server limits the protocol line a subject travels in)",
            subject.len()
        )));
    }
    Ok(subject)
}

/// The subject (possibly with NATS wildcards) to subscribe to for `pattern`.
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed pattern (see [`validate_pattern`]) or one whose
/// subject would be longer than 2048 bytes.
pub fn pattern_subject(prefix: &str, pattern: &str) -> Result<String> {
    validate_pattern(pattern)?;
    let mut s = String::with_capacity(prefix.len() + 1 + pattern.len() * 3);
    s.push_str(prefix);
    for t in pattern.split('.') {
        s.push('.');
        if t == SINGLE || t == TAIL {
            s.push_str(t);
        } else {
            encode_token(t, &mut s);
        }
    }
    check_length(s, "pattern")
}

/// The namespace a subject carries, or `None` when the subject is not under `prefix` or is not
/// in the canonical encoding.
pub fn decode_namespace(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut out = String::with_capacity(rest.len());
    for (i, t) in rest.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&decode_token(t)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "aether.events";

    #[test]
    fn overlong_namespaces_and_patterns_are_refused() {
        let ok = "n".repeat(MAX_SUBJECT_BYTES - P.len() - 1);
        assert_eq!(namespace_subject(P, &ok).unwrap().len(), MAX_SUBJECT_BYTES);
        let long = "n".repeat(10 * 1024);
        for r in [namespace_subject(P, &long), pattern_subject(P, &long)] {
            assert!(matches!(r, Err(Error::InvalidInput(ref m)) if m.contains("too long")));
        }
        // Encoding triples non-ASCII bytes: the limit is on the subject, not the input.
        assert!(namespace_subject(P, &"é".repeat(400)).is_err());
    }

    /// NATS subject matching, written from the protocol's rules, to check what a subscription
    /// subject would really receive on the server.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, ft) in f.iter().enumerate() {
            match *ft {
                ">" => return s.len() > i,
                "*" => {
                    if i >= s.len() {
                        return false;
                    }
                }
                lit => {
                    if s.get(i) != Some(&lit) {
                        return false;
                    }
                }
            }
        }
        f.len() == s.len()
    }

    fn is_valid_nats_subject(s: &str) -> bool {
        !s.is_empty()
            && s.split('.').all(|t| !t.is_empty())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    #[test]
    fn only_subjects_of_publishable_namespaces_decode() {
        // Found by the `namespace_subject` fuzz target: `%2E` decoded to a dot, so
        // `a%2Eb` and `a.b` both read as the namespace `a.b`.
        assert_eq!(decode_namespace(P, "aether.events.a%2Eb"), None);
        assert_eq!(
            decode_namespace(P, "aether.events.a.b").as_deref(),
            Some("a.b")
        );
        for wildcard in ["aether.events.%2A", "aether.events.x.%3E"] {
            assert_eq!(decode_namespace(P, wildcard), None, "{wildcard}");
        }
        assert_eq!(
            decode_namespace(P, "aether.events.%2Ax").as_deref(),
            Some("*x")
        );
    }

    #[test]
    fn plain_namespaces_are_readable() {
        assert_eq!(
            namespace_subject(P, "orders").unwrap(),
            "aether.events.orders"
        );
        assert_eq!(
            namespace_subject(P, "tenant-1.orders_eu").unwrap(),
            "aether.events.tenant-1.orders_eu"
        );
    }

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(
            namespace_subject(P, "order*").unwrap(),
            "aether.events.order%2A"
        );
        assert_eq!(namespace_subject(P, "a>b").unwrap(), "aether.events.a%3Eb");
        assert_eq!(namespace_subject(P, "a b").unwrap(), "aether.events.a%20b");
        assert_eq!(namespace_subject(P, "50%").unwrap(), "aether.events.50%25");
        assert_eq!(
            namespace_subject(P, "a\tb\n").unwrap(),
            "aether.events.a%09b%0A"
        );
        assert_eq!(namespace_subject(P, "é").unwrap(), "aether.events.%C3%A9");
        assert_eq!(
            namespace_subject(P, "$SYS").unwrap(),
            "aether.events.%24SYS"
        );
    }

    #[test]
    fn wildcards_map_to_nats_wildcards() {
        assert_eq!(pattern_subject(P, "*").unwrap(), "aether.events.*");
        assert_eq!(pattern_subject(P, ">").unwrap(), "aether.events.>");
        assert_eq!(
            pattern_subject(P, "prod.*.x").unwrap(),
            "aether.events.prod.*.x"
        );
        assert_eq!(
            pattern_subject(P, "order*.>").unwrap(),
            "aether.events.order%2A.>"
        );
        assert!(pattern_subject(P, "a.>.b").is_err());
        assert!(pattern_subject(P, "").is_err());
    }

    #[test]
    fn unpublishable_namespaces_are_rejected() {
        for bad in ["", "a..b", ".a", "a.", "*", "a.>"] {
            assert!(namespace_subject(P, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_namespace_never_subscribes_to_another() {
        let names = [
            "orders",
            "orders.eu",
            "order*",
            "order>",
            "a b",
            "a",
            "a.b",
            "a%2Eb",
            "a.b c",
            "*x",
            ">x",
            "x*",
        ];
        for sub in names {
            let filter = pattern_subject(P, sub).unwrap();
            for publ in names {
                let subject = namespace_subject(P, publ).unwrap();
                assert_eq!(
                    nats_matches(&filter, &subject),
                    sub == publ,
                    "{sub:?} subscribing, {publ:?} publishing"
                );
            }
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("aether.events").is_ok());
        assert!(validate_prefix("app_1-x").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", "a.", "é"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoding_rejects_foreign_subjects() {
        assert_eq!(
            decode_namespace(P, "aether.events.a.b").as_deref(),
            Some("a.b")
        );
        assert_eq!(decode_namespace(P, "aether.eventsx.a"), None);
        assert_eq!(decode_namespace(P, "aether.events"), None);
        assert_eq!(decode_namespace(P, "other.a"), None);
        // Non-canonical forms: lower-case hex, escaped plain characters, bad escapes.
        assert_eq!(decode_namespace(P, "aether.events.a%2a"), None);
        assert_eq!(decode_namespace(P, "aether.events.%61"), None);
        assert_eq!(decode_namespace(P, "aether.events.a%2"), None);
        assert_eq!(decode_namespace(P, "aether.events.a*"), None);
        assert_eq!(decode_namespace(P, "aether.events.%FF"), None);
        assert_eq!(decode_namespace(P, "aether.events.a..b"), None);
    }

    fn namespace() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            "[a-z0-9_-]{1,6}",
            "\\PC{1,4}",
            "[ *>%$\t\u{0}\u{7f}é€😀]{1,3}",
            Just("*x".to_string()),
        ];
        proptest::collection::vec(token, 1..4)
            .prop_map(|v| v.join("."))
            .prop_filter("publishable", |n| validate_namespace(n).is_ok())
    }

    proptest! {
        #[test]
        fn encoding_round_trips(ns in namespace()) {
            let subject = namespace_subject(P, &ns).unwrap();
            prop_assert!(is_valid_nats_subject(&subject), "{:?}", subject);
            prop_assert_eq!(subject.split('.').count(), 2 + ns.split('.').count());
            prop_assert!(subject.split('.').all(|t| t != "*" && t != ">"));
            prop_assert_eq!(decode_namespace(P, &subject), Some(ns.clone()));
            // The namespace's own subscription subject is exactly its publish subject.
            prop_assert_eq!(pattern_subject(P, &ns).unwrap(), subject);
        }

        #[test]
        fn encoding_is_injective(a in namespace(), b in namespace()) {
            let sa = namespace_subject(P, &a).unwrap();
            let sb = namespace_subject(P, &b).unwrap();
            prop_assert_eq!(sa == sb, a == b);
            prop_assert_eq!(nats_matches(&pattern_subject(P, &a).unwrap(), &sb), a == b);
        }

        #[test]
        fn wildcard_subjects_agree_with_namespace_patterns(
            p in proptest::collection::vec(prop_oneof![Just("*".to_string()), "[ab*]{1,2}"], 1..4),
            tail in any::<bool>(),
            n in namespace(),
        ) {
            let mut pattern = p.join(".");
            if tail {
                pattern.push_str(".>");
            }
            let filter = pattern_subject(P, &pattern).unwrap();
            let subject = namespace_subject(P, &n).unwrap();
            prop_assert_eq!(
                nats_matches(&filter, &subject),
                aether_core::match_namespace_pattern(&pattern, &n),
                "{:?} vs {:?}", pattern, n
            );
        }
    }
}
