//! Reusable patterns for building applications on Aether, exercised by the runnable examples
//! in this folder.
//!
//! # Layout
//! - [`retry`]: ways to handle [`VersionConflict`](aether_core::Error::VersionConflict) under
//!   optimistic concurrency: exponential backoff, conflict-aware retry, jitter, adaptive
//!   backoff, an asynchronous retry queue and a circuit breaker. `examples/README.md` explains
//!   when to pick which.
//! - [`read_model`]: a checkpointed read model fed by durable `EventStored` delivery.

pub mod read_model;
pub mod retry;
