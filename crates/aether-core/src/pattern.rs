//! NATS-style subject patterns for namespaces and actor ids.
//!
//! Names are split into tokens on `.`. In a pattern, a token that is exactly `*` matches exactly
//! one token, and a token that is exactly `>` matches one or more trailing tokens and is only
//! valid as the last token. Any other token (including one that merely contains `*` or `>`, such
//! as `order*`) matches itself literally.
//!
//! Wildcard subscriptions cross namespace boundaries: they are meant for trusted, cross-cutting
//! consumers (audit, metrics, logging), not for tenant-facing code.

use crate::error::{Error, Result};

/// Token that matches exactly one token.
pub(crate) const SINGLE_TOKEN_WILDCARD: &str = "*";
/// Token that matches one or more trailing tokens.
pub(crate) const TAIL_WILDCARD: &str = ">";

/// Whether `namespace` matches `pattern` (see [`validate_pattern`] for the rules).
///
/// An empty pattern matches nothing, a malformed one (`>` before the end) matches nothing.
///
/// ```
/// use aether_core::match_namespace_pattern;
///
/// assert!(match_namespace_pattern("orders", "orders"));
/// assert!(match_namespace_pattern("prod.*", "prod.orders"));
/// assert!(!match_namespace_pattern("prod.*", "prod.orders.eu"));
/// assert!(match_namespace_pattern("prod.>", "prod.orders.eu"));
/// assert!(!match_namespace_pattern("prod.>", "prod"));
/// ```
pub fn match_namespace_pattern(pattern: &str, namespace: &str) -> bool {
    match_tokens(pattern, namespace)
}

/// Whether `actor_id` matches `pattern`, with the same rules as namespaces: `order.*` matches
/// `order.42` but not `order.42.line`; `order.>` matches both. An actor id without dots is one
/// token, so `*` matches every such id.
pub fn match_actor_pattern(pattern: &str, actor_id: &str) -> bool {
    match_tokens(pattern, actor_id)
}

/// Whether `pattern` contains a wildcard token (`*` or `>`).
pub fn is_wildcard_pattern(pattern: &str) -> bool {
    pattern
        .split('.')
        .any(|t| t == SINGLE_TOKEN_WILDCARD || t == TAIL_WILDCARD)
}

/// Checks that `pattern` is usable for a subscription: not empty, no empty tokens, and `>` only
/// as the last token.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
///
/// # Rules
///
/// Names are split into tokens on `.`. In a pattern, a token that is exactly `*` matches exactly
/// one token, and a token that is exactly `>` matches one or more trailing tokens and is only
/// valid as the last token. Any other token (including one that merely contains `*` or `>`, such
/// as `order*`) matches itself literally.
///
/// Wildcard subscriptions cross namespace boundaries: they are meant for trusted, cross-cutting
/// consumers (audit, metrics, logging), not for tenant-facing code.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        return Err(Error::invalid("pattern must not be empty"));
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(Error::invalid(format!(
                "pattern {pattern:?} has an empty token"
            )));
        }
        if *t == TAIL_WILDCARD && i + 1 != tokens.len() {
            return Err(Error::invalid(format!(
                "pattern {pattern:?}: '>' is only allowed as the last token"
            )));
        }
    }
    Ok(())
}

/// Checks that `namespace` can be published to: not empty, no empty tokens, and no wildcard
/// tokens (a published event belongs to exactly one namespace).
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn validate_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() {
        return Err(Error::invalid("namespace must not be empty"));
    }
    for t in namespace.split('.') {
        if t.is_empty() {
            return Err(Error::invalid(format!(
                "namespace {namespace:?} has an empty token"
            )));
        }
        if t == SINGLE_TOKEN_WILDCARD || t == TAIL_WILDCARD {
            return Err(Error::invalid(format!(
                "namespace {namespace:?} contains a wildcard; publish to a concrete namespace"
            )));
        }
    }
    Ok(())
}

