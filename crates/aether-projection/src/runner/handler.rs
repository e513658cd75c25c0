//! What the application writes ([`Handler`]), what it is handed ([`Projected`]), and how it
//! says where its sink stands ([`SinkPosition`]) or that an event is to be parked ([`Park`]).

use std::sync::Arc;

use aether_core::{BoxError, LogPosition, Metadata};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(doc)]
use super::OnFailure;

/// An event handed to a projection's handler: the typed event and where it comes from. The
/// actor and version identify it, so an idempotent sink can ignore a redelivery (delivery is
/// at least once: after a crash, the events since the last checkpoint come again).
#[derive(Debug, Clone, PartialEq)]
pub struct Projected<E> {
    /// The name its position is kept under: the projection's name, or `<name>.p<partition>`
    /// in a partitioned projection (see [`ProjectionWorker`](crate::ProjectionWorker)); on a
    /// partitioned log, `<name>.l<log_partition>` (and `<name>.l<log_partition>.p<partition>`
    /// in a partitioned projection). A sink that keeps its own position
    /// ([`SinkPosition::Kept`]) keeps one per name, so one per log partition.
    pub projection: Arc<str>,
    /// Its position in its log partition's order (the store's global order when the log is
    /// one order; see [`log_partition`](Self::log_partition)): positions of different
    /// partitions are not comparable.
    pub position: LogPosition,
    /// The type of the actor (`None`: an untyped actor).
    pub actor_type: Option<String>,
    /// The actor, within its type.
    pub actor_id: String,
    /// Its version in the actor's history.
    pub version: u64,
    /// The stored event's id.
    pub event_id: String,
    /// When it was stored.
    pub timestamp: DateTime<Utc>,
    /// Its metadata (correlation, causation, user...).
    pub metadata: Metadata,
    /// The typed event.
    pub event: E,
}

impl<E> Projected<E> {
    /// The partition of the log it was read from ([`aether_core::log_partitions`]), as
    /// [`projection`](Self::projection) names it (`.l<log_partition>`); 0 on a log that is
    /// one order. [`position`](Self::position) is a position in that partition.
    ///
    /// ```
    /// # use aether_core::LogPosition;
    /// # use aether_projection::Projected;
    /// # let at = |projection: &str| Projected {
    /// #     projection: projection.into(), position: LogPosition::new(1, 0), actor_type: None,
    /// #     actor_id: "a".into(), version: 1, event_id: "e".into(),
    /// #     timestamp: chrono::Utc::now(), metadata: Default::default(), event: (),
    /// # };
    /// assert_eq!(at("balances").log_partition(), 0);
    /// assert_eq!(at("balances.p3").log_partition(), 0);
    /// assert_eq!(at("balances.l2").log_partition(), 2);
    /// assert_eq!(at("balances.l2.p3").log_partition(), 2);
    /// ```
    pub fn log_partition(&self) -> u32 {
        crate::CheckpointName::parse(&self.projection)
            .and_then(|name| name.log_partition)
            .unwrap_or(0)
    }
}

/// Where a sink stands, for exactly-once delivery. On a partitioned log the sink keeps one
/// position per log partition, under each event's [`Projected::projection`] (which names
/// the partition), and answers [`Handler::position`] for that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkPosition {
    /// The sink keeps no position: the projection's store keeps the checkpoint, and delivery
    /// is at least once.
    NotKept,
    /// The sink stores the position of each event it applies (`Projected::position`) in the
    /// same transaction as the update, and this is the last one (`None`: none applied yet).
    /// The projection resumes from it, so every event is applied exactly once.
    Kept(Option<LogPosition>),
}

/// What a projection does with each event: update a read model.
#[async_trait]
pub trait Handler<E>: Send + Sync {
    /// Applies one event. An error is retried under the projection's retry policy, then the
    /// event is parked (or the projection stops, see [`OnFailure`]).
    ///
    /// # Errors
    /// Any error the sink has; it is recorded in the status and with a parked event.
    async fn handle(&self, event: &Projected<E>) -> std::result::Result<(), BoxError>;

    /// The position the sink has applied up to under the name `projection` (see
    /// [`Projected::projection`]), if it keeps one with its updates (see [`SinkPosition`]).
    /// The default keeps none.
    ///
    /// # Errors
    /// Any error reading it; the projection retries after its poll interval.
    async fn position(&self, projection: &str) -> std::result::Result<SinkPosition, BoxError> {
        let _ = projection;
        Ok(SinkPosition::NotKept)
    }
}

/// A handler error that parks the event at once, without retries: for an event that will
/// never succeed (a malformed address, a webhook that answers "gone").
///
/// ```
/// use aether_core::BoxError;
/// use aether_projection::Park;
///
/// fn send_mail(to: &str) -> Result<(), BoxError> {
///     if !to.contains('@') {
///         return Err(Park::new(format!("{to:?} is not an address")).into());
///     }
///     Ok(())
/// }
/// assert!(send_mail("nobody").unwrap_err().is::<Park>());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parked: {0}")]
pub struct Park(pub String);

impl Park {
    /// Parks the event with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}
