//! User strings as NATS subject tokens: the two codecs, stream names, and the length policy.
//!
//! A NATS subject is a dot-separated list of tokens, and `*` and `>` are wildcards, so a user
//! string used verbatim in a subject could address someone else's messages (`a.*` matches
//! `a.b`), add tokens, or be refused (whitespace, empty tokens). Every user string therefore
//! goes through one of two injective codecs whose output holds no dot, no wildcard and no
//! whitespace; their encoded forms are on the wire and in stored streams, so they never change.
//!
//! # Namespaces: percent-encoding, token by token (the bus)
//! An event of namespace `ns` travels on `<prefix>.<encoded ns>`. The namespace is split into
//! its `.`-separated tokens and each token is encoded on its own:
//!
//! - ASCII letters, digits, `-` and `_` stand for themselves;
//! - every other byte of the token's UTF-8 form (including `%`, `*`, `>`, whitespace, control
//!   characters and every byte of a non-ASCII character) becomes `%XX`, two upper-case hex
//!   digits.
//!
//! So an encoded token contains only `[A-Za-z0-9_%-]`. [`decode_namespace`] inverts it,
//! rejecting anything that is not the canonical form. `tenant-1.orders` stays
//! `tenant-1.orders` (readable, and NATS permissions can be written on it); `order*` becomes
//! `order%2A`, a literal token that matches only itself. In a subscription pattern
//! ([`pattern_subject`]) a token that is exactly `*` or `>` becomes NATS's own wildcard.
//!
//! # Actor ids: base64url, one token (the event store)
//! An actor id becomes exactly one token, base64url without padding (RFC 4648 §5) of its UTF-8
//! bytes ([`encode_actor_id`]): the alphabet is `A-Z a-z 0-9 - _`. Unlike namespaces, actor ids
//! have no structure that permissions need to see, and one token per id keeps every actor's
//! history on its own subject whatever the id holds. [`decode_actor_id`] accepts only the
//! canonical form.
//!
//! # Stream names
//! [`sanitize_stream_name`] maps a user string onto the characters JetStream allows in a stream
//! name (not injective; see there), and names are limited to [`MAX_STREAM_NAME_BYTES`].
//!
//! # Length policy
//! Every subject built from user strings is at most [`MAX_SUBJECT_BYTES`] (2048) bytes. A
//! subject travels in the protocol line of every publish and subscription, which the server
//! limits (`max_control_line`, 4 KiB by default) and answers by closing the whole connection when
//! exceeded; half of it leaves room for the JetStream API prefix, stream name and reply subject
//! that share the line. Anything longer is refused up front with
//! [`Error::InvalidInput`] ([`check_subject_length`]). The
//! limit is on the encoded subject, not the input (percent-encoding triples non-ASCII bytes),
//! except for actor ids: those are capped on input at [`MAX_ACTOR_ID_BYTES`], chosen so that the
//! subject of any actor in any stream stays within [`MAX_SUBJECT_BYTES`], so whether an id is
//! accepted does not depend on the stream it is used with.

use aether_core::{validate_namespace, validate_pattern, Error, Result};
use base64::Engine as _;

const SINGLE: &str = "*";
/// Longest subject built from user strings (see the length policy in the
/// [`subject`](crate::subject) module).
pub const MAX_SUBJECT_BYTES: usize = 2048;
/// Longest actor id accepted, in UTF-8 bytes. Its encoding (at most 1366 bytes), after the longest
/// stream name and a kind token, stays within [`MAX_SUBJECT_BYTES`].
pub const MAX_ACTOR_ID_BYTES: usize = 1024;
/// Longest stream name: the server stores each stream in a directory named after it, and file
/// names are limited to 255 bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 255;
const TAIL: &str = ">";

// The actor-id cap is derived from the subject cap: `<stream>.snapshots.<encoded id>`.
const _: () = assert!(
    MAX_STREAM_NAME_BYTES + ".snapshots.".len() + MAX_ACTOR_ID_BYTES.div_ceil(3) * 4
        <= MAX_SUBJECT_BYTES
);

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Every byte but `A-Z a-z 0-9 - _` is escaped (`%XX`, upper-case hex).
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');

fn encode_token(token: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(token, ESCAPED));
}

