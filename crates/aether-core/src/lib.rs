//! The foundation of Aether: the event model, errors, the append-only store and broadcaster
//! traits, subscriptions and NATS-style patterns (each backend's configuration lives in its crate).
//!
//! This crate has no NATS code and starts no runtime (only [`Backoff`] sleeps, on tokio's
//! clock): storage backends live in `aether-store`, buses
//! in `aether-bus`, the cluster in `aether-cluster`; they all speak the types defined here, so
//! an application depends only on the layers it uses.
//!
//! # Layout
//! - [`Event`], [`Metadata`] and the metadata key constants: the immutable fact.
//! - [`ActorKey`]: which actor, by type and id ([`validate_actor_type`]).
//! - [`Snapshot`]: an actor's state at a version.
//! - [`Reactions`] ([`TimerOp`], [`TimerRecord`], [`EffectRecord`], [`ReactionError`]): the
//!   timers and effects a decision records on its events, carried out after the commit.
//! - [`StorageKind`]: whether a backend keeps what it creates on disk or in memory.
//! - [`Error`], [`VersionConflictError`], [`Result`]: what can go wrong.
//! - [`EventStore`], [`SnapshotStore`], [`EventStoreWithErrors`]: append-only storage (no update,
//!   no delete; see [`EventStore`] on immutability and versions).
//! - [`EventLog`], [`LogPosition`], [`LoggedEvent`]: every actor's events in one global order,
//!   for consumers of all actors (projections); [`LogFilter`], [`LogPage`]: reading only some
//!   types and shards of it.
//! - [`Transaction`]: events for several actors, appended all or nothing
//!   ([`EventStore::commit`]).
//! - [`EventBroadcaster`], [`Subscription`], [`SubscriptionFilter`], [`OverflowPolicy`]: pub/sub
//!   with no silent loss.
//! - [`match_namespace_pattern`], [`match_actor_pattern`], [`validate_pattern`]: `*` and `>`
//!   matching for namespaces and actor ids (see [`validate_pattern`] for the rules).
//! - [`personal`]: the stored form of personal data (fields sealed with a data subject's key,
//!   erased with it), which stores refuse to write in clear.
//! - [`Backoff`], [`Jitter`]: the growing pauses between retries that every retry loop of the
//!   library uses.
//!
//! # Example
//! ```
//! use aether_core::{Error, Event};
//!
//! let event = Event::new("AccountOpened", "account-1", 1).with_field("owner", "Ada");
//! event.validate()?;
//!
//! let conflict = Error::version_conflict("account-1", 1, 4);
//! if let Some(c) = conflict.as_version_conflict() {
//!     // reload and retry above the current version
//!     assert_eq!(c.current_version, 4);
//! }
//! # Ok::<(), Error>(())
//! ```

mod actor;
mod backoff;
mod broadcaster;
mod error;
mod event;
mod log;
mod pattern;
pub mod personal;
mod reaction;
mod snapshot;
mod storage;
mod store;
mod subscription;
mod trace;
mod transaction;

pub use actor::{validate_actor_type, ActorKey, MAX_ACTOR_TYPE_BYTES};
pub use backoff::{Backoff, Jitter};
pub use broadcaster::EventBroadcaster;
pub use error::{
    BoxError, CrossPartitionError, Error, Result, TransactionConflictError, VersionConflictError,
};
pub use event::{
    Event, EventData, Metadata, EVENT_TYPE_EVENT_STORED, EVENT_TYPE_RETIRED, METADATA_ACTOR_TYPE,
    METADATA_CAUSATION_ID, METADATA_CORRELATION_ID, METADATA_MESSAGE_ID, METADATA_REPLY,
    METADATA_SCHEMA_VERSION, METADATA_SPAN_ID, METADATA_TRACE_ID, METADATA_USER_ID,
};
pub use log::{log_partitions, EventLog, LogFilter, LogPage, LogPosition, LoggedEvent};
pub use pattern::{
    is_wildcard_pattern, match_actor_pattern, match_namespace_pattern, validate_namespace,
    validate_pattern,
};
pub use reaction::{
    effect_id, max_timer_delay, max_timer_lateness, timer_command_id, validate_effect_subject,
    validate_timer_due, validate_timer_name, EffectRecord, ReactionError, Reactions, TimerFire,
    TimerOp, TimerRecord, MAX_EFFECTS_PER_EVENT, MAX_TIMERS_PER_ACTOR, MAX_TIMER_NAME_BYTES,
    METADATA_REACTIONS,
};
pub use snapshot::{Snapshot, SNAPSHOT_COMMAND_IDS, SNAPSHOT_COMMAND_ID_BYTES};
pub use storage::StorageKind;
pub use store::{
    validate_batch, EventStore, EventStoreWithErrors, ReplayError, ReplayResult, ReplayStart,
    SnapshotAndEvents, SnapshotStore,
};
pub use subscription::{
    Delivery, DeliverySource, OverflowPolicy, SendOutcome, SubscribeOptions, Subscription,
    SubscriptionFilter, SubscriptionSender, DEFAULT_SUBSCRIPTION_BUFFER,
};
pub use trace::{TraceContext, TRACEPARENT_HEADER};
pub use transaction::{ActorAppend, Transaction, MAX_TRANSACTION_ID_BYTES};
