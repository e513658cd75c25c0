//! The cluster's stable hash is Aether's one placement hash, in `aether-placement`: the hash
//! ring hashes its points and keys with it.

pub(crate) use aether_placement::{stable_hash64, stable_hash64_parts};
