//! The assignment table as the core sees it: the view it keeps (newer tables only), and the
//! leader's duty of keeping the table balanced over the live members.

use std::sync::Arc;

use aether_placement::rebalance;
use tokio::time::Instant;

use super::{Action, Cas, NodeCore};
use crate::assignment::{Assignment, AssignmentTable};

impl NodeCore {
    /// The membership changed: while we lead, rebalance now rather than at the next renewal,
    /// so a failed member's shards move as soon as it is declared failed (and a new member
    /// gets its share as soon as it is seen). Only while our last renewal is recent enough
    /// that no other node can have taken the lease since: a follower takes over only after
    /// the lease went unrenewed for a whole failure timeout.
    pub(super) fn lead_now(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some((term, _)) = self.held else { return };
        let fresh = self.renewed_at.is_some_and(|at| {
            now.saturating_duration_since(at) < self.settings.failure_timeout / 2
        });
        if fresh {
            self.lead(term, actions);
        }
    }

    /// The leader's duty: keep the table balanced over the live members, with our term.
    pub(super) fn lead(&mut self, term: u64, actions: &mut Vec<Action>) {
        let base = &self.view.table;
        if base.term > term {
            // A leader of a newer term exists (a partition healed, say): stop renewing and
            // hand the lease back so the cluster has one leader again.
            tracing::info!(
                term,
                newer = base.term,
                "a newer term wrote the table; stepping down"
            );
            if let Some((_, revision)) = self.held.take() {
                actions.push(Action::ReleaseLease { revision });
            }
            return;
        }
        // One write at a time: the driver carries it out asynchronously, and a membership
        // change (or a renewal) that comes before its outcome would otherwise ask for a
        // second write from the same revision, which could only lose the compare-and-set.
        // The outcome decides again (written: a newer base; stale: read and retry).
        if base.shard_count != self.settings.shard_count || self.table_write_in_flight {
            return;
        }
        let live = self.membership.alive();
        let shards = rebalance(&base.shards, &live, self.settings.replication_factor);
        if self.view.epoch != 0
            && self.view.epoch == self.table_revision
            && base.term == term
            && base.members == live
            && base.shards == shards
        {
            return;
        }
        self.table_write_in_flight = true;
        actions.push(Action::WriteTable {
            table: AssignmentTable {
                term,
                leader: self.settings.node_id.clone(),
                members: live,
                shard_count: self.settings.shard_count,
                replication_factor: self.settings.replication_factor,
                shards,
            },
            expected_revision: self.table_revision,
        });
    }

    pub(super) fn on_table_written(
        &mut self,
        table: AssignmentTable,
        outcome: Cas,
        actions: &mut Vec<Action>,
    ) {
        self.table_write_in_flight = false;
        match outcome {
            Cas::Written(epoch) => {
                tracing::info!(
                    epoch,
                    term = table.term,
                    members = ?table.members,
                    "assignment table written"
                );
                self.take_table(epoch, Some(table), actions);
            }
            // Someone wrote first (or the bucket failed): catch up, decide again on the
            // next tick.
            Cas::Stale | Cas::Failed => actions.push(Action::ReadTable),
        }
    }

    /// Applies a table seen at `revision` if it is newer than the view.
    pub(super) fn take_table(
        &mut self,
        revision: u64,
        table: Option<AssignmentTable>,
        actions: &mut Vec<Action>,
    ) {
        self.table_revision = self.table_revision.max(revision);
        let Some(table) = table else { return };
        if table.shard_count != self.settings.shard_count {
            tracing::error!(
                table = table.shard_count,
                configured = self.settings.shard_count,
                "assignment table has another shard count; ignoring it (check the configuration)"
            );
            return;
        }
        if revision <= self.view.epoch {
            return;
        }
        self.max_term_seen = self.max_term_seen.max(table.term);
        self.view = Arc::new(Assignment {
            epoch: revision,
            table,
        });
        tracing::debug!(
            epoch = revision,
            term = self.view.table.term,
            leader = %self.view.table.leader,
            members = ?self.view.table.members,
            "assignment applied"
        );
        actions.push(Action::ViewChanged(Arc::clone(&self.view)));
    }
}
