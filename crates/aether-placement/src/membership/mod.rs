//! Membership: which nodes are alive, from heartbeats, leave notices and a failure timeout.
//!
//! This is the pure bookkeeping, with plain fields in (a node id, an incarnation, an
//! instant): a cluster node feeds it the heartbeats and leave notices it receives and sweeps
//! it every heartbeat interval. Time is `std::time::Instant`, passed in, so tests drive it
//! with made-up instants (a caller on tokio's paused clock passes `Instant::into_std()`).
//!
//! Anyone who may publish on the heartbeat subject can claim to be a node, so a node's view
//! (built with an admission policy, as every node does) takes a heartbeat at its word only
//! within bounds: node ids and incarnations must follow the naming rule, the table holds at
//! most `max_members` other nodes, a new node is admitted only once heard on two heartbeats
//! most of an interval apart (a burst of made-up ids, each sent once or a few times in a
//! moment, admits nobody), and at most `joins_per_interval` nodes are admitted per heartbeat
//! interval. What it refuses it reports as a [`Refusal`], for the node to count and log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::name::is_valid_name;

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

/// How a view admits nodes it does not count as alive yet (see the module docs). A cluster
/// node sets it from its configuration (`max_members`, `joins_per_interval`,
/// `heartbeat_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Most other nodes the view holds: alive, joining, failed or left and not yet forgotten.
    pub max_members: usize,
    /// Most nodes admitted per heartbeat interval.
    pub joins_per_interval: u32,
    /// The cluster's heartbeat interval: the pace a live node is heard at.
    pub heartbeat_interval: Duration,
}

impl Admission {
    /// How long after its first heartbeat a new node must be heard again to be admitted: a
    /// live node's next heartbeat comes one interval later, give or take delivery jitter, so
    /// three quarters of an interval admits it on its second heartbeat, while ids sprayed in
    /// a burst are never heard that far apart.
    fn confirm_after(&self) -> Duration {
        self.heartbeat_interval * 3 / 4
    }

    /// How long a node waiting to be admitted may go unheard before it is dropped: a live
    /// node is heard every interval, so two intervals of silence mean it was not one.
    fn forget_joining_after(&self) -> Duration {
        self.heartbeat_interval * 2
    }
}

/// Why a view did not act on a heartbeat. Each is one value of the `reason` label of the
/// node's `aether_cluster_heartbeats_refused_total` counter: a small fixed set, so a flood of
/// made-up ids can never grow the metrics (the id itself is never a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// Bytes on a membership subject that are no membership message. The view never returns
    /// it (it is handed decoded fields); the node's driver reports it for what it could not
    /// decode, so that every refusal is counted under one set of labels.
    Undecodable,
    /// A node id or incarnation that breaks the naming rule (1 to 64 letters, digits, `-`,
    /// `_`): no node can have it, since nodes refuse to start with such an id.
    Invalid,
    /// A node not in the view while the view holds `max_members` others already.
    MemberLimit,
    /// A node due to be admitted after this interval's joins were used up; a later
    /// heartbeat admits it.
    JoinRate,
    /// A node heard from and then not again within two heartbeat intervals: dropped without
    /// being admitted (counted once per node, not per heartbeat).
    Unconfirmed,
}

impl Refusal {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Undecodable => "undecodable",
            Refusal::Invalid => "invalid",
            Refusal::MemberLimit => "member_limit",
            Refusal::JoinRate => "join_rate",
            Refusal::Unconfirmed => "unconfirmed",
        }
    }
}

/// A node heard from but not admitted yet.
#[derive(Debug, Clone)]
struct Joining {
    incarnation: String,
    first_heard: Instant,
    last_heard: Instant,
}

/// One node's view of the cluster's members.
///
/// A view made with [`Membership::new`] takes every heartbeat at its word (a model of the
/// bookkeeping, for tools and tests); the node's own view also checks what it is told (see
/// `docs/cluster.md`, "Membership").
#[derive(Debug, Clone)]
pub struct Membership {
    local: String,
    failure_timeout: Duration,
    members: BTreeMap<String, MemberInfo>,
    /// `None`: every heartbeat is taken at its word.
    admission: Option<Admission>,
    /// Nodes heard from but not admitted yet; never in `members` at the same time, so the
    /// two together are what the bound counts.
    joining: BTreeMap<String, Joining>,
    /// The current join window: when it started and how many nodes it admitted.
    joins: Option<(Instant, u32)>,
}

