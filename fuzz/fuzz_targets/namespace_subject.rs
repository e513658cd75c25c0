//! Fuzz target `namespace_subject`: see [`aether_fuzz::namespace_subject`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::namespace_subject(data));
