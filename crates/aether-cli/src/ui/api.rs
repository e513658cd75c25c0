//! The dashboard's data: JSON for the pages, server-sent events for the tail, the Prometheus
//! text for `/metrics`. Every failure is a JSON `{"error": ...}` with a fitting status, never
//! a crash: a bad actor id, pattern or query is a 400, an unknown actor or cluster a 404, NATS
//! being unreachable or too many live tails a 503.
//!
//! Every answer costs a bounded amount: the stream page reads the streams' info only (one
//! request per partition's stream, whatever the number of actors), an actor's history comes in pages of at most
//! [`MAX_HISTORY_PAGE`] events, and a live tail holds at most its buffer of events for a
//! reader that does not keep up, dropping the newest and telling the page how many.
//!
//! Personal fields of events from the store (an actor's history, the store tail) are served
//! as erased when their subject was erased, sealed otherwise, checked in the namespace's key
//! bucket ([`LazyShownKeys`]); a sealed field is never opened. When the erasures cannot be
//! checked, the fields are served sealed and the failure logged. Events from the bus are
//! served as they were published.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_bus::NatsEventBus;
use aether_cluster::{ClusterObserver, ClusterRecord, ObserverConfig, Presence};
use aether_core::{validate_pattern, ActorKey, Error, EventBroadcaster, EventStore};
use aether_core::{OverflowPolicy, SubscribeOptions, SubscriptionFilter};
use aether_reactions::TimersView;
use aether_store::JetStreamEventStore;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::erase::LazyShownKeys;
use crate::events::EventStreams;
use crate::heads::LogHeads;
use crate::store_tail::{check_actor_type, StoreDelivery, StoreFilter, StoreTail, TailFeed};
use crate::tail::TailSource;

use super::access::Access;
use super::DashboardConfig;

/// How long a member may stay silent before the page shows it as silent.
pub(super) const SILENT_AFTER: Duration = Duration::from_secs(3);

/// Samples of the stream's size kept for the rate chart (one every
/// [`SAMPLE_EVERY`](super::sampler::SAMPLE_EVERY): five minutes).
pub(super) const SAMPLES: usize = 150;

/// Events of an actor's history in one page unless the page asks for fewer.
pub const DEFAULT_HISTORY_PAGE: usize = 100;
/// Most events of an actor's history in one page, whatever the page asks for.
pub const MAX_HISTORY_PAGE: usize = 500;

/// Histories read at once: the store reads an actor's history from the page's first version
/// to its end before the page is cut, so readers beyond these wait (and give up after
/// [`HISTORY_WAIT`]) rather than each holding a long history in memory.
const HISTORY_READS: usize = 4;
/// How long a history read waits for its turn.
pub(super) const HISTORY_WAIT: Duration = Duration::from_secs(10);

/// Reads of the timers stream at once: each reads every pending timer the page selects, so
/// pages beyond these wait (and give up after [`HISTORY_WAIT`]).
const TIMER_READS: usize = 2;

/// How often a live tail writes a comment when no event comes: a reader that went away is
/// noticed, and the connection never looks idle to the server's idle timeout.
const TAIL_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// One sample of the stream's size.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Sample {
    /// Milliseconds since the Unix epoch.
    pub(super) at_ms: i64,
    /// The stream's last sequence (messages ever stored).
    pub(super) last_seq: u64,
    pub(super) bytes: u64,
}

/// What the handlers share.
pub(super) struct Shared {
    pub(super) client: async_nats::Client,
    pub(super) config: DashboardConfig,
    pub(super) access: Access,
    pub(super) bus: NatsEventBus,
    /// The cluster, seen read-only; opened once the cluster exists (the dashboard never
    /// creates its bucket).
    observer: OnceCell<ClusterObserver>,
    pub(super) samples: Mutex<VecDeque<Sample>>,
    /// One permit per live tail that may be open.
    tails: Arc<Semaphore>,
    history_reads: Semaphore,
    /// One permit per read of the timers stream that may run at once.
    pub(super) timer_reads: Semaphore,
    /// Ends the live tails when the dashboard stops.
    shutdown: CancellationToken,
    store: OnceCell<Arc<JetStreamEventStore>>,
    /// The timers stream, seen read-only; opened once it exists.
    timers: OnceCell<TimersView>,
    /// The namespace's key bucket, to serve erased subjects' fields as erased; opened once it
    /// exists.
    keys: LazyShownKeys,
}

