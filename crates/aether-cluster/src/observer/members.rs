//! The members an observer has heard, from their heartbeats and leave notices: a bounded table
//! that hostile input cannot grow.
//!
//! Anyone who may publish on the cluster's heartbeat subject can name any node, so every
//! message is checked before anything is stored, as a node checks it: a node id or incarnation
//! that breaks the naming rule is refused (and costs no allocation). The table holds at most
//! `max_members` nodes, like a node's member table. Where a node refuses a new id when its
//! table is full (its table decides who gets shards), an observer shows what it hears, so it
//! makes room instead: first by forgetting nodes silent for longer than `forget_after`, then by
//! dropping the eighth of the others heard longest ago. Nodes listed in the assignment table
//! are never dropped to make room, so a flood of made-up ids cannot push the cluster's real
//! members out of the view; made-up ids only push each other out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aether_placement::is_valid_name;
use tokio::time::Instant;

use super::{ClusterChange, GoneReason, ObserverCounts};

/// How a heard node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Heard within the failure timeout.
    Alive,
    /// Not heard for longer than the failure timeout.
    Silent,
    /// Said it was leaving.
    Left,
}

/// What the table knows of one node.
#[derive(Debug, Clone)]
pub(super) struct Heard {
    pub(super) incarnation: String,
    /// The sequence number of its last heartbeat.
    pub(super) seq: u64,
    /// The newest wire version its last heartbeat announced.
    pub(super) speaks: u16,
    /// When it was last heard (its last heartbeat, or its leave notice).
    pub(super) at: Instant,
    pub(super) status: Status,
}

/// The nodes heard: at most `max` of them, none silent for longer than `forget_after` (as of
/// the last [`sweep`](Self::sweep) or [`heartbeat`](Self::heartbeat) that needed room).
#[derive(Debug)]
pub(super) struct HeardMembers {
    nodes: BTreeMap<String, Heard>,
    /// The nodes of the current assignment table: never dropped to make room.
    protected: BTreeSet<String>,
    max: usize,
    failure_timeout: Duration,
    forget_after: Duration,
}

impl HeardMembers {
    pub(super) fn new(max: usize, failure_timeout: Duration, forget_after: Duration) -> Self {
        Self {
            nodes: BTreeMap::new(),
            protected: BTreeSet::new(),
            max: max.max(1),
            failure_timeout,
            forget_after: forget_after.max(failure_timeout),
        }
    }

    /// The nodes listed in the assignment table now.
    pub(super) fn protect(&mut self, nodes: &[String]) {
        self.protected = nodes.iter().cloned().collect();
    }

    /// The nodes heard, by id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Heard)> {
        self.nodes.iter()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Records a heartbeat of `node` (at `incarnation`, sequence `seq`, speaking wire
    /// versions up to `speaks`) heard at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn heartbeat(
        &mut self,
        node: &str,
        incarnation: &str,
        seq: u64,
        speaks: u16,
        now: Instant,
        counts: &mut ObserverCounts,
        changes: &mut Vec<ClusterChange>,
    ) {
        // Checked before anything is stored or compared, as the nodes check it.
        if !is_valid_name(node) || !is_valid_name(incarnation) {
            counts.invalid += 1;
            return;
        }
        if let Some(h) = self.nodes.get_mut(node) {
            // A heartbeat of an incarnation that already left arrived late: ignored.
            if h.status == Status::Left && h.incarnation == incarnation {
                return;
            }
            let seen = h.status != Status::Alive || h.incarnation != incarnation;
            if h.incarnation != incarnation {
                h.incarnation.replace_range(.., incarnation);
            }
            h.seq = seq;
            h.speaks = speaks;
            h.at = now;
            h.status = Status::Alive;
            if seen {
                changes.push(ClusterChange::MemberSeen {
                    node_id: node.to_string(),
                    incarnation: incarnation.to_string(),
                });
            }
            return;
        }
        if self.nodes.len() >= self.max && !self.make_room(now, counts, changes) {
            counts.refused += 1;
            return;
        }
        self.nodes.insert(
            node.to_string(),
            Heard {
                incarnation: incarnation.to_string(),
                seq,
                speaks,
                at: now,
                status: Status::Alive,
            },
        );
        changes.push(ClusterChange::MemberSeen {
            node_id: node.to_string(),
            incarnation: incarnation.to_string(),
        });
    }

