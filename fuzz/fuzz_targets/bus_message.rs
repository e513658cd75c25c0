//! Fuzz target `bus_message`: see [`aether_fuzz::bus_message`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::bus_message(data));