impl Shared {
    pub(super) fn new(
        client: async_nats::Client,
        config: DashboardConfig,
        access: Access,
        bus: NatsEventBus,
        shutdown: CancellationToken,
    ) -> Self {
        let keys = LazyShownKeys::new(
            aether_nats::Connection::from(client.clone()),
            config.stream.namespace.clone(),
        );
        Self {
            client,
            observer: OnceCell::new(),
            tails: Arc::new(Semaphore::new(config.max_tails)),
            history_reads: Semaphore::new(HISTORY_READS),
            timer_reads: Semaphore::new(TIMER_READS),
            config,
            access,
            bus,
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            shutdown,
            store: OnceCell::new(),
            timers: OnceCell::new(),
            keys,
        }
    }

    /// The view of the timers stream, opened once the stream exists (the dashboard never
    /// creates it): a missing stream is [`Error::NotFound`], tried again next time.
    pub(super) async fn timers(&self) -> Result<&TimersView, Error> {
        self.timers
            .get_or_try_init(|| {
                TimersView::open(
                    async_nats::jetstream::new(self.client.clone()),
                    self.config.timers.clone(),
                )
            })
            .await
    }

    /// The cluster's observer, opened on first use (a cluster that does not exist yet is a
    /// 404, tried again next time).
    pub(super) async fn observer(&self) -> Result<&ClusterObserver, ApiError> {
        self.observer
            .get_or_try_init(|| {
                // Members are shown alive when heard within `SILENT_AFTER`, and remembered
                // within the dashboard's bounds.
                let config = ObserverConfig::default()
                    .cluster_name(self.config.cluster.clone())
                    .failure_timeout(SILENT_AFTER)
                    .forget_after(self.config.forget_silent_after.max(SILENT_AFTER))
                    .max_members(self.config.max_heard_nodes.max(1));
                ClusterObserver::open(self.client.clone(), config)
            })
            .await
            .map_err(ApiError::from)
    }

    /// The cluster's observer, if it is open.
    pub(super) fn observed(&self) -> Option<&ClusterObserver> {
        self.observer.get()
    }

    /// The event store's streams (a partitioned store's every partition), looked up without
    /// creating any: a missing one is a 404, the server being unreachable a 503, a
    /// `--partitions` that disagrees with the streams a 500 saying so.
    pub(super) async fn find_streams(&self) -> Result<EventStreams, ApiError> {
        let context = async_nats::jetstream::new(self.client.clone());
        self.config
            .stream
            .find(&context)
            .await
            .map_err(|e| match e {
                Error::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
                Error::InvalidInput(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
                other => ApiError::from(other),
            })
    }

    /// The event store, opened once its streams exist (the dashboard never creates one), with
    /// the partition count found.
    pub(super) async fn store(&self) -> Result<Arc<JetStreamEventStore>, ApiError> {
        self.store
            .get_or_try_init(|| async {
                let streams = self.find_streams().await?;
                let store = JetStreamEventStore::new(self.client.clone(), streams.config)
                    .await
                    .map_err(ApiError::from)?;
                Ok(Arc::new(store))
            })
            .await
            .cloned()
    }

    /// The log's heads, one per partition: unknown while the event store does not exist.
    ///
    /// # Errors
    /// A head that could not be read.
    pub(super) async fn heads(&self) -> Result<LogHeads, ApiError> {
        match self.store().await {
            Ok(store) => Ok(LogHeads::read(store).await?),
            Err(_) => Ok(LogHeads::unknown()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error as the API answers it.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// A query that does not parse (`?limit=abc`) is a 400 in JSON like every other failure.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidInput(_) | Error::PayloadTooLarge { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            Error::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unavailable { .. } | Error::Closed(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let mut response = (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// A member of the cluster as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MemberView {
    node: String,
    alive: bool,
    leader: bool,
    /// Shards it is primary for in the table.
    shards: usize,
    incarnation: Option<String>,
    seq: Option<u64>,
    /// Milliseconds since its last heartbeat (`None`: never heard by this dashboard).
    last_heartbeat_ms: Option<u64>,
}

/// The cluster page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClusterView {
    name: String,
    leader: Option<String>,
    term: Option<u64>,
    epoch: Option<u64>,
    members: Vec<MemberView>,
    /// The primary of each shard, in shard order (`None`: unassigned).
    shards: Vec<Option<String>>,
}

pub(super) async fn cluster(State(s): State<Arc<Shared>>) -> ApiResult<ClusterView> {
    let snapshot = s.observer().await?.snapshot();
    if let Some(u) = snapshot
        .unreadable
        .iter()
        .find(|u| u.record == ClusterRecord::AssignmentTable)
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the assignment table of cluster {} is unreadable (revision {}): {}",
                snapshot.cluster, u.revision, u.reason
            ),
        ));
    }
    let shards = snapshot
        .assignment
        .as_ref()
        .map(|a| {
            (0..a.table.shard_count)
                .map(|shard| a.primary(shard).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(ClusterView {
        leader: snapshot.leader.as_ref().map(|l| l.node_id.clone()),
        term: snapshot.leader.as_ref().map(|l| l.term),
        epoch: snapshot.assignment.as_ref().map(|a| a.epoch),
        members: snapshot
            .members
            .into_iter()
            .map(|m| MemberView {
                alive: m.presence == Presence::Alive,
                leader: m.leader,
                shards: m.primaries,
                incarnation: m.incarnation,
                seq: m.seq,
                last_heartbeat_ms: m.since_heard.map(|d| d.as_millis() as u64),
                node: m.node_id,
            })
            .collect(),
        name: snapshot.cluster,
        shards,
    }))
}

/// One partition's stream on the stream page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartitionStreamView {
    partition: u32,
    name: String,
    messages: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    subjects: u64,
}