impl Membership {
    /// A view for the node `local` (always alive in its own view) that takes every heartbeat
    /// at its word: a node is alive from its first heartbeat on.
    pub fn new(local: impl Into<String>, failure_timeout: Duration) -> Self {
        Self {
            local: local.into(),
            failure_timeout,
            members: BTreeMap::new(),
            admission: None,
            joining: BTreeMap::new(),
            joins: None,
        }
    }

    /// A view that admits nodes by `admission` (what a node runs).
    pub fn with_admission(
        local: impl Into<String>,
        failure_timeout: Duration,
        admission: Admission,
    ) -> Self {
        Self {
            admission: Some(admission),
            ..Self::new(local, failure_timeout)
        }
    }

    /// Assumes `nodes` alive as of `now` without having heard from them: a node that just
    /// started and finds them in the assignment table gives them one failure timeout to show
    /// up, instead of declaring them failed (and moving their shards) at once.
    pub fn seed<'a>(&mut self, nodes: impl IntoIterator<Item = &'a str>, now: Instant) {
        for n in nodes {
            if n != self.local && !self.members.contains_key(n) {
                // The table is the cluster's word, not a heartbeat's: no waiting.
                self.joining.remove(n);
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

    /// Records a heartbeat received at `now`; returns the change of the live set it made. A
    /// view made with [`Membership::new`] refuses nothing; the node's own view refuses what
    /// breaks its admission rules (`docs/cluster.md`, "Membership"), and a refused
    /// heartbeat changes nothing.
    pub fn observe_heartbeat(
        &mut self,
        node_id: &str,
        incarnation: &str,
        now: Instant,
    ) -> Option<MembershipChange> {
        self.admit_heartbeat(node_id, incarnation, now)
            .unwrap_or(None)
    }

    /// Records a heartbeat of `node_id` (at `incarnation`) received at `now`: the change of
    /// the live set it made, or why it was refused. Only a view with an admission policy
    /// refuses anything.
    ///
    /// # Errors
    /// The [`Refusal`] that kept the heartbeat out; the view is unchanged. Handling: count it
    /// (its [`label`](Refusal::label)) and drop the heartbeat; a real node is heard again.
    pub fn admit_heartbeat(
        &mut self,
        node_id: &str,
        incarnation: &str,
        now: Instant,
    ) -> Result<Option<MembershipChange>, Refusal> {
        let Some(admission) = self.admission else {
            return Ok(self.take_at_word(node_id, incarnation, now));
        };
        // Checked before anything is stored or compared: a refused id costs no allocation.
        if !is_valid_name(node_id) || !is_valid_name(incarnation) {
            return Err(Refusal::Invalid);
        }
        if node_id == self.local {
            return Ok(None);
        }
        let known = match self.members.get_mut(node_id) {
            Some(m) if m.status == MemberStatus::Alive => {
                m.last_seen = now;
                m.incarnation.replace_range(.., incarnation);
                return Ok(None);
            }
            // A heartbeat from an incarnation that already left arrived late: ignore it.
            Some(m) if m.status == MemberStatus::Left && m.incarnation == incarnation => {
                return Ok(None);
            }
            // Failed, or back as a new incarnation after leaving: admitted again as a new
            // node would be. It moves to the waiting list, so it keeps its place under the
            // bound.
            Some(_) => {
                self.members.remove(node_id);
                true
            }
            None => self.joining.contains_key(node_id),
        };
        if !known && self.members.len() + self.joining.len() >= admission.max_members {
            return Err(Refusal::MemberLimit);
        }
        let joining = self
            .joining
            .entry(node_id.to_string())
            .or_insert_with(|| Joining {
                incarnation: incarnation.to_string(),
                first_heard: now,
                last_heard: now,
            });
        if joining.incarnation != incarnation {
            // Another start of the node: its own heartbeats count from now.
            joining.incarnation.replace_range(.., incarnation);
            joining.first_heard = now;
        }
        joining.last_heard = now;
        if now.saturating_duration_since(joining.first_heard) < admission.confirm_after() {
            return Ok(None);
        }
        let (window, admitted) = match self.joins {
            Some((start, n))
                if now.saturating_duration_since(start) < admission.heartbeat_interval =>
            {
                (start, n)
            }
            _ => (now, 0),
        };
        self.joins = Some((window, admitted));
        if admitted >= admission.joins_per_interval {
            return Err(Refusal::JoinRate);
        }
        self.joins = Some((window, admitted + 1));
        self.joining.remove(node_id);
        self.members.insert(
            node_id.to_string(),
            MemberInfo {
                node_id: node_id.to_string(),
                incarnation: incarnation.to_string(),
                last_seen: now,
                status: MemberStatus::Alive,
            },
        );
        Ok(Some(MembershipChange::Joined(node_id.to_string())))
    }

    /// A heartbeat taken at its word: alive from now on.
    fn take_at_word(
        &mut self,
        node_id: &str,
        incarnation: &str,
        now: Instant,
    ) -> Option<MembershipChange> {
        if node_id == self.local {
            return None;
        }
        match self.members.get_mut(node_id) {
            Some(m) => {
                // A heartbeat from an incarnation that already left arrived late: ignore it.
                if m.status == MemberStatus::Left && m.incarnation == incarnation {
                    return None;
                }
                let was_alive = m.status == MemberStatus::Alive;
                m.last_seen = now;
                m.incarnation.replace_range(.., incarnation);
                m.status = MemberStatus::Alive;
                (!was_alive).then(|| MembershipChange::Joined(node_id.to_string()))
            }
            None => {
                self.members.insert(
                    node_id.to_string(),
                    MemberInfo {
                        node_id: node_id.to_string(),
                        incarnation: incarnation.to_string(),
                        last_seen: now,
                        status: MemberStatus::Alive,
                    },
                );
                Some(MembershipChange::Joined(node_id.to_string()))
            }
        }
    }

    /// Records a clean leave of `node_id` at `incarnation`.
    pub fn observe_leave(&mut self, node_id: &str, incarnation: &str) -> Option<MembershipChange> {
        if node_id == self.local {
            return None;
        }
        if self.admission.is_some() {
            if !is_valid_name(node_id) {
                return None;
            }
            if self
                .joining
                .get(node_id)
                .is_some_and(|j| j.incarnation == incarnation)
            {
                // Left before it was admitted: nothing to tell.
                self.joining.remove(node_id);
                return None;
            }
        }
        let m = self.members.get_mut(node_id)?;
        if !m.incarnation.is_empty() && m.incarnation != incarnation {
            // An older incarnation's leave: the current one is still here.
            return None;
        }
        let was_alive = m.status == MemberStatus::Alive;
        m.status = MemberStatus::Left;
        m.incarnation.replace_range(.., incarnation);
        was_alive.then(|| MembershipChange::Left(node_id.to_string()))
    }

    /// Declares failed every member silent for longer than the failure timeout as of `now`,
    /// and forgets the members that are not alive and have been silent for two failure
    /// timeouts (by then no late heartbeat of theirs is on its way), so nodes that come and
    /// go under new ids never fill the table.
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
        let forget_after = self.failure_timeout * 2;
        self.members.retain(|_, m| {
            m.status == MemberStatus::Alive
                || now.saturating_duration_since(m.last_seen) <= forget_after
        });
        changes
    }

    /// Drops the nodes waiting to be admitted that have not been heard from for two
    /// heartbeat intervals as of `now` (what a burst of made-up ids leaves behind), and
    /// returns their ids.
    pub fn expire_joining(&mut self, now: Instant) -> Vec<String> {
        let Some(admission) = self.admission else {
            return Vec::new();
        };
        let after = admission.forget_joining_after();
        let mut dropped = Vec::new();
        self.joining.retain(|id, j| {
            let keep = now.saturating_duration_since(j.last_heard) <= after;
            if !keep {
                dropped.push(id.clone());
            }
            keep
        });
        dropped
    }

    /// How many other nodes the view holds (alive, joining, failed or left): what
    /// [`Admission::max_members`] bounds.
    pub fn tracked(&self) -> usize {
        self.members.len() + self.joining.len()
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
mod tests;
