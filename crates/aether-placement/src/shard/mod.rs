//! Shards: the unit of placement. Actors hash to shards; shards are assigned to nodes (or,
//! for a partitioned projection, partitions to workers).

use std::collections::{BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use aether_core::{Error, Result};

use crate::hash::{stable_hash64, stable_hash64_parts};

/// Default number of shards.
pub const DEFAULT_SHARD_COUNT: u32 = 1024;

/// Shard settings; every node of a cluster must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// Number of shards actors are spread over (at least 1). Changing it moves almost every
    /// actor, so pick it once per cluster.
    pub shard_count: u32,
    /// Nodes that hold each shard (at least 1); the first is the primary that serves it.
    pub replication_factor: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            shard_count: DEFAULT_SHARD_COUNT,
            replication_factor: 1,
        }
    }
}

impl ShardConfig {
    /// Sets the shard count.
    pub fn shard_count(mut self, n: u32) -> Self {
        self.shard_count = n;
        self
    }
    /// Sets the replication factor.
    pub fn replication_factor(mut self, n: u32) -> Self {
        self.replication_factor = n;
        self
    }
}

/// The shard of `actor_id` among `shard_count` shards: `stable_hash64(actor_id) % shard_count`.
///
/// Part of the cluster protocol: every process, on every machine and after every restart,
/// computes the same shard for the same actor (see [`stable_hash64`]). A `shard_count` of 0 is
/// treated as 1.
pub fn shard_for(actor_id: &str, shard_count: u32) -> u32 {
    (stable_hash64(actor_id.as_bytes()) % u64::from(shard_count.max(1))) as u32
}

/// How many buckets the store's subjects spread each actor type's actors over.
///
/// Part of the storage format: a typed actor's events subject carries its bucket
/// ([`bucket_for`]), so a reader can ask the server for the actors of some buckets only. 64 is a
/// power of two, so a split into 2, 4, ..., 64 partitions ([`shard_for`]) selects whole buckets
/// ([`buckets_of_shard`]).
pub const ACTOR_BUCKETS: u32 = 64;

/// The bucket of `actor_id`: `shard_for(actor_id, ACTOR_BUCKETS)`.
pub fn bucket_for(actor_id: &str) -> u32 {
    shard_for(actor_id, ACTOR_BUCKETS)
}

/// The buckets that can hold actors of shard `shard` among `shard_count` ([`shard_for`]): every
/// actor of the shard is in one of them, so a reader of the shard can leave the other buckets
/// to the server to skip. Exact (only the shard's actors) when `shard_count` divides
/// [`ACTOR_BUCKETS`]; otherwise a superset, and the reader still checks [`shard_for`] on what
/// it gets. Empty when `shard >= shard_count`.
///
/// ```
/// use aether_placement::{buckets_of_shard, ACTOR_BUCKETS};
///
/// assert_eq!(buckets_of_shard(0, 1).len(), ACTOR_BUCKETS as usize);
/// assert_eq!(buckets_of_shard(3, 8), [3, 11, 19, 27, 35, 43, 51, 59]);
/// assert_eq!(buckets_of_shard(1, 3).len(), ACTOR_BUCKETS as usize); // 3 does not divide 64
/// ```
pub fn buckets_of_shard(shard: u32, shard_count: u32) -> Vec<u32> {
    let n = shard_count.max(1);
    if shard >= n {
        return Vec::new();
    }
    // hash % n == shard implies hash ≡ shard (mod g) for g = gcd(n, 64), and the bucket is
    // hash % 64, so the bucket ≡ shard (mod g) too.
    let g = gcd(n, ACTOR_BUCKETS);
    (0..ACTOR_BUCKETS).filter(|b| b % g == shard % g).collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Which nodes hold which shards, and where actors go.
///
/// The table maps each shard (`0..shard_count`) to the nodes that hold it, primary first. In a
/// cluster the leader computes it with [`rebalance`] and every node loads the agreed table with
/// [`set_table`](Self::set_table); on its own a `ShardManager` is a plain, thread-safe table.
///
/// ```
/// use aether_placement::{ShardConfig, ShardManager};
///
/// let shards = ShardManager::new(ShardConfig::default().shard_count(64));
/// let shard = shards.get_shard("order-17");
/// assert!(shard < 64);
/// shards.rebalance(&["a".to_string(), "b".to_string()]);
/// let owner = shards.get_shard_nodes(shard)[0].clone();
/// assert_eq!(shards.place_actor("order-17", &["a".into(), "b".into()]), Some(owner));
/// ```
#[derive(Debug)]
pub struct ShardManager {
    shard_count: u32,
    replication_factor: u32,
    table: RwLock<Vec<Vec<String>>>,
}

/// One replica that changed hands in a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMove {
    /// The shard.
    pub shard: u32,
    /// The node that gave the replica up (`None`: the slot was empty, for example because its
    /// node failed).
    pub from: Option<String>,
    /// The node that took it.
    pub to: String,
}

