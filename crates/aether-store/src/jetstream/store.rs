//! The store itself.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aether_core::{
    validate_batch, Error, Event, EventStore, EventStoreWithErrors, ReplayResult, Result, Snapshot,
    SnapshotStore,
};
use aether_nats::{
    classify, classify_api, has_api_code, validate_actor_id as check_actor_id, Backoff, Connection,
    JsSubject, PermissionWatch, MAX_STREAM_NAME_BYTES,
};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{
    ConsumerErrorKind, DirectGetErrorKind, LastRawMessageErrorKind, Stream,
};
use async_nats::jetstream::{Context, ErrorCode};
use async_trait::async_trait;
use dashmap::DashMap;
use futures::StreamExt;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codec::{self, Encoded};
use super::config::JetStreamConfig;
use super::setup;
use super::subject::Subjects;

/// How often a save is retried when the server rejects it because another writer appended an
/// earlier version in the meantime (the attempted version is still above the current one).
const MAX_PUBLISH_ATTEMPTS: usize = 16;
/// How often an operation that failed without an answer (timeout, lost connection) is retried
/// before the error is returned. Reads are idempotent, and a save is safe to repeat because
/// the server admits at most one publish per expected sequence.
const MAX_TRANSIENT_RETRIES: u32 = 1;
/// Wait before the first retry; it doubles with each further one.
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between retries of a transient failure.
const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(2);
/// Histories shorter than this (by their last version) are replayed from the start rather than
/// searched for the first wanted message.
const SEARCH_MIN_HISTORY: u64 = 512;
/// Messages requested per pull while replaying.
const REPLAY_BATCH: u64 = 1000;
/// How long one pull may wait for messages the server said are pending.
const REPLAY_PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Empty pulls in a row tolerated before a replay gives up.
const REPLAY_MAX_EMPTY_PULLS: usize = 3;
/// How often a replay resumes with a new consumer after losing one to a failed server (the
/// wait doubles each time from 100 ms: about 3 s in all, longer than an election takes).
/// Consumer creation retries share the count.
const MAX_REPLAY_RESUMES: u32 = 5;
/// How long the server keeps a replay consumer whose reader vanished.
const REPLAY_CONSUMER_INACTIVITY: Duration = Duration::from_secs(30);

/// What reading the actor's last message told: the tip and the id of the last event in it.
#[derive(Debug, Clone, Default)]
struct TipRead {
    tip: Tip,
    last_event_id: Option<String>,
}

/// The actor's last stored message: its stream sequence and the last version in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tip {
    seq: u64,
    version: u64,
}

/// A durable event store on NATS JetStream, correct with any number of writers on any number of
/// machines.
///
/// - **Concurrency.** Every save is published with the `Nats-Expected-Last-Subject-Sequence`
///   header set to the stream sequence of the actor's last message, so the server rejects a
///   write based on a stale view; the rejection becomes [`Error::VersionConflict`] with the
///   current version read fresh from the stream. A per-actor cache of the last (sequence,
///   version) saves a read before each write; it is only ever a guess the server checks.
/// - **Batches.** [`save_events`](EventStore::save_events) stores the whole batch in one message
///   (a JSON array of events), so it is appended atomically on every server version: readers
///   see all of the batch or none of it. The batch must fit in the server's `max_payload`.
/// - **Subjects.** Events go to `<stream>.events.<actor>` and snapshots to
///   `<stream>.snapshots.<actor>`, the actor id encoded by
///   [`encode_actor_id`](aether_nats::encode_actor_id) into one wildcard-free token.
/// - **Reads.** The latest version is one direct get of the actor's last message. Replays use a
///   short-lived pull consumer filtered to the actor's subject, starting at the first message
///   that holds `from_version` (found by a binary search of direct gets).
/// - **Immutability.** The stream denies deletes and purges; events leave it only by age, and
///   only when [`JetStreamConfig::max_age`] sets one (by default they are kept forever).
/// - **Replication.** `replicas > 1` needs nats-server 2.11 or later; older servers are refused
///   (see [`JetStreamConfig::allow_replication_on_old_servers`]).
/// - **Permissions.** NATS never answers a request its permissions refuse. With a
///   [`PermissionWatch`] (installed by [`connect`](Self::connect)), such an operation fails
///   with [`Error::PermissionDenied`] naming the refused subject as soon as the server reports
///   the refusal.
///
/// ```no_run
/// use aether_core::{Event, EventStore};
/// use aether_store::{JetStreamConfig, JetStreamEventStore};
///
/// # async fn run() -> aether_core::Result<()> {
/// let store =
///     JetStreamEventStore::connect("nats://127.0.0.1:4222", JetStreamConfig::default().namespace("orders"))
///         .await?;
/// store.save_event(&Event::new("OrderPlaced", "order-1", 1)).await?;
/// assert_eq!(store.get_latest_version("order-1").await?, 1);
/// # Ok(())
/// # }
/// ```
pub struct JetStreamEventStore {
    client: async_nats::Client,
    context: Context,
    stream: Stream,
    stream_name: String,
    config: JetStreamConfig,
    subjects: Subjects,
    direct: bool,
    // Fast, randomly seeded hashing: the warm latest-version lookup is one map probe.
    cache: DashMap<String, Tip, foldhash::fast::RandomState>,
    cached_reads: bool,
    malformed: AtomicU64,
    permissions: Option<PermissionWatch>,
    /// Best-effort clean-up of replay consumers, off the callers' path.
    cleanups: TaskTracker,
}

