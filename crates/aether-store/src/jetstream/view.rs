//! A local view of every actor's latest version ([`LatestVersions`]), kept current by a watch
//! on the stream and answering reads with bounded staleness.
//!
//! Three parts: `Shared` (the map and the freshness stamp that readers use, lock-free on the
//! read path), `Confirmations` (I/O-free: which confirmation rounds the watch has caught up
//! with), and `Watch` (the task: an ordered push consumer on the events subjects plus a
//! periodic confirmation round, both driven from one `select!` loop).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Error, EventStore, Result};
use aether_nats::{
    classify, classify_api, timeout_error, validate_actor_id, Backoff, ConsumerSpec, StartAt,
};
use async_nats::jetstream::consumer::push::{Ordered, OrderedError, OrderedErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::codec;
use super::subject::Subjects;
use super::JetStreamEventStore;

/// First pause before reopening a watch that ended or failed; doubles up to the maximum.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(5);

/// A local view of the latest version of every actor in one store's stream, kept current by a
/// watch on the stream, answering [`get_latest_version`](Self::get_latest_version) from memory
/// when it can prove it is fresh enough and from the store otherwise.
///
/// [`JetStreamEventStore::get_latest_version`](aether_core::EventStore::get_latest_version)
/// is one round trip to the server (on one server it sees every acknowledged save; on a
/// replicated stream a replica may answer from behind, though one store's reads never go
/// backwards). This view trades a bounded, documented staleness for a read that is a map
/// lookup.
///
/// # How it stays current
/// - **Watch.** An ordered push consumer on `<stream>.events.*`, starting with the last message
///   of every actor (`DeliverPolicy::LastPerSubject`, so the initial load is one message per
///   actor), then every new message in stream order. The version of a message is its
///   `Aether-Version` header, or, for messages written without it, the last version in its
///   payload (one event or an array). A message that decodes to neither is skipped and counted
///   in [`malformed_messages`](Self::malformed_messages); the watch goes on.
/// - **Confirmation.** Every `max_staleness / 2`, the view notes the time `t0`, then asks the
///   stream leader for the last message on `<stream>.events.*` (its sequence `S`) and the
///   stream's creation time. Once the watch has applied every message up to `S`, the view is
///   *current as of `t0`*. Snapshot messages share the stream but are not in the filter, which
///   is why `S` is the last *event* message and not the stream's last sequence.
/// - **Reads.** A read starting at `now` answers from the map when the view was current as of
///   some `t0 >= now - max_staleness`; otherwise it calls the store's `get_latest_version`
///   (counted in [`fallbacks`](Self::fallbacks)) and folds the answer into the map.
///
/// # Guarantee
/// For a read that starts at time `now` and returns `Ok(v)`:
/// - `v` reflects every save of that actor acknowledged (to any writer, in any process) before
///   `now - max_staleness`, and whatever the view has seen since: `v` is at least the version
///   of each of those saves.
/// - `v` is a version that was stored (or 0 when the actor had no events): the view never
///   invents or predicts one.
/// - Per view, answers never go backwards: a read that starts after another returned answers
///   at least what that one did. Versions in the map only grow, and a fallback's answer is
///   folded in.
///
/// Times are this process's monotonic clock; no clock agreement between machines is assumed.
/// When the view cannot confirm (server paused or unreachable, watch lagging more than
/// `max_staleness / 2`), reads fall back, and fail as the store fails
/// ([`Error::Unavailable`] when the server cannot be reached) rather than answer from a map
/// that is older than the bound.
///
/// Exceptions, by design: if the stream is deleted and created again, the view notices at its
/// next confirmation (the creation time changed), empties the map and loads the new stream, so
/// versions can go back then, as the stream itself did. With a `max_age`, versions of actors
/// whose events have aged out stay in the view (the store then answers 0).
///
/// # Costs
/// One ephemeral consumer (removed by the server 30 s after the view stops), every event
/// message delivered to this process, two requests per `max_staleness / 2`, and memory for
/// every actor id in the stream. Fallbacks use the store's read, so open the store without
/// [`with_cached_reads`](JetStreamEventStore::with_cached_reads) for them to ask the server.
///
/// # Stopping
/// The view's task stops when the view is dropped or [`shutdown`](Self::shutdown) is awaited
/// (which also waits for the task to finish).
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use aether_core::{Event, EventStore};
/// use aether_store::{JetStreamConfig, JetStreamEventStore, LatestVersions};
///
/// # async fn run() -> aether_core::Result<()> {
/// let store = Arc::new(
///     JetStreamEventStore::connect("nats://127.0.0.1:4222", JetStreamConfig::default()).await?,
/// );
/// let view = LatestVersions::start(Arc::clone(&store), Duration::from_millis(500)).await?;
/// store.save_event(&Event::new("OrderPlaced", "order-1", 1)).await?;
/// // At least every version acknowledged more than 500 ms ago; never one that was not stored.
/// let version = view.get_latest_version("order-1").await?;
/// assert!(version <= 1);
/// view.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct LatestVersions {
    store: Arc<JetStreamEventStore>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for LatestVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestVersions")
            .field("stream_name", &self.store.stream_name())
            .field("max_staleness", &self.shared.max_staleness)
            .field("current", &self.is_current())
            .field("actors", &self.actors())
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

impl LatestVersions {
    /// The smallest staleness bound accepted: below it a confirmation round (two requests to
    /// the server) could not complete within the bound even on loopback.
    pub const MIN_STALENESS: Duration = Duration::from_millis(1);

    /// Starts a view of `store`'s stream that answers with at most `max_staleness` of
    /// staleness (see the type's docs for the exact guarantee).
    ///
    /// Returns once the watch is set up; the initial load goes on in the background, and reads
    /// fall back to the store until it is done and confirmed. Choose `max_staleness` well above
    /// a round trip to the server (two requests must complete within half of it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `max_staleness` is below
    /// [`MIN_STALENESS`](Self::MIN_STALENESS);
    /// [`Error::NotFound`] when the stream is gone; [`Error::Unavailable`] when the server
    /// does not answer; other backend errors as typed variants.
    pub async fn start(store: Arc<JetStreamEventStore>, max_staleness: Duration) -> Result<Self> {
        if max_staleness < Self::MIN_STALENESS {
            return Err(Error::invalid(format!(
                "max_staleness of {max_staleness:?} is below the minimum of {:?}",
                Self::MIN_STALENESS
            )));
        }
        let stream_name = store.stream_name().to_string();
        let context = store.context().clone();
        let stream = context
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| classify(format!("opening stream {stream_name}"), e))?;
        // The creation time tells this incarnation of the stream from a later one of the same
        // name (see `Watch::on_round`).
        let info = stream
            .get_info()
            .await
            .map_err(|e| classify(format!("reading info of stream {stream_name}"), e))?;
        let subjects = Subjects::new(&stream_name);
        let filter = subjects.events_filter();
        let shared = Arc::new(Shared::new(max_staleness));
        let first = open_watch(
            stream.clone(),
            context.client(),
            filter.clone(),
            stream_name.clone(),
            0,
        )
        .await?;
        let watch = Watch {
            stream,
            client: context.client(),
            subjects,
            filter,
            stream_name: stream_name.clone(),
            created: info.created.unix_timestamp_nanos(),
            shared: Arc::clone(&shared),
            confirmations: Confirmations::default(),
            backoff: Backoff::new(REOPEN_BACKOFF, MAX_REOPEN_BACKOFF).with_jitter(),
        };
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("latest_versions", stream = %stream_name);
        let task = tokio::spawn(watch.run(first, cancel.clone()).instrument(span));
        Ok(Self {
            store,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// The latest version of `actor_id` (0 when it has no events), with the guarantee in the
    /// type's docs: from the view when it was confirmed current within `max_staleness`,
    /// otherwise from the store (counted in [`fallbacks`](Self::fallbacks)).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an actor id the store does not accept; when the read falls
    /// back, the store's errors ([`Error::Unavailable`] when the server cannot be reached).
    pub async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        validate_actor_id(actor_id)?;
        if let Some(version) = self.shared.answer(actor_id, Instant::now()) {
            return Ok(version);
        }
        self.shared.fallbacks.fetch_add(1, Ordering::Relaxed);
        let version = self.store.get_latest_version(actor_id).await?;
        // Folding the answer in keeps later answers from the map from going below it while
        // the watch catches up. An unknown actor is not inserted: lookups of ids that do not
        // exist must not grow the map.
        if version == 0 {
            return Ok(self.shared.version(actor_id));
        }
        Ok(self.shared.raise(actor_id, version))
    }

    /// Whether a read starting now would answer from the view: it was confirmed current as of
    /// a moment no more than `max_staleness` ago.
    pub fn is_current(&self) -> bool {
        self.shared.fresh(Instant::now())
    }

    /// The staleness bound the view was started with.
    pub fn max_staleness(&self) -> Duration {
        self.shared.max_staleness
    }

    /// How many reads went to the store because the view was not confirmed current.
    pub fn fallbacks(&self) -> u64 {
        self.shared.fallbacks.load(Ordering::Relaxed)
    }

    /// How many messages on the events subjects the watch skipped because neither their header
    /// nor their payload gave a version (or their subject names no actor).
    pub fn malformed_messages(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// How many actors the view knows.
    pub fn actors(&self) -> usize {
        self.shared.versions.len()
    }

    /// Stops the watch and waits for its task to finish. Dropping the view stops it too,
    /// without waiting.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "the latest-versions watch panicked");
                }
            }
        }
    }
}