/// The stream page's data: the store's figures, added up over its partitions when it is
/// partitioned, with each partition's stream in `partitionStreams`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StreamView {
    /// The stream's name; a partitioned store's base name, which its streams extend.
    name: String,
    /// How many partitions (streams) the log is spread over: 1 when unpartitioned.
    partitions: u32,
    messages: u64,
    bytes: u64,
    /// The stream's first sequence; the lowest of the partitions' (each has its own).
    first_seq: u64,
    /// The stream's last sequence (messages ever stored); the sum of the partitions'.
    last_seq: u64,
    /// Subjects holding messages: one per actor with events, one more per actor with
    /// snapshots (the stream's own count: actors are not listed, which costs seconds on a
    /// stream of many actors).
    subjects: u64,
    retention: String,
    max_age_secs: u64,
    max_bytes: i64,
    replicas: usize,
    storage: String,
    /// Each partition's stream, in partition order (one when unpartitioned).
    partition_streams: Vec<PartitionStreamView>,
    samples: Vec<Sample>,
}

pub(super) async fn stream(State(s): State<Arc<Shared>>) -> ApiResult<StreamView> {
    let streams = s.find_streams().await?;
    // The info the lookup read: one request per stream, whatever the streams hold.
    let parts: Vec<PartitionStreamView> = streams
        .streams
        .iter()
        .enumerate()
        .map(|(k, stream)| {
            let info = stream.cached_info();
            PartitionStreamView {
                partition: k as u32,
                name: info.config.name.clone(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_seq: info.state.first_sequence,
                last_seq: info.state.last_sequence,
                subjects: info.state.subjects_count,
            }
        })
        .collect();
    let Some(first) = streams.streams.first() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no event stream"));
    };
    let config = &first.cached_info().config;
    let samples = lock(&s.samples).iter().copied().collect();
    Ok(Json(StreamView {
        name: streams.base.clone(),
        partitions: streams.partitions(),
        messages: parts.iter().map(|p| p.messages).sum(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        first_seq: parts.iter().map(|p| p.first_seq).min().unwrap_or(0),
        last_seq: parts.iter().map(|p| p.last_seq).sum(),
        subjects: parts.iter().map(|p| p.subjects).sum(),
        retention: format!("{:?}", config.retention),
        max_age_secs: config.max_age.as_secs(),
        max_bytes: config.max_bytes,
        replicas: config.num_replicas,
        storage: format!("{:?}", config.storage),
        partition_streams: parts,
        samples,
    }))
}

/// A page of an actor's history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActorView {
    /// The actor type (`None`: the untyped actor).
    actor_type: Option<String>,
    actor_id: String,
    /// The stream holding the actor's events (its partition's, on a partitioned store).
    stream: String,
    /// The actor's partition (0 when unpartitioned).
    partition: u32,
    /// How many partitions the store has.
    partitions: u32,
    /// The first version asked for.
    from: u64,
    /// Events at most in this page.
    limit: usize,
    /// The actor's latest version.
    latest_version: u64,
    /// The version of its final event when the actor is retired (it takes no more commands).
    retired: Option<u64>,
    events: Vec<aether_core::Event>,
    /// The `from` of the next page (`None`: this is the last).
    next: Option<u64>,
}