    /// Records a leave notice of `node` at `incarnation`, heard at `now`. A node not in the
    /// table, or another incarnation's notice, changes nothing.
    pub(super) fn leave(
        &mut self,
        node: &str,
        incarnation: &str,
        now: Instant,
        counts: &mut ObserverCounts,
        changes: &mut Vec<ClusterChange>,
    ) {
        if !is_valid_name(node) || !is_valid_name(incarnation) {
            counts.invalid += 1;
            return;
        }
        let Some(h) = self.nodes.get_mut(node) else {
            return;
        };
        if h.incarnation != incarnation || h.status == Status::Left {
            return;
        }
        let was_alive = h.status == Status::Alive;
        h.status = Status::Left;
        h.at = now;
        if was_alive {
            changes.push(ClusterChange::MemberGone {
                node_id: node.to_string(),
                reason: GoneReason::Left,
            });
        }
    }

    /// Marks silent the nodes not heard for longer than the failure timeout as of `now`, and
    /// forgets those not heard for longer than `forget_after`.
    pub(super) fn sweep(&mut self, now: Instant, changes: &mut Vec<ClusterChange>) {
        for (node, h) in &mut self.nodes {
            if h.status == Status::Alive
                && now.saturating_duration_since(h.at) > self.failure_timeout
            {
                h.status = Status::Silent;
                changes.push(ClusterChange::MemberGone {
                    node_id: node.clone(),
                    reason: GoneReason::Silent,
                });
            }
        }
        let forget_after = self.forget_after;
        self.nodes
            .retain(|_, h| now.saturating_duration_since(h.at) <= forget_after);
    }

