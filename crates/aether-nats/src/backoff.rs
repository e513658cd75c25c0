//! Waiting between retries.

use std::time::Duration;

/// Growing pauses between retries: `initial`, then doubling up to `max`, optionally with jitter
/// so that clients retrying together spread out.
///
/// Waits with [`tokio::time::sleep`], so tests on paused time (`tokio::time::pause`) reach it;
/// jitter comes from [`fastrand`].
///
/// ```
/// use std::time::Duration;
/// use aether_nats::Backoff;
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
    jitter: bool,
    attempts: u32,
}

impl Backoff {
    /// Pauses of `initial`, `2 × initial`, `4 × initial`... never longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            jitter: false,
            attempts: 0,
        }
    }

    /// Each pause becomes a random duration between half of it and all of it ("equal
    /// jitter"), so contending clients do not retry in step.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The next pause (and counts an attempt).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(31)).unwrap_or(u32::MAX);
        self.attempts = self.attempts.saturating_add(1);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        if !self.jitter {
            return delay;
        }
        let half = delay / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=spread))
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
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        let mut b = Backoff::new(Duration::from_millis(2), Duration::from_millis(64)).with_jitter();
        for expected in [2u64, 4, 8, 16, 32, 64, 64] {
            let d = b.next_delay();
            let full = Duration::from_millis(expected);
            assert!(d >= full / 2 && d <= full, "{d:?} for {full:?}");
        }
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
