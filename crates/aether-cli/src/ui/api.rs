//! The dashboard's data: JSON for the pages, server-sent events for the tail, the Prometheus
//! text for `/metrics`. Every failure is a JSON `{"error": ...}` with a fitting status, never
//! a crash: a bad actor id or pattern is a 400, an unknown actor or cluster a 404, NATS being
//! unreachable a 503.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_bus::NatsEventBus;
use aether_core::{validate_pattern, Delivery, Error, EventBroadcaster, EventLog, EventStore};
use aether_core::{LogPosition, SubscriptionFilter};
use aether_projection::{NatsProjectionStore, ProjectionStore, StorageKind};
use aether_store::JetStreamEventStore;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::DashboardConfig;
use crate::cluster::read_state;
use crate::error::CliError;

/// How long a member may stay silent before the page shows it as silent.
pub(super) const SILENT_AFTER: Duration = Duration::from_secs(3);

/// Samples of the stream's size kept for the rate chart (one every
/// [`SAMPLE_EVERY`](super::sampler::SAMPLE_EVERY): five minutes).
pub(super) const SAMPLES: usize = 150;

/// A member's last heartbeat, as heard by the dashboard.
#[derive(Debug, Clone)]
pub(super) struct Heard {
    pub(super) incarnation: String,
    pub(super) seq: u64,
    pub(super) at: Instant,
}

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
    pub(super) bus: NatsEventBus,
    pub(super) heard: Mutex<BTreeMap<String, Heard>>,
    pub(super) samples: Mutex<VecDeque<Sample>>,
    store: OnceCell<Arc<JetStreamEventStore>>,
}

impl Shared {
    pub(super) fn new(
        client: async_nats::Client,
        config: DashboardConfig,
        bus: NatsEventBus,
    ) -> Self {
        Self {
            client,
            config,
            bus,
            heard: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            store: OnceCell::new(),
        }
    }

