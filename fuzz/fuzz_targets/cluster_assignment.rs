//! Fuzz target `cluster_assignment`: see [`aether_fuzz::cluster_assignment`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::cluster_assignment(data));
