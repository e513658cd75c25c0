//! Retry with capped exponential backoff.

use std::future::Future;

use aether_core::EventStore;

use super::{drive, Attempt, DecideFuture, RetryConfig, RetryError, RetryStats, StatsSnapshot};

/// Runs a command; on a retryable failure waits `base`, `2·base`, `4·base`... (capped) and runs
/// it again from scratch, up to [`RetryConfig::max_attempts`] attempts.
///
/// Every retry re-runs the whole command, which re-reads the actor's state: simple and always
/// correct. The delays are deterministic, so callers that collided once wait the same time and
/// can collide again; under real contention prefer [`JitterRetry`](super::JitterRetry).
#[derive(Debug, Default)]
pub struct SimpleRetry {
    config: RetryConfig,
    stats: RetryStats,
}

impl SimpleRetry {
    /// A retry loop with `config`.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config,
            stats: RetryStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Counters over every call so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Runs `command` against `store` with retries.
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
            drive(
                store,
                command,
                self.config.max_attempts,
                false,
                &self.stats,
                |retry, _| backoff.delay(retry),
            )
            .await
        }
    }
}

super::impl_retry_policy!(SimpleRetry);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aether_core::{Error, Event};
    use aether_store::InMemoryEventStore;

    use super::super::testing::{fast_config, hammer};
    use super::super::{Backoff, Decision};
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_stay_contiguous() {
        hammer(SimpleRetry::new(fast_config())).await;
    }

    #[tokio::test]
    async fn invalid_input_fails_at_once() {
        let store = InMemoryEventStore::new();
        let retry = SimpleRetry::new(fast_config());
        let err = retry
            .run(
                &store,
                |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                    Box::pin(async { Ok(Decision::append(vec![Event::new("T", "a", 0)])) })
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, RetryError::Failed(Error::InvalidInput(_))),
            "{err:?}"
        );
        let s = retry.stats();
        assert_eq!((s.attempts, s.failed), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_conflict_and_backs_off() {
        let store = InMemoryEventStore::new();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        let retry = SimpleRetry::new(RetryConfig {
            max_attempts: 4,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(25)),
        });
        let start = tokio::time::Instant::now();
        // Always writes a stale version, so every attempt conflicts.
        let err = retry
            .run(
                &store,
                |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                    Box::pin(async { Ok(Decision::append(vec![Event::new("T", "a", 1)])) })
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RetryError::Exhausted { attempts: 4, .. }));
        assert_eq!(err.last_conflict().map(|c| c.current_version), Some(1));
        // 10 + 20 + 25 (capped) ms of virtual time.
        assert_eq!(start.elapsed(), Duration::from_millis(55));
        let s = retry.stats();
        assert_eq!((s.attempts, s.conflicts, s.exhausted), (4, 4, 1));
    }
}
