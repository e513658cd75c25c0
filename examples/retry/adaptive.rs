//! Backoff that follows the contention every caller observes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::EventStore;

use super::{
    drive, max_attempts, Attempt, DecideFuture, RetryError, RetryPolicy, RetryStats, StatsSnapshot,
};

/// An exponentially weighted moving average of the conflict rate, shared by every caller that
/// holds it and updated without locks.
///
/// Each attempt is one sample: 1 for a conflict, 0 for a success; the rate moves by `alpha` of
/// the difference each time, so recent attempts count most and old ones fade.
#[derive(Debug)]
pub struct ContentionTracker {
    /// The rate, as the bits of an `f64` in `[0, 1]`.
    rate: AtomicU64,
    alpha: f64,
}

impl Default for ContentionTracker {
    /// Starts at 0 with `alpha` 0.1.
    fn default() -> Self {
        Self::new(0.1)
    }
}

impl ContentionTracker {
    /// A tracker starting at rate 0. `alpha` in `(0, 1]` is the weight of each new sample;
    /// anything outside (or not a number) falls back to 0.1.
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha > 0.0 && alpha <= 1.0 {
            alpha
        } else {
            0.1
        };
        Self {
            rate: AtomicU64::new(0f64.to_bits()),
            alpha,
        }
    }

    /// The weight of each new sample.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The current conflict rate, between 0 (no conflicts lately) and 1 (every attempt
    /// conflicts).
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Records one attempt's outcome.
    pub fn record(&self, conflicted: bool) {
        let sample = if conflicted { 1.0 } else { 0.0 };
        // A compare-and-swap loop: concurrent updates each apply on top of the other, none is
        // lost. The closure always returns Some, so the result is always Ok.
        let _ = self
            .rate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let rate = f64::from_bits(bits);
                let next = rate + self.alpha * (sample - rate);
                Some(next.clamp(0.0, 1.0).to_bits())
            });
    }
}

/// Configuration of [`AdaptiveRetry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Retries and the backoff being scaled.
    pub policy: RetryPolicy,
    /// Multiplier of the backoff when the conflict rate is 0.
    pub min_factor: f64,
    /// Multiplier of the backoff when the conflict rate is 1.
    pub max_factor: f64,
}

impl Default for AdaptiveConfig {
    /// The default [`RetryPolicy`], scaled between a quarter and eight times.
    fn default() -> Self {
        Self {
            policy: RetryPolicy::default(),
            min_factor: 0.25,
            max_factor: 8.0,
        }
    }
}

impl AdaptiveConfig {
    /// Sets the retries and the backoff.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the multipliers at rate 0 and at rate 1.
    pub fn with_factors(mut self, min_factor: f64, max_factor: f64) -> Self {
        self.min_factor = min_factor;
        self.max_factor = max_factor;
        self
    }

    /// The multiplier at conflict rate `rate`: linear from `min_factor` to `max_factor`.
    pub fn factor(&self, rate: f64) -> f64 {
        let lo = sane(self.min_factor, 1.0);
        let hi = sane(self.max_factor, 1.0).max(lo);
        lo + (hi - lo) * rate.clamp(0.0, 1.0)
    }

    /// The wait before retry number `retry` at conflict rate `rate`: the policy's backoff
    /// (jittered when the policy says so) times [`factor`](Self::factor), never above the
    /// policy's `max_backoff`.
    pub fn delay(&self, retry: u32, rate: f64) -> Duration {
        let cap = self.policy.max_backoff;
        let scaled = self.policy.backoff(retry).as_secs_f64() * self.factor(rate);
        // A huge factor could exceed what a Duration holds; the cap applies then too.
        Duration::try_from_secs_f64(scaled).map_or(cap, |d| d.min(cap))
    }
}

/// A multiplier that is finite and non-negative, or `fallback`.
fn sane(x: f64, fallback: f64) -> f64 {
    if x.is_finite() && x >= 0.0 {
        x
    } else {
        fallback
    }
}

/// Backoff scaled by the conflict rate all its callers observe: short waits while conflicts are
/// rare (fast recovery), long waits while they are common (less wasted work, less load).
///
/// Clones share the same [`ContentionTracker`], as do policies built with
/// [`with_tracker`](Self::with_tracker) — share one per hot actor or per store.
#[derive(Debug, Clone, Default)]
pub struct AdaptiveRetry {
    config: AdaptiveConfig,
    tracker: Arc<ContentionTracker>,
    stats: Arc<RetryStats>,
}

impl AdaptiveRetry {
    /// A retry loop with `config` and a fresh tracker.
    pub fn new(config: AdaptiveConfig) -> Self {
        Self::with_tracker(config, Arc::new(ContentionTracker::default()))
    }

