//! Leader election: a lease in the cluster's key-value bucket, taken and renewed with
//! compare-and-set.
//!
//! The key `leader` holds a [`LeaderLease`] (holder, incarnation, term). The holder renews it
//! every heartbeat interval with `update(key, value, revision)`, so each renewal gives the key
//! a new revision. Other nodes watch the revision with their own monotonic clock (no clock
//! agreement needed): a lease whose revision has not changed for the failure timeout has
//! expired, and any node may take it over with `update` on the revision it saw, with the term
//! plus one. Compare-and-set lets exactly one contender win. A leader leaving cleanly deletes
//! the key so a successor does not have to wait.

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
/// renewed.
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

#[cfg(feature = "nats")]
pub(crate) use elector::LeaderElector;

#[cfg(feature = "nats")]
mod elector {
    use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
    use bytes::Bytes;
    use tokio::time::Instant;

    use super::{LeaderLease, LeaseTracker, LEADER_KEY};
    use crate::routing::{decode, encode};
    use aether_core::{Error, Result};

    /// One node's side of the election.
    #[derive(Debug)]
    pub(crate) struct LeaderElector {
        kv: Store,
        node_id: String,
        incarnation: String,
        tracker: LeaseTracker,
        max_term_seen: u64,
        /// Our term and the lease revision of our last claim or renewal, while we lead.
        pub(crate) held: Option<(u64, u64)>,
        /// The leader as last seen.
        pub(crate) current: Option<String>,
    }

    impl LeaderElector {
        pub(crate) fn new(
            kv: Store,
            node_id: String,
            incarnation: String,
            timeout: std::time::Duration,
        ) -> Self {
            Self {
                kv,
                node_id,
                incarnation,
                tracker: LeaseTracker::new(timeout),
                max_term_seen: 0,
                held: None,
                current: None,
            }
        }

        /// Claims, renews or watches the lease once. Returns our term if we lead afterwards.
        /// `min_term` is the highest term this node has seen elsewhere (the assignment
        /// table's), so a fresh claim after a deleted lease still gets a higher term.
        pub(crate) async fn tick(&mut self, min_term: u64) -> Result<Option<u64>> {
            self.max_term_seen = self.max_term_seen.max(min_term);
            let entry = match self.kv.entry(LEADER_KEY).await {
                Ok(e) => e,
                Err(e) => {
                    // Unable to renew: behave as a follower until the bucket answers again.
                    self.held = None;
                    return Err(Error::unavailable("reading the leader lease", e));
                }
            };
            let (revision, lease) = match entry {
                None => (0, None),
                Some(e) if e.operation != Operation::Put => (e.revision, None),
                Some(e) => match decode::<LeaderLease>(&e.value) {
                    Ok(l) => (e.revision, Some(l)),
                    Err(err) => {
                        tracing::warn!(error = %err, "undecodable leader lease");
                        (e.revision, None)
                    }
                },
            };
            let Some(lease) = lease else {
                // No lease (never taken, or released): claim it now.
                return self.claim(revision, self.max_term_seen + 1).await;
            };
            self.max_term_seen = self.max_term_seen.max(lease.term);
            if lease.node_id == self.node_id && lease.incarnation == self.incarnation {
                return self.renew(&lease, revision).await;
            }
            self.held = None;
            self.current = Some(lease.node_id.clone());
            if self.tracker.observe(revision, Instant::now()) {
                tracing::info!(
                    node = %self.node_id,
                    expired = %lease.node_id,
                    term = lease.term + 1,
                    "leader lease expired; taking over"
                );
                return self.claim(revision, lease.term + 1).await;
            }
            Ok(None)
        }

        async fn claim(&mut self, expected: u64, term: u64) -> Result<Option<u64>> {
            let lease = LeaderLease {
                node_id: self.node_id.clone(),
                incarnation: self.incarnation.clone(),
                term,
            };
            let bytes = Bytes::from(encode(&lease)?);
            match self.kv.update(LEADER_KEY, bytes, expected).await {
                Ok(rev) => {
                    tracing::info!(node = %self.node_id, term, "became leader");
                    self.max_term_seen = self.max_term_seen.max(term);
                    self.held = Some((term, rev));
                    self.current = Some(self.node_id.clone());
                    self.tracker.reset();
                    Ok(Some(term))
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    self.held = None;
                    Ok(None)
                }
                Err(e) => {
                    self.held = None;
                    Err(Error::unavailable("claiming the leader lease", e))
                }
            }
        }

        async fn renew(&mut self, lease: &LeaderLease, revision: u64) -> Result<Option<u64>> {
            let bytes = Bytes::from(encode(lease)?);
            match self.kv.update(LEADER_KEY, bytes, revision).await {
                Ok(rev) => {
                    self.held = Some((lease.term, rev));
                    self.current = Some(self.node_id.clone());
                    Ok(Some(lease.term))
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::info!(node = %self.node_id, "lost the leader lease");
                    self.held = None;
                    Ok(None)
                }
                Err(e) => {
                    self.held = None;
                    Err(Error::unavailable("renewing the leader lease", e))
                }
            }
        }

