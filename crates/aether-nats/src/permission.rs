//! Catching the permission violations NATS reports asynchronously.
//!
//! The NATS protocol has no reply to a publish or a subscription: when the user may not
//! publish to a subject, the server drops the message and sends a `-ERR 'Permissions Violation
//! for Publish to "subject"'` that names the subject but not the request it belongs to. The
//! client hands it to the connection's event callback. A request to a denied subject (every
//! JetStream API call and every acknowledged publish is one) then simply times out. Recording
//! the reports per subject lets a backend turn such a timeout into a permission error that names
//! what was refused, without ever guessing: a report is only used for an operation whose own
//! subject it names.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::Error;
use async_nats::ConnectOptions;
use dashmap::DashMap;
use tokio::sync::watch;

/// At most this many distinct denied subjects are remembered; a connection denied on an
/// unbounded number of subjects (wildcard-heavy traffic) must not grow memory without bound.
const MAX_REMEMBERED: usize = 1024;

/// What a NATS user was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Publishing (including sending a request) to the subject.
    Publish,
    /// Subscribing to the subject.
    Subscribe,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Publish => "publish",
            Operation::Subscribe => "subscription",
        })
    }
}

/// One permission violation reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionViolation {
    /// What was refused.
    pub operation: Operation,
    /// The subject it was refused on, exactly as the server named it.
    pub subject: String,
    /// When the report arrived (the latest, when the same subject was refused repeatedly).
    pub at: Instant,
}

impl PermissionViolation {
    /// Parses the text of a server error (`Permissions Violation for Publish to "a.b"`,
    /// `... for Subscription to "a.>"`, optionally `using queue "q"`) into the operation and
    /// subject; `None` for any other error text.
    ///
    /// ```
    /// use aether_nats::{Operation, PermissionViolation};
    ///
    /// assert_eq!(
    ///     PermissionViolation::parse(r#"Permissions Violation for Publish to "orders.new""#),
    ///     Some((Operation::Publish, "orders.new".to_string()))
    /// );
    /// assert_eq!(PermissionViolation::parse("Stale Connection"), None);
    /// ```
    pub fn parse(text: &str) -> Option<(Operation, String)> {
        const PREFIX: &str = "permissions violation for ";
        let text = text.trim().trim_matches('\'');
        let head = text.get(..PREFIX.len())?;
        if !head.eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let rest = &text[PREFIX.len()..];
        let (operation, rest) = if let Some(r) = strip_prefix_ignore_case(rest, "publish to ") {
            (Operation::Publish, r)
        } else if let Some(r) = strip_prefix_ignore_case(rest, "subscription to ") {
            (Operation::Subscribe, r)
        } else {
            // "Publish with Reply of ..." names a reply subject, not where the message went.
            return None;
        };
        let subject = rest.strip_prefix('"')?;
        let end = subject.find('"')?;
        let subject = &subject[..end];
        if subject.is_empty() {
            return None;
        }
        Some((operation, subject.to_string()))
    }

    /// A [`Error::PermissionDenied`] for an operation described by `context` that this
    /// violation explains.
    pub fn to_error(&self, context: impl Into<String>) -> Error {
        Error::PermissionDenied {
            context: context.into(),
            source: Box::new(self.clone()),
        }
    }
}

impl fmt::Display for PermissionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server refused {} to {:?} (permissions violation)",
            self.operation, self.subject
        )
    }
}

impl std::error::Error for PermissionViolation {}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[derive(Debug)]
struct Inner {
    seen: DashMap<(Operation, String), Instant>,
    total: AtomicU64,
    /// Bumped after every record, to wake [`PermissionWatch::wait_for`].
    recorded: watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            seen: DashMap::new(),
            total: AtomicU64::new(0),
            recorded: watch::Sender::new(0),
        }
    }
}

/// Collects the permission violations a NATS connection reports, by operation and subject.
///
/// NATS reports them only to the event callback given at connect time: create the client with
/// [`install`](Self::install), or call [`observe`](Self::observe) from your own callback. Cloning
/// is cheap; clones share what was seen. At most 1024 distinct subjects are remembered.
#[derive(Debug, Clone, Default)]
pub struct PermissionWatch {
    inner: Arc<Inner>,
}

impl PermissionWatch {
    /// An empty watch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `event` if it is a permission violation, and says whether it was.
    pub fn observe(&self, event: &async_nats::Event) -> bool {
        let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event else {
            return false;
        };
        match PermissionViolation::parse(text) {
            Some((operation, subject)) => {
                tracing::warn!(%operation, subject, "NATS refused an operation: permissions violation");
                self.record(operation, subject);
                true
            }
            None => false,
        }
    }

    /// `options` with an event callback feeding this watch (replacing any callback set before;
    /// to keep your own, call [`observe`](Self::observe) from it instead).
    pub fn install(&self, options: ConnectOptions) -> ConnectOptions {
        let watch = self.clone();
        options.event_callback(move |event| {
            watch.observe(&event);
            async {}
        })
    }

    /// Records a violation seen some other way.
    pub fn record(&self, operation: Operation, subject: impl Into<String>) {
        let seen = &self.inner.seen;
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert((operation, subject.into()), Instant::now());
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        self.inner.recorded.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes after every recorded violation, for a long-lived task that
    /// checks [`find_since`](Self::find_since) whenever it changes (one-off operations use
    /// [`wait_for`](Self::wait_for)).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.recorded.subscribe()
    }

