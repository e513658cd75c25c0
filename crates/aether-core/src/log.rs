//! A store's events in one global order, for consumers of every actor at once (projections).

use std::sync::Arc;

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

/// Which events of a log a reader wants ([`EventLog::read_filtered`]).
///
/// ```
/// use aether_core::{Event, LogFilter};
///
/// let filter = LogFilter::types(["show", "customer"]).shard(3, 8);
/// assert!(filter.matches_type(&Event::new("Reserved", "s-1", 1).with_actor_type("show")));
/// assert!(!filter.matches_type(&Event::new("Opened", "s-1", 1)));
/// assert!(LogFilter::all().matches_type(&Event::new("Opened", "s-1", 1)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// The actor types to read; empty reads every actor, untyped ones included.
    pub actor_types: Vec<String>,
    /// Only the actors of shard `.0` of `.1` (`aether_placement::shard_for` of the actor id).
    /// A store may use it to leave other shards' events out server-side; it may also return
    /// some of them, so the reader still checks. `None`: every shard.
    pub shard: Option<(u32, u32)>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// The events of actors of `types`.
    pub fn types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            actor_types: types.into_iter().map(Into::into).collect(),
            shard: None,
        }
    }

    /// Narrows the filter to shard `index` of `count`.
    pub fn shard(mut self, index: u32, count: u32) -> Self {
        self.shard = Some((index, count));
        self
    }

    /// Whether `event`'s actor type is one the filter reads (the shard is not checked here).
    pub fn matches_type(&self, event: &Event) -> bool {
        self.actor_types.is_empty()
            || event
                .actor_type
                .as_deref()
                .is_some_and(|t| self.actor_types.iter().any(|w| w == t))
    }
}

/// A page of a filtered read ([`EventLog::read_filtered`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    /// The matching events, in order.
    pub events: Vec<LoggedEvent>,
    /// How far the log was read: every matching event at or before this position is in this
    /// page or came before `after`. A reader resumes after it, so it moves past the events
    /// other readers want. `None` when nothing was read past `after`.
    pub read_to: Option<LogPosition>,
}

/// How many pages of `read_after` the default [`EventLog::read_filtered`] scans per call before
/// returning what it has (so a reader of a rare type still returns in bounded time).
const FILTER_SCAN_PAGES: usize = 16;

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

    /// Up to `max` events after `after` that `filter` selects, and how far the log was read
    /// ([`LogPage::read_to`]). The default reads pages of [`read_after`](Self::read_after)
    /// and keeps the events of the filter's types (not checking its shard); stores that can
    /// select on the server (the JetStream store) read only what the filter wants.
    ///
    /// # Errors
    /// Backend errors.
    async fn read_filtered(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        let mut page = LogPage::default();
        if max == 0 {
            return Ok(page);
        }
        let mut cursor = after;
        for _ in 0..FILTER_SCAN_PAGES {
            let read = self.read_after(cursor, max).await?;
            let complete = read.len() < max;
            for logged in read {
                cursor = Some(logged.position);
                page.read_to = cursor;
                if filter.matches_type(&logged.event) {
                    page.events.push(logged);
                    if page.events.len() >= max {
                        return Ok(page);
                    }
                }
            }
            if complete {
                break;
            }
        }
        Ok(page)
    }

    /// The log's partitions when the store spreads actors over several independent logs (the
    /// JetStream store with [`partitions`](https://docs.rs/aether-store) above 1): each is an
    /// `EventLog` of its own, with its own positions, holding every event of its actors in
    /// order; there is no order across partitions. Empty (the default) when the log is one
    /// order, to be read directly.
    ///
    /// A reader of a partitioned log keeps one position per partition; the reads of this log
    /// itself ([`read_after`](Self::read_after), [`head`](Self::head),
    /// [`read_filtered`](Self::read_filtered)) fail with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) there. [`log_partitions`] gives
    /// either kind of log as a list.
    fn partitions(&self) -> Vec<Arc<dyn EventLog>> {
        Vec::new()
    }
}

/// The independent logs `log` is made of: its [`partitions`](EventLog::partitions), or `log`
/// itself when it is one order. Reading each from its own position reads every event once.
///
/// ```
/// use std::sync::Arc;
/// use aether_core::{log_partitions, EventLog};
/// # fn of(log: Arc<dyn EventLog>) {
/// for (index, part) in log_partitions(&log).into_iter().enumerate() {
///     // Keep one position per `index`.
///     # let _ = (index, part);
/// }
/// # }
/// ```
pub fn log_partitions(log: &Arc<dyn EventLog>) -> Vec<Arc<dyn EventLog>> {
    let parts = log.partitions();
    if parts.is_empty() {
        vec![log.clone()]
    } else {
        parts
    }
}
