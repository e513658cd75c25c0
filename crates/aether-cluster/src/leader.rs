//! Leader election: a lease in the cluster's key-value bucket, taken and renewed with
//! compare-and-set.
//!
//! The key `leader` holds a [`LeaderLease`] (holder, incarnation, term). The holder renews it
//! every heartbeat interval with `update(key, value, revision)`, so each renewal gives the key
//! a new revision. Other nodes watch the revision with their own monotonic clock (no clock
//! agreement needed): a lease whose revision has not changed for the failure timeout has
//! expired, and any node may take it over with `update` on the revision it saw, with the term
//! plus one. Compare-and-set lets exactly one contender win. A leader leaving cleanly deletes
//! the key so a successor does not have to wait. The decisions are the node core's
//! (`core.rs`); this module holds the lease's data and the expiry clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The key of the lease in the cluster's bucket.
pub const LEADER_KEY: &str = "leader";

/// The value of the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderLease {
    /// The leader.
    pub node_id: String,
    /// The leader's incarnation (a restarted node does not inherit its old lease).
    pub incarnation: String,
    /// Grows by one with every change of leader.
    pub term: u64,
}

/// Decides when someone else's lease has expired, from the revisions seen and the local
/// monotonic clock: a lease whose revision stays the same for the whole timeout was not
/// renewed. The cluster's leader lease uses it, and so do the partition leases of
/// partitioned projections (`aether-projection`).
///
/// ```
/// use std::time::Duration;
/// use aether_cluster::LeaseTracker;
/// use tokio::time::Instant;
///
/// let mut lease = LeaseTracker::new(Duration::from_secs(1));
/// let start = Instant::now();
/// assert!(!lease.observe(7, start));
/// assert!(!lease.observe(8, start + Duration::from_secs(5))); // renewed: a new revision
/// assert!(lease.observe(8, start + Duration::from_secs(6))); // a whole timeout unchanged
/// ```
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    timeout: Duration,
    observed: Option<(u64, Instant)>,
}

impl LeaseTracker {
    /// A tracker that declares a lease expired after `timeout` without a new revision.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            observed: None,
        }
    }

    /// Records that the lease is at `revision` as of `now`; returns whether it has stayed
    /// there for the whole timeout.
    pub fn observe(&mut self, revision: u64, now: Instant) -> bool {
        match self.observed {
            Some((r, since)) if r == revision => {
                now.saturating_duration_since(since) >= self.timeout
            }
            _ => {
                self.observed = Some((revision, now));
                false
            }
        }
    }

    /// Forgets what was observed.
    pub fn reset(&mut self) {
        self.observed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_only_after_a_full_timeout_without_renewal() {
        let mut t = LeaseTracker::new(Duration::from_secs(1));
        assert!(!t.observe(5, Instant::now()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!t.observe(5, Instant::now()));
        // Renewed: the clock starts again.
        assert!(!t.observe(6, Instant::now()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!t.observe(6, Instant::now()));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(t.observe(6, Instant::now()));
        t.reset();
        assert!(!t.observe(6, Instant::now()));
    }

    #[test]
    fn lease_wire_format() {
        let l = LeaderLease {
            node_id: "a".into(),
            incarnation: "i".into(),
            term: 3,
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["nodeId"], "a");
        assert_eq!(v["term"], 3);
    }
}
