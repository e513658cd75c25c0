//! Membership: which nodes are alive, from heartbeats, leave notices and a failure timeout.
//!
//! This is the pure bookkeeping; the node feeds it the heartbeats it receives over NATS and
//! sweeps it every heartbeat interval. Time is `tokio::time::Instant`, so tests can drive it
//! with a paused clock.
//!
//! Anyone who may publish on the heartbeat subject can claim to be a node, so a node's view
//! (built with an admission policy, as every node does) takes a heartbeat at its word only
//! within bounds: node ids and incarnations must follow the naming rule, the table holds at
//! most `max_members` other nodes, a new node is admitted only once heard on two heartbeats
//! most of an interval apart (a burst of made-up ids, each sent once or a few times in a
//! moment, admits nobody), and at most `joins_per_interval` nodes are admitted per heartbeat
//! interval. What it refuses it reports as a [`Refusal`], for the node to count and log.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{is_valid_name, ClusterConfig};
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

/// How a view admits nodes it does not count as alive yet (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Most other nodes the view holds: alive, joining, failed or left and not yet forgotten.
    pub(crate) max_members: usize,
    /// Most nodes admitted per heartbeat interval.
    pub(crate) joins_per_interval: u32,
    /// The cluster's heartbeat interval: the pace a live node is heard at.
    pub(crate) heartbeat_interval: Duration,
}

