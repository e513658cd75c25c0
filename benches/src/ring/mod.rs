//! Consistent hashing: which node a key belongs to, moving few keys when nodes come and go.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use aether_placement::{stable_hash64, stable_hash64_parts};

/// A consistent hash ring with virtual nodes.
///
/// Each physical node is placed at `virtual_nodes` points on a 64-bit ring (the
/// [`stable_hash64`] of `"<node>#<i>"`); a key belongs to the first point at or after its own
/// hash, wrapping around. Adding or removing a node therefore only moves the keys next to that
/// node's points: about `1/n` of them.
///
/// The points live in one sorted array searched by binary search, so a lookup allocates
/// nothing and costs `O(log(n·virtual_nodes))`. The ring is `Send + Sync`: lookups take a read
/// lock and run in parallel; membership changes rebuild the array under the write lock.
///
/// ```
/// use aether_benches::ring::ConsistentHashRing;
///
/// let ring = ConsistentHashRing::new();
/// assert!(ring.get_node("order-1").is_none());
/// ring.add_node("node-a");
/// ring.add_node("node-b");
/// let owner = ring.get_node("order-1").expect("non-empty ring");
/// assert!(owner.as_ref() == "node-a" || owner.as_ref() == "node-b");
/// // Same nodes, same answer, in every process.
/// assert_eq!(ring.get_node("order-1"), ring.get_node("order-1"));
/// ```
#[derive(Debug)]
pub struct ConsistentHashRing {
    virtual_nodes: usize,
    state: RwLock<RingState>,
}

#[derive(Debug, Default, Clone)]
struct RingState {
    /// Physical nodes; a point refers to its node by index into this vector.
    nodes: Vec<Arc<str>>,
    /// `(hash, node index)`, sorted by hash and then by node name, so the order (and so every
    /// lookup) depends only on the set of nodes, not on the order they were added in.
    points: Vec<(u64, u32)>,
}

impl RingState {
    fn lookup(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 < hash);
        Some(if i == self.points.len() { 0 } else { i })
    }

    fn sort(&mut self) {
        let nodes = &self.nodes;
        self.points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| nodes[a.1 as usize].cmp(&nodes[b.1 as usize]))
        });
    }
}

/// Default number of virtual nodes per physical node on the hash ring.
pub const DEFAULT_VIRTUAL_NODES: usize = 150;

/// Consistent hash ring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRingConfig {
    /// Virtual nodes per physical node (at least 1; 0 is taken as 1). More gives a more even
    /// spread at the cost of memory and slower membership changes.
    pub virtual_nodes: usize,
}

impl Default for HashRingConfig {
    fn default() -> Self {
        Self {
            virtual_nodes: DEFAULT_VIRTUAL_NODES,
        }
    }
}

impl HashRingConfig {
    /// Sets the virtual nodes per node.
    pub fn virtual_nodes(mut self, n: usize) -> Self {
        self.virtual_nodes = n;
        self
    }
}

impl Default for ConsistentHashRing {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHashRing {
    /// An empty ring with the default configuration (150 virtual nodes per node).
    pub fn new() -> Self {
        Self::with_config(HashRingConfig::default())
    }

    /// An empty ring with `config`.
    pub fn with_config(config: HashRingConfig) -> Self {
        Self {
            virtual_nodes: config.virtual_nodes.max(1),
            state: RwLock::new(RingState::default()),
        }
    }

    /// A ring holding `nodes`.
    pub fn with_nodes<I, S>(config: HashRingConfig, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let ring = Self::with_config(config);
        for n in nodes {
            ring.add_node(n.as_ref());
        }
        ring
    }

    /// Virtual nodes per physical node.
    pub fn virtual_nodes(&self) -> usize {
        self.virtual_nodes
    }

    // A panic while holding the lock cannot leave the state half-written (every writer builds
    // the new arrays before it touches the state), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, RingState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RingState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a node. Adding a node that is already present does nothing.
    pub fn add_node(&self, node: &str) {
        let mut state = self.write();
        if state.nodes.iter().any(|n| n.as_ref() == node) {
            return;
        }
        let index = state.nodes.len() as u32;
        state.nodes.push(Arc::from(node));
        let mut buf = itoa_buf();
        state.points.reserve(self.virtual_nodes);
        for i in 0..self.virtual_nodes {
            let digits = format_usize(i, &mut buf);
            let h = stable_hash64_parts(&[node.as_bytes(), b"#", digits]);
            state.points.push((h, index));
        }
        state.sort();
    }

    /// Removes a node. Removing an unknown node does nothing.
    pub fn remove_node(&self, node: &str) {
        let mut state = self.write();
        let Some(index) = state.nodes.iter().position(|n| n.as_ref() == node) else {
            return;
        };
        let last = state.nodes.len() - 1;
        state.nodes.swap_remove(index);
        let (index, last) = (index as u32, last as u32);
        state.points.retain(|p| p.1 != index);
        if index != last {
            for p in &mut state.points {
                if p.1 == last {
                    p.1 = index;
                }
            }
        }
        // Removing points keeps the array sorted; the renumbering does not change names.
    }

