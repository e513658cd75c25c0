//! The view's background task: an ordered push consumer on the events subjects that applies
//! every message to the map, and a periodic confirmation round, driven from one `select!` loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aether_core::Backoff;
use aether_core::Result;
use aether_nats::backend::{classify, classify_api, timeout_error, ConsumerSpec, StartAt};
use async_nats::jetstream::consumer::push::{Ordered, OrderedError, OrderedErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::confirmations::Confirmations;
use super::shared::Shared;
use super::LatestVersions;
use crate::jetstream::codec::{self, Owner};
use crate::jetstream::subject::Subjects;

/// First pause before reopening a watch that ended or failed; doubles up to the maximum.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(5);

/// What one confirmation round read.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Taken before the first request: every save acknowledged before it has a sequence at most
    /// `last`.
    t0: Instant,
    /// Sequence of the last message on the events subjects (0: there is none).
    last: u64,
    /// The stream's creation time (ns since the epoch), read after `last`.
    created: i128,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where the watch's next message comes from.
enum Feed {
    Watching(Box<Ordered>),
    Opening(BoxFuture<Result<Box<Ordered>>>),
    /// Waiting before opening again.
    Resting(Pin<Box<tokio::time::Sleep>>),
}

// Lives for one turn of the loop and is never stored: moving the message is cheaper than an
// allocation per message, which boxing it (as clippy suggests) would cost.
#[allow(clippy::large_enum_variant)]
enum FeedEvent {
    Message(async_nats::jetstream::Message),
    Failed(OrderedError),
    Ended,
    Opened(Result<Box<Ordered>>),
    Rested,
}

impl Feed {
    async fn next(&mut self) -> FeedEvent {
        match self {
            Feed::Watching(messages) => match messages.next().await {
                Some(Ok(message)) => FeedEvent::Message(message),
                Some(Err(e)) => FeedEvent::Failed(e),
                None => FeedEvent::Ended,
            },
            Feed::Opening(opening) => FeedEvent::Opened(opening.await),
            Feed::Resting(sleep) => {
                sleep.await;
                FeedEvent::Rested
            }
        }
    }
}

/// The background task's state.
pub(super) struct Watch {
    stream: Stream<()>,
    client: async_nats::Client,
    subjects: Subjects,
    filter: String,
    stream_name: String,
    /// Creation time of the stream incarnation the map describes.
    created: i128,
    shared: Arc<Shared>,
    confirmations: Confirmations,
    backoff: Backoff,
}

impl Watch {
    /// The watch of `stream` (created at `created`, ns since the epoch) for the view `shared`,
    /// and its first consumer, from the last message of every actor.
    pub(super) async fn start(
        stream: Stream<()>,
        client: async_nats::Client,
        stream_name: String,
        legacy_type: Option<String>,
        created: i128,
        shared: Arc<Shared>,
    ) -> Result<(Self, Box<Ordered>)> {
        let subjects = Subjects::new(&stream_name, legacy_type);
        let filter = subjects.events_filter();
        let first = open_watch(
            stream.clone(),
            client.clone(),
            filter.clone(),
            stream_name.clone(),
            0,
        )
        .await?;
        let watch = Self {
            stream,
            client,
            subjects,
            filter,
            stream_name,
            created,
            shared,
            confirmations: Confirmations::default(),
            backoff: Backoff::new(REOPEN_BACKOFF, MAX_REOPEN_BACKOFF).with_jitter(),
        };
        Ok((watch, first))
    }

    pub(super) async fn run(mut self, first: Box<Ordered>, cancel: CancellationToken) {
        let mut feed = Feed::Watching(first);
        let period = (self.shared.max_staleness / 2).max(LatestVersions::MIN_STALENESS / 2);
        let mut ticker = tokio::time::interval(period);
        // After a slow round, the next starts a full period later rather than in a burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: Option<BoxFuture<Result<Round>>> = None;
        loop {
            // Biased, rounds first: a busy watch is always ready and must not delay the
            // confirmations (which are rare and cheap to poll).
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                done = async {
                    match round.as_mut() {
                        Some(r) => r.await,
                        None => std::future::pending().await,
                    }
                } => {
                    round = None;
                    self.on_round(done, &mut feed);
                }
                _ = ticker.tick(), if round.is_none() => {
                    round = Some(Box::pin(confirm_round(
                        self.stream.clone(),
                        self.filter.clone(),
                        self.stream_name.clone(),
                        self.shared.max_staleness,
                    )));
                }
                event = feed.next() => self.on_feed(event, &mut feed),
            }
        }
        tracing::debug!("latest-versions watch stopped");
    }

    fn on_feed(&mut self, event: FeedEvent, feed: &mut Feed) {
        match event {
            FeedEvent::Message(message) => {
                self.backoff.reset();
                self.apply(&message);
            }
            FeedEvent::Failed(e) if e.kind() == OrderedErrorKind::MissingHeartbeat => {
                // The ordered consumer recreates itself from the last sequence it delivered.
                tracing::debug!(error = %e, "watch missed heartbeats; the consumer is recreated");
            }
            FeedEvent::Failed(e) => {
                tracing::warn!(error = %e, "watch failed; reopening it");
                *feed = self.rest();
            }
            FeedEvent::Ended => {
                tracing::warn!("watch ended; reopening it");
                *feed = self.rest();
            }
            FeedEvent::Opened(Ok(messages)) => *feed = Feed::Watching(messages),
            FeedEvent::Opened(Err(e)) => {
                tracing::debug!(error = %e, "could not reopen the watch; retrying");
                *feed = self.rest();
            }
            FeedEvent::Rested => *feed = self.open(),
        }
    }

    fn rest(&mut self) -> Feed {
        Feed::Resting(Box::pin(tokio::time::sleep(self.backoff.next_delay())))
    }

    /// Opens the watch again after the last message applied (or from the last message of each
    /// actor when none was). Messages are delivered in stream order, also during the initial
    /// load, so every actor whose last message is at or below `applied` has been seen.
    fn open(&self) -> Feed {
        Feed::Opening(Box::pin(open_watch(
            self.stream.clone(),
            self.client.clone(),
            self.filter.clone(),
            self.stream_name.clone(),
            self.confirmations.applied,
        )))
    }

    fn apply(&mut self, message: &async_nats::jetstream::Message) {
        let sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                // The ordered consumer has parsed this already; unreachable in practice.
                self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "skipping a watched message without delivery info");
                return;
            }
        };
        match self.subjects.actor_of(message.subject.as_str()) {
            Some(actor) => match version_of(
                self.subjects.owner_of(&actor),
                sequence,
                message.headers.as_ref(),
                &message.payload,
            ) {
                Ok(version) => {
                    self.shared.raise(self.subjects.key(actor.key()), version);
                }
                Err(error) => {
                    self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sequence, %error, "skipping a malformed event message");
                }
            },
            None => {
                self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    sequence,
                    subject = %message.subject,
                    "skipping a message whose subject names no actor"
                );
            }
        }
        // Applied even when skipped: the confirmation waits for the sequence, not the content.
        if let Some(t0) = self.confirmations.applied(sequence) {
            self.shared.confirm(t0);
        }
    }

    fn on_round(&mut self, done: Result<Round>, feed: &mut Feed) {
        let round = match done {
            Ok(round) => round,
            Err(e) => {
                // Nothing to do: without confirmations the view goes stale and reads fall back.
                tracing::debug!(error = %e, "confirmation round failed");
                return;
            }
        };
        if round.created != self.created {
            // The stream was deleted and created again: its sequences started over, so the
            // watch (which resumes after the last sequence it saw) would skip the new stream's
            // first messages, and the map describes a stream that is gone.
            tracing::warn!("the stream was re-created; reloading the latest-versions view");
            self.shared.reset();
            self.confirmations.reset();
            self.created = round.created;
            *feed = self.open();
            return;
        }
        let stale_before = Instant::now()
            .checked_sub(self.shared.max_staleness)
            .unwrap_or(round.t0);
        if let Some(t0) = self.confirmations.round(round.t0, round.last, stale_before) {
            self.shared.confirm(t0);
        }
    }
}

