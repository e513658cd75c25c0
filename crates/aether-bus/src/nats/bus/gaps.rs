//! The tracker that finds gaps in the per-publisher sequence numbers of arriving messages.
//! Kept apart because it is pure bookkeeping on untrusted input (any client on the server can
//! publish a frame or set the headers), which the fuzz targets drive directly.

use std::collections::HashMap;

/// Most (publisher, namespace) pairs a subscription remembers for gap detection; beyond it the
/// memory is reset (a gap spanning the reset goes unnoticed).
pub(crate) const MAX_TRACKED_SOURCES: usize = 65_536;

/// Gap detection: the last sequence seen per (publisher, namespace).
///
/// Nested by publisher so that a message from a known pair is looked up by `&str`, without
/// allocating a key: this runs for every message a subscription receives.
#[derive(Debug, Default)]
pub(crate) struct GapTracker {
    last: HashMap<
        String,
        HashMap<String, u64, foldhash::fast::RandomState>,
        foldhash::fast::RandomState,
    >,
    /// (publisher, namespace) pairs in `last`.
    pairs: usize,
}

impl GapTracker {
    /// Records `seq` from `publisher` in `namespace`; returns how many messages before it were
    /// never seen.
    pub(crate) fn observe(&mut self, publisher: &str, namespace: &str, seq: u64) -> u64 {
        if let Some(last) = self
            .last
            .get_mut(publisher)
            .and_then(|per_namespace| per_namespace.get_mut(namespace))
        {
            let missed = seq.saturating_sub(*last).saturating_sub(1);
            if seq > *last {
                *last = seq;
            }
            return missed;
        }
        if self.pairs >= MAX_TRACKED_SOURCES {
            self.last.clear();
            self.pairs = 0;
        }
        self.last
            .entry(publisher.to_string())
            .or_default()
            .insert(namespace.to_string(), seq);
        self.pairs += 1;
        0
    }

    /// How many (publisher, namespace) pairs are remembered: the fuzz targets check it stays
    /// bounded whatever the headers say.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn tracked(&self) -> usize {
        self.pairs
    }
}

#[cfg(test)]
mod tests;