        /// Gives up leadership, releasing the lease (only if it is still ours).
        pub(crate) async fn resign(&mut self) {
            if let Some((term, rev)) = self.held.take() {
                match self.kv.delete_expect_revision(LEADER_KEY, Some(rev)).await {
                    Ok(()) => {
                        tracing::info!(node = %self.node_id, term, "released the leader lease")
                    }
                    Err(e) => tracing::debug!(error = %e, "lease not released (already taken?)"),
                }
            }
        }

        /// Stops considering ourselves leader (a higher term was seen elsewhere).
        pub(crate) fn step_down(&mut self) {
            self.held = None;
        }
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

#[cfg(all(test, feature = "nats"))]
mod kv_tests {
    use std::time::Duration;

    use super::LeaderElector;
    use crate::assignment::{AssignmentStore, AssignmentTable, CasOutcome};
    use crate::config::ClusterConfig;
    use crate::node::open_bucket;

    async fn bucket(
        server: &aether_testkit::NatsServer,
        name: &str,
    ) -> async_nats::jetstream::kv::Store {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let config = ClusterConfig::default()
            .cluster_name(name)
            .memory_storage(true);
        open_bucket(&client, &config).await.expect("bucket")
    }

    fn elector(
        kv: async_nats::jetstream::kv::Store,
        node: &str,
        timeout: Duration,
    ) -> LeaderElector {
        LeaderElector::new(kv, node.to_string(), format!("{node}-inc"), timeout)
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_takeover_after_expiry() {
        let server = aether_testkit::NatsServer::start().expect("nats-server");
        let timeout = Duration::from_millis(300);
        let mut a = elector(bucket(&server, "lease").await, "a", timeout);
        let mut b = elector(bucket(&server, "lease").await, "b", timeout);
        let mut c = elector(bucket(&server, "lease").await, "c", timeout);

        // Simultaneous contenders: exactly one wins.
        let (ra, rb, rc) = tokio::join!(a.tick(0), b.tick(0), c.tick(0));
        let terms: Vec<Option<u64>> = vec![ra.unwrap(), rb.unwrap(), rc.unwrap()];
        assert_eq!(terms.iter().flatten().count(), 1, "{terms:?}");
        assert_eq!(terms.iter().flatten().next(), Some(&1));
        let (mut leader, mut others) = match terms.iter().position(Option::is_some) {
            Some(0) => (a, vec![b, c]),
            Some(1) => (b, vec![a, c]),
            _ => (c, vec![a, b]),
        };

        // Renewing keeps the lease; the others never see it expire.
        for _ in 0..6 {
            assert_eq!(leader.tick(0).await.unwrap(), Some(1));
            for o in &mut others {
                assert_eq!(o.tick(0).await.unwrap(), None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The leader stops renewing: after the timeout exactly one other takes over, term 2.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let new_term = loop {
            let (o0, o1) = others.split_at_mut(1);
            let (r0, r1) = tokio::join!(o0[0].tick(0), o1[0].tick(0));
            let won: Vec<u64> = [r0.unwrap(), r1.unwrap()].into_iter().flatten().collect();
            assert!(won.len() <= 1, "two leaders: {won:?}");
            if let Some(t) = won.first() {
                break *t;
            }
            assert!(tokio::time::Instant::now() < deadline, "no takeover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(new_term, 2);
        // The old leader finds out on its next renewal.
        assert_eq!(leader.tick(0).await.unwrap(), None);

        // A clean resignation lets a successor in at once, with a higher term.
        let mut successor = others.into_iter().find(|o| o.held.is_some()).unwrap();
        successor.resign().await;
        assert_eq!(leader.tick(0).await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn assignment_writes_are_compare_and_set() {
        let server = aether_testkit::NatsServer::start().expect("nats-server");
        let store_a = AssignmentStore::new(bucket(&server, "cas").await);
        let store_b = AssignmentStore::new(bucket(&server, "cas").await);
        assert!(store_a.load().await.unwrap().0.is_none());
        let table = |leader: &str, term| AssignmentTable {
            term,
            leader: leader.into(),
            ..AssignmentTable::empty(4, 1)
        };
        // Both think the table is absent: one write wins.
        let (ta, tb) = (table("a", 1), table("b", 2));
        let (wa, wb) = tokio::join!(store_a.write(&ta, 0), store_b.write(&tb, 0));
        let outcomes = [wa.unwrap(), wb.unwrap()];
        let written: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| match o {
                CasOutcome::Written(r) => Some(*r),
                CasOutcome::Stale => None,
            })
            .collect();
        assert_eq!(written.len(), 1, "{outcomes:?}");
        let (current, rev) = store_a.load().await.unwrap();
        let current = current.unwrap();
        assert_eq!(current.epoch, written[0]);
        assert_eq!(rev, written[0]);
        // Both read the same revision: again only one write wins, and the epoch grows.
        let (ta, tb) = (table("a", 5), table("b", 5));
        let (wa, wb) = tokio::join!(store_a.write(&ta, rev), store_b.write(&tb, rev));
        let wins = [wa.unwrap(), wb.unwrap()]
            .iter()
            .filter(|o| matches!(o, CasOutcome::Written(_)))
            .count();
        assert_eq!(wins, 1);
        let (after, _) = store_b.load().await.unwrap();
        assert!(after.unwrap().epoch > current.epoch);
    }
}
