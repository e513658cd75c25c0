//! What an observer knows, as a state machine with no I/O: inputs (a membership message's
//! bytes, a read of the lease or the table, a tick) go in with the current instant, changes
//! come out, and [`ObservedState::snapshot`] builds the one view of the members that the
//! command-line tool and the dashboard show.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aether_nats::Versioned;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::members::{HeardMembers, Status};
use super::{
    ClusterChange, ClusterRecord, ClusterSnapshot, ObservedLeader, ObservedMember, ObserverConfig,
    ObserverCounts, Presence, Unreadable,
};
use crate::assignment::{Assignment, AssignmentTable};
use crate::leader::LeaderLease;
use crate::routing::{decode, Heartbeat, Leave, WireError, WireRange};

/// Which membership subject a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MemberSubject {
    Heartbeat,
    Leave,
}

/// What the observer is told.
#[derive(Debug)]
pub(super) enum Input {
    /// A message on a membership subject, as received.
    Member(MemberSubject, Bytes),
    /// The leader lease's key as read or watched.
    Lease(Versioned),
    /// The assignment table's key as read or watched.
    Table(Versioned),
    /// Time passed: members not heard go silent, then are forgotten.
    Tick,
}

/// The lease as last read, and since when at this revision.
#[derive(Debug, Clone)]
struct Lease {
    lease: LeaderLease,
    revision: u64,
    since: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct ObservedState {
    cluster: String,
    failure_timeout: Duration,
    members: HeardMembers,
    lease: Option<Lease>,
    assignment: Option<Arc<Assignment>>,
    unreadable_lease: Option<Unreadable>,
    unreadable_table: Option<Unreadable>,
    counts: ObserverCounts,
}

impl ObservedState {
    pub(super) fn new(config: &ObserverConfig) -> Self {
        Self {
            cluster: config.cluster_name.clone(),
            failure_timeout: config.failure_timeout,
            members: HeardMembers::new(
                config.max_members,
                config.failure_timeout,
                config.forget_after,
            ),
            lease: None,
            assignment: None,
            unreadable_lease: None,
            unreadable_table: None,
            counts: ObserverCounts::default(),
        }
    }

    /// Applies `input`, received at `now`; returns what changed.
    pub(super) fn apply(&mut self, input: Input, now: Instant) -> Vec<ClusterChange> {
        let mut changes = Vec::new();
        match input {
            Input::Member(subject, bytes) => self.member(subject, &bytes, now, &mut changes),
            Input::Lease(read) => self.lease(read, now, &mut changes),
            Input::Table(read) => self.table(read, &mut changes),
            Input::Tick => self.members.sweep(now, &mut changes),
        }
        changes
    }

    fn member(
        &mut self,
        subject: MemberSubject,
        bytes: &[u8],
        now: Instant,
        changes: &mut Vec<ClusterChange>,
    ) {
        self.counts.received += 1;
        let counts = &mut self.counts;
        match subject {
            MemberSubject::Heartbeat => match decode::<Heartbeat>(bytes) {
                Ok(hb) => self.members.heartbeat(
                    &hb.node_id,
                    &hb.incarnation,
                    hb.seq,
                    hb.wire.unwrap_or(WireRange::UNANNOUNCED).max,
                    now,
                    counts,
                    changes,
                ),
                Err(_) => counts.undecodable += 1,
            },
            MemberSubject::Leave => match decode::<Leave>(bytes) {
                Ok(l) => self
                    .members
                    .leave(&l.node_id, &l.incarnation, now, counts, changes),
                Err(_) => counts.undecodable += 1,
            },
        }
    }

    fn lease(&mut self, read: Versioned, now: Instant, changes: &mut Vec<ClusterChange>) {
        let revision = read.revision();
        let (lease, unreadable) = value_of::<LeaderLease>(read, ClusterRecord::LeaderLease);
        self.unreadable_lease = unreadable;
        let before = self.lease.as_ref().map(|l| l.lease.clone());
        let since = match &self.lease {
            // A read of the revision already seen (the watch's first answer after a read):
            // not a renewal.
            Some(l) if l.revision == revision => l.since,
            _ => now,
        };
        self.lease = lease.map(|lease| Lease {
            lease,
            revision,
            since,
        });
        if before.as_ref() != self.lease.as_ref().map(|l| &l.lease) {
            changes.push(ClusterChange::LeaderChanged {
                leader: self.leader(now),
            });
        }
    }

