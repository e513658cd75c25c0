//! Placement for Aether, as pure code: where actors go and who is alive to take them. The
//! cluster (`aether-cluster`) places actors on nodes with it, and partitioned projections
//! (`aether-projection`) place partitions on workers with the same functions, so the two can
//! never disagree about the rules.
//!
//! No I/O, no async runtime, no clock of its own: every function takes what it decides on
//! (ids, tables, revisions, instants) and returns its decision, so the rules run in a unit
//! test on made-up instants and in whichever driver carries them out.
//!
//! # Layout
//! - [`stable_hash64`], [`stable_hash64_parts`]: the fixed 64-bit hash every placement
//!   decision uses (part of the protocol between processes).
//! - [`shard_for`], [`rebalance`], [`diff`], [`ShardMove`]: actors hash to shards; shards are
//!   spread over nodes, moving only what must move. [`ShardManager`] and [`ShardConfig`]: a
//!   thread-safe shard table for applications.
//! - [`LeaseTracker`]: when someone else's lease has expired, from its revisions and the local
//!   monotonic clock.
//! - [`Membership`] ([`MemberInfo`], [`MemberStatus`], [`MembershipChange`], [`Admission`],
//!   [`Refusal`]): which nodes are alive, from heartbeats, leave notices and a failure
//!   timeout, admitting new nodes within bounds.
//! - [`validate_name`], [`is_valid_name`]: the one naming rule for cluster names, node ids,
//!   actor types and projection names (1 to 64 letters, digits, `-`, `_`).
//!
//! # Example
//! Three nodes share 16 shards; a fourth joins and takes only its share; a view of the
//! members declares a silent node failed.
//! ```
//! use std::time::{Duration, Instant};
//! use aether_placement::{diff, rebalance, shard_for, Membership, MembershipChange};
//!
//! let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
//! let table = rebalance(&vec![Vec::new(); 16], &nodes, 1);
//! let owner = &table[shard_for("order-17", 16) as usize][0];
//! assert!(nodes.contains(owner));
//!
//! let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
//! let next = rebalance(&table, &four, 1);
//! assert!(diff(&table, &next).iter().all(|moved| moved.to == "d"));
//!
//! let start = Instant::now();
//! let mut view = Membership::new("a", Duration::from_secs(1));
//! view.observe_heartbeat("b", "b-1", start);
//! assert_eq!(view.alive(), ["a", "b"]);
//! let later = start + Duration::from_secs(2);
//! assert_eq!(view.sweep(later), [MembershipChange::Failed("b".into())]);
//! ```

mod hash;
mod lease;
mod membership;
mod name;
mod shard;

pub use hash::{stable_hash64, stable_hash64_parts};
pub use lease::LeaseTracker;
pub use membership::{Admission, MemberInfo, MemberStatus, Membership, MembershipChange, Refusal};
pub use name::{is_valid_name, validate_name};
pub use shard::{
    bucket_for, buckets_of_shard, diff, rebalance, shard_for, ShardConfig, ShardManager, ShardMove,
    ACTOR_BUCKETS, DEFAULT_SHARD_COUNT,
};
