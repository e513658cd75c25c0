//! Reading a stream through a consumer: one way to create it (a filter subject and a start
//! position), one way to sort its failures, and where to resume after one.
//!
//! Three kinds serve the library's readers:
//! - [`ConsumerSpec::create_pull`]: an ephemeral pull consumer that acknowledges nothing, for
//!   short reads that page through a stream themselves (the event store's global order and
//!   replays): they see every message's consumer sequence, so they notice a gap and resume.
//! - [`ConsumerSpec::open_ordered_pull`]: an ordered pull consumer, for long-lived readers that
//!   pull at their own pace (the bus's durable subscriptions).
//! - [`ConsumerSpec::open_ordered_push`]: an ordered push consumer delivering to a new inbox,
//!   for readers that take everything as fast as the server sends it (the store's
//!   latest-versions view, the CLI's event count).
//!
//! The ordered kinds recreate themselves after a gap; all of them end when their server goes,
//! and the reader opens a new one at [`StartAt::resume_after`] the last sequence it handled.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aether_core::{Error, Result};
use async_nats::jetstream::consumer::{pull, push, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind, Stream};

use crate::errors::{classify, classify_api};

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The stream's first message (that the filter matches).
    First,
    /// Only messages stored after the consumer is created.
    New,
    /// The last message of every subject the filter matches, then every new one.
    LastPerSubject,
    /// The message at this stream sequence, or the first one after it; 0 and 1 are the
    /// stream's first message.
    Sequence(u64),
    /// The first message stored at or after this time.
    Time(SystemTime),
}

impl StartAt {
    /// Where to open a consumer again after a failure, having handled everything up to stream
    /// sequence `last` (`None`: nothing yet): right after it, so nothing is skipped or
    /// repeated, or at `self` when nothing was handled.
    ///
    /// ```
    /// use aether_nats::backend::StartAt;
    ///
    /// assert_eq!(StartAt::New.resume_after(Some(41)), StartAt::Sequence(42));
    /// assert_eq!(StartAt::LastPerSubject.resume_after(None), StartAt::LastPerSubject);
    /// ```
    pub fn resume_after(self, last: Option<u64>) -> Self {
        match last {
            Some(sequence) => Self::Sequence(sequence.saturating_add(1)),
            None => self,
        }
    }

    /// The server's deliver policy.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a time before 1970 or too far ahead.
    fn policy(self) -> Result<DeliverPolicy> {
        Ok(match self {
            Self::First | Self::Sequence(0 | 1) => DeliverPolicy::All,
            Self::New => DeliverPolicy::New,
            Self::LastPerSubject => DeliverPolicy::LastPerSubject,
            Self::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            Self::Time(t) => {
                let nanos = t
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| Error::invalid("start time is before 1970"))?
                    .as_nanos();
                let nanos = i128::try_from(nanos)
                    .map_err(|_| Error::invalid("start time is out of range"))?;
                let start_time = async_nats::datetime::from_nanos(nanos)
                    .map_err(|e| Error::invalid(format!("start time is out of range: {e}")))?;
                DeliverPolicy::ByStartTime { start_time }
            }
        })
    }
}

/// What a consumer reads: the stream's messages on `filter_subject` (wildcards allowed), from
/// `start`.
///
/// ```no_run
/// use aether_nats::backend::{ConsumerSpec, StartAt};
/// use futures::StreamExt;
///
/// # async fn run(stream: async_nats::jetstream::stream::Stream) -> aether_core::Result<()> {
/// let mut messages = ConsumerSpec::new("ORDERS.events.*", StartAt::First)
///     .open_ordered_pull(&stream, "reading the orders")
///     .await?;
/// while let Some(message) = messages.next().await {
///     // On an error: open again at `StartAt::First.resume_after(last sequence handled)`.
///     let _ = message;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The subject the consumer reads.
    pub filter_subject: String,
    /// Several subjects the consumer reads instead of `filter_subject` (when not empty):
    /// nats-server 2.10 and later only.
    pub filter_subjects: Vec<String>,
    /// Where it starts.
    pub start: StartAt,
    /// What the server shows as the consumer's description.
    pub description: Option<String>,
    /// Deliver the messages' headers only, without payloads (counting, indexing).
    pub headers_only: bool,
}

impl ConsumerSpec {
    /// Reads `filter_subject` from `start`, payloads included, without a description.
    pub fn new(filter_subject: impl Into<String>, start: StartAt) -> Self {
        Self {
            filter_subject: filter_subject.into(),
            filter_subjects: Vec::new(),
            start,
            description: None,
            headers_only: false,
        }
    }

    /// Reads the subjects of `filters` from `start`: one filter as [`new`](Self::new) does,
    /// several as one consumer with several filter subjects, which needs nats-server 2.10 or
    /// later (older servers refuse the consumer).
    pub fn with_filters(mut filters: Vec<String>, start: StartAt) -> Self {
        if filters.len() == 1 {
            return Self::new(filters.remove(0), start);
        }
        Self {
            filter_subjects: filters,
            ..Self::new(String::new(), start)
        }
    }

