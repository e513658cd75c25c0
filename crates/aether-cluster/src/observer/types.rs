//! What an observer returns: typed data about the cluster, never its wire format.

use std::sync::Arc;
use std::time::Duration;

use crate::assignment::Assignment;

#[cfg(doc)]
use super::{ClusterObserver, ObserverConfig};

/// How a member stands, as an observer sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Presence {
    /// Heard within the failure timeout.
    Alive,
    /// Heard before, but not within the failure timeout (a node declares such a member
    /// failed).
    Silent,
    /// Said it was leaving (a clean shutdown).
    Left,
    /// Listed in the assignment table, but not heard by this observer (yet).
    #[default]
    Unheard,
}

/// A member of the cluster as an observer sees it: one row of the members view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedMember {
    /// The node. From a heartbeat it follows the naming rule; from the assignment table it is
    /// what the table says: escape it before showing it on a terminal.
    pub node_id: String,
    /// How it stands.
    pub presence: Presence,
    /// Its incarnation, from its last heartbeat (`None`: not heard).
    pub incarnation: Option<String>,
    /// The sequence number of its last heartbeat (`None`: not heard).
    pub seq: Option<u64>,
    /// The newest cluster wire version its heartbeats announce (2 from a node of a release
    /// that announced none; `None`: not heard): during a rolling upgrade, which nodes run
    /// the new release.
    pub speaks: Option<u16>,
    /// How long before the snapshot it was last heard (`None`: not heard, or forgotten).
    pub since_heard: Option<Duration>,
    /// Whether the assignment table lists it among the members the leader balanced over.
    pub listed: bool,
    /// Whether it holds the leader lease.
    pub leader: bool,
    /// The shards it is primary of in the assignment table (0 without a table).
    pub primaries: usize,
}

/// The leader lease as an observer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLeader {
    /// The leader.
    pub node_id: String,
    /// Its incarnation (a restarted node does not inherit its old lease).
    pub incarnation: String,
    /// Grows by one with every change of leader.
    pub term: u64,
    /// The lease's revision in the bucket; the leader renews the lease every heartbeat
    /// interval, moving it.
    pub revision: u64,
    /// How long this observer has seen the lease at this revision. A lease read when the
    /// observer opened counts from then: a lease already stale at that moment shows as
    /// expired one failure timeout later, as nodes see it.
    pub since_renewal: Duration,
    /// Not renewed for the failure timeout: the leader has stopped, and a node will take over
    /// with a higher term.
    pub expired: bool,
}

/// A value of the cluster's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ClusterRecord {
    /// The leader lease.
    LeaderLease,
    /// The assignment table.
    AssignmentTable,
}

/// A value of the cluster's bucket that this observer cannot decode: written by a node of
/// another wire format version, or not by a node at all. It reads as absent meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Which value.
    pub record: ClusterRecord,
    /// Its revision in the bucket.
    pub revision: u64,
    /// Why it cannot be decoded.
    pub reason: String,
}

/// What an observer counted of the membership messages it received: what hostile or
/// mistaken publishers cost it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObserverCounts {
    /// Heartbeats and leave notices received, whatever came of them.
    pub received: u64,
    /// Messages that are no heartbeat or leave notice of this wire format version.
    pub undecodable: u64,
    /// Messages whose node id or incarnation breaks the naming rule.
    pub invalid: u64,
    /// Nodes dropped from the full table of nodes heard to make room for a new one (the ones
    /// heard longest ago, never members of the assignment table).
    pub evicted: u64,
    /// New nodes not recorded because every node of the full table is a member of the
    /// assignment table.
    pub refused: u64,
}

/// What an observer knows of its cluster at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The cluster's name.
    pub cluster: String,
    /// The leader lease, if one is held.
    pub leader: Option<ObservedLeader>,
    /// The assignment table and its epoch, if a leader has written one.
    pub assignment: Option<Arc<Assignment>>,
    /// The members view: every node heard (within the observer's bounds) or listed in the
    /// assignment table, sorted by node id.
    pub members: Vec<ObservedMember>,
    /// Values of the bucket this observer cannot decode (each reads as absent above).
    pub unreadable: Vec<Unreadable>,
    /// What the observer counted of the membership messages it received.
    pub counts: ObserverCounts,
}

impl ClusterSnapshot {
    /// The members heard within the failure timeout.
    pub fn alive(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.presence == Presence::Alive)
            .count()
    }

    /// The member `node_id`, if it is in the view.
    pub fn member(&self, node_id: &str) -> Option<&ObservedMember> {
        self.members
            .binary_search_by(|m| m.node_id.as_str().cmp(node_id))
            .ok()
            .map(|i| &self.members[i])
    }
}

/// Why a member left the view of live members ([`ClusterChange::MemberGone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoneReason {
    /// It said it was leaving.
    Left,
    /// It was not heard for the failure timeout.
    Silent,
    /// The table of nodes heard was full and it was heard longest ago (see
    /// [`ObserverCounts::evicted`]).
    Evicted,
}

/// A change an observer saw ([`ClusterObserver::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterChange {
    /// A node was heard: for the first time, after being silent or gone, or as a new
    /// incarnation.
    MemberSeen {
        /// The node (it follows the naming rule).
        node_id: String,
        /// The incarnation heard.
        incarnation: String,
    },
    /// A live node no longer is.
    MemberGone {
        /// The node.
        node_id: String,
        /// Why.
        reason: GoneReason,
    },
    /// Another node holds the lease, or another term, or none does.
    LeaderChanged {
        /// The lease now (`None`: released, expired and removed, or unreadable).
        leader: Option<ObservedLeader>,
    },
    /// The assignment table was written (a new epoch) or removed.
    TableChanged {
        /// The table now (`None`: removed, or unreadable).
        assignment: Option<Arc<Assignment>>,
    },
    /// This subscriber fell behind and missed this many changes: take a
    /// [`snapshot`](ClusterObserver::snapshot).
    Lagged {
        /// Changes missed.
        missed: u64,
    },
}