/// Opens an ordered push consumer on the events subjects: after `applied`, or from the last
/// message of every actor when `applied` is 0.
async fn open_watch(
    stream: Stream<()>,
    client: async_nats::Client,
    filter: String,
    stream_name: String,
    applied: u64,
) -> Result<Box<Ordered>> {
    let start = StartAt::LastPerSubject.resume_after((applied > 0).then_some(applied));
    ConsumerSpec::new(filter, start)
        .description("aether latest-versions view")
        .open_ordered_push(
            &stream,
            &client,
            &format!("watching the events of stream {stream_name}"),
        )
        .await
        // Boxed: the ordered stream is large, and it moves between the watch's states.
        .map(Box::new)
}

/// One confirmation round: the time, then the last event sequence (from the stream leader, so
/// a lagging replica cannot hide an acknowledged save), then the stream's creation time. A
/// round that takes longer than `max_staleness` could not make the view fresh anyway.
async fn confirm_round(
    stream: Stream<()>,
    filter: String,
    stream_name: String,
    max_staleness: Duration,
) -> Result<Round> {
    let t0 = Instant::now();
    let round = async {
        let context = || format!("reading the last event message of stream {stream_name}");
        let last = match stream.get_last_raw_message_by_subject(&filter).await {
            Ok(message) => message.sequence,
            Err(e) => match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => 0,
                LastRawMessageErrorKind::JetStream(ref api)
                    if api.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
                {
                    0
                }
                LastRawMessageErrorKind::JetStream(ref api) => {
                    return Err(classify_api(context(), Some(api), e))
                }
                _ => return Err(classify(context(), e)),
            },
        };
        let info = stream
            .get_info()
            .await
            .map_err(|e| classify(format!("reading info of stream {stream_name}"), e))?;
        Ok(Round {
            t0,
            last,
            created: info.created.unix_timestamp_nanos(),
        })
    };
    tokio::time::timeout(max_staleness, round)
        .await
        .unwrap_or_else(|_| Err(timeout_error("confirming the latest-versions view")))
}

