//! Where a projection keeps its checkpoint and its parked events: what is kept and the
//! [`ProjectionStore`] trait (this module), kept in memory (`memory`) or in a JetStream
//! key-value bucket (`nats`, feature `nats`).

use aether_core::{Event, LogPosition, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod memory;
#[cfg(feature = "nats")]
mod nats;

pub use memory::InMemoryProjectionStore;
#[cfg(feature = "nats")]
pub use nats::{NatsProjectionStore, PROJECTION_BUCKET_FORMAT};

/// An event a projection gave up on: its handler kept failing (or it did not decode), so it
/// was set aside and the projection went on. It can be listed and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    /// Its position in the store's global order.
    pub position: LogPosition,
    /// The stored event.
    pub event: Event,
    /// The last error.
    pub error: String,
    /// How many times it was handled.
    pub attempts: u32,
}

/// Who keeps a projection's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKeeper {
    /// The projection store, as a checkpoint ([`ProjectionStore::checkpoint`]).
    Store,
    /// The sink, in the same transaction as its updates
    /// ([`SinkPosition::Kept`](crate::SinkPosition::Kept)): the store has no checkpoint, only
    /// the status the projection reports ([`ReportedStatus`]).
    Sink,
}

impl std::fmt::Display for PositionKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Store => "checkpoint in the projection store",
            Self::Sink => "position kept by the sink",
        })
    }
}

/// Where a projection stands, as it last reported it to the store
/// ([`ProjectionStore::report_status`]). A projection whose sink keeps its position writes
/// no checkpoint, so this report is what operators' tools (`aether projections list`) show of
/// it. Reported every [`ProjectionConfig::status_interval`](crate::ProjectionConfig::status_interval)
/// while it runs: a report much older than its interval means it is not running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedStatus {
    /// Who keeps the position: [`PositionKeeper::Sink`] (the projection store keeps the
    /// checkpoint of the others, which need no report).
    pub position_kept_by: PositionKeeper,
    /// The last event it handled or parked.
    pub position: Option<LogPosition>,
    /// The log's head when it last looked.
    pub head: Option<LogPosition>,
    /// Stored messages after its position when it last looked (`None`: not known yet).
    pub lag: Option<u64>,
    /// Events handled since it started.
    pub handled: u64,
    /// Events parked since it started.
    pub parked: u64,
    /// Its last handler or read error.
    pub last_error: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// When it made this report (by its own clock).
    pub reported_at: DateTime<Utc>,
    /// How often it reports, in milliseconds.
    pub interval_ms: u64,
}

/// A worker of a partitioned projection as the store last saw it: every heartbeat gives it a
/// new revision, so a revision that stays the same for the whole timeout is a dead worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHeartbeat {
    /// The worker's id.
    pub worker: String,
    /// The revision of its last heartbeat.
    pub revision: u64,
}

/// Who holds one partition of a partitioned projection. The holder renews it (a new revision)
/// every heartbeat; others take it over only when it is free or its revision has not changed
/// for the whole lease timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLease {
    /// The partition.
    pub partition: u32,
    /// The worker holding it (`None`: free).
    pub owner: Option<String>,
    /// The lease's revision (0: never written).
    pub revision: u64,
}