fn decode_token(token: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(token)
        .decode_utf8()
        .ok()?;
    // Only the canonical form decodes, so decoding is the exact inverse of encoding: encoding
    // again must give the token back (no lower-case hex, no escaped plain byte, no raw byte
    // that needs escaping). A token never holds a `.` (namespaces are split on it before
    // encoding), so `%2E` would make `a%2Eb` a second subject of the namespace `a.b`; and a
    // lone `*` or `>` is a wildcard, never a publishable token.
    if decoded.is_empty() || decoded.contains('.') || decoded == "*" || decoded == ">" {
        return None;
    }
    let mut again = String::with_capacity(token.len());
    encode_token(&decoded, &mut again);
    (again == token).then(|| decoded.into_owned())
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
    check_subject_length(s, "namespace")
}

/// `subject` if it is at most [`MAX_SUBJECT_BYTES`] long.
///
/// # Errors
/// [`Error::InvalidInput`] naming `what` was too long.
pub fn check_subject_length(subject: String, what: &str) -> Result<String> {
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
    check_subject_length(s, "pattern")
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

/// Encodes an actor id into a single subject token (base64url of its UTF-8 bytes, no padding).
///
/// The result holds only `A-Z a-z 0-9 - _` and is never empty for a non-empty id. Use
/// [`decode_actor_id`] to get the id back.
///
/// ```
/// use aether_nats::subject::{decode_actor_id, encode_actor_id};
///
/// let token = encode_actor_id("orders.>");
/// assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
/// assert_eq!(decode_actor_id(&token).unwrap(), "orders.>");
/// ```
pub fn encode_actor_id(actor_id: &str) -> String {
    BASE64URL.encode(actor_id.as_bytes())
}

/// Base64url without padding (RFC 4648 §5); decoding refuses padding and non-zero trailing
/// bits, so every actor id has exactly one token.
const BASE64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Decodes a token made by [`encode_actor_id`] back into the actor id.
///
/// Decoding is strict: only the exact output of [`encode_actor_id`] is accepted (no padding, no
/// other alphabet, no non-zero trailing bits), so every actor id has exactly one token.
///
/// # Errors
/// [`Error::Decoding`] if `token` is not such an encoding or not UTF-8.
pub fn decode_actor_id(token: &str) -> Result<String> {
    let bad = || Error::Decoding(format!("{token:?} is not an encoded actor id"));
    let bytes = BASE64URL.decode(token).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Checks an actor id can be encoded under the length policy: non-empty and at most
/// [`MAX_ACTOR_ID_BYTES`] long. Any UTF-8 content is fine.
///
/// # Errors
/// [`Error::InvalidInput`] saying which rule the id breaks.
pub fn validate_actor_id(actor_id: &str) -> Result<()> {
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
/// assert_eq!(aether_nats::subject::sanitize_stream_name("tenant a.orders>*"), "tenant_a_orders__");
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

    #[test]
    fn actor_ids_match_rfc4648_base64url() {
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
    fn tricky_actor_ids_become_one_safe_token() {
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
    fn non_canonical_actor_tokens_are_rejected() {
        assert!(decode_actor_id("Zh").is_err()); // trailing bits set
        assert!(decode_actor_id("Z").is_err());
        assert!(decode_actor_id("Zg==").is_err());
        assert!(decode_actor_id("a.b").is_err());
        assert!(decode_actor_id("_w").is_err()); // 0xff is not UTF-8
    }

    #[test]
    fn actor_id_checks_and_stream_names() {
        assert!(validate_actor_id("").is_err());
        assert!(validate_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES)).is_ok());
        assert!(validate_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES + 1)).is_err());
        assert!(encode_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES)).len() <= 1366);
        assert_eq!(sanitize_stream_name("a b.c*d>e/f\\g"), "a_b_c_d_e_f_g");
        assert_eq!(sanitize_stream_name("ok-Name_1"), "ok-Name_1");
        assert_eq!(sanitize_stream_name("ключ"), "____");
    }

    proptest! {
        #[test]
        fn every_actor_id_round_trips(id in any::<String>()) {
            let t = encode_actor_id(&id);
            prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode_actor_id(&t).unwrap(), id);
        }

        #[test]
        fn distinct_actor_ids_get_distinct_tokens(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(encode_actor_id(&a), encode_actor_id(&b));
        }

        #[test]
        fn actor_token_garbage_never_panics(s in "[A-Za-z0-9_=.-]{0,12}") {
            if let Ok(id) = decode_actor_id(&s) {
                prop_assert_eq!(encode_actor_id(&id), s);
            }
        }
    }
}
