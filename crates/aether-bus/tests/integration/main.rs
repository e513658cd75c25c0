//! The bus's integration tests, in one binary so that the suite links `async-nats` once.
//!
//! - `contract`: the `aether-testkit` broadcaster contract, on the local and the NATS bus.
//! - `nats_bus`: what only the NATS bus does (exactly-once across buses, prefixes, slow
//!   consumers, payload limits, the server's subscriptions, closing).
//! - `nats_catchup`: durable subscriptions that catch up from JetStream.
//! - `nats_cluster`, `nats_reconnect`: a clustered server, and a restarted one.
//! - `faults`, `permissions`: hostile input, credentials and refused permissions.
//! - `wire`: the framed and the header wire forms together, old streams, damaged frames.
//!
//! The NATS tests start their own `nats-server` (see `aether-testkit`).

mod contract;
mod nats_support;

mod faults;
mod golden;
mod nats_bus;
mod nats_catchup;
mod nats_cluster;
mod nats_reconnect;
mod permissions;
mod wire;
