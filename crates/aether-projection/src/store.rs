//! Where a projection keeps its checkpoint and its parked events.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aether_core::{Event, LogPosition, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
/// `<projection>.p<partition>`.
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
    async fn partition_count(&self, projection: &str, proposed: u32) -> Result<u32>;
    /// Records that `worker` is alive.
    async fn heartbeat(&self, projection: &str, worker: &str) -> Result<()>;
    /// The workers that have sent heartbeats and not left.
    async fn workers(&self, projection: &str) -> Result<Vec<WorkerHeartbeat>>;
    /// Removes `worker` (it stops cleanly).
    async fn leave(&self, projection: &str, worker: &str) -> Result<()>;
    /// The lease of `partition`.
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

/// Projection state in memory: the embedded default, and for tests.
#[derive(Debug, Default)]
pub struct InMemoryProjectionStore {
    checkpoints: Mutex<BTreeMap<String, LogPosition>>,
    parked: Mutex<BTreeMap<(String, LogPosition), ParkedEvent>>,
    statuses: Mutex<BTreeMap<String, ReportedStatus>>,
    coordination: Mutex<Coordination>,
}

/// Replay requests, partition counts, heartbeats and leases, with one revision counter for
/// all (like a key-value bucket's).
#[derive(Debug, Default)]
struct Coordination {
    revision: u64,
    replays: std::collections::BTreeSet<String>,
    partitions: BTreeMap<String, u32>,
    workers: BTreeMap<(String, String), u64>,
    leases: BTreeMap<(String, u32), (Option<String>, u64)>,
}

impl InMemoryProjectionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ProjectionStore for InMemoryProjectionStore {
    async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
        Ok(lock(&self.checkpoints).get(projection).copied())
    }
    async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()> {
        lock(&self.checkpoints).insert(projection.to_string(), position);
        Ok(())
    }
    async fn clear_checkpoint(&self, projection: &str) -> Result<()> {
        lock(&self.checkpoints).remove(projection);
        Ok(())
    }
    async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()> {
        lock(&self.parked).insert((projection.to_string(), event.position), event.clone());
        Ok(())
    }
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>> {
        Ok(lock(&self.parked)
            .iter()
            .filter(|((p, _), _)| p == projection)
            .map(|(_, e)| e.clone())
            .collect())
    }
    async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()> {
        lock(&self.parked).remove(&(projection.to_string(), position));
        Ok(())
    }
    async fn report_status(&self, projection: &str, status: &ReportedStatus) -> Result<()> {
        lock(&self.statuses).insert(projection.to_string(), status.clone());
        Ok(())
    }
    async fn reported_status(&self, projection: &str) -> Result<Option<ReportedStatus>> {
        Ok(lock(&self.statuses).get(projection).cloned())
    }
    async fn request_replay(&self, projection: &str) -> Result<()> {
        lock(&self.coordination)
            .replays
            .insert(projection.to_string());
        Ok(())
    }
    async fn take_replay_request(&self, projection: &str) -> Result<bool> {
        Ok(lock(&self.coordination).replays.remove(projection))
    }
    async fn partition_count(&self, projection: &str, proposed: u32) -> Result<u32> {
        Ok(*lock(&self.coordination)
            .partitions
            .entry(projection.to_string())
            .or_insert(proposed))
    }
    async fn heartbeat(&self, projection: &str, worker: &str) -> Result<()> {
        let mut c = lock(&self.coordination);
        c.revision += 1;
        let revision = c.revision;
        c.workers
            .insert((projection.to_string(), worker.to_string()), revision);
        Ok(())
    }
    async fn workers(&self, projection: &str) -> Result<Vec<WorkerHeartbeat>> {
        Ok(lock(&self.coordination)
            .workers
            .iter()
            .filter(|((p, _), _)| p == projection)
            .map(|((_, w), r)| WorkerHeartbeat {
                worker: w.clone(),
                revision: *r,
            })
            .collect())
    }
    async fn leave(&self, projection: &str, worker: &str) -> Result<()> {
        lock(&self.coordination)
            .workers
            .remove(&(projection.to_string(), worker.to_string()));
        Ok(())
    }
    async fn lease(&self, projection: &str, partition: u32) -> Result<PartitionLease> {
        let c = lock(&self.coordination);
        let (owner, revision) = c
            .leases
            .get(&(projection.to_string(), partition))
            .cloned()
            .unwrap_or((None, 0));
        Ok(PartitionLease {
            partition,
            owner,
            revision,
        })
    }
    async fn write_lease(
        &self,
        projection: &str,
        partition: u32,
        owner: Option<&str>,
        expected: u64,
    ) -> Result<Option<u64>> {
        let mut c = lock(&self.coordination);
        let key = (projection.to_string(), partition);
        let current = c.leases.get(&key).map_or(0, |(_, r)| *r);
        if current != expected {
            return Ok(None);
        }
        c.revision += 1;
        let revision = c.revision;
        c.leases.insert(key, (owner.map(str::to_string), revision));
        Ok(Some(revision))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "nats")]
