//! The I/O-free core of a cluster node: membership, the leader lease, the assignment table and
//! the fencing view, as one state machine.
//!
//! The core never touches the network or a clock. A driver (the node) feeds it [`Input`]s,
//! each with the current `tokio::time::Instant`, and carries out the [`Action`]s it returns:
//! publish a heartbeat, read or compare-and-set the lease or the table, apply a new view. The
//! results of those actions come back as inputs. So the whole protocol (heartbeats, failure
//! detection, leader change, rejoin, fencing) runs in a unit test with made-up instants, and in
//! the node on whatever transport it was given.
//!
//! The core is the one source of truth of a node for "who owns what": routing, fencing and
//! the public accessors all read [`NodeCore::view`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::assignment::{Assignment, AssignmentTable};
use crate::leader::{LeaderLease, LeaseTracker};
use crate::membership::{Membership, MembershipChange};
use crate::routing::{Heartbeat, Leave};
use crate::shard::rebalance;

/// What a node's core is fixed with when it starts.
#[derive(Debug, Clone)]
pub(crate) struct CoreSettings {
    pub(crate) node_id: String,
    pub(crate) incarnation: String,
    pub(crate) failure_timeout: Duration,
    pub(crate) shard_count: u32,
    pub(crate) replication_factor: u32,
}

/// The outcome of a compare-and-set write to the cluster's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cas {
    /// Stored at this revision.
    Written(u64),
    /// Someone wrote first: the expected revision is stale.
    Stale,
    /// The bucket did not answer.
    Failed,
}

/// Why a lease write was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseWrite {
    Claim,
    Renew,
}

/// Something that happened, for the core to decide on.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// A heartbeat interval passed: time to say we are alive and sweep silent members.
    Tick,
    /// Time for a step of the election (and, while leading, of the leader's duty). Its own
    /// input so that a slow bucket never delays a heartbeat.
    ElectionTick,
    /// A member's heartbeat arrived.
    Heartbeat(Heartbeat),
    /// A member said it leaves.
    Leave(Leave),
    /// The lease key was read: its revision (0: never written) and value (`None`: absent,
    /// deleted or undecodable).
    LeaseRead {
        revision: u64,
        lease: Option<LeaderLease>,
    },
    /// Reading the lease failed.
    LeaseReadFailed,
    /// A claim or renewal finished.
    LeaseWritten {
        write: LeaseWrite,
        term: u64,
        outcome: Cas,
    },
    /// The table key was read or watched: its revision and the table (`None`: absent or
    /// undecodable, which a leader may overwrite).
    TableRead {
        revision: u64,
        table: Option<AssignmentTable>,
    },
    /// A table write finished.
    TableWritten {
        table: AssignmentTable,
        outcome: Cas,
    },
    /// The node stops cleanly.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Publish this heartbeat.
    PublishHeartbeat(Heartbeat),
    /// Read the lease key and report [`Input::LeaseRead`] (or `LeaseReadFailed`).
    ReadLease,
    /// Compare-and-set the lease key and report [`Input::LeaseWritten`].
    WriteLease {
        write: LeaseWrite,
        lease: LeaderLease,
        expected_revision: u64,
    },
    /// Delete the lease key if it is still at this revision (a clean step-down).
    ReleaseLease { revision: u64 },
    /// Read the table key and report [`Input::TableRead`].
    ReadTable,
    /// Compare-and-set the table key and report [`Input::TableWritten`].
    WriteTable {
        table: AssignmentTable,
        expected_revision: u64,
    },
    /// A newer table is in force: stop serving the actors it does not give this node, wake
    /// whoever waits for a change.
    ViewChanged(Arc<Assignment>),
    /// The live set changed (for logs and metrics).
    Membership(MembershipChange),
}

/// One node's protocol state. See the module docs.
#[derive(Debug)]
pub(crate) struct NodeCore {
    settings: CoreSettings,
    membership: Membership,
    heartbeat_seq: u64,
    // Election.
    tracker: LeaseTracker,
    max_term_seen: u64,
    /// Our term and the lease revision of our last claim or renewal, while we lead.
    held: Option<(u64, u64)>,
    /// The leader as last seen.
    leader: Option<String>,
    lease_in_flight: bool,
    // Assignment.
    view: Arc<Assignment>,
    /// The newest revision of the table key seen, even of an undecodable value, so a leader
    /// can overwrite that with compare-and-set.
    table_revision: u64,
    table_write_in_flight: bool,
    stopped: bool,
}