/// Durable state of projections: one checkpoint per projection (the position of the last
/// event it handled), its parked events, and for partitioned projections the workers'
/// heartbeats and the partitions' leases. Object-safe: hold it as
/// `Arc<dyn ProjectionStore>`.
///
/// The checkpoint of a partition of a partitioned projection is kept under the name
/// `<projection>.p<partition>`. On a partitioned log
/// ([`EventLog::partitions`](aether_core::EventLog::partitions)) each log partition has its
/// own: `<projection>.l<l>` for log partition `l` of a [`Projection`](crate::Projection),
/// `<projection>.l<l>.p<partition>` for a partition of a
/// [`ProjectionWorker`](crate::ProjectionWorker) (its parked events, replay requests and
/// reported status too).
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// The checkpoint of `projection`, `None` before its first event.
    async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>>;
    /// Records that `projection` handled everything up to `position`.
    async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()>;
    /// Forgets the checkpoint (the projection starts again from the beginning).
    async fn clear_checkpoint(&self, projection: &str) -> Result<()>;
    /// Sets `event` aside.
    async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()>;
    /// The parked events, in order.
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>>;
    /// Removes a parked event (handled after all).
    async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()>;

    /// Records where `projection` stands ([`ReportedStatus`]): what a projection whose sink
    /// keeps its position reports, at a bounded rate, in place of a checkpoint. The default
    /// keeps nothing (a store that no tool reads).
    async fn report_status(&self, projection: &str, status: &ReportedStatus) -> Result<()> {
        let _ = (projection, status);
        Ok(())
    }
    /// The status `projection` last reported, if any. The default has none.
    async fn reported_status(&self, projection: &str) -> Result<Option<ReportedStatus>> {
        let _ = projection;
        Ok(None)
    }

    /// Asks the running projection to replay its parked events (the operator's
    /// `aether projections replay-parked`).
    async fn request_replay(&self, projection: &str) -> Result<()>;
    /// Whether a replay was requested, forgetting the request.
    async fn take_replay_request(&self, projection: &str) -> Result<bool>;

    /// The number of partitions of the partitioned projection `projection`: the one stored,
    /// or `proposed` when none is stored yet (and then stored). All its workers must agree.
    /// Over a partitioned log a worker proposes `log_partitions << 16 | partitions` (at least
    /// 131 072), so that workers of different log partitionings disagree too.
    async fn partition_count(&self, projection: &str, proposed: u32) -> Result<u32>;
    /// Records that `worker` is alive.
    async fn heartbeat(&self, projection: &str, worker: &str) -> Result<()>;
    /// The workers that have sent heartbeats and not left.
    async fn workers(&self, projection: &str) -> Result<Vec<WorkerHeartbeat>>;
    /// Removes `worker` (it stops cleanly).
    async fn leave(&self, projection: &str, worker: &str) -> Result<()>;
    /// The lease of `partition` (a unit of work: over a partitioned log, unit
    /// `l × partitions + k` is partition `k` of log partition `l`).
    async fn lease(&self, projection: &str, partition: u32) -> Result<PartitionLease>;
    /// Sets the holder of `partition` (`None`: frees it) if its lease is still at revision
    /// `expected` (compare-and-set); returns the new revision, or `None` when the lease had
    /// moved on (someone else wrote it first).
    async fn write_lease(
        &self,
        projection: &str,
        partition: u32,
        owner: Option<&str>,
        expected: u64,
    ) -> Result<Option<u64>>;
}

/// One projection as an operator sees it: what `aether projections list` shows
/// (`NatsProjectionStore::summaries`, feature `nats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionSummary {
    /// The projection's name (`<name>.p<partition>` for a partition; `<name>.l<l>` and
    /// `<name>.l<l>.p<partition>` on log partition `l` of a partitioned log).
    pub name: String,
    /// Who keeps its position.
    pub kept_by: PositionKeeper,
    /// Its position: the checkpoint, or (kept by the sink) the one it last reported.
    pub position: Option<LogPosition>,
    /// Its parked events.
    pub parked: usize,
    /// Its last report, when the sink keeps the position.
    pub reported: Option<ReportedStatus>,
}

impl ProjectionSummary {
    /// Its lag behind `head` (see [`lag`](crate::lag)); for a position kept by the sink, as of
    /// its last report, so at most the events of one status interval more than the truth.
    pub fn lag(&self, head: Option<LogPosition>) -> u64 {
        crate::lag(self.position, head)
    }
}

/// The key-value bucket projections keep their state in unless told otherwise.
pub const DEFAULT_PROJECTION_BUCKET: &str = "AETHER_PROJECTIONS";