impl Drop for LatestVersions {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What readers and the watch share. The read path is an atomic load, a clock read and a map
/// probe: no lock besides the map's shard lock.
struct Shared {
    versions: DashMap<String, u64, foldhash::fast::RandomState>,
    max_staleness: Duration,
    /// The reference point `confirmed` counts from.
    origin: Instant,
    /// When the view was last confirmed current: nanoseconds after `origin`, plus one; 0 when
    /// never (or since the last reset).
    confirmed: AtomicU64,
    /// Counts resets (stream re-created), so a reader can tell that the map was emptied while
    /// it looked.
    epoch: AtomicU64,
    fallbacks: AtomicU64,
    malformed: AtomicU64,
}

impl Shared {
    fn new(max_staleness: Duration) -> Self {
        Self {
            versions: DashMap::default(),
            max_staleness,
            origin: Instant::now(),
            confirmed: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Whether the view was confirmed current as of a moment within `max_staleness` of `now`.
    fn fresh(&self, now: Instant) -> bool {
        match self.confirmed.load(Ordering::Acquire) {
            0 => false,
            stamp => {
                let at = self.origin + Duration::from_nanos(stamp - 1);
                now.saturating_duration_since(at) <= self.max_staleness
            }
        }
    }

    /// Records that everything acknowledged before `t0` is in the map. Only ever moves forward.
    fn confirm(&self, t0: Instant) {
        let nanos = u64::try_from(t0.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1);
        // Release: the map updates made before this are visible to a reader that sees the stamp.
        self.confirmed.fetch_max(nanos + 1, Ordering::Release);
    }

    /// The answer for a read that started at `now`, when the view may give it.
    fn answer(&self, actor_id: &str, now: Instant) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if !self.fresh(now) {
            return None;
        }
        let version = self.version(actor_id);
        // A reset between the freshness check and the lookup may have emptied the map: the
        // lookup then synchronised with the clearing, which came after the epoch moved.
        (self.epoch.load(Ordering::Acquire) == epoch).then_some(version)
    }

    fn version(&self, actor_id: &str) -> u64 {
        self.versions.get(actor_id).map_or(0, |v| *v)
    }

    /// Raises the actor's version to at least `version` and returns the result.
    fn raise<A: AsRef<str> + Into<String>>(&self, actor_id: A, version: u64) -> u64 {
        if let Some(mut v) = self.versions.get_mut(actor_id.as_ref()) {
            *v = (*v).max(version);
            return *v;
        }
        let mut v = self.versions.entry(actor_id.into()).or_insert(0);
        *v = (*v).max(version);
        *v
    }

    /// Forgets everything: the stream the map described is gone.
    fn reset(&self) {
        // Order matters for `answer`: first no reader may trust the map, then the epoch moves,
        // then the map empties.
        self.confirmed.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.versions.clear();
    }
}

/// Which confirmation rounds the watch has caught up with. I/O-free.
#[derive(Debug, Default)]
struct Confirmations {
    /// Stream sequence of the last message the watch applied.
    applied: u64,
    /// Rounds not reached yet: when each started and the last event sequence it read. Rounds
    /// run one at a time, so both grow along the queue.
    waiting: VecDeque<(Instant, u64)>,
}

impl Confirmations {
    /// A message at `sequence` was applied. Returns the start of the newest round now reached.
    fn applied(&mut self, sequence: u64) -> Option<Instant> {
        self.applied = self.applied.max(sequence);
        self.reached()
    }

