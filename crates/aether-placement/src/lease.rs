//! Lease expiry, from revisions and a local monotonic clock.
//!
//! A lease lives in a key-value bucket; its holder renews it by writing it again, which gives
//! the key a new revision. Another party watches the revision with its own monotonic clock (no
//! clock agreement needed): a lease whose revision has not changed for the whole timeout was
//! not renewed, and may be taken over with compare-and-set on the revision it saw. The
//! cluster's leader lease works this way, and so do the partition leases (and the worker
//! heartbeats) of partitioned projections.

use std::time::{Duration, Instant};

/// Decides when someone else's lease has expired, from the revisions seen and the local
/// monotonic clock: a lease whose revision stays the same for the whole timeout was not
/// renewed. The cluster's leader lease uses it, and so do the partition leases of
/// partitioned projections (`aether-projection`).
///
/// Instants are `std::time::Instant`; a caller on tokio's clock (paused in tests) passes
/// `tokio::time::Instant::into_std()`, which keeps the paused clock's arithmetic.
///
/// ```
/// use std::time::{Duration, Instant};
/// use aether_placement::LeaseTracker;
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

    #[test]
    fn a_lease_expires_only_after_a_full_timeout_without_renewal() {
        let mut t = LeaseTracker::new(Duration::from_secs(1));
        let mut now = Instant::now();
        assert!(!t.observe(5, now));
        now += Duration::from_millis(600);
        assert!(!t.observe(5, now));
        // Renewed: the clock starts again.
        assert!(!t.observe(6, now));
        now += Duration::from_millis(600);
        assert!(!t.observe(6, now));
        now += Duration::from_millis(400);
        assert!(t.observe(6, now));
        t.reset();
        assert!(!t.observe(6, now));
    }
}
