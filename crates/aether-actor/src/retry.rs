//! One retry policy for the whole library: how often, and how far apart, an operation that
//! failed in a retryable way is tried again.

use std::future::Future;
use std::time::Duration;

use aether_core::{Backoff, Jitter};

/// How often and how far apart to retry: exponential backoff with full jitter.
///
/// The pauses are [`aether_core::Backoff`]'s (the library's one backoff), with
/// [`Jitter::Full`] when [`jitter`](Self::jitter) is on. The actor runtime uses it for version conflicts ([`RuntimeConfig::retry`]); applications use
/// [`run`](Self::run) for their own retries instead of writing another loop.
///
/// [`RuntimeConfig::retry`]: crate::RuntimeConfig::retry
///
/// ```
/// use std::time::Duration;
/// use aether_actor::RetryPolicy;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let policy = RetryPolicy::default().max_retries(3).initial_backoff(Duration::from_millis(1));
/// let mut calls = 0;
/// let result: Result<u32, &str> = policy
///     .run(|attempt| {
///         calls += 1;
///         async move { if attempt < 2 { Err("busy") } else { Ok(attempt) } }
///     }, |e| *e == "busy")
///     .await;
/// assert_eq!(result, Ok(2));
/// assert_eq!(calls, 3);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: try once).
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Wait a random time between zero and the backoff instead of the backoff itself, so that
    /// writers that collided do not collide again in step.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(200),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Sets the number of retries.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the first backoff.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets the longest backoff.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets whether to jitter.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        self.pauses().delay(retry.saturating_sub(1))
    }

    /// The pauses between attempts, as a [`Backoff`].
    fn pauses(&self) -> Backoff {
        let jitter = if self.jitter {
            Jitter::Full
        } else {
            Jitter::None
        };
        Backoff::new(self.initial_backoff, self.max_backoff).jitter(jitter)
    }

    /// Runs `op` (given the attempt number, from 0) until it succeeds, fails with an error
    /// `retryable` refuses, or the retries run out; waits [`backoff`](Self::backoff) between
    /// attempts. Returns the last result.
    pub async fn run<T, E, F, Fut>(&self, mut op: F, retryable: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut pauses = self.pauses();
        loop {
            match op(pauses.attempts()).await {
                Ok(v) => return Ok(v),
                Err(e) if pauses.attempts() < self.max_retries && retryable(&e) => {
                    pauses.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default()
            .jitter(false)
            .initial_backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(35));
        let waits: Vec<u128> = (1..=4).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(waits, [10, 20, 35, 35]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(35));
        let jittered = p.jitter(true);
        for r in 1..10 {
            assert!(jittered.backoff(r) <= Duration::from_millis(35));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_on_a_permanent_error_and_when_retries_run_out() {
        let p = RetryPolicy::default().max_retries(2);
        let mut calls = 0;
        let r: Result<(), &str> = p
            .run(
                |_| {
                    calls += 1;
                    async { Err("permanent") }
                },
                |_| false,
            )
            .await;
        assert_eq!((r, calls), (Err("permanent"), 1));
        let mut calls = 0;
        let r: Result<(), &str> = p
            .run(
                |_| {
                    calls += 1;
                    async { Err("busy") }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, calls), (Err("busy"), 3));
    }
}