    /// With `description`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Headers only (`true`) or whole messages.
    pub fn headers_only(mut self, on: bool) -> Self {
        self.headers_only = on;
        self
    }

    /// Creates an ephemeral pull consumer that acknowledges nothing, held in the server's
    /// memory with one replica (it is rebuilt rather than kept through a failure), and
    /// removed by the server once nobody read from it for `inactive`. `context` says what the
    /// read is for, in errors.
    ///
    /// # Errors
    /// As [`consumer_error`].
    pub async fn create_pull<I>(
        &self,
        stream: &Stream<I>,
        inactive: Duration,
        context: &str,
    ) -> Result<PullConsumer> {
        let config = pull::Config {
            deliver_policy: self.start.policy()?,
            ack_policy: AckPolicy::None,
            filter_subject: self.filter_subject.clone(),
            filter_subjects: self.filter_subjects.clone(),
            description: self.description.clone(),
            headers_only: self.headers_only,
            inactive_threshold: inactive,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(format!("{context}: creating a consumer"), e))
    }

    /// Creates an ordered pull consumer and returns its messages. `context` says what the read
    /// is for, in errors.
    ///
    /// # Errors
    /// As [`consumer_error`].
    pub async fn open_ordered_pull<I>(
        &self,
        stream: &Stream<I>,
        context: &str,
    ) -> Result<pull::Ordered> {
        let config = pull::OrderedConfig {
            deliver_policy: self.start.policy()?,
            filter_subject: self.filter_subject.clone(),
            description: self.description.clone(),
            headers_only: self.headers_only,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(context, e))?;
        consumer.messages().await.map_err(|e| classify(context, e))
    }

    /// Creates an ordered push consumer delivering to a new inbox of `client` (the client of
    /// `stream`'s context), and returns its messages. `context` says what the read is for, in
    /// errors.
    ///
    /// # Errors
    /// As [`consumer_error`].
    pub async fn open_ordered_push<I>(
        &self,
        stream: &Stream<I>,
        client: &async_nats::Client,
        context: &str,
    ) -> Result<push::Ordered> {
        let config = push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: self.start.policy()?,
            filter_subject: self.filter_subject.clone(),
            description: self.description.clone(),
            headers_only: self.headers_only,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(context, e))?;
        consumer.messages().await.map_err(|e| classify(context, e))
    }
}

/// The one sorting of a failed consumer creation: [`Error::NotFound`] when the stream does
/// not exist, [`Error::PermissionDenied`] when the server refuses it, [`Error::Unavailable`]
/// when it does not answer (or has no leader for the stream), [`Error::Backend`] for anything
/// else; the client's error is kept as the source.
pub fn consumer_error(context: impl std::fmt::Display, err: ConsumerError) -> Error {
    let api = match err.kind() {
        ConsumerErrorKind::JetStream(api) => Some(api),
        _ => None,
    };
    classify_api(context, api.as_ref(), err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_map_to_deliver_policies() {
        assert_eq!(StartAt::First.policy().unwrap(), DeliverPolicy::All);
        assert_eq!(StartAt::Sequence(0).policy().unwrap(), DeliverPolicy::All);
        assert_eq!(StartAt::Sequence(1).policy().unwrap(), DeliverPolicy::All);
        assert_eq!(
            StartAt::Sequence(7).policy().unwrap(),
            DeliverPolicy::ByStartSequence { start_sequence: 7 }
        );
        assert_eq!(StartAt::New.policy().unwrap(), DeliverPolicy::New);
        assert_eq!(
            StartAt::LastPerSubject.policy().unwrap(),
            DeliverPolicy::LastPerSubject
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(matches!(
            StartAt::Time(at).policy().unwrap(),
            DeliverPolicy::ByStartTime { start_time } if start_time.unix_timestamp() == 1_700_000_000
        ));
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            StartAt::Time(before).policy(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn a_resume_starts_right_after_the_last_sequence_handled() {
        for start in [
            StartAt::First,
            StartAt::New,
            StartAt::LastPerSubject,
            StartAt::Sequence(3),
        ] {
            assert_eq!(start.resume_after(None), start);
            assert_eq!(start.resume_after(Some(9)), StartAt::Sequence(10));
        }
        assert_eq!(
            StartAt::First.resume_after(Some(u64::MAX)),
            StartAt::Sequence(u64::MAX)
        );
    }

    #[test]
    fn consumer_failures_are_sorted_one_way() {
        let api = |code: u16, err_code: u64| {
            let json =
                format!(r#"{{"code":{code},"err_code":{err_code},"description":"refused"}}"#);
            let api: async_nats::jetstream::Error = serde_json::from_str(&json).unwrap();
            ConsumerError::new(ConsumerErrorKind::JetStream(api))
        };
        let e = consumer_error("reading", api(404, 10059));
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        let e = consumer_error("reading", api(503, 10008));
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        let e = consumer_error("reading", api(403, 10100));
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        let e = consumer_error("reading", api(400, 10012));
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        let e = consumer_error("reading", ConsumerError::new(ConsumerErrorKind::TimedOut));
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("reading"), "{e}");
    }
}