impl NodeCore {
    pub(crate) fn new(settings: CoreSettings) -> Self {
        let view = Arc::new(Assignment::empty(
            settings.shard_count,
            settings.replication_factor,
        ));
        Self {
            membership: Membership::new(settings.node_id.clone(), settings.failure_timeout),
            tracker: LeaseTracker::new(settings.failure_timeout),
            settings,
            heartbeat_seq: 0,
            max_term_seen: 0,
            held: None,
            leader: None,
            lease_in_flight: false,
            view,
            table_revision: 0,
            table_write_in_flight: false,
            stopped: false,
        }
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    pub(crate) fn incarnation(&self) -> &str {
        &self.settings.incarnation
    }

    /// The newest table this node knows.
    pub(crate) fn view(&self) -> Arc<Assignment> {
        Arc::clone(&self.view)
    }

    /// Our term while we hold the lease.
    pub(crate) fn term(&self) -> Option<u64> {
        self.held.map(|(t, _)| t)
    }

    /// The leader as last seen.
    pub(crate) fn leader(&self) -> Option<String> {
        self.leader.clone()
    }

    /// The live members, this node included, sorted.
    pub(crate) fn alive(&self) -> Vec<String> {
        self.membership.alive()
    }

    /// Takes in the table found at start, giving its members one failure timeout to show up
    /// before they are declared failed.
    pub(crate) fn start(
        &mut self,
        revision: u64,
        table: Option<AssignmentTable>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.take_table(revision, table, &mut actions);
        let members = self.view.table.members.clone();
        self.membership
            .seed(members.iter().map(String::as_str), now);
        actions
    }

    /// Decides on `input`, observed at `now`.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            return actions;
        }
        match input {
            Input::Tick => {
                actions.push(Action::PublishHeartbeat(Heartbeat {
                    node_id: self.settings.node_id.clone(),
                    incarnation: self.settings.incarnation.clone(),
                    seq: self.heartbeat_seq,
                }));
                self.heartbeat_seq += 1;
                for change in self.membership.sweep(now) {
                    actions.push(Action::Membership(change));
                }
            }
            Input::ElectionTick => {
                if !self.lease_in_flight {
                    self.lease_in_flight = true;
                    actions.push(Action::ReadLease);
                }
            }
            Input::Heartbeat(hb) => {
                if let Some(change) = self.membership.observe_heartbeat(&hb, now) {
                    actions.push(Action::Membership(change));
                }
            }
            Input::Leave(leave) => {
                if let Some(change) = self.membership.observe_leave(&leave) {
                    actions.push(Action::Membership(change));
                }
            }
            Input::LeaseRead { revision, lease } => {
                self.on_lease_read(revision, lease, now, &mut actions)
            }
            Input::LeaseReadFailed => {
                // Unable to renew: behave as a follower until the bucket answers again.
                self.lease_in_flight = false;
                self.held = None;
            }
            Input::LeaseWritten {
                write,
                term,
                outcome,
            } => self.on_lease_written(write, term, outcome, &mut actions),
            Input::TableRead { revision, table } => self.take_table(revision, table, &mut actions),
            Input::TableWritten { table, outcome } => {
                self.table_write_in_flight = false;
                match outcome {
                    Cas::Written(epoch) => {
                        tracing::info!(
                            epoch,
                            term = table.term,
                            members = ?table.members,
                            "assignment table written"
                        );
                        self.take_table(epoch, Some(table), &mut actions);
                    }
                    // Someone wrote first (or the bucket failed): catch up, decide again on
                    // the next tick.
                    Cas::Stale | Cas::Failed => actions.push(Action::ReadTable),
                }
            }
            Input::Shutdown => {
                self.stopped = true;
                if let Some((term, revision)) = self.held.take() {
                    tracing::info!(term, "releasing the leader lease");
                    actions.push(Action::ReleaseLease { revision });
                }
            }
        }
        actions
    }

    fn on_lease_read(
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
        if self.tracker.observe(revision, now) {
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

    fn on_lease_written(
        &mut self,
        write: LeaseWrite,
        term: u64,
        outcome: Cas,
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

    /// The leader's duty: keep the table balanced over the live members, with our term.
    fn lead(&mut self, term: u64, actions: &mut Vec<Action>) {
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

    /// Applies a table seen at `revision` if it is newer than the view.
    fn take_table(
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

#[cfg(test)]
mod tests {
    //! The protocol on made-up instants: no server, no runtime, no waiting.
    use super::*;

    const HB: Duration = Duration::from_millis(100);
    const FAIL: Duration = Duration::from_secs(1);

    fn core(id: &str) -> NodeCore {
        NodeCore::new(CoreSettings {
            node_id: id.into(),
            incarnation: format!("{id}-1"),
            failure_timeout: FAIL,
            shard_count: 16,
            replication_factor: 1,
        })
    }

    /// A lease and table store with compare-and-set, like the key-value bucket.
    #[derive(Default)]
    struct Bucket {
        revision: u64,
        lease: Option<(u64, LeaderLease)>,
        table: Option<(u64, AssignmentTable)>,
    }

    impl Bucket {
        fn cas_lease(&mut self, lease: LeaderLease, expected: u64) -> Cas {
            let current = self.lease.as_ref().map_or(0, |(r, _)| *r);
            if current != expected {
                return Cas::Stale;
            }
            self.revision += 1;
            self.lease = Some((self.revision, lease));
            Cas::Written(self.revision)
        }
        fn cas_table(&mut self, table: AssignmentTable, expected: u64) -> Cas {
            let current = self.table.as_ref().map_or(0, |(r, _)| *r);
            if current != expected {
                return Cas::Stale;
            }
            self.revision += 1;
            self.table = Some((self.revision, table));
            Cas::Written(self.revision)
        }
    }

    /// Runs `input` on `node` and carries out every action against `bucket`, feeding the
    /// results back, until nothing is left; returns the heartbeats published and the views
    /// applied.
    fn drive(
        node: &mut NodeCore,
        bucket: &mut Bucket,
        input: Input,
        now: Instant,
    ) -> (Vec<Heartbeat>, Vec<Arc<Assignment>>, Vec<MembershipChange>) {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            for action in node.step(input, now) {
                match action {
                    Action::PublishHeartbeat(hb) => out.0.push(hb),
                    Action::ViewChanged(v) => out.1.push(v),
                    Action::Membership(c) => out.2.push(c),
                    Action::ReadLease => queue.push(Input::LeaseRead {
                        revision: bucket.lease.as_ref().map_or(0, |(r, _)| *r),
                        lease: bucket.lease.as_ref().map(|(_, l)| l.clone()),
                    }),
                    Action::WriteLease {
                        write,
                        lease,
                        expected_revision,
                    } => {
                        let term = lease.term;
                        let outcome = bucket.cas_lease(lease, expected_revision);
                        queue.push(Input::LeaseWritten {
                            write,
                            term,
                            outcome,
                        });
                    }
                    Action::ReleaseLease { revision } => {
                        if bucket.lease.as_ref().map(|(r, _)| *r) == Some(revision) {
                            bucket.lease = None;
                        }
                    }
                    Action::ReadTable => queue.push(Input::TableRead {
                        revision: bucket.table.as_ref().map_or(0, |(r, _)| *r),
                        table: bucket.table.as_ref().map(|(_, t)| t.clone()),
                    }),
                    Action::WriteTable {
                        table,
                        expected_revision,
                    } => {
                        let outcome = bucket.cas_table(table.clone(), expected_revision);
                        queue.push(Input::TableWritten { table, outcome });
                    }
                }
            }
        }
        out
    }

    /// Every node hears every heartbeat in `hbs`.
    fn deliver(nodes: &mut [&mut NodeCore], hbs: &[Heartbeat], now: Instant) {
        for n in nodes.iter_mut() {
            for hb in hbs {
                n.step(Input::Heartbeat(hb.clone()), now);
            }
        }
    }

    /// One heartbeat round of every live node, then every node sees the newest table.
    fn round(nodes: &mut [&mut NodeCore], bucket: &mut Bucket, now: Instant) {
        let mut hbs = Vec::new();
        for n in nodes.iter_mut() {
            hbs.extend(drive(n, bucket, Input::Tick, now).0);
        }
        deliver(nodes, &hbs, now);
        for n in nodes.iter_mut() {
            drive(n, bucket, Input::ElectionTick, now);
            drive(n, bucket, Input::ElectionTick, now);
        }
        if let Some((rev, table)) = bucket.table.clone() {
            for n in nodes.iter_mut() {
                drive(
                    n,
                    bucket,
                    Input::TableRead {
                        revision: rev,
                        table: Some(table.clone()),
                    },
                    now,
                );
            }
        }
    }

    #[test]
    fn a_lone_node_claims_the_lease_and_assigns_every_shard_to_itself() {
        let mut bucket = Bucket::default();
        let mut a = core("a");
        let now = Instant::now();
        let (hbs, views, _) = drive(&mut a, &mut bucket, Input::Tick, now);
        assert_eq!(hbs.len(), 1);
        assert_eq!(hbs[0].seq, 0);
        assert!(views.is_empty());
        let (hbs, views, _) = drive(&mut a, &mut bucket, Input::ElectionTick, now);
        assert!(hbs.is_empty());
        assert_eq!(a.term(), Some(1));
        assert_eq!(a.leader().as_deref(), Some("a"));
        let view = views.last().expect("a table");
        assert!(view.is_complete());
        assert_eq!(view.table.members, ["a"]);
        assert_eq!(a.view().epoch, view.epoch);
        // The next ticks renew the lease and change nothing else.
        let (hbs, _, _) = drive(&mut a, &mut bucket, Input::Tick, now + HB);
        assert_eq!(hbs[0].seq, 1);
        let (_, views, _) = drive(&mut a, &mut bucket, Input::ElectionTick, now + HB);
        assert!(views.is_empty());
        assert_eq!(a.term(), Some(1));
    }

    #[test]
    fn three_nodes_agree_then_a_dead_leader_is_replaced_after_the_failure_timeout() {
        let mut bucket = Bucket::default();
        let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
        let mut now = Instant::now();
        for _ in 0..3 {
            round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
            now += HB;
        }
        let table = a.view();
        assert_eq!(table.table.members, ["a", "b", "c"]);
        assert_eq!(b.view(), table);
        assert_eq!(c.view(), table);
        let leader = table.table.leader.clone();
        assert_eq!(leader, "a", "the first to tick claims the lease");
        assert_eq!(b.leader().as_deref(), Some("a"));

        // `a` dies. Just before the failure timeout nothing moves.
        let died = now;
        while now < died + FAIL - HB {
            round(&mut [&mut b, &mut c], &mut bucket, now);
            now += HB;
        }
        assert_eq!(b.view(), table, "nothing moves within the failure timeout");
        assert_eq!(b.term(), None);
        // After it, a survivor takes the lease with a higher term and moves a's shards.
        while now <= died + FAIL + HB * 4 {
            round(&mut [&mut b, &mut c], &mut bucket, now);
            now += HB;
        }
        let after = b.view();
        assert_eq!(after.table.members, ["b", "c"]);
        assert!(after.table.term >= 2);
        assert!(after.is_complete());
        assert_eq!(c.view(), after);
        // Only a's shards moved.
        for s in 0..16u32 {
            let before = table.primary(s).unwrap();
            if before != "a" {
                assert_eq!(after.primary(s), Some(before));
            }
        }
        assert_eq!([b.term(), c.term()].iter().flatten().count(), 1);
    }

    #[test]
    fn a_node_that_rejoins_with_a_new_incarnation_gets_shards_again() {
        let mut bucket = Bucket::default();
        let (mut a, mut b) = (core("a"), core("b"));
        let mut now = Instant::now();
        for _ in 0..3 {
            round(&mut [&mut a, &mut b], &mut bucket, now);
            now += HB;
        }
        assert_eq!(a.view().table.members, ["a", "b"]);
        // b crashes and is declared failed.
        for _ in 0..15 {
            round(&mut [&mut a], &mut bucket, now);
            now += HB;
        }
        assert_eq!(a.view().table.members, ["a"]);
        // b restarts: a new incarnation, seeded with the current table.
        let mut b = NodeCore::new(CoreSettings {
            incarnation: "b-2".into(),
            ..core("b").settings
        });
        let (rev, table) = bucket.table.clone().unwrap();
        b.start(rev, Some(table), now);
        for _ in 0..3 {
            round(&mut [&mut a, &mut b], &mut bucket, now);
            now += HB;
        }
        let view = a.view();
        assert_eq!(view.table.members, ["a", "b"]);
        assert!(!view.primaries_of("b").is_empty());
        assert_eq!(b.view(), view);
    }

    #[test]
    fn a_clean_leave_releases_the_lease_and_moves_shards_at_once() {
        let mut bucket = Bucket::default();
        let (mut a, mut b) = (core("a"), core("b"));
        let mut now = Instant::now();
        for _ in 0..3 {
            round(&mut [&mut a, &mut b], &mut bucket, now);
            now += HB;
        }
        assert_eq!(a.term(), Some(1));
        drive(&mut a, &mut bucket, Input::Shutdown, now);
        assert!(bucket.lease.is_none(), "released");
        assert!(
            a.step(Input::Tick, now).is_empty(),
            "a stopped core does nothing"
        );
        assert!(a.step(Input::ElectionTick, now).is_empty());
        let changes = drive(
            &mut b,
            &mut bucket,
            Input::Leave(Leave {
                node_id: "a".into(),
                incarnation: "a-1".into(),
            }),
            now,
        )
        .2;
        assert_eq!(changes, [MembershipChange::Left("a".into())]);
        // One tick later, well within the failure timeout, b leads alone.
        round(&mut [&mut b], &mut bucket, now + HB);
        assert_eq!(b.term(), Some(2));
        assert_eq!(b.view().table.members, ["b"]);
        assert!(b.view().is_complete());
    }

    #[test]
    fn a_view_only_moves_forward_and_ignores_a_table_of_another_shard_count() {
        let mut a = core("a");
        let now = Instant::now();
        let table = AssignmentTable {
            members: vec!["a".into()],
            shards: vec![vec!["a".into()]; 16],
            ..AssignmentTable::empty(16, 1)
        };
        let acts = a.step(
            Input::TableRead {
                revision: 5,
                table: Some(table.clone()),
            },
            now,
        );
        assert!(matches!(&acts[..], [Action::ViewChanged(v)] if v.epoch == 5));
        // An older table, the same one again, and one with another shard count: ignored.
        for (rev, t) in [
            (4, table.clone()),
            (5, table.clone()),
            (9, AssignmentTable::empty(8, 1)),
        ] {
            assert!(a
                .step(
                    Input::TableRead {
                        revision: rev,
                        table: Some(t)
                    },
                    now
                )
                .is_empty());
        }
        assert_eq!(a.view().epoch, 5);
        assert!(a.view().serves("a", "anything"));
    }

    #[test]
    fn a_leader_that_sees_a_higher_term_in_the_table_steps_down() {
        let mut bucket = Bucket::default();
        let mut a = core("a");
        let now = Instant::now();
        drive(&mut a, &mut bucket, Input::ElectionTick, now);
        assert_eq!(a.term(), Some(1));
        // Another leader (after a partition healed, say) wrote the table with term 7.
        let (rev, mut table) = bucket.table.clone().unwrap();
        table.term = 7;
        table.leader = "z".into();
        bucket.table = Some((rev + 10, table.clone()));
        bucket.revision = rev + 10;
        drive(
            &mut a,
            &mut bucket,
            Input::TableRead {
                revision: rev + 10,
                table: Some(table),
            },
            now,
        );
        // Its own lease renewal succeeds, but its duty sees the newer term and stops.
        drive(&mut a, &mut bucket, Input::ElectionTick, now + HB);
        assert_eq!(a.term(), None);
        assert!(bucket.lease.is_none(), "handed back");
        assert_eq!(bucket.table.as_ref().unwrap().1.leader, "z");
    }

    #[test]
    fn an_unreadable_lease_makes_the_leader_a_follower() {
        let mut bucket = Bucket::default();
        let mut a = core("a");
        let now = Instant::now();
        drive(&mut a, &mut bucket, Input::ElectionTick, now);
        assert_eq!(a.term(), Some(1));
        a.step(Input::LeaseReadFailed, now);
        assert_eq!(a.term(), None);
    }
}