/// The version a stored message brings its actor to: the header, or the last event of the
/// payload for messages written without it.
fn version_of(
    owner: Owner<'_>,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> std::result::Result<u64, String> {
    if let Some(version) = headers.and_then(codec::header_last_version) {
        return Ok(version);
    }
    let events = codec::decode_message(owner, sequence, payload).map_err(|bad| bad.error)?;
    events
        .last()
        .map(|e| e.version)
        .ok_or_else(|| "no events in the message".to_string())
}

#[cfg(test)]
mod tests {
    use aether_core::Event;

    use super::*;

    #[test]
    fn versions_come_from_the_header_or_the_payload() {
        let mut headers = HeaderMap::new();
        headers.insert(codec::HEADER_LAST_VERSION, "9");
        assert_eq!(
            version_of(Owner::untyped("a"), 1, Some(&headers), b"ignored"),
            Ok(9)
        );

        let one = Event::new("T", "a", 3).to_json_bytes().unwrap();
        assert_eq!(version_of(Owner::untyped("a"), 1, None, &one), Ok(3));
        let batch =
            serde_json::to_vec(&[Event::new("T", "a", 4), Event::new("T", "a", 7)]).unwrap();
        assert_eq!(version_of(Owner::untyped("a"), 1, None, &batch), Ok(7));
        // A header that does not parse falls back to the payload.
        let mut bad = HeaderMap::new();
        bad.insert(codec::HEADER_LAST_VERSION, "seven");
        assert_eq!(version_of(Owner::untyped("a"), 1, Some(&bad), &one), Ok(3));

        assert!(version_of(Owner::untyped("a"), 1, None, b"not json").is_err());
        assert!(version_of(Owner::untyped("b"), 1, None, &one).is_err());
    }
}