fn match_tokens(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    // Fast path: most subscriptions are exact names.
    if pattern == name && !is_wildcard_pattern(pattern) {
        return true;
    }
    let mut p = pattern.split('.').peekable();
    let mut n = name.split('.');
    while let Some(pt) = p.next() {
        if pt == TAIL_WILDCARD {
            // `>` must be last and needs at least one remaining token.
            return p.peek().is_none() && n.next().is_some();
        }
        match n.next() {
            None => return false,
            Some(nt) => {
                if pt != SINGLE_TOKEN_WILDCARD && pt != nt {
                    return false;
                }
            }
        }
    }
    n.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_and_wildcards() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "order", false),
            ("orders", "orders.eu", false),
            ("*", "orders", true),
            ("*", "orders.eu", false),
            ("*.eu", "orders.eu", true),
            ("*.eu", "orders.us", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.d", false),
            ("a.*.c", "a.c", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("a.>", "a", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c", true),
            ("a.>.c", "a.b.c", false),
            ("a.*.>", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("", "", false),
            ("", "a", false),
            ("order*", "order1", false),
            ("order*", "order*", true),
            ("a>", "a>", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(match_namespace_pattern(p, n), want, "{p:?} vs {n:?}");
            assert_eq!(match_actor_pattern(p, n), want, "{p:?} vs {n:?}");
        }
    }

    #[test]
    fn wildcard_detection() {
        assert!(is_wildcard_pattern("*"));
        assert!(is_wildcard_pattern("a.>"));
        assert!(is_wildcard_pattern("a.*.b"));
        assert!(!is_wildcard_pattern("a.b"));
        assert!(!is_wildcard_pattern("a*"));
        assert!(!is_wildcard_pattern(""));
    }

    #[test]
    fn namespace_validation() {
        assert!(validate_namespace("orders").is_ok());
        assert!(validate_namespace("tenant-1.orders").is_ok());
        assert!(validate_namespace("order*").is_ok());
        for bad in ["", "a..b", "a.*", ">", ".a"] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation() {
        assert!(validate_pattern("a.b").is_ok());
        assert!(validate_pattern("a.>").is_ok());
        assert!(validate_pattern("*.b").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.>.b", ">.a"] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    /// Reference: a regex built straight from the rules.
    fn reference(pattern: &str, name: &str) -> bool {
        if pattern.is_empty() {
            return false;
        }
        let toks: Vec<&str> = pattern.split('.').collect();
        let mut re = String::from("^");
        for (i, t) in toks.iter().enumerate() {
            if i > 0 {
                re.push_str("\\.");
            }
            match *t {
                "*" => re.push_str("[^.]*"),
                ">" => {
                    if i + 1 != toks.len() {
                        return false;
                    }
                    re.push_str("[^.]*(\\.[^.]*)*");
                }
                lit => re.push_str(&escape(lit)),
            }
        }
        re.push('$');
        simple_regex_match(&re, name)
    }

    fn escape(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    }

    // A tiny backtracking matcher for the regex subset `reference` emits, to avoid a regex
    // dependency in a test.
    fn simple_regex_match(re: &str, s: &str) -> bool {
        let toks = parse(re);
        let chars: Vec<char> = s.chars().collect();
        m(&toks, 0, &chars, 0)
    }

    #[derive(Debug, Clone)]
    enum Tok {
        Lit(char),
        NotDotStar,
        Group(Vec<Tok>),
    }

    fn parse(re: &str) -> Vec<Tok> {
        let chars: Vec<char> = re
            .trim_start_matches('^')
            .trim_end_matches('$')
            .chars()
            .collect();
        let mut i = 0;
        parse_seq(&chars, &mut i)
    }

    fn parse_seq(c: &[char], i: &mut usize) -> Vec<Tok> {
        let mut out = Vec::new();
        while *i < c.len() {
            match c[*i] {
                '\\' => {
                    out.push(Tok::Lit(c[*i + 1]));
                    *i += 2;
                }
                '[' => {
                    // "[^.]*"
                    out.push(Tok::NotDotStar);
                    *i += 5;
                }
                '(' => {
                    *i += 1;
                    let inner = parse_seq(c, i);
                    // skip ")*"
                    *i += 2;
                    out.push(Tok::Group(inner));
                }
                ')' => return out,
                ch => {
                    out.push(Tok::Lit(ch));
                    *i += 1;
                }
            }
        }
        out
    }

    fn m(t: &[Tok], ti: usize, s: &[char], si: usize) -> bool {
        if ti == t.len() {
            return si == s.len();
        }
        match &t[ti] {
            Tok::Lit(c) => si < s.len() && s[si] == *c && m(t, ti + 1, s, si + 1),
            Tok::NotDotStar => {
                let mut j = si;
                loop {
                    if m(t, ti + 1, s, j) {
                        return true;
                    }
                    if j < s.len() && s[j] != '.' {
                        j += 1;
                    } else {
                        return false;
                    }
                }
            }
            Tok::Group(g) => {
                if m(t, ti + 1, s, si) {
                    return true;
                }
                // one more repetition, then the group again
                let mut rest = g.clone();
                rest.push(Tok::Group(g.clone()));
                rest.extend_from_slice(&t[ti + 1..]);
                // guard against empty-progress loops: the group always starts with a literal '.'
                m(&rest, 0, s, si)
            }
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("*".to_string()),
            Just(">".to_string()),
            Just("".to_string()),
            "[a-c]{1,3}",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(token(), 1..5).prop_map(|v| v.join("."))
    }

    proptest! {
        #[test]
        fn agrees_with_reference(p in name(), n in name()) {
            // The reference treats a name token that is itself `*`/`>` literally, as we do.
            prop_assert_eq!(match_namespace_pattern(&p, &n), reference(&p, &n), "{:?} {:?}", p, n);
        }

        #[test]
        fn a_literal_pattern_matches_only_itself(n in "[a-c.]{1,8}") {
            prop_assert!(match_namespace_pattern(&n, &n));
            let other = format!("{n}x");
            prop_assert!(!match_namespace_pattern(&n, &other));
        }
    }
}
