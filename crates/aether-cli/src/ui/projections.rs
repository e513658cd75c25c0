//! The projections page's data: every projection of the dashboard's bucket with its position,
//! lag and parked events, whether a checkpoint or the sink keeps its position, and how fresh a
//! sink's last report is.
//!
//! On a partitioned store each checkpoint named `<name>.l<k>` (or `<name>.l<k>.p<j>`) lags
//! behind log partition `k`'s head alone ([`crate::heads`]); the page gets every head.

use std::sync::Arc;

use aether_core::{LogPosition, StorageKind};
use aether_projection::NatsProjectionStore;
use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::api::{ApiResult, Shared};

/// A projection as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectionView {
    name: String,
    position: Option<LogPosition>,
    /// Stored messages behind its head (its log partition's on a partitioned store); `None`
    /// when no head applies (no event stream, or a name of no log partition the log has).
    lag: Option<u64>,
    parked: usize,
    /// `checkpoint` or `sink` (the sink keeps the position; the figures are its last report).
    kept_by: &'static str,
    /// Seconds since a sink-kept projection last reported; `None` for checkpoints.
    reported_secs_ago: Option<f64>,
    /// A sink-kept projection that missed three reports (probably not running).
    stale: bool,
}

/// The projections page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProjectionsView {
    bucket: String,
    /// The head of an unpartitioned log (`None`: empty, partitioned or unknown).
    head: Option<LogPosition>,
    /// Every log partition's head, in partition order (one when unpartitioned, none when
    /// there is no event stream).
    heads: Vec<Option<LogPosition>>,
    /// How many partitions the log has (0 when there is no event stream).
    log_partitions: usize,
    projections: Vec<ProjectionView>,
}

/// `GET /api/projections`.
pub(super) async fn projections(State(s): State<Arc<Shared>>) -> ApiResult<ProjectionsView> {
    let bucket = s.config.bucket.clone();
    // Asking for a missing bucket must not create one: none means no projection ran yet.
    let connection = aether_nats::Connection::from(s.client.clone());
    if aether_nats::KvBucket::open_existing(&connection, &bucket)
        .await?
        .is_none()
    {
        return Ok(Json(ProjectionsView {
            bucket,
            head: None,
            heads: Vec::new(),
            log_partitions: 0,
            projections: Vec::new(),
        }));
    }
    let state = NatsProjectionStore::open(s.client.clone(), &bucket, StorageKind::File).await?;
    let heads = s.heads().await?;
    // Projections whose sink keeps the position write no checkpoint, only status reports:
    // the summaries show both kinds.
    let now = chrono::Utc::now();
    let out = state
        .summaries()
        .await?
        .into_iter()
        .map(|s| {
            let reported = s.reported.as_ref().map(|r| {
                let ago = (now - r.reported_at).num_milliseconds().max(0) as f64 / 1000.0;
                let stale = ago * 1000.0 > 3.0 * r.interval_ms.max(1) as f64;
                (ago, stale)
            });
            ProjectionView {
                lag: heads.lag_of(&s.name, s.position),
                position: s.position,
                parked: s.parked,
                kept_by: match s.kept_by {
                    aether_projection::PositionKeeper::Store => "checkpoint",
                    aether_projection::PositionKeeper::Sink => "sink",
                },
                reported_secs_ago: reported.map(|(ago, _)| ago),
                stale: reported.is_some_and(|(_, stale)| stale),
                name: s.name,
            }
        })
        .collect();
    Ok(Json(ProjectionsView {
        bucket,
        head: heads.single(),
        log_partitions: heads.partitions.len(),
        heads: heads.partitions,
        projections: out,
    }))
}
