//! [`InMemoryProjectionStore`]: projection state in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aether_core::{LogPosition, Result};
use async_trait::async_trait;

use super::{ParkedEvent, PartitionLease, ProjectionStore, ReportedStatus, WorkerHeartbeat};

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