impl Default for ShardManager {
    fn default() -> Self {
        Self::new(ShardConfig::default())
    }
}

impl ShardManager {
    /// An empty table (no shard assigned) with `config` (a zero count or factor is taken as
    /// 1; a cluster's configuration refuses them).
    pub fn new(config: ShardConfig) -> Self {
        let shard_count = config.shard_count.max(1);
        Self {
            shard_count,
            replication_factor: config.replication_factor.max(1),
            table: RwLock::new(vec![Vec::new(); shard_count as usize]),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Vec<String>>> {
        // Writers replace whole rows, so a poisoned table is still consistent.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Vec<String>>> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Nodes each shard is kept on.
    pub fn replication_factor(&self) -> u32 {
        self.replication_factor
    }

    /// The shard of `actor_id` (see [`shard_for`]).
    pub fn get_shard(&self, actor_id: &str) -> u32 {
        shard_for(actor_id, self.shard_count)
    }

    /// The nodes holding `shard`, primary first; empty when unassigned or out of range.
    pub fn get_shard_nodes(&self, shard: u32) -> Vec<String> {
        self.read().get(shard as usize).cloned().unwrap_or_default()
    }

    /// The primary node of `shard`.
    pub fn primary(&self, shard: u32) -> Option<String> {
        self.read()
            .get(shard as usize)
            .and_then(|nodes| nodes.first().cloned())
    }

    /// Assigns `shard` to `nodes` (primary first; duplicates are dropped).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `shard` is not below the shard count.
    pub fn assign_shard(&self, shard: u32, nodes: Vec<String>) -> Result<()> {
        let mut table = self.write();
        let row = table.get_mut(shard as usize).ok_or_else(|| {
            Error::invalid(format!(
                "shard {shard} out of range (shard count {})",
                self.shard_count
            ))
        })?;
        let mut seen = BTreeSet::new();
        *row = nodes
            .into_iter()
            .filter(|n| seen.insert(n.clone()))
            .collect();
        Ok(())
    }

    /// The node `actor_id` should run on, chosen among `available_nodes`: the first node of its
    /// shard that is available; if none is (the shard is unassigned or its nodes are gone), the
    /// available node with the highest rendezvous score for the shard, so the fallback is
    /// stable too. `None` when no node is available.
    pub fn place_actor(&self, actor_id: &str, available_nodes: &[String]) -> Option<String> {
        let shard = self.get_shard(actor_id);
        if let Some(n) = self
            .read()
            .get(shard as usize)
            .and_then(|nodes| nodes.iter().find(|n| available_nodes.contains(n)))
        {
            return Some(n.clone());
        }
        available_nodes
            .iter()
            .max_by_key(|n| (rendezvous_score(shard, n), n.as_str()))
            .cloned()
    }

    /// The shards `node` holds (as primary or replica), ascending.
    pub fn shards_of(&self, node: &str) -> Vec<u32> {
        self.read()
            .iter()
            .enumerate()
            .filter(|(_, nodes)| nodes.iter().any(|n| n == node))
            .map(|(s, _)| s as u32)
            .collect()
    }

    /// Replicas per node.
    pub fn loads(&self) -> HashMap<String, usize> {
        let mut loads = HashMap::new();
        for nodes in self.read().iter() {
            for n in nodes {
                *loads.entry(n.clone()).or_default() += 1;
            }
        }
        loads
    }

    /// A copy of the whole table.
    pub fn table(&self) -> Vec<Vec<String>> {
        self.read().clone()
    }

    /// Replaces the whole table (for example with the one the leader published).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it does not have one row per shard.
    pub fn set_table(&self, table: Vec<Vec<String>>) -> Result<()> {
        if table.len() != self.shard_count as usize {
            return Err(Error::invalid(format!(
                "assignment table has {} rows, the shard count is {}",
                table.len(),
                self.shard_count
            )));
        }
        *self.write() = table;
        Ok(())
    }

    /// Rebalances the table over `live_nodes` with [`rebalance`] and returns what moved.
    pub fn rebalance(&self, live_nodes: &[String]) -> Vec<ShardMove> {
        let mut table = self.write();
        let next = rebalance(&table, live_nodes, self.replication_factor);
        let moves = diff(&table, &next);
        *table = next;
        moves
    }
}

/// The replicas in `next` that are not in `prev`.
pub fn diff(prev: &[Vec<String>], next: &[Vec<String>]) -> Vec<ShardMove> {
    let mut moves = Vec::new();
    for (s, row) in next.iter().enumerate() {
        let old = prev.get(s).map(Vec::as_slice).unwrap_or(&[]);
        let mut gone = old.iter().filter(|n| !row.contains(n));
        for n in row.iter().filter(|n| !old.contains(n)) {
            moves.push(ShardMove {
                shard: s as u32,
                from: gone.next().cloned(),
                to: n.clone(),
            });
        }
    }
    moves
}

/// Rendezvous (highest random weight) score of `node` for `shard`: a stable preference order
/// of nodes per shard, used to break ties and fill empty slots deterministically.
fn rendezvous_score(shard: u32, node: &str) -> u64 {
    stable_hash64_parts(&[node.as_bytes(), b"/", &shard.to_be_bytes()])
}

/// Computes a balanced table over `live_nodes` that moves as few replicas as possible from
/// `current`.
///
/// Each shard gets `min(replication_factor, live nodes)` distinct nodes. Every node ends with
/// `floor` or `ceil` of `shards · replicas / nodes` replicas, and rebalancing a table again
/// over the same nodes changes nothing. Only three kinds of replicas move:
/// those on nodes that are no longer live, the excess of nodes above their share, and (to fill
/// those slots) the nodes below it. A replica that can stay, stays; so a node joining takes
/// about `1/n` of the shards, all from nodes above their new share, and a node leaving gives up
/// exactly its own shards. Slots are filled by the under-loaded node with the highest
/// rendezvous score for the shard, so the result depends only on the inputs.
pub fn rebalance(
    current: &[Vec<String>],
    live_nodes: &[String],
    replication_factor: u32,
) -> Vec<Vec<String>> {
    let live: Vec<&str> = {
        let set: BTreeSet<&str> = live_nodes.iter().map(String::as_str).collect();
        set.into_iter().collect()
    };
    let shards = current.len();
    if live.is_empty() {
        return vec![Vec::new(); shards];
    }
    let n = live.len();
    let r = (replication_factor.max(1) as usize).min(n);
    let index: HashMap<&str, usize> = live.iter().enumerate().map(|(i, n)| (*n, i)).collect();

    // Keep what can stay: live nodes, no duplicates, at most `r` per shard.
    let mut next: Vec<Vec<usize>> = current
        .iter()
        .map(|row| {
            let mut kept: Vec<usize> = Vec::with_capacity(r);
            for node in row {
                if let Some(&i) = index.get(node.as_str()) {
                    if !kept.contains(&i) && kept.len() < r {
                        kept.push(i);
                    }
                }
            }
            kept
        })
        .collect();
    let mut load = vec![0usize; n];
    for row in &next {
        for &i in row {
            load[i] += 1;
        }
    }

    // Targets: `rem` nodes get one more than the others; give the extra to the nodes that
    // already hold the most, so fewer replicas move.
    let total = shards * r;
    let (base, rem) = (total / n, total % n);
    let mut by_load: Vec<usize> = (0..n).collect();
    by_load.sort_by(|&a, &b| load[b].cmp(&load[a]).then_with(|| live[a].cmp(live[b])));
    let mut target = vec![base; n];
    for &i in by_load.iter().take(rem) {
        target[i] += 1;
    }

    // Shed the excess of over-loaded nodes, from the shards where they rank lowest.
    for i in 0..n {
        if load[i] <= target[i] {
            continue;
        }
        let mut held: Vec<usize> = (0..shards).filter(|&s| next[s].contains(&i)).collect();
        held.sort_by_key(|&s| rendezvous_score(s as u32, live[i]));
        for s in held {
            if load[i] <= target[i] {
                break;
            }
            next[s].retain(|&x| x != i);
            load[i] -= 1;
        }
    }

    // Fill the empty slots.
    for (s, row) in next.iter_mut().enumerate() {
        while row.len() < r {
            let pick = |bound: bool| {
                (0..n)
                    .filter(|i| !row.contains(i) && (!bound || load[*i] < target[*i]))
                    .max_by_key(|&i| {
                        (
                            std::cmp::Reverse(if bound { 0 } else { load[i] }),
                            rendezvous_score(s as u32, live[i]),
                        )
                    })
            };
            // Distinct nodes per shard can leave an under-loaded node unable to take this
            // shard; then the least loaded node that can, takes it.
            let Some(i) = pick(true).or_else(|| pick(false)) else {
                break;
            };
            row.push(i);
            load[i] += 1;
        }
    }

    // With replication, the distinct-node rule can force a slot onto a node already at its
    // target. Repair by moving one replica at a time from a node above its target to one below:
    // such a node holds fewer shards, so some shard has the first and not the second. Ending
    // exactly on the targets also makes a second rebalance of the same members a no-op.
    while let Some(over) = (0..n).find(|&i| load[i] > target[i]) {
        let Some(under) = (0..n).find(|&j| load[j] < target[j]) else {
            break;
        };
        let Some(s) = (0..shards)
            .filter(|&s| next[s].contains(&over) && !next[s].contains(&under))
            .max_by_key(|&s| rendezvous_score(s as u32, live[under]))
        else {
            break;
        };
        for slot in next[s].iter_mut() {
            if *slot == over {
                *slot = under;
            }
        }
        load[over] -= 1;
        load[under] += 1;
    }

    next.into_iter()
        .map(|row| row.into_iter().map(|i| live[i].to_string()).collect())
        .collect()
}

#[cfg(test)]
mod tests;
