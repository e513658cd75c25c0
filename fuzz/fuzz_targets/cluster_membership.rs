//! Fuzz target `cluster_membership`: see [`aether_fuzz::cluster_membership`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::cluster_membership(data));