impl fmt::Debug for JetStreamEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamEventStore")
            .field("stream_name", &self.stream_name)
            .field("namespace", &self.namespace())
            .field("direct_get", &self.direct)
            .field("cached_actors", &self.cache.len())
            .field("cached_reads", &self.cached_reads)
            .field("malformed_events", &self.malformed_events())
            .field("pending_cleanups", &self.cleanups.len())
            .finish()
    }
}

enum PublishFailure {
    /// The actor's last message is not the one the publish expected.
    WrongLastSequence,
    Other(Error),
}

impl JetStreamEventStore {
    /// Opens the store on `client`, creating the stream if it is missing and attaching to it if
    /// it exists.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when JetStream does not answer, [`Error::InvalidInput`] when a
    /// stream of that name exists but captures other subjects, other backend errors as typed
    /// variants.
    pub async fn new(client: async_nats::Client, config: JetStreamConfig) -> Result<Self> {
        Self::from_context(async_nats::jetstream::new(client), config).await
    }

    /// Opens the store with a namespace: the stream is `<namespace>_<stream_name>` (sanitised),
    /// and stores in other namespaces cannot see its events.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn with_namespace(
        client: async_nats::Client,
        stream_name: &str,
        namespace: &str,
    ) -> Result<Self> {
        let config = JetStreamConfig::default()
            .stream_name(stream_name)
            .namespace(namespace);
        Self::new(client, config).await
    }

    /// Opens the store on an existing JetStream context (to reuse its timeout, domain or API
    /// prefix).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn from_context(context: Context, config: JetStreamConfig) -> Result<Self> {
        if config.stream_name.is_empty() {
            return Err(Error::invalid("the stream name must not be empty"));
        }
        let stream_name = setup::stream_name_for(&config);
        // The server keeps a stream in a directory of that name, so names are limited; say so
        // plainly instead of letting the request fail obscurely.
        if stream_name.len() > MAX_STREAM_NAME_BYTES {
            return Err(Error::invalid(format!(
                "stream name for namespace {:?} would be {} bytes; the limit is {} (use a shorter namespace or stream name)",
                config.namespace_in_use().unwrap_or(""),
                stream_name.len(),
                MAX_STREAM_NAME_BYTES
            )));
        }
        if config.replica_count() > 1 {
            let version = context.client().server_info().version;
            if server_older_than(&version, 2, 11) {
                if !config.allow_replication_on_old_servers {
                    return Err(Error::invalid(format!(
                        "a replicated event stream ({} replicas) needs nats-server 2.11 or later; \
                         this server is {version}, on which a leader change can lose acknowledged \
                         events or accept one version twice. Upgrade the servers, use one \
                         replica, or set allow_replication_on_old_servers to accept the risk",
                        config.replica_count()
                    )));
                }
                tracing::warn!(
                    server_version = %version,
                    stream = %stream_name,
                    "replicated event streams on nats-server before 2.11 can lose acknowledged \
                     writes or accept one version twice across leader changes; upgrade the servers"
                );
            }
        }
        let subjects = Subjects::new(&stream_name);
        let desired = setup::desired_config(&stream_name, &subjects, &config);
        let stream = setup::ensure_stream(&context, desired).await?;
        let direct = stream.cached_info().config.allow_direct;
        Ok(Self {
            client: context.client(),
            context,
            stream,
            stream_name,
            config,
            subjects,
            direct,
            cache: DashMap::default(),
            cached_reads: false,
            malformed: AtomicU64::new(0),
            permissions: None,
            cleanups: TaskTracker::new(),
        })
    }

    /// Connects to `url` and opens the store.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached; otherwise as [`new`](Self::new).
    pub async fn connect(url: &str, config: JetStreamConfig) -> Result<Self> {
        Self::connect_with_options(url, async_nats::ConnectOptions::new(), config).await
    }

    /// Like [`connect`](Self::connect) with your own connect options (credentials, TLS,
    /// reconnect policy...).
    ///
    /// The connection's [`ConnectionMonitor`](aether_nats::ConnectionMonitor) is installed as
    /// its event callback (replacing any set in `options`), so that an operation the server's
    /// permissions refuse fails with [`Error::PermissionDenied`] naming the refused subject,
    /// rather than as a timeout.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] when the server refuses the credentials or the user may not
    /// use the stream; otherwise as [`connect`](Self::connect).
    pub async fn connect_with_options(
        url: &str,
        options: async_nats::ConnectOptions,
        config: JetStreamConfig,
    ) -> Result<Self> {
        let connection = Connection::connect(url, options).await?;
        Self::open(&connection, config).await
    }

    /// Opens the store on a [`Connection`] (shared, for example, with a bus), watching the
    /// connection's permission violations as [`with_permission_watch`](Self::with_permission_watch)
    /// does.
    ///
    /// # Errors
    /// As [`connect_with_options`](Self::connect_with_options).
    pub async fn open(connection: &Connection, config: JetStreamConfig) -> Result<Self> {
        let stream_name = setup::stream_name_for(&config);
        let watch = connection.permissions().clone();
        let opened = watch
            .guard(
                || format!("opening stream {stream_name}"),
                |_, subject| dooms(subject, &stream_name, None, false),
                None,
                Self::new(connection.client().clone(), config),
            )
            .await?;
        Ok(opened.with_permission_watch(watch))
    }

    /// Uses `watch` to tell refused operations from slow ones: when the server reports refusing
    /// a subject an operation uses, the operation fails at once with
    /// [`Error::PermissionDenied`] naming the subject, instead of waiting for its timeout and
    /// reporting [`Error::Unavailable`]. NATS reports violations only to the event callback given at
    /// connect time, so `watch` must be that of a monitor installed on this store's client
    /// ([`ConnectionMonitor::install`](aether_nats::ConnectionMonitor::install));
    /// [`connect`](Self::connect), [`connect_with_options`](Self::connect_with_options) and
    /// [`open`](Self::open) do this themselves.
    pub fn with_permission_watch(mut self, watch: PermissionWatch) -> Self {
        self.permissions = Some(watch);
        self
    }

    /// Lets [`get_latest_version`](EventStore::get_latest_version) answer from the per-actor
    /// cache when it knows the actor (off by default).
    ///
    /// Saves are checked by the server either way. With this on, the latest version can lag
    /// behind writes made by other processes until this store writes or reads that actor's
    /// history again; leave it off when several processes write the same actors.
    pub fn with_cached_reads(mut self, on: bool) -> Self {
        self.cached_reads = on;
        self
    }

    /// The namespace the store was opened with, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.config.namespace_in_use()
    }

    /// The name of the stream a store opened with `config` uses: the sanitised stream name,
    /// prefixed with the sanitised namespace and `_` when there is one. Lets tools look the
    /// stream up without opening a store (which would create it).
    pub fn stream_name_for(config: &JetStreamConfig) -> String {
        setup::stream_name_for(config)
    }

    /// The JetStream stream holding the events (namespace prefix included).
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// The subject an actor's events are stored on.
    pub fn event_subject(&self, actor_id: &str) -> String {
        self.subjects.events(actor_id)
    }

    /// The subject an actor's snapshots are stored on.
    pub fn snapshot_subject(&self, actor_id: &str) -> String {
        self.subjects.snapshots(actor_id)
    }

    /// How many malformed messages reads have met so far (skipped by
    /// [`get_events`](EventStore::get_events), reported by
    /// [`get_events_with_errors`](EventStoreWithErrors::get_events_with_errors)).
    pub fn malformed_events(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The latest version this store has seen for the actor, from memory, without asking the
    /// server (`None` when the actor is not cached). May lag behind other writers.
    pub fn cached_latest_version(&self, actor_id: &str) -> Option<u64> {
        self.cache.get(actor_id).map(|t| t.version)
    }

    /// The stream's current info from the server (configuration and state).
    ///
    /// # Errors
    /// Backend errors as typed variants.
    pub async fn stream_info(&self) -> Result<async_nats::jetstream::stream::Info> {
        self.stream
            .get_info()
            .await
            .map_err(|e| classify(format!("reading info of stream {}", self.stream_name), e))
    }

    /// The JetStream context the store uses.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Runs `op`, operation `name` on behalf of `actor_id` (or the whole stream), in a span
    /// naming them and under the permission watch: NATS never answers a refused request, so
    /// without the watch the operation would wait for its timeout and report `Unavailable`; a
    /// refusal of a subject the operation depends on ([`dooms`]) fails it at once with
    /// [`Error::PermissionDenied`].
    async fn guard<T>(
        &self,
        name: &'static str,
        actor_id: Option<&str>,
        writes: bool,
        what: impl Fn() -> String,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::info_span!("store", op = name, stream = %self.stream_name, actor_id);
        let Some(watch) = &self.permissions else {
            return op.instrument(span).await;
        };
        let subjects = actor_id.map(|a| (self.subjects.events(a), self.subjects.snapshots(a)));
        let own = subjects.as_ref().map(|(e, s)| (e.as_str(), s.as_str()));
        watch
            .guard(
                what,
                |_, subject| dooms(subject, &self.stream_name, own, writes),
                None,
                op,
            )
            .instrument(span)
            .await
    }

    // ---- writing ----

    /// Records `tip` unless the cache already knows a later message (sequences only grow).
    fn remember(&self, actor_id: &str, tip: Tip) {
        self.cache
            .entry(actor_id.to_string())
            .and_modify(|t| {
                if tip.seq > t.seq {
                    *t = tip;
                }
            })
            .or_insert(tip);
    }

    async fn append(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        check_actor_id(actor_id)?;
        let encoded = codec::encode_events(events)?;
        codec::check_size(&encoded, self.client.server_info().max_payload)?;
        let subject = self.subjects.events(actor_id);

        let cached = self.cache.get(actor_id).map(|t| *t);
        let mut from_cache = cached.is_some();
        let mut tip = match cached {
            Some(t) => t,
            None => self.read_tip(actor_id, false).await?.tip,
        };
        // Set once a publish failed without an answer: it may have been stored after all, and
        // then the actor's last message is ours.
        let mut uncertain = false;
        let mut retry = Backoff::new(TRANSIENT_BACKOFF, MAX_TRANSIENT_BACKOFF);
        // 1, 2, 4 ... ms up to 64 ms, jittered so that contending writers spread out.
        let mut contention =
            Backoff::new(Duration::from_millis(2), Duration::from_millis(64)).with_jitter();
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            if first.version <= tip.version {
                if from_cache {
                    // Report the server's current version, not the cached one (and a cache
                    // from before the stream was recreated must not refuse a valid save).
                    tip = self.read_tip(actor_id, true).await?.tip;
                    from_cache = false;
                    continue;
                }
                if uncertain && self.history_holds(actor_id, first.version, &last.id).await {
                    // An unanswered attempt went in, and others have written after it.
                    return Ok(());
                }
                return Err(Error::version_conflict(
                    actor_id,
                    first.version,
                    tip.version,
                ));
            }
            let failure = match self.publish(&subject, &encoded, tip.seq).await {
                Ok(seq) => {
                    self.remember(
                        actor_id,
                        Tip {
                            seq,
                            version: last.version,
                        },
                    );
                    return Ok(());
                }
                Err(PublishFailure::WrongLastSequence) => None,
                Err(PublishFailure::Other(e)) => {
                    // Retrying is safe: the expected sequence lets at most one of the attempts
                    // in, and the event id below tells whether an earlier one got in.
                    if e.is_retryable() && retry.attempts() < MAX_TRANSIENT_RETRIES {
                        uncertain = true;
                        tracing::debug!(error = %e, "publish failed without an answer; retrying");
                        retry.wait().await;
                        Some(e)
                    } else {
                        // The outcome is unknown: forget what we knew so the next save asks
                        // the server.
                        self.cache.remove(actor_id);
                        return Err(e);
                    }
                }
            };
            // Someone (maybe our own earlier attempt) appended since our view: re-read the
            // truth from the stream leader and decide again.
            let fresh = match self.read_tip(actor_id, true).await {
                Ok(f) => f,
                Err(e) => {
                    self.cache.remove(actor_id);
                    return Err(failure.unwrap_or(e));
                }
            };
            if uncertain && fresh.last_event_id.as_deref() == Some(last.id.as_str()) {
                return Ok(());
            }
            if failure.is_none() && fresh.tip == tip {
                // Rejected, yet the last message is the one we expected: another writer's
                // append is still being replicated (clustered streams reject against pending
                // writes). Give it a moment to land before deciding again.
                contention.wait().await;
            }
            tip = fresh.tip;
            from_cache = false;
            tracing::debug!(
                current_version = tip.version,
                attempted_version = first.version,
                "expected last sequence was stale"
            );
        }
        Err(Error::unavailable(
            format!("saving events of actor {actor_id:?}"),
            format!(
                "the actor's history kept changing under {MAX_PUBLISH_ATTEMPTS} attempts to append"
            ),
        ))
    }

    /// Whether the actor's history from `from_version` holds the event `event_id` (a read
    /// failure counts as no).
    async fn history_holds(&self, actor_id: &str, from_version: u64, event_id: &str) -> bool {
        match self.replay(actor_id, from_version).await {
            Ok(r) => r.events.iter().any(|e| e.id == event_id),
            Err(e) => {
                tracing::debug!(error = %e, "could not check whether an unanswered save went in");
                false
            }
        }
    }

    async fn publish(
        &self,
        subject: &str,
        encoded: &Encoded,
        expected_seq: u64,
    ) -> std::result::Result<u64, PublishFailure> {
        let message = PublishMessage::build()
            .payload(encoded.payload.clone())
            .headers(encoded.headers.clone())
            .expected_last_subject_sequence(expected_seq);
        let context = || format!("publishing to {subject} on stream {}", self.stream_name);
        let result = match self
            .context
            .send_publish(subject.to_string(), message)
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => Ok(ack.sequence),
            Err(e) => Err(match e.kind() {
                PublishErrorKind::WrongLastSequence => PublishFailure::WrongLastSequence,
                // Clustered streams answer with the "constant" variant of the error (10164),
                // which the client does not sort as wrong-last-sequence.
                _ if has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
                    || has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) =>
                {
                    PublishFailure::WrongLastSequence
                }
                PublishErrorKind::StreamNotFound => {
                    return Err(PublishFailure::Other(
                        self.missing_or_unavailable(context(), "no stream answered")
                            .await,
                    ));
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    PublishFailure::Other(Error::PayloadTooLarge {
                        size: codec::wire_size(&encoded.headers, encoded.payload.len()),
                        limit: self.client.server_info().max_payload,
                    })
                }
                PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::MaxAckPending => {
                    PublishFailure::Other(Error::unavailable(context(), e))
                }
                _ => PublishFailure::Other(classify(context(), e)),
            }),
        }
    }

    // ---- reading ----

    /// The last message on `subject`, `None` when there is none. `leader` forces a read from the
    /// stream leader (a direct get may be answered by a lagging replica).
    async fn last_message(&self, subject: &str, leader: bool) -> Result<Option<StreamMessage>> {
        let mut retry = Backoff::new(TRANSIENT_BACKOFF, MAX_TRANSIENT_BACKOFF);
        loop {
            match self.last_message_once(subject, leader).await {
                Err(e) if e.is_retryable() && retry.attempts() < MAX_TRANSIENT_RETRIES => {
                    // Older servers let a direct get for a deleted stream time out instead of
                    // answering "no responders": ask the JetStream API whether it still exists.
                    let connected =
                        self.client.connection_state() == async_nats::connection::State::Connected;
                    if connected {
                        if let Err(missing @ Error::NotFound(_)) = self.stream_info().await {
                            return Err(missing);
                        }
                    }
                    tracing::debug!(subject, error = %e, "read failed without an answer; retrying");
                    retry.wait().await;
                }
                other => return other,
            }
        }
    }

    async fn last_message_once(
        &self,
        subject: &str,
        leader: bool,
    ) -> Result<Option<StreamMessage>> {
        let context = || {
            format!(
                "reading the last message of {subject} on stream {}",
                self.stream_name
            )
        };
        if self.direct && !leader {
            match self.stream.direct_get_last_for_subject(subject).await {
                Ok(m) => Ok(Some(m)),
                Err(e) => match e.kind() {
                    // async-nats reports "no message" as an error.
                    DirectGetErrorKind::NotFound => Ok(None),
                    DirectGetErrorKind::TimedOut => Err(Error::unavailable(context(), e)),
                    DirectGetErrorKind::ErrorResponse(status, _) if status.as_u16() == 503 => {
                        Err(self
                            .missing_or_unavailable(context(), "no responders")
                            .await)
                    }
                    _ if no_responders(&e) => Err(self
                        .missing_or_unavailable(context(), "no responders")
                        .await),
                    _ => Err(classify(context(), e)),
                },
            }
        } else {
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Ok(Some(m)),
                Err(e) => match e.kind() {
                    LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    LastRawMessageErrorKind::JetStream(ref api)
                        if api.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
                    {
                        Ok(None)
                    }
                    LastRawMessageErrorKind::JetStream(ref api) => {
                        Err(classify_api(context(), Some(api), e))
                    }
                    _ => Err(classify(context(), e)),
                },
            }
        }
    }

    /// Nobody answered for the stream: either it is gone (`NotFound`), or it exists and has no
    /// leader for the moment, as during an election in a cluster (`Unavailable`, retryable).
    /// Asks the JetStream API, on this error path only, which of the two it is.
    async fn missing_or_unavailable(&self, context: String, what: &str) -> Error {
        match self.context.get_stream(&self.stream_name).await {
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref api)
                        if api.error_code() == ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Error::NotFound(format!(
                    "{context}: {what}; stream {} does not exist",
                    self.stream_name
                ))
            }
            _ => Error::unavailable(
                context,
                format!(
                    "{what}; stream {} exists but did not answer (no leader yet, or JetStream not ready)",
                    self.stream_name
                ),
            ),
        }
    }

    /// Reads the actor's last (sequence, version) from the stream and caches it.
    async fn read_tip(&self, actor_id: &str, leader: bool) -> Result<TipRead> {
        let subject = self.subjects.events(actor_id);
        let Some(msg) = self.last_message(&subject, leader).await? else {
            if leader {
                self.cache.remove(actor_id);
            }
            return Ok(TipRead::default());
        };
        let header_version = codec::header_last_version(&msg.headers);
        let header_id = codec::header_last_event_id(&msg.headers);
        let (version, last_event_id) = match (header_version, header_id) {
            (Some(v), id) => (v, id),
            (None, _) => match codec::decode_message(actor_id, msg.sequence, &msg.payload) {
                Ok(events) => events
                    .last()
                    .map_or((0, None), |e| (e.version, Some(e.id.clone()))),
                Err(bad) => {
                    // A message this store did not write sits last: the actor's version is the
                    // last one among the messages that do decode.
                    tracing::warn!(
                        sequence = bad.sequence,
                        error = %bad.error,
                        "the actor's last message is malformed; scanning its history for the latest version"
                    );
                    let replay = self.replay(actor_id, 0).await?;
                    (
                        replay.events.iter().map(|e| e.version).max().unwrap_or(0),
                        None,
                    )
                }
            },
        };
        let tip = Tip {
            seq: msg.sequence,
            version,
        };
        if leader {
            // The leader's answer is authoritative, even over a later-looking cache entry
            // (which can only come from a stream that was deleted and recreated).
            self.cache.insert(actor_id.to_string(), tip);
        } else {
            self.remember(actor_id, tip);
        }
        Ok(TipRead { tip, last_event_id })
    }

    /// The last version held by the first message on the actor's subject at or after `seq`.
    async fn probe(&self, subject: &str, actor_id: &str, seq: u64) -> Option<(u64, u64)> {
        let msg = self
            .stream
            .direct_get_next_for_subject(subject, Some(seq))
            .await
            .ok()?;
        let version = match codec::header_last_version(&msg.headers) {
            Some(v) => v,
            None => {
                codec::decode_message(actor_id, msg.sequence, &msg.payload)
                    .ok()?
                    .last()?
                    .version
            }
        };
        Some((msg.sequence, version))
    }

    /// The stream sequence to start a replay from: the first message of the actor whose last
    /// version is at least `from_version`, found by binary search over stream sequences (a
    /// message's versions grow with its sequence). Falls back to 1 when anything is unclear.
    async fn start_sequence(
        &self,
        subject: &str,
        actor_id: &str,
        from_version: u64,
        tip: u64,
        last_version: Option<u64>,
    ) -> u64 {
        if from_version <= 1 || !self.direct {
            return 1;
        }
        // Each probe costs a round trip, about as much as streaming a few hundred messages, so
        // search only when the versions suggest a long history of which most can be skipped.
        // Versions need not be contiguous: a wrong guess costs time, never correctness.
        if let Some(last) = last_version {
            let to_read = last.saturating_sub(from_version);
            if last < SEARCH_MIN_HISTORY || to_read >= last / 2 {
                return 1;
            }
        }
        let (mut lo, mut hi) = (1u64, tip);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.probe(subject, actor_id, mid).await {
                Some((_, version)) if version >= from_version => hi = mid,
                Some((seq, _)) => lo = seq.max(mid) + 1,
                None => return 1,
            }
        }
        lo
    }

    /// Reads the actor's messages with versions from `from_version`, decoding what decodes and
    /// collecting the rest as replay errors.
    /// [`replay`](Self::replay) under the permission watch, as the public reads run it.
    async fn guarded_replay(&self, actor_id: &str, from_version: u64) -> Result<ReplayResult> {
        self.guard(
            "replay",
            Some(actor_id),
            false,
            || format!("replaying actor {actor_id:?}"),
            self.replay(actor_id, from_version),
        )
        .await
    }

    async fn replay(&self, actor_id: &str, from_version: u64) -> Result<ReplayResult> {
        let mut result = ReplayResult::default();
        check_actor_id(actor_id)?;
        let subject = self.subjects.events(actor_id);
        let Some(last) = self.last_message(&subject, false).await? else {
            return Ok(result);
        };
        if codec::header_last_version(&last.headers).is_some_and(|v| v < from_version) {
            return Ok(result);
        }
        let mut next_seq = self
            .start_sequence(
                &subject,
                actor_id,
                from_version,
                last.sequence,
                codec::header_last_version(&last.headers),
            )
            .await;
        let context = || format!("replaying {subject} on stream {}", self.stream_name);
        // Messages left to read, as the server counted them when the replay began; the replay
        // returns the history as of its start.
        let mut remaining: Option<u64> = None;
        // A replay consumer lives on one server: when that server goes (a failover), the
        // replay resumes after the last message received with a new consumer.
        let mut resumes = Backoff::new(TRANSIENT_BACKOFF * 2, MAX_TRANSIENT_BACKOFF * 2);
        loop {
            let created = self
                .stream
                .create_consumer(pull::Config {
                    deliver_policy: if next_seq <= 1 {
                        DeliverPolicy::All
                    } else {
                        DeliverPolicy::ByStartSequence {
                            start_sequence: next_seq,
                        }
                    },
                    ack_policy: AckPolicy::None,
                    filter_subject: subject.clone(),
                    inactive_threshold: REPLAY_CONSUMER_INACTIVITY,
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let api = match e.kind() {
                        ConsumerErrorKind::JetStream(api) => Some(api),
                        _ => None,
                    };
                    classify_api(
                        format!("{}: creating a consumer", context()),
                        api.as_ref(),
                        e,
                    )
                });
            let consumer = match created {
                Ok(c) => c,
                Err(e) if e.is_retryable() && resumes.attempts() < MAX_REPLAY_RESUMES => {
                    tracing::debug!(subject, error = %e, "could not create a replay consumer; retrying");
                    resumes.wait().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let consumer_name = consumer.cached_info().name.clone();
            let pending = consumer.cached_info().num_pending;
            let mut left = *remaining.get_or_insert(pending);
            let outcome = self
                .drain(
                    &consumer,
                    actor_id,
                    from_version,
                    &mut left,
                    &mut result,
                    &mut next_seq,
                )
                .await;
            remaining = Some(left);
            // Best effort, off the caller's path: the server also removes it once idle, and
            // waiting for the answer would add a round trip to every replay (or a whole request
            // timeout for a user who may not delete consumers).
            let stream = self.stream.clone();
            self.cleanups.spawn(async move {
                if let Err(e) = stream.delete_consumer(&consumer_name).await {
                    tracing::debug!(error = %e, consumer = %consumer_name, "could not delete a replay consumer");
                }
            });
            match outcome {
                Ok(Drained::Done) => return Ok(result),
                Ok(Drained::Gap) => {
                    tracing::debug!(
                        subject,
                        next_seq,
                        "gap in a replay; resuming with a new consumer"
                    );
                }
                Err(e) if e.is_retryable() && resumes.attempts() < MAX_REPLAY_RESUMES => {
                    tracing::debug!(
                        subject,
                        next_seq,
                        error = %e,
                        "replay consumer lost; resuming with a new consumer"
                    );
                    resumes.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn drain(
        &self,
        consumer: &async_nats::jetstream::consumer::PullConsumer,
        actor_id: &str,
        from_version: u64,
        left: &mut u64,
        result: &mut ReplayResult,
        next_seq: &mut u64,
    ) -> Result<Drained> {
        let context = || {
            format!(
                "replaying actor {actor_id:?} on stream {}",
                self.stream_name
            )
        };
        let mut consumer_seq = 0u64;
        // A continuous pull stream keeps the next batch in flight while this one is decoded,
        // instead of one round trip per batch.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(REPLAY_BATCH as usize)
            .expires(REPLAY_PULL_EXPIRY)
            .messages()
            .await
            .map_err(|e| classify(context(), e))?;
        let idle_limit = REPLAY_PULL_EXPIRY * REPLAY_MAX_EMPTY_PULLS as u32;
        while *left > 0 {
            let msg = match tokio::time::timeout(idle_limit, messages.next()).await {
                Ok(Some(msg)) => msg.map_err(|e| classify(context(), e))?,
                Ok(None) | Err(_) => {
                    // Messages counted as pending never came: they may have aged out.
                    let mut c = consumer.clone();
                    let info = c.info().await.map_err(|e| classify(context(), e))?;
                    if info.num_pending == 0 {
                        break;
                    }
                    return Err(Error::unavailable(
                        context(),
                        format!("{} pending messages were not delivered", info.num_pending),
                    ));
                }
            };
            let info = msg.info().map_err(|e| classify(context(), BoxedCause(e)))?;
            if info.consumer_sequence != consumer_seq + 1 {
                // A message was lost between server and client; start again after the last
                // one received so nothing is skipped or repeated.
                return Ok(Drained::Gap);
            }
            consumer_seq = info.consumer_sequence;
            *next_seq = info.stream_sequence + 1;
            let caught_up = info.pending == 0;
            let sequence = info.stream_sequence;
            *left -= 1;
            match codec::decode_message(actor_id, sequence, &msg.payload) {
                Ok(events) => result
                    .events
                    .extend(events.into_iter().filter(|e| e.version >= from_version)),
                Err(bad) => result.errors.push(bad),
            }
            if caught_up {
                *left = 0;
            }
        }
        Ok(Drained::Done)
    }

    fn count_malformed(&self, actor_id: &str, result: &ReplayResult) {
        for bad in &result.errors {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                actor_id,
                stream = %self.stream_name,
                sequence = bad.sequence,
                bytes = bad.raw.len(),
                error = %bad.error,
                "skipping a malformed event message"
            );
        }
    }
}

enum Drained {
    Done,
    /// Resume after a gap.
    Gap,
}

/// Wraps the client's boxed errors so they can be classified and kept as a source.
#[derive(Debug)]
struct BoxedCause(async_nats::Error);

impl fmt::Display for BoxedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BoxedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

fn no_responders(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<async_nats::RequestError>() {
            if r.kind() == async_nats::RequestErrorKind::NoResponders {
                return true;
            }
        }
        current = err.source();
    }
    false
}

#[async_trait]
impl EventStore for JetStreamEventStore {
    async fn save_event(&self, event: &Event) -> Result<()> {
        event.validate()?;
        let actor_id = event.actor_id.as_str();
        self.guard(
            "save_event",
            Some(actor_id),
            true,
            || format!("saving an event of actor {actor_id:?}"),
            self.append(actor_id, std::slice::from_ref(event)),
        )
        .await
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        validate_batch(actor_id, events)?;
        self.guard(
            "save_events",
            Some(actor_id),
            true,
            || format!("saving events of actor {actor_id:?}"),
            self.append(actor_id, events),
        )
        .await
    }

    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        let result = self.guarded_replay(actor_id, from_version).await?;
        self.count_malformed(actor_id, &result);
        Ok(result.events)
    }

    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        check_actor_id(actor_id)?;
        if self.cached_reads {
            if let Some(v) = self.cached_latest_version(actor_id) {
                return Ok(v);
            }
        }
        let read = self
            .guard(
                "get_latest_version",
                Some(actor_id),
                false,
                || format!("reading the latest version of actor {actor_id:?}"),
                self.read_tip(actor_id, false),
            )
            .await?;
        Ok(read.tip.version)
    }
}

#[async_trait]
impl EventStoreWithErrors for JetStreamEventStore {
    async fn get_events_with_errors(
        &self,
        actor_id: &str,
        from_version: u64,
    ) -> Result<ReplayResult> {
        let result = self.guarded_replay(actor_id, from_version).await?;
        self.malformed
            .fetch_add(result.errors.len() as u64, Ordering::Relaxed);
        Ok(result)
    }
}

#[async_trait]
impl SnapshotStore for JetStreamEventStore {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let actor_id = snapshot.actor_id.as_str();
        self.guard(
            "save_snapshot",
            Some(actor_id),
            true,
            || format!("saving a snapshot of actor {actor_id:?}"),
            self.store_snapshot(snapshot),
        )
        .await
    }

    async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        self.guard(
            "get_latest_snapshot",
            Some(actor_id),
            false,
            || format!("reading the latest snapshot of actor {actor_id:?}"),
            self.load_snapshot(actor_id),
        )
        .await
    }
}

