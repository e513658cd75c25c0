//! Projections for Aether: named, checkpointed consumers of every actor's events that keep
//! read models (balances per branch, stock per SKU, search indexes) up to date.
//!
//! A projection reads the event store's own global order ([`aether_core::EventLog`]), never
//! the bus's `EventStored` notifications (a save reports success even when its notification
//! could not be published, so a read model fed by notifications can miss events). It decodes
//! each event with the typed layer's [`EventCodec`](aether_actor::EventCodec), upcasters
//! included, and hands it to a [`Handler`].
//!
//! # Layout
//! - [`Projection`]: the runner: catch up from the checkpoint, then follow live writes;
//!   retries, parking, pause, resume, reset, status ([`ProjectionStatus`]), what a catch-up
//!   did ([`CatchUpReport`]). On a partitioned log
//!   ([`EventLog::partitions`](aether_core::EventLog::partitions)) it reads every partition
//!   at once, each from its own checkpoint (`<name>.l<k>`), and sums their status.
//! - [`ActorEvents`]: decoding a projection over several actor types by each event's type.
//! - [`Handler`], [`Projected`]: what the application writes, and what it is handed;
//!   [`SinkPosition`]: exactly-once for a sink that stores the position with its updates.
//! - [`ProjectionWorker`]: one worker of a partitioned projection (split by actor shard,
//!   each partition held by one worker at a time, rebalanced as workers join and leave), and
//!   of a persistent subscription (competing consumers: [`ProjectionConfig::concurrency`],
//!   [`Order`], retries and parking); an internal coordinator makes its decisions without I/O, with
//!   the cluster's own placement rules (`aether-placement`: `rebalance`, `LeaseTracker`,
//!   `shard_for`). On a partitioned log its units are (log partition, partition) pairs
//!   (`<name>.l<l>.p<k>`), numbered and counted by an internal `layout` module.
//! - [`CheckpointName`]: the names a projection's state is kept under (per shard, per log
//!   partition), written and read in one place.
//! - [`ProjectionStore`]: checkpoints, parked events, the status a projection whose sink keeps
//!   its position reports ([`ReportedStatus`]), workers' heartbeats and partition leases;
//!   [`InMemoryProjectionStore`], and `NatsProjectionStore` (a JetStream key-value bucket,
//!   feature `nats`), whose [`ProjectionSummary`] list is what operators' tools show.
//! - [`ProjectionConfig`], [`OnFailure`], [`Park`], [`WorkerConfig`]: settings.
//!
//! # Example
//! ```
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use std::sync::Arc;
//! use aether_actor::{DomainEvent, EventCodec};
//! use aether_core::{BoxError, Event, EventStore};
//! use aether_projection::{Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig};
//! use aether_store::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! enum Moved { Deposited { amount: i64 } }
//! impl DomainEvent for Moved {
//!     fn event_type(&self) -> &'static str { "Deposited" }
//! }
//!
//! /// The read model: money deposited over all accounts.
//! #[derive(Default)]
//! struct Total(AtomicI64);
//!
//! #[async_trait::async_trait]
//! impl Handler<Moved> for Total {
//!     async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
//!         let Moved::Deposited { amount } = e.event;
//!         self.0.fetch_add(amount, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> aether_core::Result<()> {
//! let store = Arc::new(InMemoryEventStore::new());
//! store.save_event(&Event::new("Deposited", "acc-1", 1).with_field("amount", 5)).await?;
//! store.save_event(&Event::new("Deposited", "acc-2", 1).with_field("amount", 7)).await?;
//! let total = Arc::new(Total::default());
//! let projection = Projection::new(
//!     "total-deposits",
//!     store,
//!     Arc::new(InMemoryProjectionStore::new()),
//!     total.clone(),
//!     EventCodec::<Moved>::default(),
//!     ProjectionConfig::default(),
//! )?;
//! // Not known before it has looked at the log.
//! assert_eq!(projection.status().lag, None);
//! let report = projection.catch_up().await?;
//! assert_eq!((report.handled, report.parked), (2, 0));
//! assert_eq!(total.0.load(Ordering::Relaxed), 12);
//! assert_eq!(projection.status().lag, Some(0));
//! # Ok(())
//! # }
//! ```

mod by_type;
mod name;
mod runner;
mod store;
mod worker;

pub use by_type::ActorEvents;
pub use name::CheckpointName;
pub use runner::{
    lag, CatchUpReport, Handler, OnFailure, Order, Park, Projected, Projection, ProjectionConfig,
    ProjectionStatus, SinkPosition,
};
pub use store::{
    InMemoryProjectionStore, ParkedEvent, PartitionLease, PositionKeeper, ProjectionStore,
    ProjectionSummary, ReportedStatus, WorkerHeartbeat, DEFAULT_PROJECTION_BUCKET,
};
#[cfg(feature = "nats")]
pub use store::{NatsProjectionStore, PROJECTION_BUCKET_FORMAT};
pub use worker::{OwnershipChange, OwnershipObserver, ProjectionWorker, WorkerConfig};
