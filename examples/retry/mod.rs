//! Retry patterns for optimistic concurrency, for code that writes to an event store directly.
//!
//! Every save in Aether is checked against the actor's latest version; when another writer got
//! there first the store answers [`Error::VersionConflict`] with the version it has now. Each
//! pattern here wraps the same loop (read the actor's state, decide, append at the next
//! version, and on a retryable error try again) and differs in how it waits and what it
//! remembers between attempts. They all take the library's one retry policy,
//! [`RetryPolicy`] (re-exported from [`aether_actor`]): how many retries, and the capped
//! exponential backoff with optional full jitter between them. What a pattern adds is on top
//! of it:
//!
//! - [`SimpleRetry`]: the policy as it is ([`RetryPolicy::run`]): backoff between attempts,
//!   jittered or not, up to `max_retries` retries.
//! - [`ConflictAwareRetry`]: scales the policy's backoff by how far behind the attempt was,
//!   and when only one writer got in first retries at once, handing the conflict (with the
//!   store's current version) to that retry so the command can rebuild without a full re-read.
//! - [`AdaptiveRetry`]: the policy's backoff scaled by the conflict rate observed across all
//!   callers sharing a [`ContentionTracker`] (an exponentially weighted moving average kept in
//!   an atomic).
//! - [`RetryQueue`]: eventual consistency: commands go into a bounded queue, a background worker
//!   retries them under the policy and reports each outcome through a [`Receipt`]; shutdown
//!   drains the queue.
//! - [`CircuitBreaker`]: stops calling a backend that keeps failing (closed, open, half-open),
//!   wrapping any [`RetryPattern`].
//!
//! Typed actors on an [`aether_actor::ActorHost`] need none of this: the host retries version
//! conflicts itself under [`RuntimeConfig::retry`](aether_actor::RuntimeConfig::retry), the
//! same [`RetryPolicy`].
//!
//! Only errors for which [`Error::is_retryable`] holds are retried (conflicts and
//! unavailability); anything else, such as invalid input, fails at once with
//! [`RetryError::Failed`].
//!
//! # Commands
//! A command is a closure `FnMut(&dyn EventStore, Attempt) -> DecideFuture<'_, T>`: it reads
//! what it needs from the store, decides, and returns a [`Decision`] with the events to append
//! and the value to hand back. The pattern appends the events (all of one actor, in one
//! all-or-nothing save) and retries the whole command when the save conflicts.
//!
//! ```
//! use aether_core::{Event, EventStore};
//! use aether_examples::retry::{next_version, Decision, RetryPolicy, SimpleRetry};
//! use aether_store::InMemoryEventStore;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryEventStore::new();
//! let retry = SimpleRetry::new(
//!     RetryPolicy::default()
//!         .max_retries(4)
//!         .initial_backoff(Duration::from_millis(1))
//!         .max_backoff(Duration::from_millis(50)),
//! );
//! let version = retry
//!     .run(&store, |store, attempt| {
//!         Box::pin(async move {
//!             let version = next_version(store, "counter-1", &attempt).await?;
//!             let event = Event::new("Incremented", "counter-1", version);
//!             Ok(Decision::new(vec![event], version))
//!         })
//!     })
//!     .await?;
//! assert_eq!(version, 1);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aether_core::{Error, Event, EventStore, Result, VersionConflictError};

mod adaptive;
mod circuit_breaker;
mod conflict_aware;
mod queue;
mod simple;

pub use adaptive::{AdaptiveConfig, AdaptiveRetry, ContentionTracker};
/// The library's retry policy, which every pattern here is configured with.
pub use aether_actor::RetryPolicy;
pub use circuit_breaker::{BreakerConfig, BreakerError, BreakerState, CircuitBreaker};
pub use conflict_aware::{ConflictAwareConfig, ConflictAwareRetry};
pub use queue::{BoxedCommand, QueueConfig, QueueError, Receipt, RetryQueue};
pub use simple::SimpleRetry;