impl JetStreamEventStore {
    async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.validate()?;
        check_actor_id(&snapshot.actor_id)?;
        let subject = self.subjects.snapshots(&snapshot.actor_id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            codec::HEADER_LAST_VERSION,
            snapshot.version.to_string().as_str(),
        );
        let encoded = Encoded {
            payload: snapshot.to_json_bytes()?.into(),
            headers,
        };
        codec::check_size(&encoded, self.client.server_info().max_payload)?;
        let mut leader = false;
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            let last = self.last_message(&subject, leader).await?;
            let (seq, version) = match &last {
                Some(m) => (m.sequence, snapshot_version(m)),
                None => (0, 0),
            };
            // Keep the highest version: an older snapshot arriving late is dropped.
            if version > snapshot.version {
                return Ok(());
            }
            match self.publish(&subject, &encoded, seq).await {
                Ok(_) => return Ok(()),
                Err(PublishFailure::WrongLastSequence) => leader = true,
                Err(PublishFailure::Other(e)) => return Err(e),
            }
        }
        Err(Error::unavailable(
            format!("saving a snapshot of actor {:?}", snapshot.actor_id),
            "snapshots kept changing under repeated attempts",
        ))
    }

    async fn load_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        check_actor_id(actor_id)?;
        let subject = self.subjects.snapshots(actor_id);
        let Some(msg) = self.last_message(&subject, false).await? else {
            return Ok(None);
        };
        match Snapshot::from_json_bytes(&msg.payload) {
            Ok(s) if s.actor_id == actor_id => Ok(Some(s)),
            Ok(s) => Err(Error::Decoding(format!(
                "snapshot at sequence {} belongs to actor {:?}, not {actor_id:?}",
                msg.sequence, s.actor_id
            ))),
            Err(e) => Err(Error::Decoding(format!(
                "snapshot at sequence {} of actor {actor_id:?}: {e}",
                msg.sequence
            ))),
        }
    }
}

