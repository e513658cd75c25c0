//! Reading JetStream subjects: which stream, consumer and data subject a request is about.
//!
//! A refused JetStream request is reported by the server with its subject only (see
//! [`PermissionWatch`](crate::PermissionWatch)), so telling whether a refusal concerns an
//! operation means reading that subject. The forms, from the JetStream API reference:
//!
//! | subject | stream | consumer | subject part |
//! | --- | --- | --- | --- |
//! | `$JS.API.INFO` | - | - | - |
//! | `$JS.API.STREAM.<VERB>.<stream>` (`CREATE`, `INFO`, `UPDATE`, `DELETE`, `PURGE`...) | yes | - | - |
//! | `$JS.API.STREAM.{MSG,PEER,LEADER}.<VERB>.<stream>` | yes | - | - |
//! | `$JS.API.DIRECT.GET.<stream>[.<subject>]` | yes | - | the subject read |
//! | `$JS.API.CONSUMER.CREATE.<stream>[.<consumer>[.<filter>]]` | yes | yes | the filter |
//! | `$JS.API.CONSUMER.<VERB>.<stream>[.<consumer>]` (`INFO`, `DELETE`, `NAMES`...) | yes | yes | - |
//! | `$JS.API.CONSUMER.{DURABLE,MSG,LEADER}.<VERB>.<stream>.<consumer>` | yes | yes | - |
//! | `$JS.ACK.<stream>.<consumer>...`, `$JS.FC.<stream>...` | yes | yes | - |
//!
//! With a JetStream domain, `$JS.API.` reads `$JS.<domain>.API.`. Stream and consumer names
//! hold no dots, so each is exactly one token.

/// A JetStream subject split into what it is about.
///
/// ```
/// use aether_nats::backend::JsSubject;
///
/// let s = JsSubject::parse("$JS.API.CONSUMER.CREATE.ORDERS.c1.ORDERS.events.QQ").unwrap();
/// assert_eq!(s.verb, "CONSUMER.CREATE");
/// assert_eq!(s.stream, Some("ORDERS"));
/// assert_eq!(s.consumer, Some("c1"));
/// assert_eq!(s.subject, Some("ORDERS.events.QQ"));
/// assert!(s.is_api() && s.concerns_stream("ORDERS"));
/// assert!(JsSubject::parse("orders.new").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsSubject<'a> {
    /// The JetStream domain, when the subject names one.
    pub domain: Option<&'a str>,
    /// What is asked, as the dotted verb tokens after `$JS.API.` (`STREAM.INFO`,
    /// `CONSUMER.MSG.NEXT`, `INFO`...), or `ACK` / `FC` for acknowledgement and flow-control
    /// subjects (which are not API calls).
    pub verb: &'a str,
    /// The stream the subject names.
    pub stream: Option<&'a str>,
    /// The consumer the subject names (consumer calls, acknowledgements).
    pub consumer: Option<&'a str>,
    /// The data subject the call is about: what a direct get reads, or the filter a consumer is
    /// created with.
    pub subject: Option<&'a str>,
}

/// Splits `s` after its first `n` tokens: those tokens (as one slice) and the rest.
fn split_tokens(s: &str, n: usize) -> Option<(&str, Option<&str>)> {
    let end = match s.match_indices('.').nth(n - 1) {
        Some((i, _)) => i,
        None if s.split('.').count() == n => s.len(),
        None => return None,
    };
    let rest = s.get(end + 1..).filter(|r| !r.is_empty());
    Some((&s[..end], rest))
}

/// The next token of `rest` and what follows it.
fn next_token(rest: Option<&str>) -> (Option<&str>, Option<&str>) {
    match rest {
        None => (None, None),
        Some(r) => match r.split_once('.') {
            Some((t, tail)) => (Some(t).filter(|t| !t.is_empty()), Some(tail)),
            None => (Some(r).filter(|t| !t.is_empty()), None),
        },
    }
}

impl<'a> JsSubject<'a> {
    /// Parses a JetStream subject; `None` for any subject outside `$JS.`.
    pub fn parse(subject: &'a str) -> Option<Self> {
        let rest = subject.strip_prefix("$JS.")?;
        for verb in ["ACK", "FC"] {
            if let Some(r) = rest.strip_prefix(verb).and_then(|r| r.strip_prefix('.')) {
                let (stream, r) = next_token(Some(r));
                let (consumer, _) = next_token(r);
                return Some(Self {
                    domain: None,
                    verb,
                    stream,
                    consumer: if verb == "ACK" { consumer } else { None },
                    subject: None,
                });
            }
        }
        let (domain, api) = match rest.strip_prefix("API.") {
            Some(api) => (None, api),
            None => {
                let (domain, tail) = rest.split_once('.')?;
                (Some(domain), tail.strip_prefix("API.")?)
            }
        };
        let (first, _) = api.split_once('.').unwrap_or((api, ""));
        let second = api[first.len()..].trim_start_matches('.');
        let second = second.split('.').next().unwrap_or("");
        let verb_tokens = match (first, second) {
            ("INFO", _) => 1,
            ("STREAM", "MSG" | "PEER" | "LEADER") | ("CONSUMER", "DURABLE" | "MSG" | "LEADER") => 3,
            _ => 2,
        };
        let (verb, rest) = split_tokens(api, verb_tokens)?;
        let (stream, rest) = next_token(rest);
        let (consumer, subject) = if verb.starts_with("CONSUMER.") {
            let (consumer, rest) = next_token(rest);
            let subject = if verb == "CONSUMER.CREATE" {
                rest
            } else {
                None
            };
            (consumer, subject)
        } else if verb == "DIRECT.GET" {
            (None, rest)
        } else {
            (None, None)
        };
        Some(Self {
            domain,
            verb,
            stream,
            consumer,
            subject: subject.filter(|s| !s.is_empty()),
        })
    }