/// The future a command returns: its [`Decision`], or the error that stopped it.
pub type DecideFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Decision<T>>> + Send + 'a>>;

/// What a pattern tells a command when it runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first try, 2 for the first retry, and so on.
    pub number: u32,
    /// The conflict that made the previous attempt fail, when it is still fresh: only
    /// [`ConflictAwareRetry`] passes it on, and only to a retry that runs at once. After a
    /// wait, other writers have likely moved the actor on again, so the attempt gets `None`
    /// and re-reads from the store.
    pub conflict: Option<VersionConflictError>,
}

impl Attempt {
    /// The first attempt: number 1, no conflict known.
    pub fn first() -> Self {
        Self {
            number: 1,
            conflict: None,
        }
    }

    /// Whether an earlier attempt failed.
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }

    /// The latest version the store reported for `actor_id` in the previous conflict, if the
    /// pattern passed one on and it concerns that actor.
    pub fn known_version(&self, actor_id: &str) -> Option<u64> {
        self.conflict
            .as_ref()
            .filter(|c| c.actor_id == actor_id)
            .map(|c| c.current_version)
    }
}

/// What a command decided: the events to append and the value to return once they are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<T> {
    /// Events of one actor with strictly increasing versions, the first above the actor's
    /// latest version. Empty means there is nothing to write.
    pub events: Vec<Event>,
    /// Handed back to the caller after the events are stored.
    pub output: T,
}

impl<T> Decision<T> {
    /// Append `events`, then return `output`.
    pub fn new(events: Vec<Event>, output: T) -> Self {
        Self { events, output }
    }

    /// Write nothing (the command found there is nothing to do) and return `output`.
    pub fn nothing(output: T) -> Self {
        Self {
            events: Vec::new(),
            output,
        }
    }
}

impl Decision<()> {
    /// Append `events` and return nothing.
    pub fn append(events: Vec<Event>) -> Self {
        Self::new(events, ())
    }
}

/// The version a command should give its next event for `actor_id`: one above the version the
/// previous conflict reported when the attempt carries one for this actor (no read needed),
/// otherwise one above the latest version read from the store.
///
/// # Errors
/// Whatever [`EventStore::get_latest_version`] fails with; [`Error::InvalidInput`] if the
/// version would overflow.
pub async fn next_version(
    store: &dyn EventStore,
    actor_id: &str,
    attempt: &Attempt,
) -> Result<u64> {
    let latest = match attempt.known_version(actor_id) {
        Some(v) => v,
        None => store.get_latest_version(actor_id).await?,
    };
    latest
        .checked_add(1)
        .ok_or_else(|| Error::invalid(format!("actor {actor_id:?} has no version left")))
}

/// Runs a command once and appends what it decided.
pub(crate) async fn run_once<T, F>(
    store: &dyn EventStore,
    command: &mut F,
    attempt: Attempt,
) -> Result<T>
where
    F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + ?Sized,
{
    let Decision { events, output } = command(store, attempt).await?;
    match events.as_slice() {
        [] => {}
        [one] => store.save_event(one).await?,
        [first, ..] => store.save_events(&first.actor_id, &events).await?,
    }
    Ok(output)
}

/// Why a retried command did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// The command failed with an error that retrying cannot fix (invalid input, permission
    /// denied, a payload too large...). It was tried once.
    ///
    /// Handling: fix the cause; see the inner error.
    #[error(transparent)]
    Failed(Error),

    /// Every allowed attempt failed with a retryable error; `last` is the final one (usually a
    /// [`VersionConflictError`], or [`Error::Unavailable`]).
    ///
    /// Handling: the actor is heavily contended or the backend is down; report it, queue the
    /// command for later ([`RetryQueue`]) or shed load ([`CircuitBreaker`]).
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last: Error,
    },
}

impl RetryError {
    /// The error that ended the retries.
    pub fn last_error(&self) -> &Error {
        match self {
            Self::Failed(e) | Self::Exhausted { last: e, .. } => e,
        }
    }

