//! Where a projection is ([`ProjectionStatus`], [`lag`]), what a catch-up did
//! ([`CatchUpReport`]), and the metrics they are exported as.

use std::time::Duration;

use aether_core::LogPosition;

#[cfg(doc)]
use super::{OnFailure, Projection, ProjectionConfig, SinkPosition};

/// Where a projection is. On a partitioned log, [`Projection::status`] sums its partitions'
/// (each one's is in [`Projection::partition_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The last event it handled or parked (its checkpoint, or the position its sink keeps),
    /// `None` before the first; `None` too in the sum over a partitioned log's partitions
    /// (a position belongs to one partition).
    pub position: Option<LogPosition>,
    /// Whether its sink keeps the position ([`SinkPosition::Kept`]): it then writes no
    /// checkpoint and reports its status to the store instead
    /// ([`ProjectionConfig::status_interval`]). Known from its first look at the log.
    pub kept_by_sink: bool,
    /// The last stored message when it last looked (`None`: the log was empty, or it has not
    /// looked yet; [`lag`](Self::lag) tells which; always `None` in the sum over a
    /// partitioned log's partitions).
    pub head: Option<LogPosition>,
    /// Stored messages after its position when it last looked (`Some(0)`: caught up). `None`
    /// until it has read the log's head: right after it starts, how far behind it is is not
    /// known. While it handles a page, the page's events count as not yet handled, so a lag
    /// of 0 means everything up to the head was handled (or parked). On a partitioned log,
    /// the sum of each partition's lag (its head against its own position), known once every
    /// partition's is.
    pub lag: Option<u64>,
    /// How far behind the newest event it handled is, by the events' timestamps (zero when
    /// caught up; `None`, like `lag`, until it has looked). On a partitioned log, the largest
    /// of its partitions'.
    pub lag_time: Option<Duration>,
    /// Events handled since it started (successfully: parked events are not counted here).
    pub handled: u64,
    /// Events parked since it started.
    pub parked: u64,
    /// The last handler or read error.
    pub last_error: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
}

/// What [`Projection::catch_up`] did: events read, handled and parked, separately (summed
/// over the partitions of a partitioned log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatchUpReport {
    /// Events read from the log: handled, parked, or (in a partition) another partition's.
    pub read: u64,
    /// Events the handler applied.
    pub handled: u64,
    /// Events set aside (see [`OnFailure::Park`]): not applied.
    pub parked: u64,
}

impl CatchUpReport {
    pub(super) fn add(&mut self, other: Self) {
        self.read += other.read;
        self.handled += other.handled;
        self.parked += other.parked;
    }
}

/// A projection's lag: the stored messages between its `position` and the log's `head` (an
/// upper bound on events: snapshot messages and batches count once).
///
/// ```
/// use aether_core::LogPosition;
/// assert_eq!(aether_projection::lag(Some(LogPosition::new(7, 0)), Some(LogPosition::new(10, 2))), 3);
/// assert_eq!(aether_projection::lag(None, Some(LogPosition::new(4, 0))), 4);
/// assert_eq!(aether_projection::lag(None, None), 0);
/// ```
pub fn lag(position: Option<LogPosition>, head: Option<LogPosition>) -> u64 {
    match (position, head) {
        (_, None) => 0,
        (None, Some(h)) => h.sequence,
        (Some(p), Some(h)) => h.sequence.saturating_sub(p.sequence),
    }
}

/// Hands a projection's position and lag to the metrics exporter:
/// `aether_projection_position{projection}` (the checkpoint's stream sequence),
/// `aether_projection_lag{projection}` (stored messages behind) and
/// `aether_projection_lag_seconds{projection}`; the lag only once known.
pub(super) fn export(status: &ProjectionStatus) {
    let name = status.name.clone();
    let position = status.position.map_or(0, |p| p.sequence);
    metrics::gauge!("aether_projection_position", "projection" => name.clone())
        .set(position as f64);
    if let Some(lag) = status.lag {
        metrics::gauge!("aether_projection_lag", "projection" => name.clone()).set(lag as f64);
    }
    if let Some(lag_time) = status.lag_time {
        metrics::gauge!("aether_projection_lag_seconds", "projection" => name)
            .set(lag_time.as_secs_f64());
    }
}
