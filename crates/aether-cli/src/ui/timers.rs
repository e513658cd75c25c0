//! The timers page's data: how many timers are pending (of an actor type, of one actor), how
//! many fired and wait for a dispatcher, the next due ones, and the reactor's backlog.
//!
//! Read through [`aether_reactions::TimersView`], which never creates the stream and counts
//! messages that are not timers as unreadable. A request lists at most [`MAX_TIMERS_PAGE`]
//! timers; each reads every pending timer it selects (holding only those it lists), so
//! at most two run at once and the others wait their turn. Everything from the stream reaches
//! the page as JSON strings, which the page shows as text, never as markup.

use std::sync::Arc;

use aether_core::Error;
use aether_reactions::{PendingFilter, PendingTimer, ReactorPartition};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::api::{actor_type_param, ApiError, ApiResult, Shared, HISTORY_WAIT};

/// Timers listed unless the page asks for fewer.
pub const DEFAULT_TIMERS_PAGE: usize = 50;
/// Most timers listed, whatever the page asks for.
pub const MAX_TIMERS_PAGE: usize = 200;

/// Which timers to list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TimersQuery {
    /// Only this actor type's timers (absent or empty: every type).
    actor_type: Option<String>,
    /// Only this actor's timers (absent or empty: every actor).
    actor: Option<String>,
    /// Timers listed (default [`DEFAULT_TIMERS_PAGE`], at most [`MAX_TIMERS_PAGE`]).
    limit: Option<usize>,
}

/// A pending timer as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TimerView {
    #[serde(flatten)]
    timer: PendingTimer,
    /// Seconds until it is due (negative: due that long ago, and not fired yet).
    due_in_secs: f64,
}

/// The reactor's backlog as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReactorView {
    name: String,
    bucket: String,
    /// Why there is no backlog to show (no bucket, nothing recorded); `None` when there is.
    missing: Option<String>,
    /// The largest lag of its partitions (`None`: unknown).
    max_lag: Option<u64>,
    parked: usize,
    partitions: Vec<ReactorPartition>,
}

/// The timers page's data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TimersPage {
    stream: String,
    /// Why there are no timers to show (the stream does not exist); `None` when it does.
    missing: Option<String>,
    /// Timers listed at most.
    limit: usize,
    total: u64,
    fired_awaiting_delivery: u64,
    unreadable: u64,
    next: Vec<TimerView>,
    reactor: ReactorView,
}

/// `GET /api/timers?actorType=T&actor=ID&limit=N`.
pub(super) async fn timers(
    State(s): State<Arc<Shared>>,
    query: Result<Query<TimersQuery>, QueryRejection>,
) -> ApiResult<TimersPage> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_TIMERS_PAGE).min(MAX_TIMERS_PAGE);
    let filter = PendingFilter {
        actor_type: actor_type_param(q.actor_type)?,
        actor_id: q.actor.filter(|a| !a.is_empty()),
        limit,
    };
    let stream = s.config.timers.stream.clone();
    let mut page = TimersPage {
        stream,
        missing: None,
        limit,
        total: 0,
        fired_awaiting_delivery: 0,
        unreadable: 0,
        next: Vec::new(),
        reactor: reactor(&s).await?,
    };
    let view = match s.timers().await {
        Ok(view) => view,
        Err(Error::NotFound(why)) => {
            page.missing = Some(why);
            return Ok(Json(page));
        }
        Err(e) => return Err(e.into()),
    };
    let pending = {
        let _turn = tokio::time::timeout(HISTORY_WAIT, s.timer_reads.acquire())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the timers are being read for other pages: retry in a moment",
                )
            })?
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        view.pending(&filter).await?
    };
    let now = Utc::now();
    page.total = pending.total;
    page.fired_awaiting_delivery = pending.fired_awaiting_delivery;
    page.unreadable = pending.unreadable;
    page.next = pending
        .next
        .into_iter()
        .map(|timer| TimerView {
            due_in_secs: seconds_until(timer.due, now),
            timer,
        })
        .collect();
    Ok(Json(page))
}

fn seconds_until(due: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (due - now).num_milliseconds() as f64 / 1000.0
}

/// The reactor's backlog from the dashboard's projections bucket (never created).
async fn reactor(s: &Shared) -> Result<ReactorView, ApiError> {
    let name = s.config.reactor.clone();
    let bucket = s.config.bucket.clone();
    // The log's heads for the lag (each log partition's checkpoint against its own):
    // unknown while the event stream does not exist.
    let heads = s.heads().await?;
    let backlog = crate::timers::reactor_backlog(&s.client, &bucket, &name, &heads).await?;
    let missing = match &backlog {
        None => Some(format!("bucket {bucket} does not exist")),
        Some(b) if b.partitions.is_empty() => Some(format!(
            "nothing recorded in bucket {bucket} (has the reactor run?)"
        )),
        Some(_) => None,
    };
    Ok(ReactorView {
        max_lag: backlog.as_ref().and_then(|b| b.max_lag()),
        parked: backlog.as_ref().map_or(0, |b| b.parked()),
        partitions: backlog.map(|b| b.partitions).unwrap_or_default(),
        name,
        bucket,
        missing,
    })
}