    /// Whether this is a JetStream API call (not an acknowledgement or flow-control reply).
    pub fn is_api(&self) -> bool {
        self.verb != "ACK" && self.verb != "FC"
    }

    /// Whether the subject names the stream `name`.
    pub fn concerns_stream(&self, name: &str) -> bool {
        self.stream == Some(name)
    }

    /// Whether this deletes a consumer (clean-up that callers usually do on a best-effort basis,
    /// so a refusal of it harms nothing).
    pub fn is_consumer_delete(&self) -> bool {
        self.verb == "CONSUMER.DELETE"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verb, stream, consumer and subject.
    type Parts<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn parts(s: &str) -> Option<Parts<'_>> {
        JsSubject::parse(s).map(|p| (p.verb, p.stream, p.consumer, p.subject))
    }

    #[test]
    fn reads_every_form() {
        assert_eq!(parts("$JS.API.INFO"), Some(("INFO", None, None, None)));
        assert_eq!(
            parts("$JS.API.STREAM.INFO.S"),
            Some(("STREAM.INFO", Some("S"), None, None))
        );
        assert_eq!(
            parts("$JS.API.STREAM.NAMES"),
            Some(("STREAM.NAMES", None, None, None))
        );
        assert_eq!(
            parts("$JS.API.STREAM.MSG.GET.S"),
            Some(("STREAM.MSG.GET", Some("S"), None, None))
        );
        assert_eq!(
            parts("$JS.API.DIRECT.GET.S.S.events.QQ"),
            Some(("DIRECT.GET", Some("S"), None, Some("S.events.QQ")))
        );
        assert_eq!(
            parts("$JS.API.DIRECT.GET.S"),
            Some(("DIRECT.GET", Some("S"), None, None))
        );
        assert_eq!(
            parts("$JS.API.CONSUMER.CREATE.S.abc.S.events.QQ"),
            Some((
                "CONSUMER.CREATE",
                Some("S"),
                Some("abc"),
                Some("S.events.QQ")
            ))
        );
        assert_eq!(
            parts("$JS.API.CONSUMER.CREATE.S"),
            Some(("CONSUMER.CREATE", Some("S"), None, None))
        );
        assert_eq!(
            parts("$JS.API.CONSUMER.DURABLE.CREATE.S.d"),
            Some(("CONSUMER.DURABLE.CREATE", Some("S"), Some("d"), None))
        );
        assert_eq!(
            parts("$JS.API.CONSUMER.MSG.NEXT.S.abc"),
            Some(("CONSUMER.MSG.NEXT", Some("S"), Some("abc"), None))
        );
        assert_eq!(
            parts("$JS.API.CONSUMER.DELETE.S.abc"),
            Some(("CONSUMER.DELETE", Some("S"), Some("abc"), None))
        );
        assert_eq!(
            parts("$JS.ACK.S.abc.1.2.3.4.5"),
            Some(("ACK", Some("S"), Some("abc"), None))
        );
        assert_eq!(parts("$JS.FC.S.x.y"), Some(("FC", Some("S"), None, None)));
        let d = JsSubject::parse("$JS.hub.API.STREAM.INFO.S").unwrap();
        assert_eq!(
            (d.domain, d.verb, d.stream),
            (Some("hub"), "STREAM.INFO", Some("S"))
        );
    }

    #[test]
    fn foreign_and_broken_subjects() {
        for s in [
            "",
            "orders.new",
            "_INBOX.x",
            "$JS",
            "$JS.",
            "$JS.API",
            "$KV.b.k",
            "$JS.x.y",
        ] {
            assert!(JsSubject::parse(s).is_none(), "{s:?}");
        }
        // Truncated forms parse without a stream rather than panicking.
        assert_eq!(parts("$JS.API.STREAM"), None);
        assert_eq!(
            parts("$JS.API.STREAM.INFO."),
            Some(("STREAM.INFO", None, None, None))
        );
        let s = JsSubject::parse("$JS.API.STREAM.INFO.SS").unwrap();
        assert!(!s.concerns_stream("S"));
        assert!(JsSubject::parse("$JS.API.CONSUMER.DELETE.S.c")
            .unwrap()
            .is_consumer_delete());
        assert!(!JsSubject::parse("$JS.ACK.S.c").unwrap().is_api());
    }
}