    /// The event store, opened once its stream exists (the dashboard never creates one).
    pub(super) async fn store(&self) -> Result<Arc<JetStreamEventStore>, ApiError> {
        self.store
            .get_or_try_init(|| async {
                let context = async_nats::jetstream::new(self.client.clone());
                // A missing stream is a 404; the server being unreachable a 503.
                crate::events::find_stream(&context, &self.config.stream)
                    .await
                    .map_err(ApiError::from)?;
                let store =
                    JetStreamEventStore::new(self.client.clone(), self.config.stream.config())
                        .await
                        .map_err(ApiError::from)?;
                Ok(Arc::new(store))
            })
            .await
            .cloned()
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
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
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

/// The CLI's readers fail with one line of text: a missing stream, bucket or cluster says
/// "not found" (a 404), a refused name "must" or "invalid" (a 400); anything else is the
/// server being unreachable or failing (a 503).
impl From<CliError> for ApiError {
    fn from(e: CliError) -> Self {
        let text = e.message().to_string();
        let status = if text.contains("not found") {
            StatusCode::NOT_FOUND
        } else if text.contains("must") || text.contains("invalid") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Self::new(status, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

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
    let name = s.config.cluster.clone();
    let state = read_state(&s.client, &name).await?;
    let heard = lock(&s.heard).clone();
    let mut nodes: Vec<String> = heard.keys().cloned().collect();
    if let Some(a) = &state.assignment {
        nodes.extend(a.table.members.iter().cloned());
    }
    nodes.sort();
    nodes.dedup();
    let leader = state.leader.as_ref().map(|l| l.node_id.clone());
    let now = Instant::now();
    let members = nodes
        .into_iter()
        .map(|node| {
            let h = heard.get(&node);
            let since = h.map(|h| now.saturating_duration_since(h.at));
            MemberView {
                alive: since.is_some_and(|d| d < SILENT_AFTER),
                leader: leader.as_deref() == Some(node.as_str()),
                shards: state
                    .assignment
                    .as_ref()
                    .map_or(0, |a| a.primaries_of(&node).len()),
                incarnation: h.map(|h| h.incarnation.clone()),
                seq: h.map(|h| h.seq),
                last_heartbeat_ms: since.map(|d| d.as_millis() as u64),
                node,
            }
        })
        .collect();
    let shards = state
        .assignment
        .as_ref()
        .map(|a| {
            (0..a.table.shard_count)
                .map(|shard| a.primary(shard).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(ClusterView {
        name,
        leader,
        term: state.leader.as_ref().map(|l| l.term),
        epoch: state.assignment.as_ref().map(|a| a.epoch),
        members,
        shards,
    }))
}

/// The stream page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StreamView {
    name: String,
    messages: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    actors: u64,
    retention: String,
    max_age_secs: u64,
    max_bytes: i64,
    replicas: usize,
    storage: String,
    samples: Vec<Sample>,
}

pub(super) async fn stream(State(s): State<Arc<Shared>>) -> ApiResult<StreamView> {
    let context = async_nats::jetstream::new(s.client.clone());
    let stream = crate::events::find_stream(&context, &s.config.stream)
        .await
        .map_err(ApiError::from)?;
    let info = stream.cached_info().clone();
    let stats = crate::stats::collect(&s.client, &stream, &info, false).await?;
    let samples = lock(&s.samples).iter().copied().collect();
    Ok(Json(StreamView {
        name: info.config.name.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
        actors: stats.actors,
        retention: format!("{:?}", info.config.retention),
        max_age_secs: info.config.max_age.as_secs(),
        max_bytes: info.config.max_bytes,
        replicas: info.config.num_replicas,
        storage: format!("{:?}", info.config.storage),
        samples,
    }))
}

/// An event as the actor page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActorView {
    actor_id: String,
    stream: String,
    events: Vec<aether_core::Event>,
}

pub(super) async fn actor(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<ActorView> {
    let store = s.store().await?;
    // The store checks the id (length, characters NATS subjects cannot carry): a 400.
    let events = store.get_events(&id, 1).await?;
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "actor {id:?} has no events in stream {}",
                store.stream_name()
            ),
        ));
    }
    Ok(Json(ActorView {
        actor_id: id,
        stream: store.stream_name().to_string(),
        events,
    }))
}

/// The tail's filters.
#[derive(Debug, Deserialize)]
pub(super) struct TailQuery {
    /// Namespace pattern (default `>`: every namespace).
    pattern: Option<String>,
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    types: Option<String>,
    /// Actor pattern.
    actor: Option<String>,
}

pub(super) async fn tail(
    State(s): State<Arc<Shared>>,
    Query(q): Query<TailQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
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
    let mut filter = SubscriptionFilter::new();
    for t in q.types.iter().flat_map(|t| t.split(',')) {
        let t = t.trim();
        if !t.is_empty() {
            filter = filter.event_type(t.to_string());
        }
    }
    if let Some(actor) = q.actor.filter(|a| !a.is_empty()) {
        validate_pattern(&actor).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid actor pattern {actor:?}: {e}"),
            )
        })?;
        filter = filter.actor_pattern(actor);
    }
    let subscription = s.bus.subscribe_with_filter(&pattern, filter).await?;
    // The subscription ends with the stream, when the page goes away.
    let events = futures::stream::unfold(subscription, |mut sub| async move {
        let event = match sub.recv().await? {
            Delivery::Event(e) => SseEvent::default()
                .event("event")
                .json_data(&*e)
                .unwrap_or_else(|_| SseEvent::default().event("error").data("undecodable")),
            Delivery::Lagged(n) => SseEvent::default().event("lagged").data(n.to_string()),
        };
        Some((Ok(event), sub))
    });
    // Browsers drop an event with no data: "ok" says the subscription is in place.
    let ready = futures::stream::once(async { Ok(SseEvent::default().event("ready").data("ok")) });
    Ok(Sse::new(futures::StreamExt::chain(ready, events)).keep_alive(KeepAlive::default()))
}

/// A projection as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectionView {
    name: String,
    position: Option<LogPosition>,
    lag: u64,
    parked: usize,
}

/// The projections page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectionsView {
    bucket: String,
    head: Option<LogPosition>,
    projections: Vec<ProjectionView>,
}

pub(super) async fn projections(State(s): State<Arc<Shared>>) -> ApiResult<ProjectionsView> {
    let bucket = s.config.bucket.clone();
    let context = async_nats::jetstream::new(s.client.clone());
    // Asking for a missing bucket must not create one: none means no projection ran yet.
    if context.get_stream(format!("KV_{bucket}")).await.is_err() {
        return Ok(Json(ProjectionsView {
            bucket,
            head: None,
            projections: Vec::new(),
        }));
    }
    let state = NatsProjectionStore::open(s.client.clone(), &bucket, StorageKind::File).await?;
    let head = match s.store().await {
        Ok(store) => store.head().await?,
        Err(_) => None,
    };
    let mut out = Vec::new();
    for name in state.projections().await? {
        let position = state.checkpoint(&name).await?;
        let parked = state.parked(&name).await?.len();
        let lag = aether_projection::lag(position, head);
        out.push(ProjectionView {
            name,
            position,
            lag,
            parked,
        });
    }
    Ok(Json(ProjectionsView {
        bucket,
        head,
        projections: out,
    }))
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
