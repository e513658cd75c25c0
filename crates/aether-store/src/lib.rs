//! Event stores for Aether.
//!
//! - [`InMemoryEventStore`]: thread-safe, embedded, the default; for tests, single-process
//!   applications and as the reference behaviour every store must match.
//! - `JetStreamEventStore` (feature `nats`): durable, on NATS JetStream, correct with any
//!   number of writers on any number of machines.
//!
//! Both implement the append-only traits of `aether-core`: [`EventStore`](aether_core::EventStore),
//! [`SnapshotStore`](aether_core::SnapshotStore) and
//! [`EventStoreWithErrors`](aether_core::EventStoreWithErrors). [`Notify`] wraps any of them to
//! publish an `EventStored` notification to a broadcaster after every successful save.
//!
//! # Layout
//! - `memory`: [`InMemoryEventStore`].
//! - `notify`: [`Notify`], `EventStored` notifications around any store.
//! - `jetstream` (feature `nats`): `JetStreamEventStore`, the actor-id subject codec, the
//!   stream setup and the stored-message codec; `leaders` (spreading partition leaders) and
//!   `mirror` (a standby copy in another JetStream domain, for disaster recovery).
//!
//! # Example
//! ```
//! use aether_core::{Event, EventStore};
//! use aether_store::InMemoryEventStore;
//!
//! # tokio_test_block(async {
//! let store = InMemoryEventStore::new();
//! store.save_event(&Event::new("Opened", "acc-1", 1)).await?;
//! store.save_event(&Event::new("Deposited", "acc-1", 2).with_field("amount", 10)).await?;
//! assert_eq!(store.get_latest_version("acc-1").await?, 2);
//!
//! // A stale writer is rejected with the current version.
//! let err = store.save_event(&Event::new("Deposited", "acc-1", 2)).await.unwrap_err();
//! assert_eq!(err.as_version_conflict().map(|c| c.current_version), Some(2));
//! # Ok::<(), aether_core::Error>(())
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

mod key;
mod memory;
mod metrics;
mod notify;

pub use memory::InMemoryEventStore;
pub use notify::Notify;

#[cfg(feature = "nats")]
mod jetstream;
#[cfg(feature = "nats")]
pub use jetstream::leaders;
#[cfg(feature = "nats")]
pub use jetstream::mirror;
#[cfg(feature = "nats")]
pub use jetstream::{
    partition_marker, partition_stream_name, Compaction, JetStreamConfig, JetStreamEventStore,
    LatestVersions, PartitionKey, Removal, DEFAULT_STREAM_NAME, MAX_PARTITIONS,
    MAX_TRANSACTION_EVENTS,
};

/// The stored-message codec, reachable only with the `fuzzing` feature so that the fuzz targets
/// can feed it bytes without a NATS server. Not part of the supported API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use jetstream::fuzzing;
