//! The library's retry policy, as it is, around a store command.

use std::future::Future;

use aether_core::{Error, EventStore};

use super::{run_once, Attempt, DecideFuture, RetryError, RetryPolicy, RetryStats, StatsSnapshot};

/// Runs a command under a [`RetryPolicy`]: on a retryable failure it waits the policy's
/// backoff (`initial_backoff`, doubling up to `max_backoff`, jittered when the policy says so)
/// and runs the command again from scratch, up to `max_retries` retries. The loop is
/// [`RetryPolicy::run`]; this adds the store plumbing, the counters and [`RetryError`].
///
/// Every retry re-runs the whole command, which re-reads the actor's state: simple and always
/// correct. Without jitter the waits are deterministic, so callers that collided once wait the
/// same time and can collide again; keep [`RetryPolicy::jitter`] on (the default) for anything
/// contended.
#[derive(Debug, Default)]
pub struct SimpleRetry {
    policy: RetryPolicy,
    stats: RetryStats,
}

impl SimpleRetry {
    /// A retry loop under `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            stats: RetryStats::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
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
            let stats = &self.stats;
            stats.call();
            // Each attempt's future borrows the command mutably, which a closure cannot lend
            // out of itself; the attempts run one after another, so the lock is never
            // contended.
            let command = tokio::sync::Mutex::new(command);
            let command = &command;
            let result = self
                .policy
                .run(
                    |retry| async move {
                        stats.attempt();
                        let number = retry + 1;
                        let attempt = Attempt {
                            number,
                            conflict: None,
                        };
                        let mut command = command.lock().await;
                        run_once(store, &mut *command, attempt).await.map_err(|e| {
                            if e.is_retryable() {
                                stats.retryable(&e);
                            }
                            (number, e)
                        })
                    },
                    |(_, e): &(u32, Error)| e.is_retryable(),
                )
                .await;
            match result {
                Ok(output) => {
                    stats.success();
                    Ok(output)
                }
                Err((_, e)) if !e.is_retryable() => {
                    stats.failed();
                    Err(RetryError::Failed(e))
                }
                Err((attempts, last)) => {
                    stats.exhausted();
                    Err(RetryError::Exhausted { attempts, last })
                }
            }
        }
    }
}

super::impl_retry_pattern!(SimpleRetry);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aether_core::{Error, Event};
    use aether_store::InMemoryEventStore;

    use super::super::testing::{exact_policy, fast_policy, hammer};
    use super::super::Decision;
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_stay_contiguous_with_and_without_jitter() {
        hammer(SimpleRetry::new(fast_policy())).await;
        hammer(SimpleRetry::new(fast_policy().jitter(false))).await;
    }

    #[tokio::test]
    async fn invalid_input_fails_at_once() {
        let store = InMemoryEventStore::new();
        let retry = SimpleRetry::new(fast_policy());
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
    async fn gives_up_after_max_retries_with_the_last_conflict_and_backs_off() {
        let store = InMemoryEventStore::new();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        let retry = SimpleRetry::new(exact_policy(3, 10, 25));
        let start = tokio::time::Instant::now();
        let numbers = std::sync::Mutex::new(Vec::new());
        // Always writes a stale version, so every attempt conflicts.
        let err = retry
            .run(
                &store,
                |_: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, ()> {
                    numbers.lock().unwrap().push(attempt.number);
                    Box::pin(async { Ok(Decision::append(vec![Event::new("T", "a", 1)])) })
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RetryError::Exhausted { attempts: 4, .. }));
        assert_eq!(err.last_conflict().map(|c| c.current_version), Some(1));
        assert_eq!(*numbers.lock().unwrap(), [1, 2, 3, 4]);
        // The policy's waits: 10 + 20 + 25 (capped) ms of virtual time.
        assert_eq!(start.elapsed(), Duration::from_millis(55));
        let s = retry.stats();
        assert_eq!((s.attempts, s.conflicts, s.exhausted), (4, 4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_jittered_policy_never_waits_longer_than_the_plain_one() {
        let store = InMemoryEventStore::new();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        let retry = SimpleRetry::new(exact_policy(3, 10, 25).jitter(true));
        let start = tokio::time::Instant::now();
        let err = retry
            .run(
                &store,
                |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                    Box::pin(async { Ok(Decision::append(vec![Event::new("T", "a", 1)])) })
                },
            )
            .await
            .unwrap_err();
        assert!(err.is_exhausted());
        assert!(start.elapsed() <= Duration::from_millis(55));
    }
}