    /// The final conflict, when the retries ended on one.
    pub fn last_conflict(&self) -> Option<&VersionConflictError> {
        self.last_error().as_version_conflict()
    }

    /// Whether the retries ran out (as opposed to a non-retryable failure).
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Self::Exhausted { .. })
    }

    /// The error that ended the retries, dropping the attempt count.
    pub fn into_error(self) -> Error {
        match self {
            Self::Failed(e) | Self::Exhausted { last: e, .. } => e,
        }
    }
}

impl From<RetryError> for Error {
    fn from(e: RetryError) -> Self {
        e.into_error()
    }
}

/// Attempts in total under `policy`: the first one plus its retries.
pub(crate) fn max_attempts(policy: &RetryPolicy) -> u32 {
    policy.max_retries.saturating_add(1)
}

/// Counters a pattern keeps across all its calls (lock-free).
#[derive(Debug, Default)]
pub struct RetryStats {
    calls: AtomicU64,
    attempts: AtomicU64,
    conflicts: AtomicU64,
    unavailable: AtomicU64,
    successes: AtomicU64,
    failed: AtomicU64,
    exhausted: AtomicU64,
}

/// A point-in-time copy of [`RetryStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commands run through the pattern.
    pub calls: u64,
    /// Attempts made (each command is attempted at least once).
    pub attempts: u64,
    /// Attempts that ended in a version conflict.
    pub conflicts: u64,
    /// Attempts that ended with the backend unavailable.
    pub unavailable: u64,
    /// Commands whose events were stored.
    pub successes: u64,
    /// Commands that failed with a non-retryable error.
    pub failed: u64,
    /// Commands that ran out of attempts.
    pub exhausted: u64,
}

impl RetryStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            calls: get(&self.calls),
            attempts: get(&self.attempts),
            conflicts: get(&self.conflicts),
            unavailable: get(&self.unavailable),
            successes: get(&self.successes),
            failed: get(&self.failed),
            exhausted: get(&self.exhausted),
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call(&self) {
        Self::bump(&self.calls);
    }

    pub(crate) fn attempt(&self) {
        Self::bump(&self.attempts);
    }

    pub(crate) fn retryable(&self, e: &Error) {
        if e.is_version_conflict() {
            Self::bump(&self.conflicts);
        } else {
            Self::bump(&self.unavailable);
        }
    }

    pub(crate) fn success(&self) {
        Self::bump(&self.successes);
    }

    pub(crate) fn failed(&self) {
        Self::bump(&self.failed);
    }

    pub(crate) fn exhausted(&self) {
        Self::bump(&self.exhausted);
    }
}

/// A retry loop that can run any command: implemented by [`SimpleRetry`],
/// [`ConflictAwareRetry`] and [`AdaptiveRetry`], so wrappers such as [`CircuitBreaker`] work
/// with any of them. (How long each waits comes from its [`RetryPolicy`]; this trait is what
/// runs a command under one.)
pub trait RetryPattern: Send + Sync {
    /// Runs `command` against `store`, retrying retryable failures as the pattern decides.
    ///
    /// # Errors
    /// [`RetryError::Failed`] on a non-retryable error, [`RetryError::Exhausted`] when the
    /// attempts run out.
    fn run<'s, T, F>(
        &'s self,
        store: &'s dyn EventStore,
        command: F,
    ) -> impl Future<Output = Result<T, RetryError>> + Send + 's
    where
        T: Send + 's,
        F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 's;

    /// The policy's counters.
    fn stats(&self) -> StatsSnapshot;
}

