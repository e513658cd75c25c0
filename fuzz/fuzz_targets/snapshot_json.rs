//! Fuzz target `snapshot_json`: see [`aether_fuzz::snapshot_json`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::snapshot_json(data));
