//! Which confirmation rounds the watch has caught up with, without I/O.

use std::collections::VecDeque;

use tokio::time::Instant;

/// Which confirmation rounds the watch has caught up with. I/O-free.
#[derive(Debug, Default)]
pub(super) struct Confirmations {
    /// Stream sequence of the last message the watch applied.
    pub(super) applied: u64,
    /// Rounds not reached yet: when each started and the last event sequence it read. Rounds
    /// run one at a time, so both grow along the queue.
    waiting: VecDeque<(Instant, u64)>,
}

impl Confirmations {
    /// A message at `sequence` was applied. Returns the start of the newest round now reached.
    pub(super) fn applied(&mut self, sequence: u64) -> Option<Instant> {
        self.applied = self.applied.max(sequence);
        self.reached()
    }

    /// A round that started at `t0` read `last` as the last event sequence. Rounds that started
    /// before `stale_before` can no longer make the view fresh and are dropped. Returns the
    /// start of the newest round reached.
    pub(super) fn round(
        &mut self,
        t0: Instant,
        last: u64,
        stale_before: Instant,
    ) -> Option<Instant> {
        self.waiting.push_back((t0, last));
        while self
            .waiting
            .front()
            .is_some_and(|&(start, _)| start < stale_before)
        {
            self.waiting.pop_front();
        }
        self.reached()
    }

    fn reached(&mut self) -> Option<Instant> {
        let mut newest = None;
        while let Some(&(t0, last)) = self.waiting.front() {
            if last > self.applied {
                break;
            }
            newest = Some(t0);
            self.waiting.pop_front();
        }
        newest
    }

    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rounds_confirm_once_the_watch_reaches_their_sequence() {
        let base = Instant::now();
        let mut c = Confirmations::default();
        assert_eq!(c.applied(3), None);
        // Already applied: confirmed at once.
        assert_eq!(c.round(base, 3, base), Some(base));
        // Ahead of the watch: waits.
        assert_eq!(c.round(base + ms(10), 7, base), None);
        assert_eq!(c.round(base + ms(20), 9, base), None);
        assert_eq!(c.applied(6), None);
        assert_eq!(c.applied(8), Some(base + ms(10)));
        // Skipping past several rounds confirms the newest of them.
        assert_eq!(c.round(base + ms(30), 12, base), None);
        assert_eq!(c.applied(20), Some(base + ms(30)));
        assert!(c.waiting.is_empty());
        // An empty stream (last 0) is current at once.
        c.reset();
        assert_eq!(c.round(base, 0, base), Some(base));
    }

    #[test]
    fn rounds_too_old_to_help_are_dropped() {
        let base = Instant::now();
        let mut c = Confirmations::default();
        assert_eq!(c.round(base, 5, base), None);
        assert_eq!(c.round(base + ms(100), 6, base + ms(50)), None);
        assert_eq!(c.waiting.len(), 1);
        assert_eq!(c.applied(6), Some(base + ms(100)));
    }
}
