//! The I/O-free core of a cluster node: membership, the leader lease, the assignment table and
//! the fencing view, as one state machine.
//!
//! The core never touches the network or a clock. A driver (the node's one loop, which owns
//! the core) feeds it [`Input`]s, each with the current `tokio::time::Instant`, and carries out
//! the [`Action`]s it returns: publish a heartbeat, read or compare-and-set the lease or the
//! table, apply a new view. The results of those actions come back as inputs, later: the
//! driver never waits for a slow bucket while heartbeats are due, so other inputs can come
//! between an action and its result, and the core remembers what it has asked for and not
//! heard back about (a lease step, a table write). So the whole protocol (heartbeats, failure
//! detection, leader change, rejoin, fencing) runs in a unit test with made-up instants, and in
//! the node on whatever transport it was given.
//!
//! The core is the one source of truth of a node for "who owns what": the driver publishes
//! [`NodeCore::view`] (with the leader and the serving deadline) after every step, and
//! routing, fencing and the public accessors read that.
//!
//! Layout: this file holds the inputs, actions and state and dispatches each input;
//! `election.rs` the lease, `table.rs` the view and the leader's duty, `refusals.rs` the
//! counting of refused membership messages.
//!
//! The rules it applies are `aether_placement`'s ([`Membership`], [`LeaseTracker`],
//! [`aether_placement::rebalance`]), which the partitioned projections share. They take `std::time::Instant`:
//! the core hands them `now.into_std()`, which is exact, paused test clocks included.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aether_placement::LeaseTracker;
use tokio::time::Instant;

use crate::assignment::{Assignment, AssignmentTable};
use crate::leader::LeaderLease;
use crate::membership::{Admission, Membership, MembershipChange, Refusal};
use crate::routing::{Heartbeat, Leave, WireRange, MIN_WIRE_VERSION};

mod election;
mod refusals;
mod table;

/// What a node's core is fixed with when it starts.
#[derive(Debug, Clone)]
pub(crate) struct CoreSettings {
    pub(crate) node_id: String,
    pub(crate) incarnation: String,
    pub(crate) failure_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) shard_count: u32,
    pub(crate) replication_factor: u32,
    /// How the membership view admits nodes it has only heard of.
    pub(crate) admission: Admission,
    /// The newest wire version this node speaks (announced in its heartbeats).
    pub(crate) wire_max: u16,
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
    /// Time to sweep silent members only, between heartbeats: a failed member is declared
    /// failed (and, by a leader, its shards moved) within a fraction of a heartbeat interval
    /// of its timeout running out, not up to a whole interval later.
    Sweep,
    /// Time for a step of the election (and, while leading, of the leader's duty). Its own
    /// input so that a slow bucket never delays a heartbeat.
    ElectionTick,
    /// A member's heartbeat arrived.
    Heartbeat(Heartbeat),
    /// A member said it leaves.
    Leave(Leave),
    /// Bytes on a membership subject that decode as no membership message (the error).
    Undecodable(String),
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
    /// `count` heartbeats were refused for `reason`: count them in
    /// `aether_cluster_heartbeats_refused_total`, and log `log` when it is set. Reported at
    /// once when a warning is due, else added up and reported with the next sweep (a
    /// quarter of a heartbeat interval at most), so a refused heartbeat in a flood costs the
    /// driver nothing and the real heartbeats queued behind it are not delayed.
    HeartbeatsRefused {
        reason: Refusal,
        count: u64,
        log: Option<RefusalLog>,
    },
}