    fn table(&mut self, read: Versioned, changes: &mut Vec<ClusterChange>) {
        let epoch = read.revision();
        let (table, unreadable) = value_of::<AssignmentTable>(read, ClusterRecord::AssignmentTable);
        self.unreadable_table = unreadable;
        let next = table.map(|table| Arc::new(Assignment { epoch, table }));
        if next.as_ref().map(|a| a.epoch) == self.assignment.as_ref().map(|a| a.epoch) {
            return;
        }
        self.members
            .protect(next.as_ref().map_or(&[][..], |a| &a.table.members));
        self.assignment = next;
        changes.push(ClusterChange::TableChanged {
            assignment: self.assignment.clone(),
        });
    }

    fn leader(&self, now: Instant) -> Option<ObservedLeader> {
        self.lease.as_ref().map(|l| {
            let since_renewal = now.saturating_duration_since(l.since);
            ObservedLeader {
                node_id: l.lease.node_id.clone(),
                incarnation: l.lease.incarnation.clone(),
                term: l.lease.term,
                revision: l.revision,
                since_renewal,
                expired: since_renewal >= self.failure_timeout,
            }
        })
    }

    /// Everything known as of `now`.
    pub(super) fn snapshot(&self, now: Instant) -> ClusterSnapshot {
        let leader = self.leader(now);
        ClusterSnapshot {
            cluster: self.cluster.clone(),
            members: members_view(
                &self.members,
                self.assignment.as_deref(),
                leader.as_ref().map(|l| l.node_id.as_str()),
                now,
                self.failure_timeout,
            ),
            leader,
            assignment: self.assignment.clone(),
            unreadable: self
                .unreadable_lease
                .iter()
                .chain(&self.unreadable_table)
                .cloned()
                .collect(),
            counts: self.counts,
        }
    }
}

/// The value a read of a key holds, decoded; or why it cannot be.
fn value_of<T: DeserializeOwned>(
    read: Versioned,
    record: ClusterRecord,
) -> (Option<T>, Option<Unreadable>) {
    let revision = read.revision();
    let Some(bytes) = read.into_value() else {
        return (None, None);
    };
    match decode::<T>(&bytes) {
        Ok(value) => (Some(value), None),
        Err(e) => {
            tracing::warn!(error = %e, revision, "cluster observer: undecodable {record:?}");
            let reason = match e {
                WireError::UnsupportedVersion { found } => {
                    format!(
                        "written in wire format version {found}, which this version does not read"
                    )
                }
                WireError::Malformed(m) => m,
            };
            (
                None,
                Some(Unreadable {
                    record,
                    revision,
                    reason,
                }),
            )
        }
    }
}

/// The members view: every node heard or listed in the assignment table, sorted by id, with
/// how it stands, whether it leads, and how many shards it is primary of.
fn members_view(
    heard: &HeardMembers,
    assignment: Option<&Assignment>,
    leader: Option<&str>,
    now: Instant,
    failure_timeout: Duration,
) -> Vec<ObservedMember> {
    let mut primaries: BTreeMap<&str, usize> = BTreeMap::new();
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    if let Some(a) = assignment {
        for owner in a.table.shards.iter().filter_map(|nodes| nodes.first()) {
            *primaries.entry(owner).or_default() += 1;
        }
        listed.extend(a.table.members.iter().map(String::as_str));
    }
    let heard: BTreeMap<&str, _> = heard.iter().map(|(n, h)| (n.as_str(), h)).collect();
    let nodes: BTreeSet<&str> = heard
        .keys()
        .copied()
        .chain(listed.iter().copied())
        .collect();
    nodes
        .into_iter()
        .map(|node| {
            let h = heard.get(node);
            let since_heard = h.map(|h| now.saturating_duration_since(h.at));
            ObservedMember {
                node_id: node.to_string(),
                presence: match (h.map(|h| h.status), since_heard) {
                    (None, _) => Presence::Unheard,
                    (Some(Status::Left), _) => Presence::Left,
                    // Past its timeout but not swept yet: silent all the same.
                    (Some(Status::Alive), Some(d)) if d <= failure_timeout => Presence::Alive,
                    (Some(_), _) => Presence::Silent,
                },
                incarnation: h.map(|h| h.incarnation.clone()),
                seq: h.map(|h| h.seq),
                speaks: h.map(|h| h.speaks),
                since_heard,
                listed: listed.contains(node),
                leader: leader == Some(node),
                primaries: primaries.get(node).copied().unwrap_or(0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::encode;
    use aether_placement::rebalance;

    fn state() -> ObservedState {
        ObservedState::new(
            &ObserverConfig::default()
                .cluster_name("c")
                .failure_timeout(Duration::from_secs(1))
                .max_members(4),
        )
    }

    fn heartbeat(node: &str, seq: u64) -> Input {
        let hb = Heartbeat {
            node_id: node.into(),
            incarnation: format!("{node}-1"),
            seq,
            wire: None,
        };
        Input::Member(
            MemberSubject::Heartbeat,
            encode(&hb).expect("encodes").into(),
        )
    }

    #[test]
    fn members_show_the_wire_version_their_heartbeats_announce() {
        let mut s = state();
        let hb = Heartbeat {
            node_id: "n".into(),
            incarnation: "n-1".into(),
            seq: 0,
            wire: Some(WireRange { min: 2, max: 3 }),
        };
        let input = Input::Member(MemberSubject::Heartbeat, encode(&hb).unwrap().into());
        s.apply(input, Instant::now());
        s.apply(heartbeat("old", 0), Instant::now());
        let snap = s.snapshot(Instant::now());
        let speaks: Vec<(&str, Option<u16>)> = snap
            .members
            .iter()
            .map(|m| (m.node_id.as_str(), m.speaks))
            .collect();
        assert_eq!(speaks, [("n", Some(3)), ("old", Some(2))]);
    }

    fn value(bytes: Vec<u8>, revision: u64) -> Versioned {
        Versioned::Value {
            value: bytes.into(),
            revision,
        }
    }

    fn lease(node: &str, term: u64) -> Vec<u8> {
        encode(&LeaderLease {
            node_id: node.into(),
            incarnation: format!("{node}-1"),
            term,
        })
        .expect("encodes")
    }

    fn table(members: &[&str]) -> AssignmentTable {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        AssignmentTable {
            term: 1,
            leader: "a".into(),
            shards: rebalance(&vec![Vec::new(); 8], &members, 1),
            members,
            ..AssignmentTable::empty(8, 1)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_members_view_joins_heard_and_listed_nodes() {
        let mut s = state();
        let t = table(&["a", "b"]);
        s.apply(Input::Table(value(encode(&t).unwrap(), 7)), Instant::now());
        s.apply(Input::Lease(value(lease("a", 3), 9)), Instant::now());
        s.apply(heartbeat("a", 4), Instant::now());
        s.apply(heartbeat("x", 0), Instant::now());
        let snap = s.snapshot(Instant::now());
        let view: Vec<(&str, Presence, bool, bool)> = snap
            .members
            .iter()
            .map(|m| (m.node_id.as_str(), m.presence, m.listed, m.leader))
            .collect();
        assert_eq!(
            view,
            [
                ("a", Presence::Alive, true, true),
                ("b", Presence::Unheard, true, false),
                ("x", Presence::Alive, false, false),
            ]
        );
        let a = &snap.members[0];
        assert_eq!((a.seq, a.incarnation.as_deref()), (Some(4), Some("a-1")));
        // Its heartbeats announce no wire versions (a node of the previous release): 2.
        assert_eq!(a.speaks, Some(2));
        assert_eq!(snap.members[1].speaks, None, "not heard");
        assert_eq!(
            snap.members.iter().map(|m| m.primaries).sum::<usize>(),
            8,
            "every shard has one primary"
        );
        assert_eq!(snap.alive(), 2);
        assert_eq!(snap.assignment.as_ref().map(|a| a.epoch), Some(7));
        let leader = snap.leader.expect("a leader");
        assert_eq!((leader.node_id.as_str(), leader.term), ("a", 3));

        // Past the timeout and not swept yet: silent in the view already.
        tokio::time::advance(Duration::from_millis(1100)).await;
        let snap = s.snapshot(Instant::now());
        assert_eq!(snap.members[0].presence, Presence::Silent);
        assert!(snap.leader.is_some_and(|l| l.expired), "not renewed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_and_the_table_change_only_when_they_do() {
        let mut s = state();
        let now = Instant::now();
        let changes = s.apply(Input::Lease(value(lease("a", 1), 2)), now);
        assert!(
            matches!(&changes[..], [ClusterChange::LeaderChanged { leader: Some(l) }] if l.node_id == "a")
        );
        // Renewals move the revision, not the leader; the renewal is timed.
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(s
            .apply(Input::Lease(value(lease("a", 1), 3)), Instant::now())
            .is_empty());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(s
            .snapshot(Instant::now())
            .leader
            .is_some_and(|l| !l.expired && l.revision == 3));
        // The same revision again (a watch starting after a read): no renewal either.
        tokio::time::advance(Duration::from_millis(200)).await;
        s.apply(Input::Lease(value(lease("a", 1), 3)), Instant::now());
        assert!(s.snapshot(Instant::now()).leader.is_some_and(|l| l.expired));
        let changes = s.apply(Input::Lease(value(lease("b", 2), 4)), Instant::now());
        assert!(
            matches!(&changes[..], [ClusterChange::LeaderChanged { leader: Some(l) }] if l.node_id == "b" && l.term == 2)
        );
        let changes = s.apply(
            Input::Lease(Versioned::Deleted { revision: 5 }),
            Instant::now(),
        );
        assert!(matches!(
            &changes[..],
            [ClusterChange::LeaderChanged { leader: None }]
        ));

        let t = encode(&table(&["a"])).unwrap();
        let changes = s.apply(Input::Table(value(t.clone(), 6)), Instant::now());
        assert!(
            matches!(&changes[..], [ClusterChange::TableChanged { assignment: Some(a) }] if a.epoch == 6)
        );
        assert!(s
            .apply(Input::Table(value(t.clone(), 6)), Instant::now())
            .is_empty());
        let changes = s.apply(Input::Table(value(t, 8)), Instant::now());
        assert!(
            matches!(&changes[..], [ClusterChange::TableChanged { assignment: Some(a) }] if a.epoch == 8)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn undecodable_messages_and_values_are_counted_and_reported_never_fatal() {
        let mut s = state();
        let now = Instant::now();
        for bytes in [
            &b"\xff\x00"[..],
            br#"{"v":1,"body":{"nodeId":"a","incarnation":"i","seq":0}}"#,
            br#"{"v":2,"body":{"nodeId":1}}"#,
            b"",
        ] {
            for subject in [MemberSubject::Heartbeat, MemberSubject::Leave] {
                assert!(s
                    .apply(Input::Member(subject, Bytes::copy_from_slice(bytes)), now)
                    .is_empty());
            }
        }
        s.apply(Input::Table(value(encode(&table(&["a"])).unwrap(), 3)), now);
        let changes = s.apply(Input::Table(value(b"garbage".to_vec(), 4)), now);
        assert!(matches!(
            &changes[..],
            [ClusterChange::TableChanged { assignment: None }]
        ));
        s.apply(
            Input::Lease(value(br#"{"v":9,"body":{}}"#.to_vec(), 5)),
            now,
        );
        let snap = s.snapshot(now);
        assert_eq!((snap.counts.received, snap.counts.undecodable), (8, 8));
        assert!(snap.leader.is_none() && snap.assignment.is_none());
        let unreadable: Vec<(ClusterRecord, u64)> = snap
            .unreadable
            .iter()
            .map(|u| (u.record, u.revision))
            .collect();
        assert_eq!(
            unreadable,
            [
                (ClusterRecord::LeaderLease, 5),
                (ClusterRecord::AssignmentTable, 4)
            ]
        );
        assert!(
            snap.unreadable[0].reason.contains("version 9"),
            "{:?}",
            snap.unreadable
        );
        // A readable table again clears the report.
        s.apply(Input::Table(value(encode(&table(&["a"])).unwrap(), 6)), now);
        assert_eq!(s.snapshot(now).unreadable.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tables_members_are_kept_through_a_flood() {
        let mut s = state();
        s.apply(
            Input::Table(value(encode(&table(&["a", "b"])).unwrap(), 1)),
            Instant::now(),
        );
        s.apply(heartbeat("a", 0), Instant::now());
        s.apply(heartbeat("b", 0), Instant::now());
        for i in 0..500 {
            tokio::time::advance(Duration::from_micros(50)).await;
            s.apply(heartbeat(&format!("ghost-{i}"), 0), Instant::now());
        }
        let snap = s.snapshot(Instant::now());
        assert!(snap.members.len() <= 4, "{:?}", snap.members);
        for node in ["a", "b"] {
            assert_eq!(snap.member(node).map(|m| m.presence), Some(Presence::Alive));
        }
        assert_eq!(snap.counts.received, 502);
    }
}
