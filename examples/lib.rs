//! Reusable pieces for building applications on Aether, exercised by the runnable examples in
//! this folder.
//!
//! # Layout
//! - [`bank`]: a typed bank account actor ([`aether_actor::Actor`]): typed commands, events
//!   and rejections, with given/when/then tests and a replay property test. The `quickstart`,
//!   `cluster` and `projection` examples run it.
//! - [`retry`]: ways to handle [`VersionConflict`](aether_core::Error::VersionConflict) under
//!   optimistic concurrency when writing to a store directly, all built on the library's
//!   [`aether_actor::RetryPolicy`]: plain backoff, conflict-aware retry, adaptive backoff, an
//!   asynchronous retry queue and a circuit breaker. `examples/README.md` explains when to
//!   pick which.
//! - [`read_model`]: account balances in SQLite, kept by an `aether_projection::Projection`
//!   exactly once (each event and its position in one SQLite transaction).

pub mod bank;
pub mod read_model;
pub mod retry;
