//! Cluster layer (placement, membership, routing).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod hash;
mod ring;
mod shard;

pub use hash::stable_hash64;
pub use ring::{BoundedLoadPlacer, ConsistentHashRing};
pub use shard::{diff, rebalance, shard_for, ShardManager, ShardMove};