/// Which page of a history.
#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    /// First version (default 1).
    from: Option<u64>,
    /// Events in the page (default [`DEFAULT_HISTORY_PAGE`], at most [`MAX_HISTORY_PAGE`]).
    limit: Option<usize>,
    /// The actor type (absent or empty: the untyped actor).
    #[serde(rename = "type")]
    actor_type: Option<String>,
}

/// An actor type from a query: `None` when absent or empty, a 400 when it is no type name.
pub(super) fn actor_type_param(actor_type: Option<String>) -> Result<Option<String>, ApiError> {
    match actor_type.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => {
            check_actor_type(&t)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.message()))?;
            Ok(Some(t))
        }
    }
}

pub(super) async fn actor(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<ActorView> {
    let Query(q) = query?;
    let from = q.from.unwrap_or(1).max(1);
    let limit = q
        .limit
        .unwrap_or(DEFAULT_HISTORY_PAGE)
        .clamp(1, MAX_HISTORY_PAGE);
    let actor_type = actor_type_param(q.actor_type)?;
    let actor = ActorKey {
        actor_type: actor_type.as_deref(),
        actor_id: &id,
    };
    let store = s.store().await?;
    // The store checks the id (length, characters NATS subjects cannot carry): a 400.
    let latest_version = store.latest_version_of(actor).await?;
    let partition = store.partition_of(actor);
    let stream = store
        .stream_names()
        .get(partition as usize)
        .map_or_else(|| store.stream_name().to_string(), |n| n.to_string());
    if latest_version == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match &actor_type {
                Some(t) => format!("actor {id:?} of type {t} has no events in stream {stream}"),
                None => format!("actor {id:?} (untyped) has no events in stream {stream}"),
            },
        ));
    }
    let mut events = if from > latest_version {
        Vec::new()
    } else {
        let _turn = tokio::time::timeout(HISTORY_WAIT, s.history_reads.acquire())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many histories are being read: retry in a moment",
                )
            })?
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        store.events_of(actor, from).await?
    };
    // A retired actor's final event is its last: the page holds it when it reaches the end,
    // otherwise the latest message is read (one message).
    let last_is_retirement = match events.last() {
        Some(e) if e.version == latest_version => e.is_retirement(),
        _ => store
            .events_of(actor, latest_version)
            .await?
            .last()
            .is_some_and(aether_core::Event::is_retirement),
    };
    let retired = last_is_retirement.then_some(latest_version);
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.version + 1)
    } else {
        None
    };
    if let Err(e) = s.keys.redact_all(&mut events).await {
        // Served sealed: ciphertext, whose subject may have been erased.
        tracing::warn!(error = %e, "dashboard: could not check erased data subjects; personal fields served sealed");
    }
    Ok(Json(ActorView {
        actor_type,
        actor_id: id,
        stream,
        partition,
        partitions: store.partition_count(),
        from,
        limit,
        latest_version,
        retired,
        events,
        next,
    }))
}

/// The tail's source and filters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TailQuery {
    /// `bus` (the default) or `store`.
    source: Option<String>,
    /// Namespace pattern of the bus (default `>`: every namespace); not used for the store.
    pattern: Option<String>,
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    types: Option<String>,
    /// Actor pattern.
    actor: Option<String>,
    /// Actor type.
    actor_type: Option<String>,
}

/// What the page is told it follows (the `source` event).
#[derive(Debug, Serialize)]
struct SourceView {
    source: &'static str,
    /// The stream (store; `<base> (N partitions)` when partitioned) or the namespace
    /// pattern (bus).
    what: String,
    /// The subject followed; the partitions' subjects, comma-separated, when partitioned.
    subject: String,
    /// The store's partitions, one consumer each, merged in no defined order across them
    /// (1 for the bus and an unpartitioned store).
    partitions: u32,
}

