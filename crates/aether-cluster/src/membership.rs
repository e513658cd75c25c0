//! Membership: which nodes are alive, from heartbeats, leave notices and a failure timeout.
//!
//! This is the pure bookkeeping; the node feeds it the heartbeats it receives over NATS and
//! sweeps it every heartbeat interval. Time is `tokio::time::Instant`, so tests can drive it
//! with a paused clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::{Heartbeat, Leave};

/// How a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    /// Heard from within the failure timeout.
    Alive,
    /// Said it was leaving.
    Left,
    /// Silent for longer than the failure timeout.
    Failed,
}

/// What the view knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The node.
    pub node_id: String,
    /// Its incarnation (empty until its first heartbeat is seen).
    pub incarnation: String,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// How it stands.
    pub status: MemberStatus,
}

/// A change of the live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// A node became alive (first heartbeat, new incarnation, or back after being failed).
    Joined(String),
    /// A node left cleanly.
    Left(String),
    /// A node was declared failed.
    Failed(String),
}

/// One node's view of the cluster's members.
#[derive(Debug, Clone)]
pub struct Membership {
    local: String,
    failure_timeout: Duration,
    members: BTreeMap<String, MemberInfo>,
}

impl Membership {
    /// A view for the node `local` (always alive in its own view).
    pub fn new(local: impl Into<String>, failure_timeout: Duration) -> Self {
        Self {
            local: local.into(),
            failure_timeout,
            members: BTreeMap::new(),
        }
    }

