//! The decisions of one worker of a partitioned projection, without I/O: given the
//! heartbeats, the leases and what the worker holds, what to claim, renew and release.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aether_placement::LeaseTracker;
use tokio::time::Instant;

use crate::store::{PartitionLease, WorkerHeartbeat};

/// What a worker does next for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Take the partition: write this worker into its lease if it is still at `expected`,
    /// then start handling it.
    Claim {
        /// The partition.
        partition: u32,
        /// The lease revision seen.
        expected: u64,
    },
    /// Renew the lease this worker holds at `revision`.
    Renew {
        /// The partition.
        partition: u32,
        /// The revision of the lease as this worker last wrote it.
        revision: u64,
    },
    /// Stop handling the partition (it is assigned elsewhere now), then free its lease.
    Release {
        /// The partition.
        partition: u32,
        /// The revision of the lease as this worker last wrote it.
        revision: u64,
    },
}

/// The decisions of one worker of a partitioned projection, without I/O: given the
/// heartbeats, the leases and what this worker holds, what to claim, renew and release.
#[derive(Debug)]
pub(super) struct Coordinator {
    me: String,
    /// The partition count (at least 1).
    pub(super) partitions: u32,
    timeout: Duration,
    workers: HashMap<String, LeaseTracker>,
    leases: HashMap<u32, LeaseTracker>,
}

impl Coordinator {
    /// The coordinator of worker `me` for `partitions` partitions, taking a heartbeat or a
    /// lease unchanged for `timeout` as dead.
    pub(super) fn new(me: impl Into<String>, partitions: u32, timeout: Duration) -> Self {
        Self {
            me: me.into(),
            partitions: partitions.max(1),
            timeout,
            workers: HashMap::new(),
            leases: HashMap::new(),
        }
    }

    /// The live workers as of `now`, sorted: this one, and every other whose heartbeat
    /// revision changed within the timeout (as seen by this worker).
    pub(super) fn live(&mut self, heartbeats: &[WorkerHeartbeat], now: Instant) -> Vec<String> {
        let seen: BTreeSet<&str> = heartbeats.iter().map(|h| h.worker.as_str()).collect();
        self.workers.retain(|w, _| seen.contains(w.as_str()));
        let mut live = BTreeSet::from([self.me.clone()]);
        for h in heartbeats {
            let timeout = self.timeout;
            let dead = self
                .workers
                .entry(h.worker.clone())
                .or_insert_with(|| LeaseTracker::new(timeout))
                .observe(h.revision, now.into_std());
            if !dead {
                live.insert(h.worker.clone());
            }
        }
        live.into_iter().collect()
    }

    /// Which worker each partition goes to, over `live` workers: a balanced assignment that
    /// depends on the live set alone, so every worker that sees the same set computes the
    /// same.
    pub(super) fn assignment(&self, live: &[String]) -> Vec<Option<String>> {
        let empty = vec![Vec::new(); self.partitions as usize];
        aether_placement::rebalance(&empty, live, 1)
            .into_iter()
            .map(|row| row.into_iter().next())
            .collect()
    }

    /// What to do now, given the workers' heartbeats, the partitions' leases (any missing one
    /// counts as never written) and the partitions this worker holds (with the revision of
    /// the lease as it last wrote it).
    pub(super) fn plan(
        &mut self,
        now: Instant,
        heartbeats: &[WorkerHeartbeat],
        leases: &[PartitionLease],
        held: &BTreeMap<u32, u64>,
    ) -> Vec<Action> {
        let live = self.live(heartbeats, now);
        let assignment = self.assignment(&live);
        let leases: HashMap<u32, &PartitionLease> =
            leases.iter().map(|l| (l.partition, l)).collect();
        let mut actions = Vec::new();
        for partition in 0..self.partitions {
            let mine = assignment
                .get(partition as usize)
                .and_then(Option::as_deref)
                == Some(self.me.as_str());
            let (owner, revision) = leases
                .get(&partition)
                .map_or((None, 0), |l| (l.owner.as_deref(), l.revision));
            let timeout = self.timeout;
            let expired = self
                .leases
                .entry(partition)
                .or_insert_with(|| LeaseTracker::new(timeout))
                .observe(revision, now.into_std());
            if let Some(&held_revision) = held.get(&partition) {
                actions.push(if mine {
                    Action::Renew {
                        partition,
                        revision: held_revision,
                    }
                } else {
                    Action::Release {
                        partition,
                        revision: held_revision,
                    }
                });
                continue;
            }
            if !mine {
                continue;
            }
            // Free, left by an earlier run of this very worker, or not renewed for the whole
            // timeout: take it. Otherwise its holder gives it up once it sees the assignment.
            let claimable = match owner {
                None => true,
                Some(o) => o == self.me || expired,
            };
            if claimable {
                actions.push(Action::Claim {
                    partition,
                    expected: revision,
                });
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests;
