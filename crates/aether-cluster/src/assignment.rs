//! The assignment table: which node owns which shard, as agreed by the whole cluster.
//!
//! The leader writes it to the cluster's key-value bucket under the key `assignment`, always
//! with compare-and-set on the revision it read, so two writers can never both succeed from
//! the same state. The revision the bucket gives a write is the table's **epoch**: it only
//! grows, every node applies a table only if its epoch is newer than the one it has, and
//! requests carry the epoch they were routed with (fencing).

use aether_placement::shard_for;
use serde::{Deserialize, Serialize};

/// The key of the table in the cluster's bucket (private: applications read the table
/// through a node or an observer).
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the NATS transport's and the observer's
pub(crate) const ASSIGNMENT_KEY: &str = "assignment";

/// The table as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentTable {
    /// The leader term that wrote it. A leader never overwrites a table of a higher term.
    pub term: u64,
    /// The node that wrote it.
    pub leader: String,
    /// The live members the leader balanced over, sorted.
    pub members: Vec<String>,
    /// Number of shards; every node of the cluster must be configured with the same.
    pub shard_count: u32,
    /// Nodes per shard.
    pub replication_factor: u32,
    /// For each shard, its nodes, primary first.
    pub shards: Vec<Vec<String>>,
}

impl AssignmentTable {
    /// A table with no shard assigned.
    pub fn empty(shard_count: u32, replication_factor: u32) -> Self {
        Self {
            term: 0,
            leader: String::new(),
            members: Vec::new(),
            shard_count,
            replication_factor,
            shards: vec![Vec::new(); shard_count as usize],
        }
    }
}

/// An assignment table with its epoch (the bucket revision it was stored at; 0 for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The bucket revision of the table; only grows.
    pub epoch: u64,
    /// The table.
    pub table: AssignmentTable,
}

impl Assignment {
    /// No table yet (epoch 0).
    pub fn empty(shard_count: u32, replication_factor: u32) -> Self {
        Self {
            epoch: 0,
            table: AssignmentTable::empty(shard_count, replication_factor),
        }
    }

    /// The shard of `actor_id` under this table's shard count.
    pub fn shard_of(&self, actor_id: &str) -> u32 {
        shard_for(actor_id, self.table.shard_count)
    }

    /// The primary node of `shard`.
    pub fn primary(&self, shard: u32) -> Option<&str> {
        self.table
            .shards
            .get(shard as usize)
            .and_then(|n| n.first())
            .map(String::as_str)
    }

    /// The node that serves `actor_id`: its shard's primary.
    pub fn owner_of(&self, actor_id: &str) -> Option<&str> {
        self.primary(self.shard_of(actor_id))
    }

    /// Whether `node` serves `actor_id`.
    pub fn serves(&self, node: &str, actor_id: &str) -> bool {
        self.owner_of(actor_id) == Some(node)
    }

    /// Whether every shard has a node.
    pub fn is_complete(&self) -> bool {
        !self.table.shards.is_empty() && self.table.shards.iter().all(|n| !n.is_empty())
    }

    /// The shards whose primary is `node`.
    pub fn primaries_of(&self, node: &str) -> Vec<u32> {
        (0..self.table.shards.len() as u32)
            .filter(|&s| self.primary(s) == Some(node))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{decode, encode};
    use aether_placement::rebalance;

    #[test]
    fn lookups() {
        let empty = Assignment::empty(16, 1);
        assert!(!empty.is_complete());
        assert_eq!(empty.owner_of("x"), None);
        let shards = rebalance(&empty.table.shards, &["a".into(), "b".into()], 1);
        let a = Assignment {
            epoch: 9,
            table: AssignmentTable {
                shards,
                members: vec!["a".into(), "b".into()],
                ..AssignmentTable::empty(16, 1)
            },
        };
        assert!(a.is_complete());
        let owner = a.owner_of("x").unwrap().to_string();
        assert!(a.serves(&owner, "x"));
        assert!(a.primaries_of(&owner).contains(&a.shard_of("x")));
        assert_eq!(a.primaries_of("a").len() + a.primaries_of("b").len(), 16);
        let back: AssignmentTable = decode(&encode(&a.table).unwrap()).unwrap();
        assert_eq!(back, a.table);
    }
}
