//! The `aether` binary's integration tests, in one binary so that the suite links
//! `async-nats` once.
//!
//! - `cli`: without a server (help, usage errors, the in-process demo, connection failures).
//! - `nats`: against real nats-servers started by each test.

mod cli;
mod nats;