/// Whether the server refusing `subject` means an operation of this stream, on the actor with
/// the data subjects `own` (events, snapshots) or on the whole stream (`None`), can never be
/// answered: the actor's own subjects when the operation `writes` (a read never publishes to
/// them, so a concurrent refused save must not fail it), and JetStream API subjects naming the stream that are
/// either about the actor's subjects or about no data subject at all (stream info, message
/// gets, pulls). Deleting a replay consumer is best effort, so refusing it is not fatal.
fn dooms(subject: &str, stream_name: &str, own: Option<(&str, &str)>, writes: bool) -> bool {
    if let (true, Some((events, snapshots))) = (writes, own) {
        if subject == events || subject == snapshots {
            return true;
        }
    }
    let Some(api) = JsSubject::parse(subject) else {
        return false;
    };
    if !api.is_api() || !api.concerns_stream(stream_name) || api.is_consumer_delete() {
        return false;
    }
    match (api.subject, own) {
        (None, _) | (Some(_), None) => true,
        (Some(data), Some((events, snapshots))) => data == events || data == snapshots,
    }
}

fn snapshot_version(msg: &StreamMessage) -> u64 {
    codec::header_last_version(&msg.headers)
        .or_else(|| {
            Snapshot::from_json_bytes(&msg.payload)
                .ok()
                .map(|s| s.version)
        })
        .unwrap_or(0)
}

