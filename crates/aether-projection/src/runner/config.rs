//! A projection's settings.

use std::time::Duration;

use aether_actor::RetryPolicy;
use aether_core::{Error, Result};

#[cfg(doc)]
use super::{Projection, SinkPosition};
#[cfg(doc)]
use crate::store::ProjectionStore;

/// In which order events are handed to the handler when several are handled at once
/// ([`ProjectionConfig::concurrency`] above 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Each actor's events one after the other, in their order; different actors at once.
    #[default]
    PerActor,
    /// Any order: every event of a page at once (up to the concurrency).
    Any,
}

/// What to do with an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Set it aside (list and replay it later) and go on with the next event.
    #[default]
    Park,
    /// Stop the projection at it; it is handled again when the projection runs again.
    Stop,
}

/// Settings of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionConfig {
    /// Events read per page (and the most handled between two checkpoints).
    pub page_size: usize,
    /// Events handled at once within a page (1: one after the other, in the global order).
    /// Above 1 the page is checkpointed once all its events are handled or parked, and
    /// [`order`](Self::order) says what stays in order. A sink that keeps its own position
    /// ([`SinkPosition::Kept`]) needs 1.
    pub concurrency: usize,
    /// What stays in order when `concurrency` is above 1.
    pub order: Order,
    /// How long to wait before looking for new events once caught up.
    pub poll_interval: Duration,
    /// Retries of a failing handler before the event is parked.
    pub retry: RetryPolicy,
    /// Park or stop.
    pub on_failure: OnFailure,
    /// How often a projection whose sink keeps its position ([`SinkPosition::Kept`]) reports
    /// its status to the projection store ([`ProjectionStore::report_status`]), so that
    /// operators' tools see it although it writes no checkpoint: at most once per interval
    /// while it runs (an idle one too, so the report's age shows it is alive), and once at the
    /// end of [`Projection::catch_up`].
    pub status_interval: Duration,
}

impl ProjectionConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a page size or concurrency of 0.
    pub fn validate(&self) -> Result<()> {
        if self.page_size == 0 {
            return Err(Error::invalid("the page size must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("the concurrency must be at least 1"));
        }
        Ok(())
    }
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            page_size: 500,
            concurrency: 1,
            order: Order::PerActor,
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy::default().max_retries(3),
            on_failure: OnFailure::Park,
            status_interval: Duration::from_secs(1),
        }
    }
}
