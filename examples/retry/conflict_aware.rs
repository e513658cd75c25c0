//! Retry that learns from each conflict.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aether_core::{Error, EventStore};

use super::{
    drive, max_attempts, Attempt, DecideFuture, RetryError, RetryPolicy, RetryStats, StatsSnapshot,
};

/// Configuration of [`ConflictAwareRetry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictAwareConfig {
    /// Retries and the backoff the gap scales.
    pub policy: RetryPolicy,
    /// How many times per call to retry at once, without waiting, after a conflict with a gap
    /// of one (a single writer got in first).
    pub immediate_retries: u32,
    /// Largest multiplier the gap applies to the backoff.
    pub max_gap_factor: u32,
}

impl Default for ConflictAwareConfig {
    /// The default [`RetryPolicy`], one immediate retry, gap factor up to 8.
    fn default() -> Self {
        Self {
            policy: RetryPolicy::default(),
            immediate_retries: 1,
            max_gap_factor: 8,
        }
    }
}

impl ConflictAwareConfig {
    /// Sets the retries and the backoff.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how many immediate retries a call may make.
    pub fn with_immediate_retries(mut self, n: u32) -> Self {
        self.immediate_retries = n;
        self
    }

    /// Sets the largest gap multiplier.
    pub fn with_max_gap_factor(mut self, factor: u32) -> Self {
        self.max_gap_factor = factor;
        self
    }

    /// The wait after a failed attempt number `retry`, given how many immediate retries this
    /// call has already used.
    ///
    /// For a conflict, the *gap* is how many versions other writers appended since the attempt
    /// read its state (`current_version - attempted_version + 1`). A gap of one means a single
    /// writer won and the store just told us the exact version, so retrying at once is likely
    /// to succeed; a larger gap means a busy actor, so the backoff is multiplied by the gap
    /// (up to [`max_gap_factor`](Self::max_gap_factor)), never beyond the policy's
    /// `max_backoff`. Other errors get the policy's backoff as it is.
    pub fn delay(&self, retry: u32, error: &Error, immediate_used: u32) -> Duration {
        let base = self.policy.backoff(retry);
        match error.as_version_conflict() {
            Some(c) => {
                let gap = gap(c.attempted_version, c.current_version);
                if gap <= 1 && immediate_used < self.immediate_retries {
                    Duration::ZERO
                } else {
                    let factor = u32::try_from(gap)
                        .unwrap_or(u32::MAX)
                        .clamp(1, self.max_gap_factor.max(1));
                    base.saturating_mul(factor).min(self.policy.max_backoff)
                }
            }
            None => base,
        }
    }
}

/// Versions other writers appended since the rejected attempt read its state.
fn gap(attempted: u64, current: u64) -> u64 {
    current.saturating_add(1).saturating_sub(attempted).max(1)
}

/// Learns from each conflict: retries at once when a single writer got in first, handing the
/// conflict to that retry ([`Attempt::conflict`]), and waits longer the further behind the
/// attempt was.
///
/// The conflict carries the store's current version, so a command that only needs the next
/// version (see [`next_version`](super::next_version)) or that keeps its state and can fetch
/// just the newer events (`get_events(actor, known + 1)`) rebuilds without a full re-read.
/// The version is only fresh right after the conflict, so a retry that had to wait gets no
/// conflict and re-reads; commands that must see the full state can always ignore the hint.
#[derive(Debug, Default)]
pub struct ConflictAwareRetry {
    config: ConflictAwareConfig,
    stats: RetryStats,
    largest_gap: AtomicU64,
    immediate: AtomicU64,
}

impl ConflictAwareRetry {
    /// A retry loop with `config`.
    pub fn new(config: ConflictAwareConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConflictAwareConfig {
        &self.config
    }

    /// Counters over every call so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The largest gap any conflict has shown so far: how far behind the busiest retry was.
    pub fn largest_gap(&self) -> u64 {
        self.largest_gap.load(Ordering::Relaxed)
    }

    /// How many retries ran at once, without waiting.
    pub fn immediate_retries(&self) -> u64 {
        self.immediate.load(Ordering::Relaxed)
    }

    /// Runs `command` against `store`, passing each conflict to the next attempt.
    ///
    /// # Errors
    /// [`RetryError::Failed`] at once on a non-retryable error; [`RetryError::Exhausted`] with
    /// the last error when every attempt failed.
    // Spelled out rather than `async fn` so the future is declared `Send`: with a
    // higher-ranked command closure the compiler cannot otherwise prove it for `tokio::spawn`
    // (rust-lang/rust#100013).
    #[allow(clippy::manual_async_fn)]
    pub fn run<'s, T, F>(
        &'s self,
        store: &'s dyn EventStore,
        command: F,
    ) -> impl Future<Output = Result<T, RetryError>> + Send + 's
    where
        T: Send + 's,
        F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 's,
    {
        async move {
            let mut immediate_used = 0u32;
            drive(
                store,
                command,
                max_attempts(&self.config.policy),
                true,
                &self.stats,
                |retry, error| {
                    if let Some(c) = error.as_version_conflict() {
                        self.largest_gap.fetch_max(
                            gap(c.attempted_version, c.current_version),
                            Ordering::Relaxed,
                        );
                    }
                    let wait = self.config.delay(retry, error, immediate_used);
                    if wait.is_zero() {
                        immediate_used += 1;
                        self.immediate.fetch_add(1, Ordering::Relaxed);
                    }
                    wait
                },
            )
            .await
        }
    }
}