/// Whether a server version string (`2.9.10`, `2.12.0-RC.1`) is older than `major.minor`.
fn server_older_than(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod version_tests {
    use super::server_older_than;

    #[test]
    fn compares_server_versions() {
        assert!(server_older_than("2.9.10", 2, 11));
        assert!(server_older_than("2.10.22", 2, 11));
        assert!(!server_older_than("2.11.0", 2, 11));
        assert!(!server_older_than("2.15.1", 2, 11));
        assert!(!server_older_than("v3.0.0-beta", 2, 11));
        assert!(!server_older_than("garbage", 2, 11));
    }
}

#[cfg(test)]
mod permission_tests {
    use super::dooms;

    const OWN: Option<(&str, &str)> = Some(("S.events.QQ", "S.snapshots.QQ"));

    #[test]
    fn an_operation_is_doomed_only_by_subjects_it_uses() {
        // The actor's own data subjects, and API calls about them or about the whole stream.
        for subject in [
            "S.events.QQ",
            "S.snapshots.QQ",
            "$JS.API.STREAM.INFO.S",
            "$JS.API.STREAM.MSG.GET.S",
            "$JS.API.DIRECT.GET.S.S.events.QQ",
            "$JS.API.CONSUMER.CREATE.S.abc.S.events.QQ",
            "$JS.API.CONSUMER.MSG.NEXT.S.abc",
        ] {
            assert!(dooms(subject, "S", OWN, true), "{subject}");
        }
        // Another actor, another stream, a best-effort delete, an inbox.
        for subject in [
            "S.events.RR",
            "$JS.API.DIRECT.GET.S.S.events.RR",
            "$JS.API.CONSUMER.CREATE.S.abc.S.snapshots.RR",
            "$JS.API.STREAM.INFO.T",
            "$JS.API.STREAM.INFO.SS",
            "$JS.API.CONSUMER.DELETE.S.abc",
            "_INBOX.x.y",
            "T.events.QQ",
        ] {
            assert!(!dooms(subject, "S", OWN, true), "{subject}");
        }
        // A read never publishes to the data subjects: a refused save does not doom it.
        assert!(!dooms("S.events.QQ", "S", OWN, false));
        assert!(dooms("$JS.API.DIRECT.GET.S.S.events.QQ", "S", OWN, false));
        // Opening the stream: any API subject naming it, no data subject.
        assert!(dooms("$JS.API.STREAM.CREATE.S", "S", None, false));
        assert!(dooms("$JS.API.DIRECT.GET.S.S.events.RR", "S", None, false));
        assert!(!dooms("S.events.QQ", "S", None, false));
    }
}
