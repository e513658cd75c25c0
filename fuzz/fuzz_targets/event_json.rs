//! Fuzz target `event_json`: see [`aether_fuzz::event_json`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::event_json(data));
