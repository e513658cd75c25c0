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
//!
//! The rules it applies are `aether_placement`'s ([`Membership`], [`LeaseTracker`],
//! [`rebalance`]), which the partitioned projections share. They take `std::time::Instant`:
//! the core hands them `now.into_std()`, which is exact, paused test clocks included.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aether_placement::{rebalance, LeaseTracker};
use tokio::time::Instant;

use crate::assignment::{Assignment, AssignmentTable};
use crate::leader::LeaderLease;
use crate::membership::{Admission, Membership, MembershipChange, Refusal};
use crate::routing::{Heartbeat, Leave};

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
}

/// At most one warning per this long about refused heartbeats: a flood must not become a
/// flood of log lines. The counter counts every refusal.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How much of a refused id (or decoding error) a warning shows: enough to recognise it,
/// never a whole message.
const REFUSAL_SAMPLE_CHARS: usize = 64;

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
    table_write_in_flight: bool,
    stopped: bool,
    // Refusals.
    /// When the last warning about refused heartbeats was asked for.
    refusal_logged_at: Option<Instant>,
    /// Refusals since then.
    refusals_unlogged: u64,
    /// Refusals not reported yet, by reason.
    refusals_pending: BTreeMap<Refusal, u64>,
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
                self.sweep(now, &mut actions);
            }
            Input::Sweep => self.sweep(now, &mut actions),
            Input::ElectionTick => {
                if !self.lease_in_flight {
                    self.lease_in_flight = true;
                    actions.push(Action::ReadLease);
                }
            }
            Input::Heartbeat(hb)
                if hb.node_id == self.settings.node_id
                    && hb.incarnation == self.settings.incarnation =>
            {
                let lapsed = self.serving_until().is_none_or(|until| now >= until);
                self.touched_at = Some(now);
                if lapsed || self.refresh_pending {
                    // Asked again on every heartbeat until a read gets through.
                    if !self.refresh_pending {
                        tracing::info!(
                            "own heartbeats heard again; reading the table before serving"
                        );
                    }
                    self.refresh_pending = true;
                    actions.push(Action::ReadTable);
                }
            }
            Input::Heartbeat(hb) => {
                match self
                    .membership
                    .admit_heartbeat(&hb.node_id, &hb.incarnation, now.into_std())
                {
                    Ok(Some(change)) => {
                        actions.push(Action::Membership(change));
                        self.lead_now(now, &mut actions);
                    }
                    Ok(None) => {}
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
                    actions.push(Action::Membership(change));
                    self.lead_now(now, &mut actions);
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
            } => self.on_lease_written(write, term, outcome, now, &mut actions),
            Input::TableRead { revision, table } => {
                self.take_table(revision, table, &mut actions);
                self.refresh_pending = false;
            }
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

    /// Looks for silent members (and, while leading, moves a failed one's shards), and drops
    /// the nodes that were heard of once and never again.
    fn sweep(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let changes = self.membership.sweep(now.into_std());
        if !changes.is_empty() {
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
        for (reason, count) in std::mem::take(&mut self.refusals_pending) {
            actions.push(Action::HeartbeatsRefused {
                reason,
                count,
                log: None,
            });
        }
    }

    /// Reports `count` refusals for `reason` with a warning about `what` (a refused id or
    /// error), or, when a warning was asked for less than [`REFUSAL_LOG_EVERY`] ago, keeps
    /// them for the next sweep to report.
    fn refused(
        &mut self,
        reason: Refusal,
        count: u64,
        what: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let quiet = self
            .refusal_logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_EVERY);
        if quiet {
            self.refusal_logged_at = Some(now);
            let unlogged = std::mem::take(&mut self.refusals_unlogged);
            let log = Some(RefusalLog {
                sample: sample(what),
                unlogged,
            });
            actions.push(Action::HeartbeatsRefused { reason, count, log });
        } else {
            self.refusals_unlogged = self.refusals_unlogged.saturating_add(count);
            let pending = self.refusals_pending.entry(reason).or_insert(0);
            *pending = pending.saturating_add(count);
        }
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

    /// The membership changed: while we lead, rebalance now rather than at the next renewal,
    /// so a failed member's shards move as soon as it is declared failed (and a new member
    /// gets its share as soon as it is seen). Only while our last renewal is recent enough
    /// that no other node can have taken the lease since: a follower takes over only after
    /// the lease went unrenewed for a whole failure timeout.
    fn lead_now(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some((term, _)) = self.held else { return };
        let fresh = self.renewed_at.is_some_and(|at| {
            now.saturating_duration_since(at) < self.settings.failure_timeout / 2
        });
        if fresh {
            self.lead(term, actions);
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

/// The first [`REFUSAL_SAMPLE_CHARS`] characters of `text`, marked when cut.
fn sample(text: &str) -> String {
    match text.char_indices().nth(REFUSAL_SAMPLE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
