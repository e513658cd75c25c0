//! The store's integration tests, in one binary so that the suite links `async-nats` once.
//!
//! - `contract`: the `aether-testkit` contract suites, on the in-memory and the JetStream store
//!   (also on a compactable stream compacting at every snapshot).
//! - `compaction`: history that does not grow forever (`compact`, the archive).
//! - `notify`: `EventStored` notifications around either store.
//! - `memory`: what only the in-memory store has (its counters, a property test).
//! - `jetstream`: JetStream-only behaviour (caches, namespaces, the stream's settings,
//!   malformed messages, long histories); `jetstream_cluster`, `jetstream_failures`.
//! - `log`: the global order both stores give (`EventLog`), followed while writers write.
//! - `latest_view`: `LatestVersions`, the latest-version view with bounded staleness.
//! - `auth`, `hostile`: credentials and hostile input.
//! - `faults_single`, `faults_cluster`: real faults (SIGKILL, SIGSTOP) under load.
//! - `partitioned`: the log spread over several streams (`JetStreamConfig::partitions`);
//!   `faults_partitioned`: that log under a partition leader's kill and a server's freeze and
//!   kill, judged by the history checker.
//! - `mirror`: disaster recovery: a standby in another JetStream domain mirrors the streams
//!   over a leafnode connection, and is promoted when the primary is killed.
//! - `partitions`: network partitions on a replicated stream, judged by the history checker.
//! - `soak`: the bounded soak, ignored unless run through `scripts/soak`.
//! - `transactions`: atomic appends across actors (transfers), on both stores; the R3
//!   leader kill is in `faults_cluster`.
//!
//! - `types`: typed actors' subjects, and a stream written before actor types.
//!
//! The NATS tests start their own `nats-server` (see `aether-testkit`).

#[cfg(feature = "nats")]
mod compaction;
mod contract;
mod memory;
mod notify;
#[cfg(feature = "nats")]
mod types;

mod auth;
#[cfg(feature = "nats")]
mod faults_cluster;
#[cfg(feature = "nats")]
mod faults_partitioned;
#[cfg(feature = "nats")]
mod faults_single;
#[cfg(feature = "nats")]
mod faults_support;
#[cfg(feature = "nats")]
mod golden;
#[cfg(feature = "nats")]
mod hostile;
mod jetstream;
mod jetstream_cluster;
mod jetstream_failures;
#[cfg(feature = "nats")]
mod latest_view;
mod log;
#[cfg(feature = "nats")]
mod mirror;
#[cfg(feature = "nats")]
mod partitioned;
#[cfg(feature = "nats")]
mod partitions;
mod soak;
mod transactions;
