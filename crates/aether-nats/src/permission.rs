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
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Error, Result};
use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::errors::timeout_error;

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
/// NATS reports them only to the event callback given at connect time: a
/// [`ConnectionMonitor`](crate::ConnectionMonitor) installed there feeds its watch
/// ([`ConnectionMonitor::permissions`](crate::ConnectionMonitor::permissions)). Cloning is
/// cheap; clones share what was seen. At most 1024 distinct subjects are remembered. Times are
/// [`tokio::time::Instant`]s, so paused-time tests see consistent ones.
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
    pub(crate) fn observe(&self, event: &async_nats::Event) -> bool {
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

    /// Runs `op` and returns its output, unless a violation satisfying `relevant` is reported
    /// at or after `since` first: then `Err` with it at once (`op` is abandoned). The server
    /// never answers what it refused, so racing an operation against its refusal is how to
    /// fail fast instead of waiting for a timeout.
    ///
    /// # Errors
    /// The violation, when one came first.
    pub async fn refused_during<T>(
        &self,
        since: Instant,
        relevant: impl Fn(Operation, &str) -> bool,
        op: impl Future<Output = T>,
    ) -> std::result::Result<T, PermissionViolation> {
        tokio::select! {
            biased;
            out = op => Ok(out),
            v = self.wait_for(since, &relevant) => Err(v),
        }
    }

    /// The one guard for operations that wait for an answer from the server (JetStream
    /// requests, acknowledged publishes): runs `op` for at most `timeout` (`None`: as long as
    /// it takes) and turns a refusal the server reported into [`Error::PermissionDenied`]
    /// naming the refused subject.
    ///
    /// `relevant` says which refused subjects the operation depends on. As soon as one is
    /// reported, the operation fails (its request would never be answered); an
    /// [`Error::Unavailable`] (a timeout, a lost connection) that such a report explains after
    /// the fact becomes the permission error too, keeping its context. Other errors pass
    /// through. `what` describes the operation for errors made here.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] as above; [`Error::Unavailable`] when `timeout` passes;
    /// `op`'s own errors.
    pub async fn guard<T>(
        &self,
        what: impl Fn() -> String,
        relevant: impl Fn(Operation, &str) -> bool,
        timeout: Option<Duration>,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        // One layer, with `op` pinned where it stands: every async layer that took it by value
        // held a copy of its state, and a cluster request's future grew from 1.3 KB to 8 KB,
        // all of it allocated and copied on every request.
        let op = std::pin::pin!(op);
        let expired = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            biased;
            out = op => out,
            v = self.wait_for(started, &relevant) => return Err(v.to_error(what())),
            () = expired => Err(timeout_error(what())),
        };
        match outcome {
            Err(Error::Unavailable { context, source }) => {
                match self.find_since(started, &relevant) {
                    Some(v) => Err(v.to_error(context)),
                    None => Err(Error::Unavailable { context, source }),
                }
            }
            other => other,
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

    #[tokio::test(start_paused = true)]
    async fn guard_types_refusals_and_timeouts() {
        let watch = PermissionWatch::new();
        let w = watch.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            w.record(Operation::Publish, "x.y");
        });
        let never = || std::future::pending::<Result<()>>();
        let err = watch
            .guard(
                || "saving".into(),
                |_, s| s == "x.y",
                Some(Duration::from_secs(10)),
                never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        assert!(err.to_string().contains("saving"));
        let err = watch
            .guard(
                || "reading".into(),
                |_, s| s == "other",
                Some(Duration::from_secs(1)),
                never(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("reading"));
        let ok = watch
            .guard(|| "x".into(), |_, _| true, None, async { Ok(7) })
            .await;
        assert_eq!(ok.unwrap(), 7);
        // An operation that fails for lack of an answer after a relevant refusal was reported
        // reports the refusal, in its own context.
        let err = watch
            .guard(|| "x".into(), |_, s| s == "late", None, async {
                watch.record(Operation::Publish, "late");
                Err::<(), _>(timeout_error("publishing late"))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { ref context, .. } if context == "publishing late"),
            "{err:?}"
        );
    }
}
