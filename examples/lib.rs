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
//! - [`booking`]: two actor types, a show's seats ([`booking::Show`]) and a customer's wallet
//!   ([`booking::Customer`]), and a reservation that reserves and charges in one transaction
//!   across both types ([`booking::reserve_and_charge`]). The `booking` example runs it.
//! - [`booking_read_model`]: the shows, customers and reservations in SQLite, kept exactly
//!   once by one projection over both types, each event decoded by the type that wrote it.
//! - [`read_model`]: account balances in SQLite, kept by an `aether_projection::Projection`
//!   exactly once (each event and its position in one SQLite transaction).

pub mod bank;
pub mod booking;
pub mod booking_read_model;
pub mod read_model;
pub mod retry;
mod sql_position;
