//! Randomised backoff against thundering herds.

use std::future::Future;
use std::time::Duration;

use aether_core::EventStore;

use super::{
    drive, Attempt, Backoff, DecideFuture, RetryConfig, RetryError, RetryStats, StatsSnapshot,
};

/// How [`JitterRetry`] randomises its waits. With `e = backoff.delay(retry)`:
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, e]`: the widest spread, so the least repeated collision, but some waits
    /// are nearly zero.
    #[default]
    Full,
    /// `e/2` plus uniform in `[0, e/2]`: always waits at least half the backoff, spreads less.
    Equal,
    /// Uniform in `[base, 3 × previous wait]`, capped: each wait depends on the caller's last
    /// one rather than on the attempt number, which decorrelates callers quickly.
    Decorrelated,
}

impl Jitter {
    /// The wait before retry number `retry`, given the wait before the previous one
    /// (`previous` is only used by [`Jitter::Decorrelated`]; pass `backoff.base` before the
    /// first retry).
    pub fn delay(&self, backoff: &Backoff, retry: u32, previous: Duration) -> Duration {
        match self {
            Self::Full => uniform(Duration::ZERO, backoff.delay(retry)),
            Self::Equal => {
                let e = backoff.delay(retry);
                let half = e / 2;
                half + uniform(Duration::ZERO, e - half)
            }
            Self::Decorrelated => {
                let hi = previous
                    .max(backoff.base)
                    .saturating_mul(3)
                    .min(backoff.cap);
                uniform(backoff.base.min(backoff.cap), hi)
            }
        }
    }
}

/// Uniformly random in `[lo, hi]` (`lo` when the range is empty), at nanosecond resolution.
fn uniform(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
    lo + Duration::from_nanos(fastrand::u64(0..=span))
}

/// Exponential backoff with random jitter: callers that collided once spread out instead of
/// waking up together and colliding again.
#[derive(Debug, Default)]
pub struct JitterRetry {
    config: RetryConfig,
    jitter: Jitter,
    stats: RetryStats,
}

impl JitterRetry {
    /// A retry loop with `config` and `jitter`.
    pub fn new(config: RetryConfig, jitter: Jitter) -> Self {
        Self {
            config,
            jitter,
            stats: RetryStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Counters over every call so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Runs `command` against `store`, waiting a random time between attempts.
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
            let backoff = self.config.backoff;
            let jitter = self.jitter;
            let mut previous = backoff.base;
            drive(
                store,
                command,
                self.config.max_attempts,
                false,
                &self.stats,
                move |retry, _| {
                    previous = jitter.delay(&backoff, retry, previous);
                    previous
                },
            )
            .await
        }
    }
}

super::impl_retry_policy!(JitterRetry);

#[cfg(test)]
mod tests {
    use super::super::testing::{fast_config, hammer};
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(200))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_stay_contiguous_with_every_mode() {
        for mode in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            hammer(JitterRetry::new(fast_config(), mode)).await;
        }
    }

    #[test]
    fn full_jitter_stays_within_the_backoff_and_spreads() {
        let b = backoff();
        for retry in 1..=8 {
            let e = b.delay(retry);
            let samples: Vec<_> = (0..500)
                .map(|_| Jitter::Full.delay(&b, retry, Duration::ZERO))
                .collect();
            assert!(samples.iter().all(|d| *d <= e));
            // Not a constant: the whole point is to spread callers.
            assert!(samples.iter().any(|d| *d < e / 2) && samples.iter().any(|d| *d > e / 2));
        }
    }

    #[test]
    fn equal_jitter_keeps_at_least_half() {
        let b = backoff();
        for retry in 1..=8 {
            let e = b.delay(retry);
            for _ in 0..500 {
                let d = Jitter::Equal.delay(&b, retry, Duration::ZERO);
                assert!(d >= e / 2 && d <= e, "{d:?} outside [{:?}, {e:?}]", e / 2);
            }
        }
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_wait_within_base_and_cap() {
        let b = backoff();
        let mut previous = b.base;
        for retry in 1..=50 {
            let d = Jitter::Decorrelated.delay(&b, retry, previous);
            assert!(d >= b.base, "{d:?} below base");
            assert!(
                d <= (previous * 3).min(b.cap),
                "{d:?} above 3 x {previous:?}"
            );
            previous = d;
        }
        // A cap below the base wins.
        let odd = Backoff::new(Duration::from_millis(50), Duration::from_millis(5));
        assert_eq!(
            Jitter::Decorrelated.delay(&odd, 1, odd.base),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn uniform_handles_empty_and_huge_ranges() {
        let d = Duration::from_millis(3);
        assert_eq!(uniform(d, d), d);
        assert_eq!(uniform(d, Duration::ZERO), d);
        let big = uniform(Duration::ZERO, Duration::MAX);
        assert!(big <= Duration::MAX);
    }
}
