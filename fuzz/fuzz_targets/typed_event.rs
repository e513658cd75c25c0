//! Fuzz target `typed_event`: see [`aether_fuzz::typed_event`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::typed_event(data));