pub(super) async fn tail(
    State(s): State<Arc<Shared>>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let source = match q.source.as_deref().filter(|v| !v.is_empty()) {
        None | Some("bus") => TailSource::Bus,
        Some("store") => TailSource::Store,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown tail source {other:?}: bus or store"),
            ))
        }
    };
    let pattern = q
        .pattern
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ">".into());
    validate_pattern(&pattern).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid namespace pattern {pattern:?}: {e}"),
        )
    })?;
    let actor_type = actor_type_param(q.actor_type)?;
    let event_types: Vec<String> = q
        .types
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let actor = q.actor.filter(|a| !a.is_empty());
    if let Some(actor) = &actor {
        validate_pattern(actor).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid actor pattern {actor:?}: {e}"),
            )
        })?;
    }
    let permit = s.tails.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live tails are open, the most this dashboard serves: close one (or wait \
                 for one to end) and retry",
                s.config.max_tails
            ),
        )
    })?;
    // A reader that stops reading costs at most this buffer: beyond it the newest events are
    // dropped, counted, and the page told how many (`lagged`). Under back-pressure every event
    // would wait in the NATS client's buffer (65 536 messages) of each stalled tail; now that
    // buffer only holds what arrives faster than the bus's (or the store tail's) forwarding
    // task can decode.
    let buffer = s.config.tail_buffer.max(1);
    let (feed, view) = match source {
        TailSource::Bus => {
            let mut filter = SubscriptionFilter::new();
            for t in event_types {
                filter = filter.event_type(t);
            }
            if let Some(actor) = actor {
                filter = filter.actor_pattern(actor);
            }
            let options = SubscribeOptions::default()
                .filter(filter)
                .buffer_size(buffer)
                .overflow(OverflowPolicy::DropNewest);
            let subscription = s.bus.subscribe_with_options(&pattern, options).await?;
            let subject = aether_nats::subject::pattern_subject(&s.config.prefix, &pattern)
                .unwrap_or_else(|_| pattern.clone());
            (
                TailFeed::Bus {
                    subscription,
                    actor_type,
                },
                SourceView {
                    source: TailSource::Bus.name(),
                    what: pattern,
                    subject,
                    partitions: 1,
                },
            )
        }
        TailSource::Store => {
            let streams = s.find_streams().await?;
            let filter = StoreFilter {
                actor_type,
                event_types,
                actor_pattern: actor,
            };
            // One consumer per partition's stream, merged.
            let tail = StoreTail::open_all(
                &s.client,
                streams
                    .streams
                    .iter()
                    .cloned()
                    .zip(streams.names())
                    .collect(),
                filter,
                buffer,
            )
            .await?;
            let subject = tail.describe_subjects();
            (
                TailFeed::Store(tail),
                SourceView {
                    source: TailSource::Store.name(),
                    what: streams.describe(),
                    subject,
                    partitions: streams.partitions(),
                },
            )
        }
    };
    // The feed (and the tail's permit) end with the stream: when the page goes away, the
    // connection is closed for being idle, or the dashboard stops.
    // Events from the store show erased subjects' fields as erased.
    let shown = (source == TailSource::Store).then(|| s.clone());
    let state = (feed, permit, shown);
    let events = futures::stream::unfold(state, |(mut feed, permit, shown)| async move {
        let event = match feed.recv().await? {
            StoreDelivery::Event(e) => {
                let e = match &shown {
                    Some(s) => match s.keys.redact_shared(e.clone()).await {
                        Ok(redacted) => redacted,
                        Err(error) => {
                            // Served sealed: ciphertext, whose subject may have been erased.
                            tracing::warn!(%error, "dashboard tail: could not check erased data subjects; personal fields served sealed");
                            e
                        }
                    },
                    None => e,
                };
                SseEvent::default()
                    .event("event")
                    .json_data(&*e)
                    .unwrap_or_else(|_| SseEvent::default().event("error").data("undecodable"))
            }
            StoreDelivery::Lagged(n) => SseEvent::default().event("lagged").data(n.to_string()),
            StoreDelivery::Malformed(n) => {
                SseEvent::default().event("malformed").data(n.to_string())
            }
        };
        Some((Ok(event), (feed, permit, shown)))
    });
    // What the tail follows, for the page to say; then "ready": browsers drop an event with no
    // data, so its data is the buffer size, which lets the page say how much a slow page may
    // miss.
    let source = SseEvent::default()
        .event("source")
        .json_data(&view)
        .unwrap_or_else(|_| SseEvent::default().event("source").data("{}"));
    let ready = futures::stream::iter([
        Ok(source),
        Ok(SseEvent::default().event("ready").data(buffer.to_string())),
    ]);
    let stop = s.shutdown.clone().cancelled_owned();
    Ok(Sse::new(ready.chain(events).take_until(stop))
        .keep_alive(KeepAlive::new().interval(TAIL_KEEP_ALIVE)))
}

pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let body = match &s.config.metrics {
        Some(handle) => handle.render(),
        None => "# no metrics recorder is installed in this process\n".to_string(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