impl Admission {
    /// The policy `config` asks for.
    pub(crate) fn of(config: &ClusterConfig) -> Self {
        Self {
            max_members: config.max_members,
            joins_per_interval: config.joins_per_interval,
            heartbeat_interval: config.heartbeat_interval,
        }
    }

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
pub(crate) enum Refusal {
    /// Bytes on a membership subject that are no membership message.
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
    pub(crate) fn label(self) -> &'static str {
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
    pub(crate) fn with_admission(
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
    pub fn observe_heartbeat(&mut self, hb: &Heartbeat, now: Instant) -> Option<MembershipChange> {
        self.admit_heartbeat(hb, now).unwrap_or(None)
    }

    /// Records a heartbeat received at `now`: the change of the live set it made, or why it
    /// was refused. Only a view with an admission policy refuses anything.
    pub(crate) fn admit_heartbeat(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
    ) -> Result<Option<MembershipChange>, Refusal> {
        let Some(admission) = self.admission else {
            return Ok(self.take_at_word(hb, now));
        };
        // Checked before anything is stored or compared: a refused id costs no allocation.
        if !is_valid_name(&hb.node_id) || !is_valid_name(&hb.incarnation) {
            return Err(Refusal::Invalid);
        }
        if hb.node_id == self.local {
            return Ok(None);
        }
        let known = match self.members.get_mut(&hb.node_id) {
            Some(m) if m.status == MemberStatus::Alive => {
                m.last_seen = now;
                m.incarnation.clone_from(&hb.incarnation);
                return Ok(None);
            }
            // A heartbeat from an incarnation that already left arrived late: ignore it.
            Some(m) if m.status == MemberStatus::Left && m.incarnation == hb.incarnation => {
                return Ok(None);
            }
            // Failed, or back as a new incarnation after leaving: admitted again as a new
            // node would be. It moves to the waiting list, so it keeps its place under the
            // bound.
            Some(_) => {
                self.members.remove(&hb.node_id);
                true
            }
            None => self.joining.contains_key(&hb.node_id),
        };
        if !known && self.members.len() + self.joining.len() >= admission.max_members {
            return Err(Refusal::MemberLimit);
        }
        let joining = self
            .joining
            .entry(hb.node_id.clone())
            .or_insert_with(|| Joining {
                incarnation: hb.incarnation.clone(),
                first_heard: now,
                last_heard: now,
            });
        if joining.incarnation != hb.incarnation {
            // Another start of the node: its own heartbeats count from now.
            joining.incarnation.clone_from(&hb.incarnation);
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
        self.joining.remove(&hb.node_id);
        self.members.insert(
            hb.node_id.clone(),
            MemberInfo {
                node_id: hb.node_id.clone(),
                incarnation: hb.incarnation.clone(),
                last_seen: now,
                status: MemberStatus::Alive,
            },
        );
        Ok(Some(MembershipChange::Joined(hb.node_id.clone())))
    }

    /// A heartbeat taken at its word: alive from now on.
    fn take_at_word(&mut self, hb: &Heartbeat, now: Instant) -> Option<MembershipChange> {
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
        if self.admission.is_some() {
            if !is_valid_name(&leave.node_id) {
                return None;
            }
            if self
                .joining
                .get(&leave.node_id)
                .is_some_and(|j| j.incarnation == leave.incarnation)
            {
                // Left before it was admitted: nothing to tell.
                self.joining.remove(&leave.node_id);
                return None;
            }
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
    pub(crate) fn expire_joining(&mut self, now: Instant) -> Vec<String> {
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
    /// [`ClusterConfig::max_members`] bounds.
    pub(crate) fn tracked(&self) -> usize {
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
    const HB: Duration = Duration::from_millis(100);

    fn guarded(max_members: usize, joins_per_interval: u32) -> Membership {
        Membership::with_admission(
            "me",
            Duration::from_secs(1),
            Admission {
                max_members,
                joins_per_interval,
                heartbeat_interval: HB,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ids_and_incarnations_that_break_the_naming_rule_are_refused_and_kept_nowhere() {
        let mut m = guarded(8, 4);
        let now = Instant::now();
        let long = "x".repeat(65);
        for (node, inc) in [
            ("<img src=x>", "1"),
            ("a.b", "1"),
            ("", "1"),
            ("a*", "1"),
            (long.as_str(), "1"),
            ("ok", ""),
            ("ok", "in carnation"),
            ("ok", long.as_str()),
        ] {
            assert_eq!(
                m.admit_heartbeat(&hb(node, inc), now),
                Err(Refusal::Invalid),
                "{node:?} {inc:?}"
            );
        }
        assert_eq!(m.tracked(), 0);
        // A leave with a bad id changes nothing either.
        assert_eq!(
            m.observe_leave(&Leave {
                node_id: "<img>".into(),
                incarnation: "1".into()
            }),
            None
        );
        // The view taken at its word keeps the old behaviour (the fuzz target's model).
        let mut open = Membership::new("me", Duration::from_secs(1));
        assert!(open.observe_heartbeat(&hb("a.b", "1"), now).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_node_is_admitted_on_its_second_heartbeat_an_interval_later() {
        let mut m = guarded(8, 4);
        let t0 = Instant::now();
        assert_eq!(m.admit_heartbeat(&hb("b", "1"), t0), Ok(None));
        assert_eq!(m.alive(), ["me"], "not on its first heartbeat");
        // Heard again at once (a burst, or a duplicate): still waiting.
        assert_eq!(m.admit_heartbeat(&hb("b", "1"), t0 + HB / 2), Ok(None));
        // The next heartbeat of a live node, a little early for jitter: admitted.
        assert_eq!(
            m.admit_heartbeat(&hb("b", "1"), t0 + HB * 9 / 10),
            Ok(Some(MembershipChange::Joined("b".into())))
        );
        assert_eq!(m.alive(), ["b", "me"]);
        assert_eq!(m.admit_heartbeat(&hb("b", "1"), t0 + HB * 2), Ok(None));
        // A restart within the failure timeout stays alive, under its new incarnation.
        assert_eq!(m.admit_heartbeat(&hb("b", "2"), t0 + HB * 3), Ok(None));
        assert_eq!(m.member("b").map(|i| i.incarnation.as_str()), Some("2"));
        // A new incarnation restarts the wait of a node not admitted yet.
        assert_eq!(m.admit_heartbeat(&hb("c", "1"), t0), Ok(None));
        assert_eq!(m.admit_heartbeat(&hb("c", "2"), t0 + HB), Ok(None));
        assert_eq!(
            m.admit_heartbeat(&hb("c", "2"), t0 + HB * 2),
            Ok(Some(MembershipChange::Joined("c".into())))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_made_up_ids_admits_nobody_fills_at_most_the_bound_and_expires() {
        let mut m = guarded(16, 4);
        m.seed(["live"], Instant::now());
        let t0 = Instant::now();
        let mut refused = BTreeMap::new();
        // Thousands of ids, each sent three times within a few milliseconds.
        for i in 0..3000 {
            for k in 0..3u32 {
                let at = t0 + Duration::from_micros(i) + Duration::from_millis(k.into());
                match m.admit_heartbeat(&hb(&format!("fake-{i}"), "x"), at) {
                    Ok(None) => {}
                    Ok(Some(c)) => panic!("{c:?}"),
                    Err(r) => *refused.entry(r).or_insert(0) += 1,
                }
            }
        }
        assert_eq!(m.alive(), ["live", "me"]);
        assert_eq!(m.tracked(), 16, "bounded");
        assert_eq!(
            refused.keys().copied().collect::<Vec<_>>(),
            [Refusal::MemberLimit]
        );
        // The live member keeps being heard; the others fall silent and are dropped.
        tokio::time::advance(HB * 2).await;
        m.admit_heartbeat(&hb("live", "l"), Instant::now()).unwrap();
        assert!(m.expire_joining(Instant::now()).is_empty(), "not yet");
        tokio::time::advance(HB).await;
        let dropped = m.expire_joining(Instant::now());
        assert_eq!(dropped.len(), 15);
        assert_eq!(m.tracked(), 1);
        assert!(m.sweep(Instant::now()).is_empty());
        assert_eq!(m.alive(), ["live", "me"]);
        // A real newcomer finds room again.
        let t1 = Instant::now();
        assert_eq!(m.admit_heartbeat(&hb("new", "1"), t1), Ok(None));
        assert_eq!(
            m.admit_heartbeat(&hb("new", "1"), t1 + HB),
            Ok(Some(MembershipChange::Joined("new".into())))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_refuses_newcomers_but_never_its_members() {
        let mut m = guarded(2, 4);
        let t0 = Instant::now();
        for n in ["a", "b"] {
            m.admit_heartbeat(&hb(n, "1"), t0).unwrap();
            m.admit_heartbeat(&hb(n, "1"), t0 + HB).unwrap();
        }
        assert_eq!(m.alive(), ["a", "b", "me"]);
        assert_eq!(
            m.admit_heartbeat(&hb("c", "1"), t0 + HB),
            Err(Refusal::MemberLimit)
        );
        assert_eq!(m.admit_heartbeat(&hb("a", "1"), t0 + HB * 2), Ok(None));
        // b leaves; its entry stays until it is forgotten, then c fits.
        m.observe_leave(&Leave {
            node_id: "b".into(),
            incarnation: "1".into(),
        });
        assert_eq!(
            m.admit_heartbeat(&hb("c", "1"), t0 + HB * 2),
            Err(Refusal::MemberLimit)
        );
        let later = t0 + Duration::from_secs(3);
        m.admit_heartbeat(&hb("a", "1"), later).unwrap();
        m.sweep(later);
        assert!(m.member("b").is_none(), "forgotten");
        assert_eq!(m.admit_heartbeat(&hb("c", "1"), later), Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn joins_beyond_the_rate_wait_for_the_next_interval() {
        let mut m = guarded(64, 2);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        for id in &ids {
            m.admit_heartbeat(&hb(id, "1"), t0).unwrap();
        }
        let mut t = t0 + HB;
        let mut joined_per_round = Vec::new();
        while m.alive().len() < 6 {
            let mut joined = 0;
            for id in &ids {
                match m.admit_heartbeat(&hb(id, "1"), t) {
                    Ok(Some(_)) => joined += 1,
                    Ok(None) => {}
                    Err(r) => assert_eq!(r, Refusal::JoinRate),
                }
            }
            joined_per_round.push(joined);
            t += HB;
        }
        assert_eq!(joined_per_round, [2, 2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_member_is_admitted_again_like_a_newcomer_and_a_leave_cancels_a_wait() {
        let mut m = guarded(8, 4);
        m.seed(["b"], Instant::now());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(
            m.sweep(Instant::now()),
            [MembershipChange::Failed("b".into())]
        );
        let t = Instant::now();
        assert_eq!(m.admit_heartbeat(&hb("b", "2"), t), Ok(None));
        assert_eq!(m.tracked(), 1, "one entry, waiting");
        assert_eq!(
            m.admit_heartbeat(&hb("b", "2"), t + HB),
            Ok(Some(MembershipChange::Joined("b".into())))
        );
        // A node that leaves before it is admitted is dropped without a change.
        m.admit_heartbeat(&hb("c", "1"), t).unwrap();
        assert_eq!(
            m.observe_leave(&Leave {
                node_id: "c".into(),
                incarnation: "1".into()
            }),
            None
        );
        assert_eq!(m.tracked(), 1);
    }
}