    /// The node owning `key`, `None` on an empty ring. Allocates nothing (the name is shared).
    pub fn get_node(&self, key: &str) -> Option<Arc<str>> {
        self.get_node_for_hash(stable_hash64(key.as_bytes()))
    }

    /// The node owning a precomputed [`stable_hash64`].
    pub fn get_node_for_hash(&self, hash: u64) -> Option<Arc<str>> {
        let state = self.read();
        let i = state.lookup(hash)?;
        Some(Arc::clone(&state.nodes[state.points[i].1 as usize]))
    }

    /// Up to `n` distinct nodes for `key`, in ring order starting with its owner: the replicas
    /// of `key` when each is kept on `n` nodes.
    pub fn get_nodes(&self, key: &str, n: usize) -> Vec<Arc<str>> {
        let state = self.read();
        let mut out: Vec<Arc<str>> = Vec::with_capacity(n.min(state.nodes.len()));
        let Some(start) = state.lookup(stable_hash64(key.as_bytes())) else {
            return out;
        };
        let len = state.points.len();
        for step in 0..len {
            if out.len() >= n {
                break;
            }
            let node = &state.nodes[state.points[(start + step) % len].1 as usize];
            if !out.iter().any(|o| Arc::ptr_eq(o, node)) {
                out.push(Arc::clone(node));
            }
        }
        out
    }

    /// The physical nodes, sorted by name.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().nodes.iter().map(|n| n.to_string()).collect();
        v.sort();
        v
    }

    /// Whether `node` is on the ring.
    pub fn contains(&self, node: &str) -> bool {
        self.read().nodes.iter().any(|n| n.as_ref() == node)
    }

    /// Number of physical nodes.
    pub fn len(&self) -> usize {
        self.read().nodes.len()
    }

    /// Whether the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.read().nodes.is_empty()
    }

    /// A placer that spreads keys with bounded loads over this ring's current nodes (see
    /// [`BoundedLoadPlacer`]).
    pub fn bounded_placer(&self, epsilon: f64) -> BoundedLoadPlacer {
        BoundedLoadPlacer::new(self.read().clone(), epsilon)
    }
}

/// Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018).
///
/// Keys are placed one by one: each goes to the first node clockwise from its hash whose load is
/// below `ceil((1 + ε) · (placed + 1) / nodes)`. No node ever holds more than
/// `ceil((1 + ε) · average)` keys, while most keys still land where the plain ring puts them.
/// Useful when a few hot actors would otherwise pile onto one node.
///
/// The placer works on a copy of the ring taken when it was created and keeps its own load
/// counts; [`release`](Self::release) gives a slot back when a key leaves its node.
#[derive(Debug, Clone)]
pub struct BoundedLoadPlacer {
    state: RingState,
    epsilon: f64,
    loads: Vec<usize>,
    placed: usize,
}

impl BoundedLoadPlacer {
    fn new(state: RingState, epsilon: f64) -> Self {
        let n = state.nodes.len();
        Self {
            state,
            epsilon: if epsilon.is_finite() && epsilon > 0.0 {
                epsilon
            } else {
                0.0
            },
            loads: vec![0; n],
            placed: 0,
        }
    }

    fn capacity(&self, placed: usize) -> usize {
        let n = self.state.nodes.len().max(1) as f64;
        ((1.0 + self.epsilon) * placed as f64 / n).ceil().max(1.0) as usize
    }

    /// Places `key` and counts it against its node; `None` on an empty ring.
    pub fn place(&mut self, key: &str) -> Option<Arc<str>> {
        let start = self.state.lookup(stable_hash64(key.as_bytes()))?;
        let cap = self.capacity(self.placed + 1);
        let len = self.state.points.len();
        let mut chosen = None;
        for step in 0..len {
            let idx = self.state.points[(start + step) % len].1 as usize;
            if self.loads[idx] < cap {
                chosen = Some(idx);
                break;
            }
        }
        // The capacities add up to at least `placed + 1`, so some node always has room; the
        // fallback only guards against float rounding.
        let idx = match chosen {
            Some(i) => i,
            None => (0..self.loads.len()).min_by_key(|&i| self.loads[i])?,
        };
        self.loads[idx] += 1;
        self.placed += 1;
        Some(Arc::clone(&self.state.nodes[idx]))
    }

    /// Gives back one slot of `node` (a key placed there has gone).
    pub fn release(&mut self, node: &str) {
        if let Some(i) = self.state.nodes.iter().position(|n| n.as_ref() == node) {
            if self.loads[i] > 0 {
                self.loads[i] -= 1;
                self.placed -= 1;
            }
        }
    }

    /// Current load of every node.
    pub fn loads(&self) -> HashMap<String, usize> {
        self.state
            .nodes
            .iter()
            .zip(&self.loads)
            .map(|(n, l)| (n.to_string(), *l))
            .collect()
    }

    /// The most any node may hold with the keys placed so far: `ceil((1 + ε) · average)`.
    pub fn max_load(&self) -> usize {
        self.capacity(self.placed)
    }
}

type ItoaBuf = [u8; 20];

fn itoa_buf() -> ItoaBuf {
    [0; 20]
}

/// Decimal digits of `n` in `buf`, without allocating.
fn format_usize(mut n: usize, buf: &mut ItoaBuf) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests;
