//! A store's events in one global order, for consumers of every actor at once (projections).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::Event;

/// Where an event sits in a store's global order: the position of the stored message (the
/// JetStream stream sequence, or the in-memory store's append counter) and the event's index
/// within it (a multi-event batch is one message). Positions only grow; comparing two tells
/// which event was stored first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The stored message's position.
    pub sequence: u64,
    /// The event's index within the message (0 for a message of one event).
    pub index: u32,
}

impl LogPosition {
    /// The position of event `index` of message `sequence`.
    pub fn new(sequence: u64, index: u32) -> Self {
        Self { sequence, index }
    }
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.sequence, self.index)
    }
}

/// An event with its position in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Its position.
    pub position: LogPosition,
    /// The event.
    pub event: Event,
}

/// The events of every actor of a store, in the order they were stored.
///
/// Reading from a position is how a consumer catches up and then follows live writes with no
/// gap and no duplicate: it keeps the position of the last event it handled and asks for what
/// comes after it. An event becomes readable here once its save has been acknowledged, and
/// every event of one actor comes in version order.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `max` events stored after `after` (from the first event when `None`), in order.
    /// Fewer (or none) means the reader has caught up for now.
    ///
    /// # Errors
    /// Backend errors ([`Error::Unavailable`](crate::Error::Unavailable) and others).
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>>;

    /// Where the log ends: the sequence of the last stored message, with index 0, `None` when
    /// nothing is stored. A multi-event message's later events share its sequence, and on
    /// JetStream the last message may be a snapshot; so a reader has caught up with what was
    /// stored before the call once its last position's `sequence` reaches the head's (lag is
    /// counted in sequences).
    ///
    /// # Errors
    /// Backend errors.
    async fn head(&self) -> Result<Option<LogPosition>>;
}