    /// Violations reported so far (every report, repeats included).
    pub fn violations(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// The latest violation of `operation` on exactly `subject`, if any was reported.
    pub fn denied(&self, operation: Operation, subject: &str) -> Option<PermissionViolation> {
        // Checked on hot paths (every bus publish): skip the key allocation while nothing was
        // ever refused.
        if self.violations() == 0 {
            return None;
        }
        self.inner
            .seen
            .get(&(operation, subject.to_string()))
            .map(|at| PermissionViolation {
                operation,
                subject: subject.to_string(),
                at: *at,
            })
    }

    /// Like [`denied`](Self::denied), only for a report younger than `within` (permissions can
    /// be changed by reloading the server, so an old refusal is no proof of a new one).
    pub fn denied_within(
        &self,
        operation: Operation,
        subject: &str,
        within: Duration,
    ) -> Option<PermissionViolation> {
        self.denied(operation, subject)
            .filter(|v| v.at.elapsed() <= within)
    }

    /// The most recent violation reported at or after `since` whose subject satisfies
    /// `relevant`, for explaining a request that timed out: the caller knows which subjects
    /// its operation touched.
    pub fn find_since(
        &self,
        since: Instant,
        relevant: impl Fn(Operation, &str) -> bool,
    ) -> Option<PermissionViolation> {
        self.inner
            .seen
            .iter()
            .filter(|e| *e.value() >= since && relevant(e.key().0, &e.key().1))
            .max_by_key(|e| *e.value())
            .map(|e| PermissionViolation {
                operation: e.key().0,
                subject: e.key().1.clone(),
                at: *e.value(),
            })
    }

    /// Resolves with the first violation reported at or after `since` whose subject satisfies
    /// `relevant`; pending for ever when none comes. Race it against a request whose subjects
    /// `relevant` names exactly, to fail at once instead of waiting for the request's timeout:
    /// the server refused a subject, so the request on it will never be answered.
    pub async fn wait_for(
        &self,
        since: Instant,
        relevant: impl Fn(Operation, &str) -> bool,
    ) -> PermissionViolation {
        // Subscribing before looking means a report recorded in between is either seen by the
        // look or wakes the wait.
        let mut changes = self.changes();
        loop {
            if self.violations() > 0 {
                if let Some(v) = self.find_since(since, &relevant) {
                    return v;
                }
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as `self`; this cannot happen while we hold it.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_wording() {
        assert_eq!(
            PermissionViolation::parse(
                r#"Permissions Violation for Publish to "$JS.API.STREAM.INFO.x""#
            ),
            Some((Operation::Publish, "$JS.API.STREAM.INFO.x".into()))
        );
        assert_eq!(
            PermissionViolation::parse(
                r#"'Permissions Violation for Subscription to "a.>" using queue "q"'"#
            ),
            Some((Operation::Subscribe, "a.>".into()))
        );
        assert_eq!(
            PermissionViolation::parse(r#"permissions violation for publish to "lower""#),
            Some((Operation::Publish, "lower".into()))
        );
        for other in [
            "",
            "Authorization Violation",
            "Permissions Violation for",
            r#"Permissions Violation for Publish with Reply of "_INBOX.x""#,
            r#"Permissions Violation for Publish to "unterminated"#,
            r#"Permissions Violation for Publish to """#,
            "Permissions Violation for Publish to ☃",
            "Permissions Violation for Pub☃",
        ] {
            assert_eq!(PermissionViolation::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn observes_only_violations() {
        let watch = PermissionWatch::new();
        let ev = |s: &str| async_nats::Event::ServerError(async_nats::ServerError::Other(s.into()));
        assert!(!watch.observe(&ev("Stale Connection")));
        assert!(!watch.observe(&async_nats::Event::Connected));
        let before = Instant::now();
        assert!(watch.observe(&ev(r#"Permissions Violation for Publish to "a.b""#)));
        assert_eq!(watch.violations(), 1);
        let v = watch.denied(Operation::Publish, "a.b").unwrap();
        assert!(v.at >= before);
        assert!(watch.denied(Operation::Subscribe, "a.b").is_none());
        assert!(watch.denied(Operation::Publish, "a").is_none());
        assert!(watch
            .denied_within(Operation::Publish, "a.b", Duration::from_secs(60))
            .is_some());
        assert!(watch
            .find_since(before, |_, s| s.starts_with("a."))
            .is_some());
        assert!(watch
            .find_since(Instant::now() + Duration::from_secs(1), |_, _| true)
            .is_none());
        let err = v.to_error("saving");
        assert!(matches!(err, Error::PermissionDenied { .. }));
        assert!(!err.is_retryable());
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("\"a.b\""), "{source}");
    }

    #[tokio::test]
    async fn wait_for_wakes_on_a_relevant_report_only() {
        let watch = PermissionWatch::new();
        let since = Instant::now();
        watch.record(Operation::Publish, "other.x");
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.wait_for(since, |_, s| s == "mine.x").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "woke for an unrelated subject");
        watch.record(Operation::Publish, "mine.x");
        let v = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(v.subject, "mine.x");
        // A report from before `since` does not count.
        let later = Instant::now() + Duration::from_millis(1);
        let stale = tokio::time::timeout(
            Duration::from_millis(50),
            watch.wait_for(later, |_, s| s == "mine.x"),
        )
        .await;
        assert!(stale.is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let watch = PermissionWatch::new();
        for i in 0..(MAX_REMEMBERED * 3) {
            watch.record(Operation::Publish, format!("s.{i}"));
        }
        assert!(watch.inner.seen.len() <= MAX_REMEMBERED);
        assert_eq!(watch.violations(), (MAX_REMEMBERED * 3) as u64);
    }
}
