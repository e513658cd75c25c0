//! Fuzz target `actor_id_subject`: see [`aether_fuzz::actor_id_subject`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_fuzz::actor_id_subject(data));
