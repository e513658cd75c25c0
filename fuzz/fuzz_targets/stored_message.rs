//! Fuzz target `stored_message`: see [`aether_fuzz::stored_message`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::stored_message(data));
