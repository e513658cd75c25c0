//! Cluster layer (placement, membership, routing).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod config;
mod hash;
mod host;
mod registry;
mod ring;
mod shard;
mod vm;

pub use config::{
    ActorConfig, ClusterConfig, DEFAULT_CLUSTER_NAME, DEFAULT_FAILURE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
pub use hash::stable_hash64;
pub use host::{ActorHost, ActorVm, Fence, Handled};
pub use registry::DistributedVMRegistry;
pub use ring::{BoundedLoadPlacer, ConsistentHashRing};
pub use shard::{diff, rebalance, shard_for, ShardManager, ShardMove};
pub use vm::{NewEvent, RuntimeMessage, RuntimeModel, VMProvider, VMState, VirtualMachine};
