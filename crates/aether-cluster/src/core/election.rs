//! The leader election as the core sees it: read the lease, claim or renew it with
//! compare-and-set, take over one that went unrenewed for a failure timeout, hand it back
//! when stopping.

use tokio::time::Instant;

use super::{Action, Cas, LeaseWrite, NodeCore};
use crate::leader::LeaderLease;

impl NodeCore {
    /// Time for a step of the election: read the lease, unless a step is still under way.
    pub(super) fn on_election_tick(&mut self, actions: &mut Vec<Action>) {
        // The driver carries the read (and the claim or renewal that follows it) out
        // asynchronously, so ticks keep coming while it is under way; a bucket that answers
        // slower than a heartbeat interval must not get a second read on top of the first.
        if !self.lease_in_flight {
            self.lease_in_flight = true;
            actions.push(Action::ReadLease);
        }
    }

    pub(super) fn on_lease_read(
        &mut self,
        revision: u64,
        lease: Option<LeaderLease>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.max_term_seen = self.max_term_seen.max(self.view.table.term);
        let Some(lease) = lease else {
            // No lease (never taken, or released): claim it now.
            let term = self.max_term_seen + 1;
            self.claim(revision, term, LeaseWrite::Claim, actions);
            return;
        };
        self.max_term_seen = self.max_term_seen.max(lease.term);
        if lease.node_id == self.settings.node_id && lease.incarnation == self.settings.incarnation
        {
            self.claim(revision, lease.term, LeaseWrite::Renew, actions);
            return;
        }
        self.held = None;
        self.leader = Some(lease.node_id.clone());
        if self.tracker.observe(revision, now.into_std()) {
            tracing::info!(
                expired = %lease.node_id,
                term = lease.term + 1,
                "leader lease expired; taking over"
            );
            self.claim(revision, lease.term + 1, LeaseWrite::Claim, actions);
        } else {
            self.lease_in_flight = false;
        }
    }

    pub(super) fn on_lease_read_failed(&mut self) {
        // Unable to renew: behave as a follower until the bucket answers again.
        self.lease_in_flight = false;
        self.held = None;
    }

    fn claim(&mut self, expected: u64, term: u64, write: LeaseWrite, actions: &mut Vec<Action>) {
        actions.push(Action::WriteLease {
            write,
            lease: LeaderLease {
                node_id: self.settings.node_id.clone(),
                incarnation: self.settings.incarnation.clone(),
                term,
            },
            expected_revision: expected,
        });
    }

    pub(super) fn on_lease_written(
        &mut self,
        write: LeaseWrite,
        term: u64,
        outcome: Cas,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.lease_in_flight = false;
        match outcome {
            Cas::Written(revision) => {
                if write == LeaseWrite::Claim {
                    tracing::info!(term, "became leader");
                    self.tracker.reset();
                }
                self.max_term_seen = self.max_term_seen.max(term);
                self.held = Some((term, revision));
                self.renewed_at = Some(now);
                self.leader = Some(self.settings.node_id.clone());
                self.lead(term, actions);
            }
            Cas::Stale => {
                if write == LeaseWrite::Renew {
                    tracing::info!("lost the leader lease");
                }
                self.held = None;
            }
            Cas::Failed => self.held = None,
        }
    }

    /// The node stops: hand the lease back at once instead of making a successor wait out
    /// the failure timeout. A claim or renewal still under way is handed back when it lands
    /// ([`Self::on_lease_written_after_stop`]).
    pub(super) fn on_shutdown(&mut self, actions: &mut Vec<Action>) {
        self.stopped = true;
        if let Some((term, revision)) = self.held.take() {
            tracing::info!(term, "releasing the leader lease");
            actions.push(Action::ReleaseLease { revision });
        }
    }

    /// A claim or renewal that was under way when the node stopped has landed: if it was
    /// stored, the lease is ours at that revision, so release that one too (a release at the
    /// revision before it would find the key moved on and do nothing).
    pub(super) fn on_lease_written_after_stop(&mut self, term: u64, outcome: Cas) -> Vec<Action> {
        self.lease_in_flight = false;
        match outcome {
            Cas::Written(revision) => {
                tracing::info!(term, "releasing the leader lease written while stopping");
                vec![Action::ReleaseLease { revision }]
            }
            Cas::Stale | Cas::Failed => Vec::new(),
        }
    }
}