/// What a warning about refused heartbeats says: one refused id or error, cut to a length
/// that is safe to print (with `{:?}`, which escapes whatever it holds), and how many
/// refusals went unlogged since the previous warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefusalLog {
    pub(crate) sample: String,
    pub(crate) unlogged: u64,
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
    /// When our last claim or renewal was stored, while we lead.
    renewed_at: Option<Instant>,
    /// The leader as last seen.
    leader: Option<String>,
    /// A lease step (a read, and the claim or renewal it leads to) was asked for and its
    /// outcome has not come back. The driver carries the step out asynchronously, so that a
    /// slow bucket never delays a heartbeat; meanwhile election ticks keep coming, and this
    /// keeps them from piling reads on a bucket that is already slow. Also what tells a
    /// stopping core to release a lease that lands after the stop.
    lease_in_flight: bool,
    // Self-fencing.
    /// When our own heartbeat last came back to us through the transport: proof that the
    /// others were hearing us then.
    touched_at: Option<Instant>,
    /// Set when our heartbeats came back after a lapse: the table may have moved on without
    /// us, so we serve again only once it has been read afresh.
    refresh_pending: bool,
    // Assignment.
    view: Arc<Assignment>,
    /// The newest revision of the table key seen, even of an undecodable value, so a leader
    /// can overwrite that with compare-and-set.
    table_revision: u64,
    /// A table write was asked for and its outcome has not come back (asynchronous, like
    /// the lease step): a membership change before then must not ask for a second write
    /// from the same revision, which could only lose the compare-and-set.
    table_write_in_flight: bool,
    stopped: bool,
    // Refusals.
    /// When the last warning about refused heartbeats was asked for.
    refusal_logged_at: Option<Instant>,
    /// Refusals since then.
    refusals_unlogged: u64,
    /// Refusals not reported yet, by reason.
    refusals_pending: BTreeMap<Refusal, u64>,
    // Wire versions.
    /// The wire versions each live member announced (only live members: bounded by the
    /// membership view's own bound).
    peer_wire: Arc<BTreeMap<String, WireRange>>,
}

impl NodeCore {
    pub(crate) fn new(settings: CoreSettings) -> Self {
        let view = Arc::new(Assignment::empty(
            settings.shard_count,
            settings.replication_factor,
        ));
        Self {
            membership: Membership::with_admission(
                settings.node_id.clone(),
                settings.failure_timeout,
                settings.admission.0,
            ),
            tracker: LeaseTracker::new(settings.failure_timeout),
            settings,
            heartbeat_seq: 0,
            max_term_seen: 0,
            held: None,
            renewed_at: None,
            leader: None,
            lease_in_flight: false,
            touched_at: None,
            refresh_pending: false,
            view,
            table_revision: 0,
            table_write_in_flight: false,
            stopped: false,
            refusal_logged_at: None,
            refusals_unlogged: 0,
            refusals_pending: BTreeMap::new(),
            peer_wire: Arc::default(),
        }
    }

    /// The wire versions each live member announced in its heartbeats.
    pub(crate) fn peer_wire(&self) -> Arc<BTreeMap<String, WireRange>> {
        Arc::clone(&self.peer_wire)
    }

    /// Records the versions a live member announced.
    fn note_wire(&mut self, node: &str, announced: Option<WireRange>) {
        if !self.membership.is_alive(node) {
            return;
        }
        let range = announced.unwrap_or(WireRange::UNANNOUNCED);
        if self.peer_wire.get(node) != Some(&range) {
            Arc::make_mut(&mut self.peer_wire).insert(node.to_string(), range);
        }
    }