    /// Assumes `nodes` alive as of `now` without having heard from them: a node that just
    /// started and finds them in the assignment table gives them one failure timeout to show
    /// up, instead of declaring them failed (and moving their shards) at once.
    pub fn seed<'a>(&mut self, nodes: impl IntoIterator<Item = &'a str>, now: Instant) {
        for n in nodes {
            if n != self.local && !self.members.contains_key(n) {
                self.members.insert(
                    n.to_string(),
                    MemberInfo {
                        node_id: n.to_string(),
                        incarnation: String::new(),
                        last_seen: now,
                        status: MemberStatus::Alive,
                    },
                );
            }
        }
    }

    /// Records a heartbeat received at `now`.
    pub fn observe_heartbeat(&mut self, hb: &Heartbeat, now: Instant) -> Option<MembershipChange> {
        if hb.node_id == self.local {
            return None;
        }
        match self.members.get_mut(&hb.node_id) {
            Some(m) => {
                // A heartbeat from an incarnation that already left arrived late: ignore it.
                if m.status == MemberStatus::Left && m.incarnation == hb.incarnation {
                    return None;
                }
                let was_alive = m.status == MemberStatus::Alive;
                m.last_seen = now;
                m.incarnation.clone_from(&hb.incarnation);
                m.status = MemberStatus::Alive;
                (!was_alive).then(|| MembershipChange::Joined(hb.node_id.clone()))
            }
            None => {
                self.members.insert(
                    hb.node_id.clone(),
                    MemberInfo {
                        node_id: hb.node_id.clone(),
                        incarnation: hb.incarnation.clone(),
                        last_seen: now,
                        status: MemberStatus::Alive,
                    },
                );
                Some(MembershipChange::Joined(hb.node_id.clone()))
            }
        }
    }

    /// Records a clean leave.
    pub fn observe_leave(&mut self, leave: &Leave) -> Option<MembershipChange> {
        if leave.node_id == self.local {
            return None;
        }
        let m = self.members.get_mut(&leave.node_id)?;
        if !m.incarnation.is_empty() && m.incarnation != leave.incarnation {
            // An older incarnation's leave: the current one is still here.
            return None;
        }
        let was_alive = m.status == MemberStatus::Alive;
        m.status = MemberStatus::Left;
        m.incarnation.clone_from(&leave.incarnation);
        was_alive.then(|| MembershipChange::Left(leave.node_id.clone()))
    }

    /// Declares failed every member silent for longer than the failure timeout as of `now`.
    pub fn sweep(&mut self, now: Instant) -> Vec<MembershipChange> {
        let mut changes = Vec::new();
        for m in self.members.values_mut() {
            if m.status == MemberStatus::Alive
                && now.saturating_duration_since(m.last_seen) > self.failure_timeout
            {
                m.status = MemberStatus::Failed;
                changes.push(MembershipChange::Failed(m.node_id.clone()));
            }
        }
        changes
    }

    /// The live nodes, this one included, sorted.
    pub fn alive(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .members
            .values()
            .filter(|m| m.status == MemberStatus::Alive)
            .map(|m| m.node_id.clone())
            .collect();
        v.push(self.local.clone());
        v.sort();
        v
    }

    /// Whether `node` is alive in this view.
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.local
            || self
                .members
                .get(node)
                .is_some_and(|m| m.status == MemberStatus::Alive)
    }

    /// What the view knows of `node`.
    pub fn member(&self, node: &str) -> Option<&MemberInfo> {
        self.members.get(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: &str, inc: &str) -> Heartbeat {
        Heartbeat {
            node_id: node.into(),
            incarnation: inc.into(),
            seq: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_failure_and_return() {
        let mut m = Membership::new("me", Duration::from_secs(1));
        assert_eq!(m.alive(), ["me"]);
        let t0 = Instant::now();
        assert_eq!(
            m.observe_heartbeat(&hb("b", "1"), t0),
            Some(MembershipChange::Joined("b".into()))
        );
        assert_eq!(m.observe_heartbeat(&hb("b", "1"), t0), None);
        assert_eq!(m.observe_heartbeat(&hb("me", "x"), t0), None);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(m.sweep(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            m.sweep(Instant::now()),
            [MembershipChange::Failed("b".into())]
        );
        assert!(m.sweep(Instant::now()).is_empty(), "reported once");
        assert_eq!(m.alive(), ["me"]);
        assert!(!m.is_alive("b") && m.is_alive("me"));
        assert_eq!(m.member("b").unwrap().status, MemberStatus::Failed);
        // Heard from again: alive again.
        assert_eq!(
            m.observe_heartbeat(&hb("b", "1"), Instant::now()),
            Some(MembershipChange::Joined("b".into()))
        );
        assert_eq!(m.alive(), ["b", "me"]);
    }

    #[tokio::test(start_paused = true)]
    async fn clean_leave_and_late_heartbeats() {
        let mut m = Membership::new("me", Duration::from_secs(1));
        m.observe_heartbeat(&hb("b", "1"), Instant::now());
        assert_eq!(
            m.observe_leave(&Leave {
                node_id: "b".into(),
                incarnation: "1".into()
            }),
            Some(MembershipChange::Left("b".into()))
        );
        assert_eq!(m.alive(), ["me"]);
        // A heartbeat sent before the leave but delivered after it does not resurrect.
        assert_eq!(m.observe_heartbeat(&hb("b", "1"), Instant::now()), None);
        // A restart (new incarnation) does.
        assert_eq!(
            m.observe_heartbeat(&hb("b", "2"), Instant::now()),
            Some(MembershipChange::Joined("b".into()))
        );
        // An old incarnation's leave is ignored.
        assert_eq!(
            m.observe_leave(&Leave {
                node_id: "b".into(),
                incarnation: "1".into()
            }),
            None
        );
        assert!(m
            .observe_leave(&Leave {
                node_id: "ghost".into(),
                incarnation: "1".into()
            })
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_members_get_one_timeout_of_grace() {
        let mut m = Membership::new("me", Duration::from_secs(1));
        m.seed(["a", "b", "me"], Instant::now());
        assert_eq!(m.alive(), ["a", "b", "me"]);
        tokio::time::advance(Duration::from_millis(500)).await;
        m.observe_heartbeat(&hb("a", "1"), Instant::now());
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(
            m.sweep(Instant::now()),
            [MembershipChange::Failed("b".into())]
        );
        assert_eq!(m.alive(), ["a", "me"]);
    }
}