    /// Makes room for one more node in the full table; false when every node in it is listed
    /// in the assignment table.
    fn make_room(
        &mut self,
        now: Instant,
        counts: &mut ObserverCounts,
        changes: &mut Vec<ClusterChange>,
    ) -> bool {
        self.sweep(now, changes);
        if self.nodes.len() < self.max {
            return true;
        }
        let mut candidates: Vec<(Instant, &String)> = self
            .nodes
            .iter()
            .filter(|(node, _)| !self.protected.contains(*node))
            .map(|(node, h)| (h.at, node))
            .collect();
        if candidates.is_empty() {
            return false;
        }
        // An eighth at once, so that a flood of new ids costs a sort per eighth of the table
        // rather than a scan per id.
        candidates.sort_unstable();
        let evict: Vec<String> = candidates
            .iter()
            .take((self.max / 8).max(1))
            .map(|(_, node)| (*node).clone())
            .collect();
        for node in evict {
            if let Some(h) = self.nodes.remove(&node) {
                counts.evicted += 1;
                if h.status == Status::Alive {
                    changes.push(ClusterChange::MemberGone {
                        node_id: node,
                        reason: GoneReason::Evicted,
                    });
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn table(max: usize) -> HeardMembers {
        HeardMembers::new(max, TIMEOUT, Duration::from_secs(10))
    }

    fn seen(changes: &[ClusterChange]) -> Vec<&str> {
        changes
            .iter()
            .filter_map(|c| match c {
                ClusterChange::MemberSeen { node_id, .. } => Some(node_id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ids_and_incarnations_that_break_the_naming_rule_are_refused_and_counted() {
        let mut t = table(8);
        let (mut counts, mut changes) = (ObserverCounts::default(), Vec::new());
        let long = "x".repeat(10_000);
        for (node, inc) in [
            ("<img src=x>", "i"),
            ("", "i"),
            ("a.b", "i"),
            (long.as_str(), "i"),
            ("ok", "<b>"),
            ("ok", ""),
        ] {
            t.heartbeat(node, inc, 0, 3, Instant::now(), &mut counts, &mut changes);
            t.leave(node, inc, Instant::now(), &mut counts, &mut changes);
        }
        assert_eq!(t.len(), 0);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(counts.invalid, 12);
    }

    #[tokio::test(start_paused = true)]
    async fn members_are_seen_go_silent_leave_and_are_forgotten() {
        let mut t = table(8);
        let (mut counts, mut changes) = (ObserverCounts::default(), Vec::new());
        t.heartbeat("a", "a-1", 0, 3, Instant::now(), &mut counts, &mut changes);
        t.heartbeat("a", "a-1", 1, 3, Instant::now(), &mut counts, &mut changes);
        t.heartbeat("b", "b-1", 0, 3, Instant::now(), &mut counts, &mut changes);
        assert_eq!(seen(&changes), ["a", "b"], "a second heartbeat is no news");
        changes.clear();

        tokio::time::advance(Duration::from_millis(1500)).await;
        t.heartbeat("b", "b-1", 1, 3, Instant::now(), &mut counts, &mut changes);
        t.sweep(Instant::now(), &mut changes);
        assert_eq!(
            changes,
            [ClusterChange::MemberGone {
                node_id: "a".into(),
                reason: GoneReason::Silent
            }]
        );
        changes.clear();
        // Back: seen again. A new incarnation of a live node is news too.
        t.heartbeat("a", "a-1", 2, 3, Instant::now(), &mut counts, &mut changes);
        t.heartbeat("b", "b-2", 0, 3, Instant::now(), &mut counts, &mut changes);
        assert_eq!(seen(&changes), ["a", "b"]);
        changes.clear();

        // An old incarnation's leave changes nothing; the current one's does, once; a late
        // heartbeat of the incarnation that left is ignored.
        t.leave("b", "b-1", Instant::now(), &mut counts, &mut changes);
        assert!(changes.is_empty());
        t.leave("b", "b-2", Instant::now(), &mut counts, &mut changes);
        t.leave("b", "b-2", Instant::now(), &mut counts, &mut changes);
        t.heartbeat("b", "b-2", 1, 3, Instant::now(), &mut counts, &mut changes);
        assert_eq!(
            changes,
            [ClusterChange::MemberGone {
                node_id: "b".into(),
                reason: GoneReason::Left
            }]
        );
        assert_eq!(t.nodes["b"].status, Status::Left);
        // Nobody heard for longer than `forget_after`: the table empties.
        tokio::time::advance(Duration::from_secs(11)).await;
        t.sweep(Instant::now(), &mut changes);
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_stays_within_the_bound_and_never_pushes_out_the_tables_members() {
        let mut t = table(16);
        let (mut counts, mut changes) = (ObserverCounts::default(), Vec::new());
        t.protect(&["real-a".into(), "real-b".into()]);
        t.heartbeat(
            "real-a",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        t.heartbeat(
            "real-b",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        for i in 0..10_000 {
            tokio::time::advance(Duration::from_micros(10)).await;
            t.heartbeat(
                &format!("ghost-{i}"),
                "x",
                0,
                3,
                Instant::now(),
                &mut counts,
                &mut changes,
            );
            assert!(t.len() <= 16);
        }
        assert!(t.nodes.contains_key("real-a") && t.nodes.contains_key("real-b"));
        assert!(t.nodes.contains_key("ghost-9999"), "the newest is kept");
        assert_eq!(counts.evicted as usize + t.len(), 10_000 + 2);
        assert_eq!(counts.refused, 0);

        // Full of the table's own members: a new id is refused, not one of them dropped.
        let mut t = table(2);
        t.protect(&["real-a".into(), "real-b".into()]);
        t.heartbeat(
            "real-a",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        t.heartbeat(
            "real-b",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        t.heartbeat(
            "ghost",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        assert_eq!(t.len(), 2);
        assert_eq!(counts.refused, 1);
        // Silent for longer than `forget_after`: room is made by forgetting first.
        tokio::time::advance(Duration::from_secs(11)).await;
        t.heartbeat(
            "ghost",
            "1",
            0,
            3,
            Instant::now(),
            &mut counts,
            &mut changes,
        );
        assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["ghost"]);
    }
}
