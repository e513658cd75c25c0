//! What readers and the watch share: the map of versions and the freshness stamp.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// What readers and the watch share. The read path is an atomic load, a clock read and a map
/// probe: no lock besides the map's shard lock.
pub(super) struct Shared {
    pub(super) versions: DashMap<String, u64, foldhash::fast::RandomState>,
    pub(super) max_staleness: Duration,
    /// The reference point `confirmed` counts from.
    origin: Instant,
    /// When the view was last confirmed current: nanoseconds after `origin`, plus one; 0 when
    /// never (or since the last reset).
    confirmed: AtomicU64,
    /// Counts resets (stream re-created), so a reader can tell that the map was emptied while
    /// it looked.
    epoch: AtomicU64,
    pub(super) fallbacks: AtomicU64,
    pub(super) malformed: AtomicU64,
}

impl Shared {
    pub(super) fn new(max_staleness: Duration) -> Self {
        Self {
            versions: DashMap::default(),
            max_staleness,
            origin: Instant::now(),
            confirmed: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Whether the view was confirmed current as of a moment within `max_staleness` of `now`.
    pub(super) fn fresh(&self, now: Instant) -> bool {
        match self.confirmed.load(Ordering::Acquire) {
            0 => false,
            stamp => {
                let at = self.origin + Duration::from_nanos(stamp - 1);
                now.saturating_duration_since(at) <= self.max_staleness
            }
        }
    }

    /// Records that everything acknowledged before `t0` is in the map. Only ever moves forward.
    pub(super) fn confirm(&self, t0: Instant) {
        let nanos = u64::try_from(t0.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1);
        // Release: the map updates made before this are visible to a reader that sees the stamp.
        self.confirmed.fetch_max(nanos + 1, Ordering::Release);
    }

    /// The answer for a read that started at `now`, when the view may give it.
    pub(super) fn answer(&self, actor_id: &str, now: Instant) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if !self.fresh(now) {
            return None;
        }
        let version = self.version(actor_id);
        // A reset between the freshness check and the lookup may have emptied the map: the
        // lookup then synchronised with the clearing, which came after the epoch moved.
        (self.epoch.load(Ordering::Acquire) == epoch).then_some(version)
    }

    pub(super) fn version(&self, actor_id: &str) -> u64 {
        self.versions.get(actor_id).map_or(0, |v| *v)
    }

    /// Raises the actor's version to at least `version` and returns the result.
    pub(super) fn raise<A: AsRef<str> + Into<String>>(&self, actor_id: A, version: u64) -> u64 {
        if let Some(mut v) = self.versions.get_mut(actor_id.as_ref()) {
            *v = (*v).max(version);
            return *v;
        }
        let mut v = self.versions.entry(actor_id.into()).or_insert(0);
        *v = (*v).max(version);
        *v
    }

    /// Forgets everything: the stream the map described is gone.
    pub(super) fn reset(&self) {
        // Order matters for `answer`: first no reader may trust the map, then the epoch moves,
        // then the map empties.
        self.confirmed.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.versions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn freshness_follows_the_bound_and_resets() {
        let shared = Shared::new(ms(100));
        let t = shared.origin;
        assert!(!shared.fresh(t));
        assert_eq!(shared.answer("a", t), None);
        shared.raise("a", 4);
        shared.confirm(t + ms(10));
        assert!(shared.fresh(t + ms(110)));
        assert!(!shared.fresh(t + ms(111)));
        assert_eq!(shared.answer("a", t + ms(50)), Some(4));
        assert_eq!(shared.answer("b", t + ms(50)), Some(0));
        // The stamp never moves back.
        shared.confirm(t);
        assert!(shared.fresh(t + ms(110)));
        shared.reset();
        assert!(!shared.fresh(t + ms(20)));
        assert_eq!(shared.version("a"), 0);
    }

    #[test]
    fn versions_only_grow() {
        let shared = Shared::new(ms(100));
        assert_eq!(shared.raise("a", 5), 5);
        assert_eq!(shared.raise("a".to_string(), 3), 5);
        assert_eq!(shared.raise("a", 6), 6);
        assert_eq!(shared.version("a"), 6);
    }
}