    /// A round that started at `t0` read `last` as the last event sequence. Rounds that started
    /// before `stale_before` can no longer make the view fresh and are dropped. Returns the
    /// start of the newest round reached.
    fn round(&mut self, t0: Instant, last: u64, stale_before: Instant) -> Option<Instant> {
        self.waiting.push_back((t0, last));
        while self
            .waiting
            .front()
            .is_some_and(|&(start, _)| start < stale_before)
        {
            self.waiting.pop_front();
        }
        self.reached()
    }

    fn reached(&mut self) -> Option<Instant> {
        let mut newest = None;
        while let Some(&(t0, last)) = self.waiting.front() {
            if last > self.applied {
                break;
            }
            newest = Some(t0);
            self.waiting.pop_front();
        }
        newest
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

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
struct Watch {
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
    async fn run(mut self, first: Box<Ordered>, cancel: CancellationToken) {
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
            Some(actor_id) => match version_of(
                &actor_id,
                sequence,
                message.headers.as_ref(),
                &message.payload,
            ) {
                Ok(version) => {
                    self.shared.raise(actor_id, version);
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
    actor_id: &str,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> std::result::Result<u64, String> {
    if let Some(version) = headers.and_then(codec::header_last_version) {
        return Ok(version);
    }
    let events = codec::decode_message(actor_id, sequence, payload).map_err(|bad| bad.error)?;
    events
        .last()
        .map(|e| e.version)
        .ok_or_else(|| "no events in the message".to_string())
}

#[cfg(test)]
mod tests {
    use aether_core::Event;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rounds_confirm_once_the_watch_reaches_their_sequence() {
        let base = Instant::now();
        let mut c = Confirmations::default();
        assert_eq!(c.applied(3), None);
        // Already applied: confirmed at once.
        assert_eq!(c.round(base, 3, base), Some(base));
        // Ahead of the watch: waits.
        assert_eq!(c.round(base + ms(10), 7, base), None);
        assert_eq!(c.round(base + ms(20), 9, base), None);
        assert_eq!(c.applied(6), None);
        assert_eq!(c.applied(8), Some(base + ms(10)));
        // Skipping past several rounds confirms the newest of them.
        assert_eq!(c.round(base + ms(30), 12, base), None);
        assert_eq!(c.applied(20), Some(base + ms(30)));
        assert!(c.waiting.is_empty());
        // An empty stream (last 0) is current at once.
        c.reset();
        assert_eq!(c.round(base, 0, base), Some(base));
    }

    #[test]
    fn rounds_too_old_to_help_are_dropped() {
        let base = Instant::now();
        let mut c = Confirmations::default();
        assert_eq!(c.round(base, 5, base), None);
        assert_eq!(c.round(base + ms(100), 6, base + ms(50)), None);
        assert_eq!(c.waiting.len(), 1);
        assert_eq!(c.applied(6), Some(base + ms(100)));
    }

    #[test]
    fn freshness_follows_the_bound_and_resets() {
        let shared = Shared::new(ms(100));
        let t = shared.origin;
        assert!(!shared.fresh(t));
        assert_eq!(shared.answer("a", t), None);
        shared.raise("a", 4);
        shared.confirm(t + ms(10));
        assert!(shared.fresh(t + ms(110)));
        assert!(!shared.fresh(t + ms(111)));
        assert_eq!(shared.answer("a", t + ms(50)), Some(4));
        assert_eq!(shared.answer("b", t + ms(50)), Some(0));
        // The stamp never moves back.
        shared.confirm(t);
        assert!(shared.fresh(t + ms(110)));
        shared.reset();
        assert!(!shared.fresh(t + ms(20)));
        assert_eq!(shared.version("a"), 0);
    }

    #[test]
    fn versions_only_grow() {
        let shared = Shared::new(ms(100));
        assert_eq!(shared.raise("a", 5), 5);
        assert_eq!(shared.raise("a".to_string(), 3), 5);
        assert_eq!(shared.raise("a", 6), 6);
        assert_eq!(shared.version("a"), 6);
    }

    #[test]
    fn versions_come_from_the_header_or_the_payload() {
        let mut headers = HeaderMap::new();
        headers.insert(codec::HEADER_LAST_VERSION, "9");
        assert_eq!(version_of("a", 1, Some(&headers), b"ignored"), Ok(9));

        let one = Event::new("T", "a", 3).to_json_bytes().unwrap();
        assert_eq!(version_of("a", 1, None, &one), Ok(3));
        let batch =
            serde_json::to_vec(&[Event::new("T", "a", 4), Event::new("T", "a", 7)]).unwrap();
        assert_eq!(version_of("a", 1, None, &batch), Ok(7));
        // A header that does not parse falls back to the payload.
        let mut bad = HeaderMap::new();
        bad.insert(codec::HEADER_LAST_VERSION, "seven");
        assert_eq!(version_of("a", 1, Some(&bad), &one), Ok(3));

        assert!(version_of("a", 1, None, b"not json").is_err());
        assert!(version_of("b", 1, None, &one).is_err());
    }
}
