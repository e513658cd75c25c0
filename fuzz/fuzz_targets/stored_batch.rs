//! Fuzz target `stored_batch`: see [`aether_fuzz::stored_batch`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::stored_batch(data));
