//! Fuzz target `cluster_envelope`: see [`aether_fuzz::cluster_envelope`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::cluster_envelope(data));
