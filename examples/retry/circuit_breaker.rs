//! A circuit breaker around any retry pattern.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aether_core::{Error, EventStore};
use tokio::time::Instant;

use super::{Attempt, DecideFuture, RetryError, RetryPattern, StatsSnapshot};

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls are refused at once until the cooldown has passed.
    Open,
    /// The cooldown has passed: one probe call goes through; its outcome closes or reopens the
    /// circuit.
    HalfOpen,
}

/// Configuration of [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the circuit (0 is treated as 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, probes after 30 s.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Sets the failure threshold.
    pub fn with_failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Sets the cooldown.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }
}

/// Why a call through a [`CircuitBreaker`] did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError {
    /// The circuit is open (or half-open with its probe already out): the command was not run.
    ///
    /// Handling: fail fast to your caller, serve a degraded answer, or try again after
    /// `retry_after` (zero while a probe is deciding).
    #[error("circuit open; retry after {retry_after:?}")]
    Open {
        /// Time left until the circuit lets a probe through.
        retry_after: Duration,
    },
    /// The command ran and the wrapped pattern gave up.
    #[error(transparent)]
    Retry(#[from] RetryError),
}

impl BreakerError {
    /// Whether the command was refused without running.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }
}

impl From<BreakerError> for Error {
    fn from(e: BreakerError) -> Self {
        match e {
            BreakerError::Open { retry_after } => Error::unavailable(
                "circuit breaker",
                format!("circuit open; retry after {retry_after:?}"),
            ),
            BreakerError::Retry(r) => r.into_error(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
    probe_out: bool,
    opened: u64,
    rejected: u64,
}

/// Protects a struggling backend (and its callers) by refusing calls for a while after too
/// many consecutive failures, wrapping any [`RetryPattern`].
///
/// **What counts as a failure:** a call whose pattern ran out of attempts
/// ([`RetryError::Exhausted`], whether on conflicts or on unavailability), or that ended with
/// [`Error::Unavailable`]. A single version conflict is not a failure: it is the normal
/// outcome of optimistic concurrency and the wrapped pattern retries it; only conflicts that
/// persist through every retry mean the actor (or the store) is overloaded, which is when
/// shedding load helps. Non-retryable errors such as invalid input are the caller's problem,
/// not the backend's, and leave the count unchanged. A success resets it.
///
/// State changes are made under a short `std` mutex that is never held across an `.await`.
/// Time comes from `tokio::time`, so tests can pause and advance it.
#[derive(Debug)]
pub struct CircuitBreaker<P> {
    pattern: P,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl<P: RetryPattern> CircuitBreaker<P> {
    /// A closed breaker around `pattern`.
    pub fn new(config: BreakerConfig, pattern: P) -> Self {
        Self {
            pattern,
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                probe_out: false,
                opened: 0,
                rejected: 0,
            }),
        }
    }

    /// The wrapped pattern.
    pub fn pattern(&self) -> &P {
        &self.pattern
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as a call made now would find it (an open circuit whose cooldown has passed
    /// reports [`BreakerState::HalfOpen`]).
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if self.cooled_down(&inner) => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Consecutive failed calls so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// How many times the circuit has opened.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    /// How many calls were refused because the circuit was open.
    pub fn rejected(&self) -> u64 {
        self.lock().rejected
    }

    /// The wrapped pattern's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.pattern.stats()
    }

    /// Runs `command` through the wrapped pattern if the circuit lets it.
    ///
    /// # Errors
    /// [`BreakerError::Open`] without running the command while the circuit is open;
    /// [`BreakerError::Retry`] when the pattern gave up.
    // Spelled out rather than `async fn` so the future is declared `Send`: with a
    // higher-ranked command closure the compiler cannot otherwise prove it for `tokio::spawn`
    // (rust-lang/rust#100013).
    #[allow(clippy::manual_async_fn)]
    pub fn call<'s, T, F>(
        &'s self,
        store: &'s dyn EventStore,
        command: F,
    ) -> impl Future<Output = Result<T, BreakerError>> + Send + 's
    where
        T: Send + 's,
        F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 's,
    {
        async move {
            let permit = self.admit()?;
            let result = self.pattern.run(store, command).await;
            let verdict = match &result {
                Ok(_) => Verdict::Success,
                Err(e) if counts_as_failure(e) => Verdict::Failure,
                Err(_) => Verdict::Neutral,
            };
            permit.finish(verdict);
            result.map_err(BreakerError::Retry)
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is a few plain fields updated together; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cooled_down(&self, inner: &Inner) -> bool {
        inner.opened_at.elapsed() >= self.config.cooldown
    }

    fn admit(&self) -> Result<Permit<'_, P>, BreakerError> {
        let mut inner = self.lock();
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open if self.cooled_down(&inner) => {
                inner.state = BreakerState::HalfOpen;
                inner.probe_out = true;
                tracing::info!("circuit half-open: letting a probe through");
                true
            }
            BreakerState::HalfOpen if !inner.probe_out => {
                inner.probe_out = true;
                true
            }
            BreakerState::Open => {
                inner.rejected += 1;
                let retry_after = self
                    .config
                    .cooldown
                    .saturating_sub(inner.opened_at.elapsed());
                return Err(BreakerError::Open { retry_after });
            }
            BreakerState::HalfOpen => {
                inner.rejected += 1;
                return Err(BreakerError::Open {
                    retry_after: Duration::ZERO,
                });
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            finished: false,
        })
    }

    fn record(&self, probe: bool, verdict: Verdict) {
        let mut inner = self.lock();
        match verdict {
            Verdict::Success => {
                if inner.state != BreakerState::Closed {
                    tracing::info!("circuit closed");
                }
                inner.state = BreakerState::Closed;
                inner.consecutive_failures = 0;
            }
            Verdict::Failure => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let trip =
                    probe || inner.consecutive_failures >= self.config.failure_threshold.max(1);
                // Calls admitted before the circuit opened may finish after it; they must not
                // restart the cooldown.
                if trip && inner.state != BreakerState::Open {
                    inner.state = BreakerState::Open;
                    inner.opened_at = Instant::now();
                    inner.opened += 1;
                    tracing::warn!(
                        failures = inner.consecutive_failures,
                        cooldown = ?self.config.cooldown,
                        "circuit opened"
                    );
                }
            }
            Verdict::Neutral => {}
        }
        if probe {
            inner.probe_out = false;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Neutral,
}

/// See the "what counts as a failure" note on [`CircuitBreaker`].
fn counts_as_failure(e: &RetryError) -> bool {
    e.is_exhausted() || matches!(e.last_error(), Error::Unavailable { .. })
}

/// Leave to run one call. If the call is cancelled (its future dropped) before it finishes, the
/// probe slot is released so the half-open circuit is not stuck.
struct Permit<'b, P: RetryPattern> {
    breaker: &'b CircuitBreaker<P>,
    probe: bool,
    finished: bool,
}

impl<P: RetryPattern> Permit<'_, P> {
    fn finish(mut self, verdict: Verdict) {
        self.finished = true;
        self.breaker.record(self.probe, verdict);
    }
}

impl<P: RetryPattern> Drop for Permit<'_, P> {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.record(self.probe, Verdict::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use aether_core::{ActorKey, Event, Result as CoreResult};
    use aether_store::InMemoryEventStore;
    use async_trait::async_trait;