    /// A retry loop with `config` that feeds and reads `tracker`.
    pub fn with_tracker(config: AdaptiveConfig, tracker: Arc<ContentionTracker>) -> Self {
        Self {
            config,
            tracker,
            stats: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// The shared tracker.
    pub fn tracker(&self) -> &Arc<ContentionTracker> {
        &self.tracker
    }

    /// The conflict rate now.
    pub fn contention(&self) -> f64 {
        self.tracker.rate()
    }

    /// The wait the next first retry would get at the current contention (one draw of it,
    /// when the policy jitters).
    pub fn current_delay(&self) -> Duration {
        self.config.delay(1, self.tracker.rate())
    }

    /// Counters over every call so far (shared by clones).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Runs `command` against `store`, recording every attempt in the tracker and waiting as
    /// the current conflict rate says.
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
            let result = drive(
                store,
                command,
                max_attempts(&self.config.policy),
                false,
                &self.stats,
                |retry, error| {
                    // Unavailability says nothing about contention; only conflicts count.
                    if error.is_version_conflict() {
                        self.tracker.record(true);
                    }
                    self.config.delay(retry, self.tracker.rate())
                },
            )
            .await;
            match &result {
                Ok(_) => self.tracker.record(false),
                // The last attempt of an exhausted call never reached the delay hook.
                Err(e) if e.is_exhausted() && e.last_conflict().is_some() => {
                    self.tracker.record(true)
                }
                Err(_) => {}
            }
            result
        }
    }
}

super::impl_retry_pattern!(AdaptiveRetry);

#[cfg(test)]
mod tests {
    use super::super::testing::{exact_policy, fast_policy, hammer};
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_stay_contiguous_and_contention_is_seen() {
        let retry = AdaptiveRetry::new(AdaptiveConfig::default().with_policy(fast_policy()));
        let tracker = retry.tracker().clone();
        hammer(retry).await;
        // The same tracker saw the conflicts (successes pull it back down, so just > 0).
        assert!(tracker.rate() > 0.0);
    }

    #[test]
    fn rate_rises_with_conflicts_and_falls_with_successes() {
        let t = ContentionTracker::new(0.5);
        assert_eq!(t.rate(), 0.0);
        t.record(true);
        assert!((t.rate() - 0.5).abs() < 1e-12);
        t.record(true);
        assert!((t.rate() - 0.75).abs() < 1e-12);
        let high = t.rate();
        t.record(false);
        assert!(t.rate() < high);
        for _ in 0..100 {
            t.record(false);
        }
        assert!(t.rate() < 1e-6);
        assert_eq!(ContentionTracker::new(f64::NAN).alpha(), 0.1);
        assert_eq!(ContentionTracker::new(3.0).alpha(), 0.1);
    }

    #[test]
    fn delay_scales_with_contention_within_the_cap() {
        let c = AdaptiveConfig::default()
            .with_policy(exact_policy(4, 4, 100))
            .with_factors(0.25, 8.0);
        assert_eq!(c.delay(1, 0.0), Duration::from_millis(1));
        assert_eq!(c.delay(1, 1.0), Duration::from_millis(32));
        assert!(c.delay(1, 0.2) < c.delay(1, 0.6));
        assert_eq!(c.delay(5, 1.0), Duration::from_millis(100));
        // Nonsense factors fall back to the plain backoff.
        let odd = c.with_factors(f64::NAN, -1.0);
        assert_eq!(odd.delay(1, 0.7), Duration::from_millis(4));
        // A factor beyond what a Duration holds still stops at the cap.
        let huge = c.with_factors(1e300, 1e300);
        assert_eq!(huge.delay(1, 0.5), Duration::from_millis(100));
        // With jitter the scaled wait stays within the scaled backoff.
        let jittered = AdaptiveConfig::default()
            .with_policy(exact_policy(4, 4, 100).jitter(true))
            .with_factors(0.25, 8.0);
        for _ in 0..100 {
            assert!(jittered.delay(1, 1.0) <= Duration::from_millis(32));
        }
    }

    #[test]
    fn clones_share_the_tracker_and_scaling_follows_it() {
        // Without jitter, so that the two waits compare exactly.
        let a = AdaptiveRetry::new(
            AdaptiveConfig::default().with_policy(RetryPolicy::default().jitter(false)),
        );
        let b = a.clone();
        let calm = b.current_delay();
        for _ in 0..20 {
            a.tracker().record(true);
        }
        assert!(b.contention() > 0.8);
        assert!(b.current_delay() > calm);
    }

    #[test]
    fn concurrent_records_are_not_lost() {
        // Each conflict maps x to 1 - (1 - alpha)(1 - x); these maps commute, so 4000 of them
        // from 0 give exactly 1 - (1 - alpha)^4000 whatever the interleaving, and a lost
        // update would leave the rate visibly lower.
        let alpha = 0.001;
        let t = Arc::new(ContentionTracker::new(alpha));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.record(true);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let expected = 1.0 - (1.0 - alpha).powi(4000);
        assert!(
            (t.rate() - expected).abs() < 1e-9,
            "{} vs {expected}",
            t.rate()
        );
    }
}