super::impl_retry_pattern!(ConflictAwareRetry);

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use aether_core::Event;
    use aether_store::InMemoryEventStore;

    use super::super::testing::{exact_policy, fast_policy, hammer};
    use super::super::{next_version, Decision};
    use super::*;

    fn config() -> ConflictAwareConfig {
        ConflictAwareConfig::default()
            .with_policy(exact_policy(9, 10, 100))
            .with_immediate_retries(1)
            .with_max_gap_factor(4)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_stay_contiguous() {
        let retry =
            ConflictAwareRetry::new(ConflictAwareConfig::default().with_policy(fast_policy()));
        hammer(retry).await;
    }

    #[test]
    fn gap_drives_the_wait() {
        let c = config();
        let one_behind = Error::version_conflict("a", 5, 5);
        let far_behind = Error::version_conflict("a", 5, 7);
        let very_far = Error::version_conflict("a", 5, 500);
        // One writer got in first: go at once, but only as often as allowed.
        assert_eq!(c.delay(1, &one_behind, 0), Duration::ZERO);
        assert_eq!(c.delay(1, &one_behind, 1), Duration::from_millis(10));
        // Three versions behind: three times the backoff.
        assert_eq!(c.delay(1, &far_behind, 0), Duration::from_millis(30));
        assert_eq!(c.delay(2, &far_behind, 0), Duration::from_millis(60));
        // The multiplier and the cap both bound it.
        assert_eq!(c.delay(1, &very_far, 0), Duration::from_millis(40));
        assert_eq!(c.delay(4, &very_far, 0), Duration::from_millis(100));
        // Unavailability gets the plain backoff.
        let down = Error::unavailable("x", std::io::Error::other("down"));
        assert_eq!(c.delay(2, &down, 0), Duration::from_millis(20));
    }

    /// Runs one call whose first attempt writes `first_version` (a stale view); later attempts
    /// use [`next_version`]. Returns the stored version, the attempts seen and how many of
    /// them had to read the store.
    async fn stale_then_next(
        store: &InMemoryEventStore,
        retry: &ConflictAwareRetry,
        first_version: u64,
    ) -> (u64, Vec<Attempt>, u32) {
        let reads = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (r, s) = (reads.clone(), seen.clone());
        let version = retry
            .run(
                store,
                move |store: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, u64> {
                    let (r, s) = (r.clone(), s.clone());
                    Box::pin(async move {
                        s.lock().unwrap().push(attempt.clone());
                        let version = if attempt.number == 1 {
                            first_version
                        } else {
                            if attempt.known_version("a").is_none() {
                                r.fetch_add(1, Ordering::SeqCst);
                            }
                            next_version(store, "a", &attempt).await?
                        };
                        Ok(Decision::new(vec![Event::new("T", "a", version)], version))
                    })
                },
            )
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        (version, seen, reads.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn one_behind_retries_at_once_with_the_conflict_and_skips_the_read() {
        let store = InMemoryEventStore::new();
        for v in 1..=3 {
            store.save_event(&Event::new("T", "a", v)).await.unwrap();
        }
        let retry = ConflictAwareRetry::new(config());
        let start = tokio::time::Instant::now();
        // Read version 2, so tried 3: one writer got in first.
        let (version, seen, reads) = stale_then_next(&store, &retry, 3).await;
        assert_eq!(version, 4);
        assert_eq!(reads, 0);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].known_version("a"), Some(3));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!((retry.largest_gap(), retry.immediate_retries()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn far_behind_waits_by_the_gap_and_then_re_reads() {
        let store = InMemoryEventStore::new();
        for v in 1..=3 {
            store.save_event(&Event::new("T", "a", v)).await.unwrap();
        }
        let retry = ConflictAwareRetry::new(config());
        let start = tokio::time::Instant::now();
        // Read version 0, so tried 1: three writers got in first.
        let (version, seen, reads) = stale_then_next(&store, &retry, 1).await;
        assert_eq!(version, 4);
        assert_eq!(reads, 1);
        assert_eq!(seen[1].conflict, None);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!((retry.largest_gap(), retry.immediate_retries()), (3, 0));
    }
}