    use super::super::testing::{
        assert_contiguous, exact_policy, fast_policy, increment, PER_TASK, TASKS,
    };
    use super::super::{Decision, SimpleRetry};
    use super::*;

    /// An in-memory store that answers `Unavailable` while `down` is set.
    #[derive(Default)]
    struct Flaky {
        inner: InMemoryEventStore,
        down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> CoreResult<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(Error::unavailable("test store", "down"))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl EventStore for Flaky {
        async fn save_event(&self, event: &Event) -> CoreResult<()> {
            self.check()?;
            self.inner.save_event(event).await
        }
        async fn save_events(&self, actor_id: &str, events: &[Event]) -> CoreResult<()> {
            self.check()?;
            self.inner.save_events(actor_id, events).await
        }
        async fn events_of(&self, actor: ActorKey<'_>, from: u64) -> CoreResult<Vec<Event>> {
            self.check()?;
            self.inner.events_of(actor, from).await
        }
        async fn latest_version_of(&self, actor: ActorKey<'_>) -> CoreResult<u64> {
            self.check()?;
            self.inner.latest_version_of(actor).await
        }
    }

    fn breaker() -> CircuitBreaker<SimpleRetry> {
        CircuitBreaker::new(
            BreakerConfig::default()
                .with_failure_threshold(3)
                .with_cooldown(Duration::from_secs(10)),
            SimpleRetry::new(exact_policy(1, 1, 1)),
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_through_a_closed_breaker_stay_contiguous() {
        let store = Arc::new(InMemoryEventStore::new());
        let breaker = Arc::new(CircuitBreaker::new(
            BreakerConfig::default(),
            SimpleRetry::new(fast_policy()),
        ));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (store, breaker) = (store.clone(), breaker.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    breaker.call(&*store, increment("counter")).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_contiguous(&store, "counter", TASKS * PER_TASK).await;
        let s = breaker.stats();
        assert!(s.conflicts > 0, "no contention was exercised: {s:?}");
        // Conflicts were retried inside the pattern and never counted against the circuit.
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.consecutive_failures(), 0);
        assert_eq!(breaker.times_opened(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let store = Flaky::default();
        let b = breaker();
        store.down.store(true, Ordering::SeqCst);
        for i in 1..=3 {
            assert_eq!(b.state(), BreakerState::Closed);
            let err = b.call(&store, increment("a")).await.unwrap_err();
            assert!(matches!(
                err,
                BreakerError::Retry(RetryError::Exhausted { .. })
            ));
            assert_eq!(b.consecutive_failures(), i);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 1);

        // Open: refused without running, telling how long to wait.
        let attempts = b.stats().attempts;
        tokio::time::advance(Duration::from_secs(4)).await;
        match b.call(&store, increment("a")).await {
            Err(BreakerError::Open { retry_after }) => {
                assert!(
                    retry_after <= Duration::from_secs(6) && retry_after > Duration::from_secs(5)
                );
            }
            other => panic!("expected open, got {other:?}"),
        }
        assert_eq!(b.stats().attempts, attempts);
        assert_eq!(b.rejected(), 1);

        // After the cooldown a probe goes through; it fails, so the circuit reopens at once.
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.call(&store, increment("a")).await.is_err());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 2);

        // The backend recovers; the next probe succeeds and closes the circuit.
        store.down.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.call(&store, increment("a")).await.unwrap(), 1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn single_conflicts_and_invalid_input_do_not_count() {
        let store = InMemoryEventStore::new();
        let b = breaker();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        // Conflicts once, then succeeds within the pattern's two attempts.
        for _ in 0..5 {
            let result = b
                .call(
                    &store,
                    |s: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, ()> {
                        Box::pin(async move {
                            let latest = s.get_latest_version("a").await?;
                            let v = if attempt.number == 1 {
                                latest
                            } else {
                                latest + 1
                            };
                            Ok(Decision::append(vec![Event::new("T", "a", v)]))
                        })
                    },
                )
                .await;
            assert!(result.is_ok());
        }
        for _ in 0..5 {
            let err = b
                .call(
                    &store,
                    |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                        Box::pin(async { Ok(Decision::append(vec![Event::new("T", "", 1)])) })
                    },
                )
                .await
                .unwrap_err();
            assert!(matches!(err, BreakerError::Retry(RetryError::Failed(_))));
        }
        assert_eq!(b.stats().conflicts, 5);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_conflicts_count_and_a_success_resets_the_count() {
        let store = InMemoryEventStore::new();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        let b = breaker();
        fn stale(_: &dyn EventStore, _: Attempt) -> DecideFuture<'_, ()> {
            Box::pin(async { Ok(Decision::append(vec![Event::new("T", "a", 1)])) })
        }
        for _ in 0..2 {
            assert!(b.call(&store, stale).await.is_err());
        }
        assert_eq!(b.consecutive_failures(), 2);
        b.call(&store, increment("a")).await.unwrap();
        assert_eq!(b.consecutive_failures(), 0);
        for _ in 0..3 {
            assert!(b.call(&store, stale).await.is_err());
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_at_a_time_and_a_cancelled_probe_frees_the_slot() {
        let store = Flaky::default();
        let b = Arc::new(breaker());
        store.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            let _ = b.call(&store, increment("a")).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        store.down.store(false, Ordering::SeqCst);

        // A probe that never finishes deciding, then is dropped.
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let mut entered_tx = Some(entered_tx);
        let hanging = b.call(
            &store,
            move |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                if let Some(tx) = entered_tx.take() {
                    let _ = tx.send(());
                }
                Box::pin(std::future::pending())
            },
        );
        let mut hanging = Box::pin(hanging);
        tokio::select! {
            _ = &mut hanging => panic!("the probe cannot finish"),
            _ = entered_rx => {}
        }
        // While it is out, other calls are refused.
        let err = b.call(&store, increment("a")).await.unwrap_err();
        assert!(matches!(err, BreakerError::Open { retry_after } if retry_after.is_zero()));
        drop(hanging);
        // The slot is free again: the next probe runs and closes the circuit.
        assert_eq!(b.call(&store, increment("a")).await.unwrap(), 1);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_errors_convert_to_unavailable() {
        let e: Error = BreakerError::Open {
            retry_after: Duration::from_secs(1),
        }
        .into();
        assert!(matches!(e, Error::Unavailable { .. }));
        assert!(e.is_retryable());
    }
}
