//! [`NatsProjectionStore`]: projection state in a JetStream key-value bucket (feature `nats`).

use std::collections::BTreeMap;

use aether_core::StorageKind;
use aether_core::{Error, LogPosition, Result};
use aether_nats::{CasOutcome, Connection, KvBucket, Versioned};
use async_trait::async_trait;
use serde::Serialize;

use super::{
    ParkedEvent, PartitionLease, PositionKeeper, ProjectionStore, ProjectionSummary,
    ReportedStatus, WorkerHeartbeat,
};

/// The format of what a [`NatsProjectionStore`] keeps in its bucket, recorded in the bucket
/// under the key `format` as `{"version":1}`.
///
/// [`NatsProjectionStore::open`] writes it into a bucket that has none and refuses a bucket
/// of a newer format with [`Error::Unsupported`], so that a worker of an older release never
/// misreads the state a newer one keeps. A bucket without the key is of version 1 (the
/// release that introduced the key kept the same entries). A release that changes what the
/// bucket holds raises the version, reads both, and writes the new one only once told to,
/// as a rolling upgrade needs (`docs/migration.md`, "Golden files").
pub const PROJECTION_BUCKET_FORMAT: u32 = 1;

/// The key of the bucket's format record.
const FORMAT_KEY: &str = "format";

/// The bucket's format record.
#[derive(Debug, serde::Deserialize, Serialize)]
struct Format {
    version: u32,
}

/// Projection state in a NATS JetStream key-value bucket: `cp.<projection>` holds the
/// checkpoint, `parked.<projection>.<sequence>_<index>` each parked event, `replay.<projection>`
/// a replay request, `status.<projection>` the status reported by a projection whose sink
/// keeps its position ([`ReportedStatus`], JSON marked `"positionKeptBy": "sink"`);
/// for partitioned projections `parts.<projection>` the partition count,
/// `worker.<projection>.<worker>` each worker's heartbeat and `lease.<projection>.<partition>`
/// each partition's lease (projection and worker names are letters, digits, `-` and `_`;
/// a partition's checkpoint is `cp.<projection>.p<partition>`; on a partitioned log, log
/// partition `l`'s is `cp.<projection>.l<l>`, or `cp.<projection>.l<l>.p<partition>` for a
/// partition of it, and `lease.<projection>.<unit>` is unit `l × partitions + partition`);
/// `format` records the bucket's [`PROJECTION_BUCKET_FORMAT`].
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
    /// Records the bucket's [`PROJECTION_BUCKET_FORMAT`] when it has none (a client that may
    /// not write the bucket reads it without).
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::PermissionDenied`] from the server;
    /// [`Error::Unsupported`] for a bucket a newer release keeps in a format this one does not
    /// read; [`Error::Decoding`] for a malformed format record.
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
        check_format(&kv, bucket).await?;
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

    async fn summarise(&self, name: String, parked: usize) -> Result<Option<ProjectionSummary>> {
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

/// Reads the bucket's format record, writing this release's when there is none; refuses a
/// newer format.
async fn check_format(kv: &KvBucket, bucket: &str) -> Result<()> {
    // Twice at most: a record another process writes between the read and the create is read
    // on the second round.
    for _ in 0..2 {
        match kv.read(FORMAT_KEY).await? {
            Versioned::Value { value, .. } => {
                let format: Format = decode(FORMAT_KEY, &value)?;
                if format.version > PROJECTION_BUCKET_FORMAT {
                    return Err(Error::unsupported(
                        format!("reading the projections bucket {bucket}"),
                        format!(
                            "it is kept in format {} by a newer release; this release reads format {PROJECTION_BUCKET_FORMAT}: upgrade this process",
                            format.version
                        ),
                    ));
                }
                return Ok(());
            }
            Versioned::Absent | Versioned::Deleted { .. } => {
                let record = encode(&Format {
                    version: PROJECTION_BUCKET_FORMAT,
                })?;
                match kv.create(FORMAT_KEY, record).await {
                    Ok(CasOutcome::Written(_)) => return Ok(()),
                    Ok(CasOutcome::Conflict { .. }) => continue,
                    // A reader without write permission: the bucket is of the format every
                    // release before the record was kept in.
                    Err(Error::PermissionDenied { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
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
