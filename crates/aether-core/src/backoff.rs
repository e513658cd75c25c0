//! Waiting between retries: the one exponential backoff of the library.

use std::time::Duration;

/// How a [`Backoff`] randomises its pauses, so that clients retrying together spread out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the computed pause.
    #[default]
    None,
    /// A random pause between half of the computed one and all of it ("equal jitter"):
    /// contending clients spread out, and none retries much sooner than planned.
    Equal,
    /// A random pause between zero and the computed one ("full jitter"): the widest spread,
    /// for writers that collided and would otherwise collide again in step.
    Full,
}

/// Growing pauses between retries: `initial`, then doubling up to `max`, optionally jittered
/// ([`Jitter`]).
///
/// Every retry loop of the library uses it: the NATS backends' retries and consumer
/// re-creations, `aether-actor`'s `RetryPolicy` and the cluster's send retries. It lives here,
/// below all of them, because the actor runtime does not depend on the NATS layer. Waits with [`tokio::time::sleep`], so tests on paused time
/// (`tokio::time::pause`) reach it; jitter comes from [`fastrand`].
///
/// ```
/// use std::time::Duration;
/// use aether_core::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// assert_eq!(b.next_delay(), Duration::from_millis(200));
/// assert_eq!(b.next_delay(), Duration::from_millis(300));
/// assert_eq!(b.attempts(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    attempts: u32,
}

impl Backoff {
    /// Pauses of `initial`, `2 × initial`, `4 × initial`... never longer than `max`, without
    /// jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            jitter: Jitter::None,
            attempts: 0,
        }
    }

    /// With [`Jitter::Equal`]: each pause a random duration between half of it and all of it.
    pub fn with_jitter(self) -> Self {
        self.jitter(Jitter::Equal)
    }

    /// With the given jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The pause before retry number `retry` (0: the first), jittered, without counting it:
    /// `initial × 2^retry`, at most `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        // 2^31 still fits a u32; later retries are at the cap anyway.
        let factor = 1u32 << retry.min(31);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Equal => {
                let half = delay / 2;
                half + random_up_to(delay - half)
            }
            Jitter::Full => random_up_to(delay),
        }
    }

    /// The next pause (and counts an attempt).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// Sleeps for [`next_delay`](Self::next_delay).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Pauses taken so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// A uniformly random duration between zero and `limit`, both included.
fn random_up_to(limit: Duration) -> Duration {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
        // `delay` does not count.
        let attempts = b.attempts();
        b.delay(3);
        assert_eq!(b.attempts(), attempts);
    }

    #[test]
    fn an_initial_above_the_cap_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(4));
        assert_eq!(b.next_delay(), Duration::from_millis(4));
        assert_eq!(b.next_delay(), Duration::from_millis(4));
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all() {
        let mut b = Backoff::new(Duration::from_millis(2), Duration::from_millis(64)).with_jitter();
        for expected in [2u64, 4, 8, 16, 32, 64, 64] {
            let d = b.next_delay();
            let full = Duration::from_millis(expected);
            assert!(d >= full / 2 && d <= full, "{d:?} for {full:?}");
        }
    }

    #[test]
    fn full_jitter_stays_below_the_pause() {
        let b =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(35)).jitter(Jitter::Full);
        for retry in 0..10 {
            let full = Duration::from_millis([10, 20, 35][retry.min(2) as usize]);
            assert!(b.delay(retry) <= full);
        }
        // Spread over the range, not stuck at one end.
        let samples: Vec<Duration> = (0..200).map(|_| b.delay(5)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(17)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(17)));
        let zero = Backoff::new(Duration::ZERO, Duration::ZERO).jitter(Jitter::Full);
        assert_eq!(zero.delay(3), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_on_tokio_time() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(600));
        let start = tokio::time::Instant::now();
        b.wait().await;
        b.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(180));
    }
}