/// Implements [`RetryPattern`] for a pattern that has an inherent `run` with the trait's
/// signature and a `stats: RetryStats` field.
macro_rules! impl_retry_pattern {
    ($ty:ty) => {
        impl $crate::retry::RetryPattern for $ty {
            fn run<'s, T, F>(
                &'s self,
                store: &'s dyn aether_core::EventStore,
                command: F,
            ) -> impl std::future::Future<Output = Result<T, $crate::retry::RetryError>> + Send + 's
            where
                T: Send + 's,
                F: for<'a> FnMut(
                        &'a dyn aether_core::EventStore,
                        $crate::retry::Attempt,
                    ) -> $crate::retry::DecideFuture<'a, T>
                    + Send
                    + 's,
            {
                <$ty>::run(self, store, command)
            }

            fn stats(&self) -> $crate::retry::StatsSnapshot {
                self.stats.snapshot()
            }
        }
    };
}
pub(crate) use impl_retry_pattern;

/// The loop of the blocking patterns whose waits are not the policy's alone. `delay` chooses the wait after a retryable failure
/// of attempt `n`; with `pass_fresh_conflict`, a retry that runs at once (zero wait) learns
/// about the conflict, one that waited re-reads.
pub(crate) async fn drive<T, F, D>(
    store: &dyn EventStore,
    mut command: F,
    max_attempts: u32,
    pass_fresh_conflict: bool,
    stats: &RetryStats,
    mut delay: D,
) -> Result<T, RetryError>
where
    F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send,
    D: FnMut(u32, &Error) -> Duration + Send,
{
    let max_attempts = max_attempts.max(1);
    stats.call();
    let mut attempt = Attempt::first();
    loop {
        stats.attempt();
        let number = attempt.number;
        let error = match run_once(store, &mut command, attempt).await {
            Ok(output) => {
                stats.success();
                return Ok(output);
            }
            Err(e) if !e.is_retryable() => {
                stats.failed();
                return Err(RetryError::Failed(e));
            }
            Err(e) => e,
        };
        stats.retryable(&error);
        if number >= max_attempts {
            stats.exhausted();
            return Err(RetryError::Exhausted {
                attempts: number,
                last: error,
            });
        }
        let wait = delay(number, &error);
        tracing::debug!(attempt = number, ?wait, %error, "retrying command");
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        attempt = Attempt {
            number: number + 1,
            conflict: if pass_fresh_conflict && wait.is_zero() {
                error.as_version_conflict().cloned()
            } else {
                None
            },
        };
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the pattern tests: an increment command and the contention harness.

    use std::sync::Arc;

    use aether_store::InMemoryEventStore;

    use super::*;

    /// Tasks writing at once in the contention tests.
    pub(crate) const TASKS: usize = 8;
    /// Increments each task makes.
    pub(crate) const PER_TASK: usize = 25;

    /// Small jittered delays so contention tests stay fast, many retries so they never run
    /// out.
    pub(crate) fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 999,
            initial_backoff: Duration::from_micros(50),
            max_backoff: Duration::from_millis(2),
            jitter: true,
        }
    }

    /// A policy without jitter, for tests that check exact waits on a paused clock.
    pub(crate) fn exact_policy(max_retries: u32, initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            jitter: false,
        }
    }

    /// Appends one `Incremented` event at the next version. It yields between reading and
    /// saving, as a real command deciding on state would, so concurrent callers really
    /// interleave and conflict.
    pub(crate) fn increment(
        actor: &'static str,
    ) -> impl for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, u64> + Send + 'static
    {
        move |store: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, u64> {
            Box::pin(async move {
                let version = next_version(store, actor, &attempt).await?;
                tokio::task::yield_now().await;
                Ok(Decision::new(
                    vec![Event::new("Incremented", actor, version)],
                    version,
                ))
            })
        }
    }

    /// Checks the actor holds exactly `expected` events, versions 1..=expected, all
    /// `Incremented`.
    pub(crate) async fn assert_contiguous(
        store: &InMemoryEventStore,
        actor: &str,
        expected: usize,
    ) {
        let events = store.get_events(actor, 0).await.unwrap();
        assert_eq!(events.len(), expected);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.version, i as u64 + 1);
            assert_eq!(e.event_type, "Incremented");
        }
    }

    /// `TASKS` tasks each make `PER_TASK` increments of one actor through `policy`; then the
    /// history must be contiguous and conflicts must have happened.
    pub(crate) async fn hammer<P: RetryPattern + 'static>(policy: P) -> StatsSnapshot {
        let store = Arc::new(InMemoryEventStore::new());
        let policy = Arc::new(policy);
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (store, policy) = (store.clone(), policy.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    policy.run(&*store, increment("counter")).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_contiguous(&store, "counter", TASKS * PER_TASK).await;
        let stats = policy.stats();
        assert_eq!(stats.successes, (TASKS * PER_TASK) as u64);
        assert!(
            stats.conflicts > 0,
            "no contention was exercised: {stats:?}"
        );
        assert_eq!(stats.attempts, stats.successes + stats.conflicts);
        stats
    }
}

