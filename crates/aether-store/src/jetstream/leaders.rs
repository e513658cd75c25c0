//! Spreading the partitions' stream leaders over a cluster's servers.
//!
//! nats-server elects each replicated stream's leader on its own, so a partitioned log's
//! leaders can end up on one server (after a restart, say), which then stores and syncs every
//! partition while the others only follow. [`plan`] is the pure decision: which partition
//! should be led by which server so that no server leads more than its share, moving as few
//! leaders as it can. The store carries it out by asking each leader to step down in favour of
//! the chosen server (`$JS.API.STREAM.LEADER.STEPDOWN` with a preferred placement, which
//! servers from 2.11 honour).

use std::collections::BTreeMap;

/// Where one partition's stream stands: its leader and the servers that hold a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// The partition.
    pub partition: u32,
    /// Its stream.
    pub stream: String,
    /// The server leading it (`None`: no leader right now).
    pub leader: Option<String>,
    /// The servers that hold a current replica and could lead it.
    pub followers: Vec<String>,
}

/// One leader to move: partition `partition`'s stream from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderMove {
    /// The partition.
    pub partition: u32,
    /// Its stream.
    pub stream: String,
    /// The server leading it now.
    pub from: String,
    /// The server that should lead it.
    pub to: String,
}

/// Which leaders to move so that every server leads at most its share of the partitions
/// (the partitions over the servers that hold them, rounded up), keeping every leader that
/// fits. A partition without a leader is left alone (the server is electing one).
pub fn plan(partitions: &[PartitionLeader]) -> Vec<LeaderMove> {
    let mut servers: BTreeMap<&str, usize> = BTreeMap::new();
    for p in partitions {
        for s in p.leader.iter().chain(&p.followers) {
            servers.entry(s.as_str()).or_insert(0);
        }
    }
    if servers.len() < 2 {
        return Vec::new();
    }
    let led: Vec<&PartitionLeader> = partitions.iter().filter(|p| p.leader.is_some()).collect();
    let share = led.len().div_ceil(servers.len());
    // Keep the leaders that fit in their server's share, in partition order.
    let mut unplaced = Vec::new();
    for p in &led {
        let Some(leader) = p.leader.as_deref() else {
            continue;
        };
        let count = servers.entry(leader).or_insert(0);
        if *count < share {
            *count += 1;
        } else {
            unplaced.push(*p);
        }
    }
    // Move the rest to the least loaded server holding a replica of theirs.
    let mut moves = Vec::new();
    for p in unplaced {
        let (Some(from), Some(to)) = (
            p.leader.as_deref(),
            p.followers
                .iter()
                .map(|s| (servers.get(s.as_str()).copied().unwrap_or(0), s.as_str()))
                .min(),
        ) else {
            continue;
        };
        if to.0 >= share {
            // No follower has room: it stays where it is, over the share.
            if let Some(c) = servers.get_mut(from) {
                *c += 1;
            }
            continue;
        }
        if let Some(c) = servers.get_mut(to.1) {
            *c += 1;
        }
        moves.push(LeaderMove {
            partition: p.partition,
            stream: p.stream.clone(),
            from: from.to_string(),
            to: to.1.to_string(),
        });
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(k: u32, leader: Option<&str>, followers: &[&str]) -> PartitionLeader {
        PartitionLeader {
            partition: k,
            stream: format!("S_P{k}"),
            leader: leader.map(str::to_string),
            followers: followers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn leaders_after(parts: &[PartitionLeader], moves: &[LeaderMove]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in parts {
            let moved = moves.iter().find(|m| m.partition == p.partition);
            if let Some(l) = moved.map(|m| m.to.clone()).or_else(|| p.leader.clone()) {
                *out.entry(l).or_insert(0) += 1;
            }
        }
        out
    }

    #[test]
    fn all_leaders_on_one_server_are_spread_evenly() {
        let parts: Vec<_> = (0..6).map(|k| part(k, Some("n0"), &["n1", "n2"])).collect();
        let moves = plan(&parts);
        assert_eq!(moves.len(), 4);
        let after = leaders_after(&parts, &moves);
        assert_eq!(after.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert!(moves.iter().all(|m| m.from == "n0" && m.to != "n0"));
    }

    #[test]
    fn a_balanced_cluster_moves_nothing() {
        let parts = vec![
            part(0, Some("n0"), &["n1", "n2"]),
            part(1, Some("n1"), &["n0", "n2"]),
            part(2, Some("n2"), &["n0", "n1"]),
            part(3, Some("n0"), &["n1", "n2"]),
        ];
        assert!(plan(&parts).is_empty());
    }

    #[test]
    fn leaderless_partitions_and_lone_servers_are_left_alone() {
        let parts = vec![
            part(0, None, &["n1", "n2"]),
            part(1, Some("n0"), &["n1", "n2"]),
            part(2, Some("n0"), &["n1", "n2"]),
        ];
        let moves = plan(&parts);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].partition, 2);
        // One server (R1 streams): nothing to spread.
        let single = vec![part(0, Some("n0"), &[]), part(1, Some("n0"), &[])];
        assert!(plan(&single).is_empty());
    }

    #[test]
    fn a_leader_whose_followers_are_full_stays() {
        // Partition 2's only follower already leads its share.
        let parts = vec![
            part(0, Some("n1"), &["n0"]),
            part(1, Some("n0"), &["n1"]),
            part(2, Some("n0"), &["n1"]),
        ];
        let moves = plan(&parts);
        let after = leaders_after(&parts, &moves);
        assert!(after.values().all(|&c| c <= 2), "{after:?}");
    }
}