    /// Forgets the versions of nodes that are no longer live members.
    fn prune_wire(&mut self) {
        if self.peer_wire.keys().any(|n| !self.membership.is_alive(n)) {
            let membership = &self.membership;
            Arc::make_mut(&mut self.peer_wire).retain(|n, _| membership.is_alive(n));
        }
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
    pub(crate) fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The live members, this node included, sorted.
    pub(crate) fn alive(&self) -> Vec<String> {
        self.membership.alive()
    }

    /// How many other nodes the membership view holds (bounded by `max_members`).
    pub(crate) fn tracked(&self) -> usize {
        self.membership.tracked()
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
            .seed(members.iter().map(String::as_str), now.into_std());
        // The table was just read: we are in touch.
        self.touched_at = Some(now);
        actions
    }

    /// How long after our own heartbeat last came back we stop serving: before the others,
    /// who declare us failed one failure timeout after they last heard us (about when our
    /// heartbeat came back to us), can hand our shards to someone else; and more than a
    /// heartbeat interval, so a healthy node never fences between two heartbeats.
    fn fence_after(&self) -> Duration {
        self.settings
            .failure_timeout
            .saturating_sub(self.settings.heartbeat_interval / 2)
    }

    /// Until when this node may serve the actors its table gives it (`None`: not now). A node
    /// that stopped hearing its own heartbeats is cut off, or too slow to be heard: the others
    /// will soon move its shards, so it stops serving first (self-fencing), and starts again
    /// only once its heartbeats come back and it has read the table afresh.
    pub(crate) fn serving_until(&self) -> Option<Instant> {
        if self.refresh_pending || self.stopped {
            return None;
        }
        self.touched_at.map(|at| at + self.fence_after())
    }

    /// Decides on `input`, observed at `now`.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            // Only the outcome of a lease write sent before the stop still matters.
            return match input {
                Input::LeaseWritten { term, outcome, .. } => {
                    self.on_lease_written_after_stop(term, outcome)
                }
                _ => actions,
            };
        }
        match input {
            Input::Tick => {
                actions.push(Action::PublishHeartbeat(Heartbeat {
                    node_id: self.settings.node_id.clone(),
                    incarnation: self.settings.incarnation.clone(),
                    seq: self.heartbeat_seq,
                    wire: Some(WireRange {
                        min: MIN_WIRE_VERSION,
                        max: self.settings.wire_max,
                    }),
                }));
                self.heartbeat_seq += 1;
                self.sweep(now, &mut actions);
            }
            Input::Sweep => self.sweep(now, &mut actions),
            Input::ElectionTick => self.on_election_tick(&mut actions),
            Input::Heartbeat(hb)
                if hb.node_id == self.settings.node_id
                    && hb.incarnation == self.settings.incarnation =>
            {
                self.on_own_heartbeat(now, &mut actions)
            }
            Input::Heartbeat(hb) => {
                match self
                    .membership
                    .admit_heartbeat(&hb.node_id, &hb.incarnation, now.into_std())
                {
                    Ok(Some(change)) => {
                        actions.push(Action::Membership(change));
                        self.note_wire(&hb.node_id, hb.wire);
                        self.lead_now(now, &mut actions);
                    }
                    Ok(None) => self.note_wire(&hb.node_id, hb.wire),
                    Err(reason) => self.refused(reason, 1, &hb.node_id, now, &mut actions),
                }
            }
            Input::Undecodable(error) => {
                self.refused(Refusal::Undecodable, 1, &error, now, &mut actions)
            }
            Input::Leave(leave) => {
                if let Some(change) = self
                    .membership
                    .observe_leave(&leave.node_id, &leave.incarnation)
                {
                    self.prune_wire();
                    actions.push(Action::Membership(change));
                    self.lead_now(now, &mut actions);
                }
            }
            Input::LeaseRead { revision, lease } => {
                self.on_lease_read(revision, lease, now, &mut actions)
            }
            Input::LeaseReadFailed => self.on_lease_read_failed(),
            Input::LeaseWritten {
                write,
                term,
                outcome,
            } => self.on_lease_written(write, term, outcome, now, &mut actions),
            Input::TableRead { revision, table } => {
                self.take_table(revision, table, &mut actions);
                self.refresh_pending = false;
            }
            Input::TableWritten { table, outcome } => {
                self.on_table_written(table, outcome, &mut actions)
            }
            Input::Shutdown => self.on_shutdown(&mut actions),
        }
        actions
    }

    /// Our own heartbeat came back through the transport: the others hear us. After a lapse
    /// the table may have moved on without us, so serving waits for a fresh read.
    fn on_own_heartbeat(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let lapsed = self.serving_until().is_none_or(|until| now >= until);
        self.touched_at = Some(now);
        if lapsed || self.refresh_pending {
            // Asked again on every heartbeat until a read gets through.
            if !self.refresh_pending {
                tracing::info!("own heartbeats heard again; reading the table before serving");
            }
            self.refresh_pending = true;
            actions.push(Action::ReadTable);
        }
    }

    /// Looks for silent members (and, while leading, moves a failed one's shards), and drops
    /// the nodes that were heard of once and never again.
    fn sweep(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let changes = self.membership.sweep(now.into_std());
        if !changes.is_empty() {
            self.prune_wire();
            actions.extend(changes.into_iter().map(Action::Membership));
            self.lead_now(now, actions);
        }
        let dropped = self.membership.expire_joining(now.into_std());
        if let Some(first) = dropped.first() {
            self.refused(
                Refusal::Unconfirmed,
                dropped.len() as u64,
                first,
                now,
                actions,
            );
        }
        self.report_pending_refusals(actions);
    }
}

#[cfg(test)]
mod tests;