#[cfg(test)]
mod tests {
    use aether_store::InMemoryEventStore;

    use super::*;

    #[test]
    fn attempts_are_the_first_plus_the_retries() {
        assert_eq!(max_attempts(&RetryPolicy::none()), 1);
        assert_eq!(max_attempts(&RetryPolicy::default().max_retries(4)), 5);
        assert_eq!(
            max_attempts(&RetryPolicy::default().max_retries(u32::MAX)),
            u32::MAX
        );
    }

    #[test]
    fn attempt_knows_the_version_only_for_its_actor() {
        let a = Attempt {
            number: 2,
            conflict: Some(VersionConflictError {
                actor_id: "a".into(),
                attempted_version: 3,
                current_version: 7,
            }),
        };
        assert!(a.is_retry());
        assert_eq!(a.known_version("a"), Some(7));
        assert_eq!(a.known_version("b"), None);
        assert!(!Attempt::first().is_retry());
    }

    #[tokio::test]
    async fn next_version_reads_only_without_a_known_version() {
        let store = InMemoryEventStore::new();
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        assert_eq!(
            next_version(&store, "a", &Attempt::first()).await.unwrap(),
            2
        );
        let hinted = Attempt {
            number: 2,
            conflict: Some(VersionConflictError {
                actor_id: "a".into(),
                attempted_version: 1,
                current_version: 9,
            }),
        };
        assert_eq!(next_version(&store, "a", &hinted).await.unwrap(), 10);
        let overflow = Attempt {
            number: 2,
            conflict: Some(VersionConflictError {
                actor_id: "a".into(),
                attempted_version: 1,
                current_version: u64::MAX,
            }),
        };
        assert!(matches!(
            next_version(&store, "a", &overflow).await,
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn retry_error_exposes_the_last_conflict() {
        let e = RetryError::Exhausted {
            attempts: 3,
            last: Error::version_conflict("a", 2, 5),
        };
        assert!(e.is_exhausted());
        assert_eq!(e.last_conflict().map(|c| c.current_version), Some(5));
        assert!(e.to_string().contains("3 attempts"));
        let back: Error = e.into();
        assert!(back.is_version_conflict());
        let f = RetryError::Failed(Error::invalid("bad"));
        assert!(!f.is_exhausted() && f.last_conflict().is_none());
    }

    #[tokio::test]
    async fn empty_decision_writes_nothing_and_batches_are_one_save() {
        let store = InMemoryEventStore::new();
        let out = run_once(
            &store,
            &mut |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, u8> {
                Box::pin(async { Ok(Decision::nothing(7)) })
            },
            Attempt::first(),
        )
        .await
        .unwrap();
        assert_eq!(out, 7);
        assert_eq!(store.event_count(), 0);
        run_once(
            &store,
            &mut |_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, ()> {
                Box::pin(async {
                    Ok(Decision::append(vec![
                        Event::new("T", "b", 1),
                        Event::new("T", "b", 2),
                    ]))
                })
            },
            Attempt::first(),
        )
        .await
        .unwrap();
        assert_eq!(store.latest_version("b"), 2);
    }
}