pub use nats::NatsProjectionStore;

/// One projection as an operator sees it: what `aether projections list` shows
/// (`NatsProjectionStore::summaries`, feature `nats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionSummary {
    /// The projection's name (`<name>.p<partition>` for a partition).
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

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use aether_core::Error;
    use aether_nats::{CasOutcome, Connection, KvBucket, StorageKind, Versioned};

    /// Projection state in a NATS JetStream key-value bucket: `cp.<projection>` holds the
    /// checkpoint, `parked.<projection>.<sequence>_<index>` each parked event, `replay.<projection>`
    /// a replay request, `status.<projection>` the status reported by a projection whose sink
    /// keeps its position ([`ReportedStatus`], JSON marked `"positionKeptBy": "sink"`);
    /// for partitioned projections `parts.<projection>` the partition count,
    /// `worker.<projection>.<worker>` each worker's heartbeat and `lease.<projection>.<partition>`
    /// each partition's lease (projection and worker names are letters, digits, `-` and `_`;
    /// a partition's checkpoint is `cp.<projection>.p<partition>`).
    ///
    /// Every operation runs under the connection's permission guard ([`KvBucket`]): one the
    /// server refuses fails with [`Error::PermissionDenied`] at once, when the connection has
    /// its [`ConnectionMonitor`](aether_nats::ConnectionMonitor) installed
    /// ([`Connection::connect`] does that; a bare client has none, and a refusal then waits for
    /// the request's timeout).
    #[derive(Debug, Clone)]
    pub struct NatsProjectionStore {
        kv: KvBucket,
    }

    impl NatsProjectionStore {
        /// Opens (creating if needed) the bucket `bucket` on `connection` (a [`Connection`],
        /// or a bare `async_nats::Client`).
        ///
        /// # Errors
        /// [`Error::Unavailable`] or [`Error::PermissionDenied`] from the server.
        pub async fn open(
            connection: impl Into<Connection>,
            bucket: &str,
            storage: StorageKind,
        ) -> Result<Self> {
            let kv = KvBucket::open(
                &connection.into(),
                bucket,
                "Aether projections: checkpoints and parked events",
                storage,
            )
            .await?;
            Ok(Self { kv })
        }

        /// The projections this bucket holds state for (a checkpoint or parked events),
        /// sorted.
        ///
        /// # Errors
        /// Server errors.
        pub async fn projections(&self) -> Result<Vec<String>> {
            let mut names = std::collections::BTreeSet::new();
            for key in self.kv.keys("").await? {
                let name = match key.split_once('.') {
                    Some(("cp", name)) => Some(name),
                    Some(("parked", rest)) => rest.rsplit_once('.').map(|(name, _)| name),
                    _ => None,
                };
                if let Some(name) = name {
                    names.insert(name.to_string());
                }
            }
            Ok(names.into_iter().collect())
        }

        /// Every projection of the bucket as an operator sees it, sorted by name: those with
        /// a checkpoint or parked events, and those whose sink keeps the position and that
        /// reported their status. One listing of the keys, and two reads per projection.
        ///
        /// # Errors
        /// Server errors; an undecodable checkpoint or report.
        pub async fn summaries(&self) -> Result<Vec<ProjectionSummary>> {
            let keys = self.kv.keys("").await?;
            let mut parked: BTreeMap<String, usize> = BTreeMap::new();
            for key in &keys {
                let name = match key.split_once('.') {
                    Some(("cp" | "status", name)) => Some(name),
                    Some(("parked", rest)) => rest.rsplit_once('.').map(|(name, _)| name),
                    _ => None,
                };
                if let Some(name) = name {
                    let count = parked.entry(name.to_string()).or_default();
                    if key.starts_with("parked.") {
                        *count += 1;
                    }
                }
            }
            let mut out = Vec::with_capacity(parked.len());
            for (name, parked) in parked {
                if let Some(summary) = self.summarise(name, parked).await? {
                    out.push(summary);
                }
            }
            Ok(out)
        }

        /// One projection as [`summaries`](Self::summaries) shows it; `None` when the bucket
        /// holds nothing for it.
        ///
        /// # Errors
        /// As [`summaries`](Self::summaries).
        pub async fn summary(&self, projection: &str) -> Result<Option<ProjectionSummary>> {
            let parked = self.parked(projection).await?.len();
            self.summarise(projection.to_string(), parked).await
        }

        async fn summarise(
            &self,
            name: String,
            parked: usize,
        ) -> Result<Option<ProjectionSummary>> {
            let checkpoint_key = format!("cp.{name}");
            let checkpoint = self.kv.read(&checkpoint_key).await?;
            let report_key = format!("status.{name}");
            let report = self.kv.read(&report_key).await?;
            // The later of the two says who keeps the position now (a projection may have
            // changed sinks): revisions grow across the whole bucket.
            let sink_is_newer = match (checkpoint.value(), report.value()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(_), Some(_)) => report.revision() > checkpoint.revision(),
            };
            if sink_is_newer {
                let Some(r) = report.value() else {
                    return Ok(None);
                };
                let reported: ReportedStatus = decode(&report_key, r)?;
                return Ok(Some(ProjectionSummary {
                    name,
                    kept_by: reported.position_kept_by,
                    position: reported.position,
                    parked,
                    reported: Some(reported),
                }));
            }
            if checkpoint.value().is_none() && parked == 0 {
                return Ok(None);
            }
            let position = match checkpoint.value() {
                Some(c) => Some(decode(&checkpoint_key, c)?),
                None => None,
            };
            Ok(Some(ProjectionSummary {
                name,
                kept_by: PositionKeeper::Store,
                position,
                parked,
                reported: None,
            }))
        }

        fn parked_key(projection: &str, position: LogPosition) -> String {
            format!(
                "parked.{projection}.{}_{}",
                position.sequence, position.index
            )
        }

        /// The key's value, decoded; `None` when absent or deleted.
        async fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
            match self.kv.read(key).await?.value() {
                Some(value) => decode(key, value).map(Some),
                None => Ok(None),
            }
        }

        async fn put(&self, key: &str, value: bytes::Bytes) -> Result<()> {
            self.kv.put(key, value).await.map(drop)
        }

        async fn delete(&self, key: &str) -> Result<()> {
            self.kv.delete(key, None).await.map(drop)
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Decoding(format!("projection state {key}: {e}")))
    }

    fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes> {
        serde_json::to_vec(value)
            .map(Into::into)
            .map_err(|e| Error::Encoding(e.to_string()))
    }

    #[async_trait]
    impl ProjectionStore for NatsProjectionStore {
        async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
            self.get(&format!("cp.{projection}")).await
        }
        async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()> {
            self.put(&format!("cp.{projection}"), encode(&position)?)
                .await
        }
        async fn clear_checkpoint(&self, projection: &str) -> Result<()> {
            self.delete(&format!("cp.{projection}")).await
        }
        async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()> {
            self.put(
                &Self::parked_key(projection, event.position),
                encode(event)?,
            )
            .await
        }
        async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>> {
            let prefix = format!("parked.{projection}.");
            let mut out = Vec::new();
            for key in self.kv.keys(&prefix).await? {
                // A key with a dot after the prefix belongs to a partition (`<name>.p<k>`).
                if key[prefix.len()..].contains('.') {
                    continue;
                }
                if let Some(parked) = self.get::<ParkedEvent>(&key).await? {
                    out.push(parked);
                }
            }
            out.sort_by_key(|p| p.position);
            Ok(out)
        }
        async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()> {
            self.delete(&Self::parked_key(projection, position)).await
        }
        async fn report_status(&self, projection: &str, status: &ReportedStatus) -> Result<()> {
            self.put(&format!("status.{projection}"), encode(status)?)
                .await
        }
        async fn reported_status(&self, projection: &str) -> Result<Option<ReportedStatus>> {
            self.get(&format!("status.{projection}")).await
        }
        async fn request_replay(&self, projection: &str) -> Result<()> {
            self.put(
                &format!("replay.{projection}"),
                bytes::Bytes::from_static(b"1"),
            )
            .await
        }
        async fn take_replay_request(&self, projection: &str) -> Result<bool> {
            let key = format!("replay.{projection}");
            match self.kv.read(&key).await? {
                Versioned::Value { revision, .. } => {
                    // Deleting only this revision: a request made meanwhile is kept (and is
                    // taken next time), so a conflict still means a request was taken.
                    let _ = self.kv.delete(&key, Some(revision)).await?;
                    Ok(true)
                }
                Versioned::Absent | Versioned::Deleted { .. } => Ok(false),
            }
        }
        async fn partition_count(&self, projection: &str, proposed: u32) -> Result<u32> {
            let key = format!("parts.{projection}");
            if let CasOutcome::Written(_) = self.kv.create(&key, encode(&proposed)?).await? {
                return Ok(proposed);
            }
            self.get(&key).await?.ok_or_else(|| {
                Error::unavailable(
                    format!("reading {key}"),
                    "the partition count vanished after it was created",
                )
            })
        }
        async fn heartbeat(&self, projection: &str, worker: &str) -> Result<()> {
            self.put(
                &format!("worker.{projection}.{worker}"),
                bytes::Bytes::new(),
            )
            .await
        }
        async fn workers(&self, projection: &str) -> Result<Vec<WorkerHeartbeat>> {
            let prefix = format!("worker.{projection}.");
            let mut out = Vec::new();
            for key in self.kv.keys(&prefix).await? {
                if let Versioned::Value { revision, .. } = self.kv.read(&key).await? {
                    out.push(WorkerHeartbeat {
                        worker: key[prefix.len()..].to_string(),
                        revision,
                    });
                }
            }
            Ok(out)
        }
        async fn leave(&self, projection: &str, worker: &str) -> Result<()> {
            self.delete(&format!("worker.{projection}.{worker}")).await
        }
        async fn lease(&self, projection: &str, partition: u32) -> Result<PartitionLease> {
            let read = self
                .kv
                .read(&format!("lease.{projection}.{partition}"))
                .await?;
            Ok(PartitionLease {
                partition,
                owner: read
                    .value()
                    .filter(|v| !v.is_empty())
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                revision: read.revision(),
            })
        }
        async fn write_lease(
            &self,
            projection: &str,
            partition: u32,
            owner: Option<&str>,
            expected: u64,
        ) -> Result<Option<u64>> {
            let key = format!("lease.{projection}.{partition}");
            let value = bytes::Bytes::from(owner.unwrap_or_default().to_string());
            // Revision 0 means "no message yet": the write is then a create.
            Ok(self
                .kv
                .compare_and_set(&key, value, expected)
                .await?
                .written())
        }
    }
}
