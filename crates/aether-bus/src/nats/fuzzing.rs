//! Incoming-message bookkeeping for the fuzz targets (feature `fuzzing`).
//!
//! Every live subscription feeds the `Aether-Publisher` and `Aether-Sequence` headers of each
//! message it receives, which any client on the server can set, into a gap tracker. The
//! tracker is crate-private and needs a subscription around it; this wrapper lets the fuzzer
//! drive the very same tracker with arbitrary header values.

use super::bus;

/// Most (publisher, namespace) pairs one subscription remembers.
pub const MAX_TRACKED_SOURCES: usize = bus::MAX_TRACKED_SOURCES;

/// The gap tracker of one subscription.
#[derive(Debug, Default)]
pub struct GapTracker(bus::GapTracker);

impl GapTracker {
    /// Records `seq` from `publisher` in `namespace`; returns how many messages before it were
    /// never seen (what the subscription reports as lag).
    pub fn observe(&mut self, publisher: &str, namespace: &str, seq: u64) -> u64 {
        self.0.observe(publisher, namespace, seq)
    }

    /// How many (publisher, namespace) pairs are remembered.
    pub fn tracked(&self) -> usize {
        self.0.tracked()
    }
}
