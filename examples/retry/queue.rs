//! Eventual consistency: a background worker retries queued commands.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use aether_core::{Error, EventStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::{
    max_attempts, run_once, Attempt, DecideFuture, RetryError, RetryPolicy, RetryStats,
    StatsSnapshot,
};

/// A command the queue can own and run on its worker.
pub type BoxedCommand<T> =
    Box<dyn for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 'static>;

/// Configuration of [`RetryQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Commands that may wait for the worker before [`RetryQueue::try_submit`] reports
    /// [`QueueError::Full`] (and [`RetryQueue::submit`] waits).
    pub capacity: usize,
    /// Commands the worker runs (or waits to retry) at once.
    pub concurrency: usize,
    /// Retries per command and the backoff between them. Keep its jitter on: the queue
    /// retries many commands at once, and jitter spreads them out.
    pub retry: RetryPolicy,
}

impl Default for QueueConfig {
    /// 1024 waiting, 16 at once, 9 retries from 10 ms up to 1 s with full jitter.
    fn default() -> Self {
        Self {
            capacity: 1024,
            concurrency: 16,
            retry: RetryPolicy {
                max_retries: 9,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_secs(1),
                jitter: true,
            },
        }
    }
}

impl QueueConfig {
    /// Sets the queue capacity.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets how many commands run at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Why a command could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue holds [`QueueConfig::capacity`] commands already.
    ///
    /// Handling: back off and submit again, or use [`RetryQueue::submit`] to wait for room.
    #[error("the retry queue is full")]
    Full,
    /// The queue was shut down.
    ///
    /// Handling: none; the queue takes no more work.
    #[error("the retry queue is shut down")]
    Closed,
}

/// Resolves to the outcome of a queued command once the worker is done with it.
///
/// Dropping a receipt does not cancel the command: it still runs, its outcome is just not
/// reported.
#[derive(Debug)]
pub struct Receipt<T> {
    rx: oneshot::Receiver<Result<T, RetryError>>,
}

impl<T> Future for Receipt<T> {
    type Output = Result<T, RetryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(RetryError::Failed(Error::Closed(
                    "the retry queue stopped before the command finished".into(),
                )))
            })
        })
    }
}

struct Job<T> {
    command: BoxedCommand<T>,
    attempt: Attempt,
    receipt: oneshot::Sender<Result<T, RetryError>>,
}

struct Finished<T> {
    job: Job<T>,
    result: aether_core::Result<T>,
}

/// Commands accepted now and made to succeed later: a bounded queue feeding a background worker
/// that runs each command, and on a retryable failure schedules it again after a jittered
/// backoff, without holding up the other commands. Each submission returns a [`Receipt`] that
/// resolves with the command's final outcome.
///
/// [`shutdown`](Self::shutdown) stops intake and waits until every accepted command has
/// finished (succeeded, failed, or run out of attempts). Dropping the queue without shutting it
/// down lets the worker finish the accepted commands in the background.
pub struct RetryQueue<T> {
    tx: mpsc::Sender<Job<T>>,
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Its sender lives as long as the worker, so a closed channel means the worker is gone.
    done: watch::Receiver<()>,
    stats: Arc<RetryStats>,
}

impl<T> std::fmt::Debug for RetryQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryQueue")
            .field("waiting", &(self.tx.max_capacity() - self.tx.capacity()))
            .field("closed", &self.tx.is_closed())
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl<T: Send + 'static> RetryQueue<T> {
    /// Starts the worker on the current Tokio runtime, writing to `store`.
    ///
    /// # Errors
    /// [`Error::Closed`] when called outside a Tokio runtime.
    pub fn start(store: Arc<dyn EventStore>, config: QueueConfig) -> aether_core::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Closed(format!("the retry queue needs a Tokio runtime: {e}")))?;
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(());
        let stats = Arc::new(RetryStats::default());
        let worker = runtime.spawn(work(store, rx, stop_rx, config, stats.clone(), done_tx));
        Ok(Self {
            tx,
            stop,
            worker: Mutex::new(Some(worker)),
            done,
            stats,
        })
    }

    /// Queues `command` if there is room.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the queue is at capacity, [`QueueError::Closed`] after
    /// shutdown.
    pub fn try_submit<F>(&self, command: F) -> Result<Receipt<T>, QueueError>
    where
        F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 'static,
    {
        let (job, receipt) = self.job(Box::new(command));
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })?;
        Ok(receipt)
    }

    /// Queues `command`, waiting for room if the queue is full.
    ///
    /// # Errors
    /// [`QueueError::Closed`] after shutdown.
    pub async fn submit<F>(&self, command: F) -> Result<Receipt<T>, QueueError>
    where
        F: for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, T> + Send + 'static,
    {
        let (job, receipt) = self.job(Box::new(command));
        self.tx.send(job).await.map_err(|_| QueueError::Closed)?;
        Ok(receipt)
    }

    fn job(&self, command: BoxedCommand<T>) -> (Job<T>, Receipt<T>) {
        let (receipt, rx) = oneshot::channel();
        let job = Job {
            command,
            attempt: Attempt::first(),
            receipt,
        };
        (job, Receipt { rx })
    }

    /// Stops accepting commands and waits until every accepted one has finished. Calling it
    /// again (or concurrently) returns once the worker has stopped.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match worker {
            Some(handle) => {
                if let Err(e) = handle.await {
                    tracing::error!(error = %e, "retry queue worker failed");
                }
            }
            // Another caller took the handle; wait for the worker to be gone all the same.
            None => {
                let mut done = self.done.clone();
                while done.changed().await.is_ok() {}
            }
        }
    }

    /// Counters over every command so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// The worker: takes jobs while there is room, runs each attempt as its own task, re-schedules
/// retryable failures, and once stopped finishes everything accepted before returning.
async fn work<T: Send + 'static>(
    store: Arc<dyn EventStore>,
    mut rx: mpsc::Receiver<Job<T>>,
    mut stop: watch::Receiver<bool>,
    config: QueueConfig,
    stats: Arc<RetryStats>,
    _done: watch::Sender<()>,
) {
    let concurrency = config.concurrency.max(1);
    let mut running: JoinSet<Finished<T>> = JoinSet::new();
    let mut intake_open = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            // Either a shutdown request or the queue handle being dropped.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Refuse new jobs; those already in the channel are still received below.
                rx.close();
            }
            job = rx.recv(), if intake_open && running.len() < concurrency => match job {
                Some(job) => {
                    stats.call();
                    running.spawn(attempt(store.clone(), job, Duration::ZERO));
                }
                None => intake_open = false,
            },
            Some(done) = running.join_next() => match done {
                Ok(finished) => settle(finished, &store, &config, &stats, &mut running),
                // The job (and its receipt sender) went down with the task, so its receipt
                // reports the queue closed.
                Err(e) => tracing::error!(error = %e, "a queued command panicked"),
            },
            else => break,
        }
    }
    tracing::debug!(stats = ?stats.snapshot(), "retry queue drained");
}

/// Waits `delay`, then runs one attempt of the job.
async fn attempt<T>(store: Arc<dyn EventStore>, mut job: Job<T>, delay: Duration) -> Finished<T> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let result = run_once(&*store, &mut job.command, job.attempt.clone()).await;
    Finished { job, result }
}

fn settle<T: Send + 'static>(
    Finished { mut job, result }: Finished<T>,
    store: &Arc<dyn EventStore>,
    config: &QueueConfig,
    stats: &RetryStats,
    running: &mut JoinSet<Finished<T>>,
) {
    stats.attempt();
    let outcome = match result {
        Ok(output) => {
            stats.success();
            Ok(output)
        }
        Err(e) if !e.is_retryable() => {
            stats.failed();
            Err(RetryError::Failed(e))
        }
        Err(e) => {
            stats.retryable(&e);
            let number = job.attempt.number;
            if number >= max_attempts(&config.retry) {
                stats.exhausted();
                Err(RetryError::Exhausted {
                    attempts: number,
                    last: e,
                })
            } else {
                let wait = config.retry.backoff(number);
                tracing::debug!(attempt = number, ?wait, error = %e, "queued command will retry");
                // The retry runs after a wait, when the conflict's version is likely stale: it
                // re-reads.
                job.attempt = Attempt {
                    number: number + 1,
                    conflict: None,
                };
                running.spawn(attempt(store.clone(), job, wait));
                return;
            }
        }
    };
    // The caller may have dropped its receipt; the command's effect stands either way.
    let _ = job.receipt.send(outcome);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use aether_core::Event;
    use aether_store::InMemoryEventStore;

    use super::super::testing::{
        assert_contiguous, exact_policy, fast_policy, increment, PER_TASK, TASKS,
    };
    use super::super::Decision;
    use super::*;

    fn queue_config() -> QueueConfig {
        QueueConfig::default()
            .with_retry(fast_policy())
            .with_concurrency(TASKS)
            .with_capacity(64)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_increments_through_the_queue_stay_contiguous() {
        let store = Arc::new(InMemoryEventStore::new());
        let queue = Arc::new(RetryQueue::<u64>::start(store.clone(), queue_config()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut receipts = Vec::new();
                for _ in 0..PER_TASK {
                    receipts.push(queue.submit(increment("counter")).await.unwrap());
                }
                let mut versions = Vec::new();
                for r in receipts {
                    versions.push(r.await.unwrap());
                }
                versions
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.extend(t.await.unwrap());
        }
        queue.shutdown().await;
        // Every receipt reported a distinct version: each its own event.
        versions.sort_unstable();
        let expected: Vec<u64> = (1..=(TASKS * PER_TASK) as u64).collect();
        assert_eq!(versions, expected);
        assert_contiguous(&store, "counter", TASKS * PER_TASK).await;
        let s = queue.stats();
        assert_eq!(s.successes, (TASKS * PER_TASK) as u64);
        assert!(s.conflicts > 0, "no contention was exercised: {s:?}");
        assert_eq!(s.attempts, s.successes + s.conflicts);
    }

    /// A command that conflicts `fail_times` times (writing a stale version) and then appends
    /// at the next version.
    fn flaky(
        actor: &'static str,
        fail_times: u32,
        tries: Arc<AtomicU32>,
    ) -> impl for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, u64> + Send + 'static
    {
        move |store: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, u64> {
            let tries = tries.clone();
            Box::pin(async move {
                tries.fetch_add(1, Ordering::SeqCst);
                let latest = store.get_latest_version(actor).await?;
                let version = if attempt.number <= fail_times {
                    latest.max(1)
                } else {
                    latest + 1
                };
                Ok(Decision::new(
                    vec![Event::new("T", actor, version)],
                    version,
                ))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn receipts_report_success_exhaustion_and_failure() {
        let store = Arc::new(InMemoryEventStore::new());
        store.save_event(&Event::new("T", "a", 1)).await.unwrap();
        store.save_event(&Event::new("T", "b", 1)).await.unwrap();
        let config = QueueConfig::default().with_retry(exact_policy(2, 5, 20));
        let queue = RetryQueue::<u64>::start(store.clone(), config).unwrap();

        let ok_tries = Arc::new(AtomicU32::new(0));
        let ok = queue.try_submit(flaky("a", 2, ok_tries.clone())).unwrap();
        let never_tries = Arc::new(AtomicU32::new(0));
        let never = queue
            .try_submit(flaky("b", 99, never_tries.clone()))
            .unwrap();
        let invalid = queue
            .try_submit(|_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, u64> {
                Box::pin(async { Ok(Decision::new(vec![Event::new("", "a", 9)], 0)) })
            })
            .unwrap();

        assert_eq!(ok.await.unwrap(), 2);
        assert_eq!(ok_tries.load(Ordering::SeqCst), 3);
        let err = never.await.unwrap_err();
        assert!(
            matches!(err, RetryError::Exhausted { attempts: 3, .. }),
            "{err:?}"
        );
        assert!(err.last_conflict().is_some());
        assert_eq!(never_tries.load(Ordering::SeqCst), 3);
        let err = invalid.await.unwrap_err();
        assert!(
            matches!(err, RetryError::Failed(Error::InvalidInput(_))),
            "{err:?}"
        );

        queue.shutdown().await;
        let s = queue.stats();
        assert_eq!((s.calls, s.successes, s.exhausted, s.failed), (3, 1, 1, 1));
    }

    const ACTORS: [&str; 20] = [
        "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b0", "b1", "b2", "b3", "b4",
        "b5", "b6", "b7", "b8", "b9",
    ];

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_every_accepted_command_then_refuses_more() {
        let store = Arc::new(InMemoryEventStore::new());
        let config = QueueConfig::default()
            .with_concurrency(2)
            .with_capacity(100)
            .with_retry(exact_policy(4, 50, 200));
        let queue = RetryQueue::<u64>::start(store.clone(), config).unwrap();
        let tries = Arc::new(AtomicU32::new(0));
        let mut receipts = Vec::new();
        // Each conflicts once first, so it is still waiting to retry when shutdown begins.
        for actor in ACTORS {
            store.save_event(&Event::new("T", actor, 1)).await.unwrap();
            receipts.push(queue.try_submit(flaky(actor, 1, tries.clone())).unwrap());
        }
        queue.shutdown().await;
        // Everything accepted finished before shutdown returned.
        assert_eq!(store.event_count(), 40);
        for r in receipts {
            assert_eq!(r.await.unwrap(), 2);
        }
        assert_eq!(tries.load(Ordering::SeqCst), 40);
        assert_eq!(
            queue.try_submit(increment("late")).unwrap_err(),
            QueueError::Closed
        );
        assert!(matches!(
            queue.submit(increment("late")).await,
            Err(QueueError::Closed)
        ));
        // A second shutdown returns at once.
        queue.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_says_so() {
        let store = Arc::new(InMemoryEventStore::new());
        let config = QueueConfig::default().with_concurrency(1).with_capacity(1);
        let queue = RetryQueue::<u64>::start(store.clone(), config).unwrap();
        // The worker has not run yet (paused, single-threaded test runtime), so the first
        // command fills the channel and the second finds it full.
        let first = queue.try_submit(increment("a")).unwrap();
        assert_eq!(
            queue.try_submit(increment("a")).unwrap_err(),
            QueueError::Full
        );
        assert_eq!(first.await.unwrap(), 1);
        queue.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_command_fails_its_receipt_and_the_queue_goes_on() {
        let store = Arc::new(InMemoryEventStore::new());
        let queue = RetryQueue::<u64>::start(store.clone(), QueueConfig::default()).unwrap();
        let doomed = queue
            .try_submit(|_: &dyn EventStore, _: Attempt| -> DecideFuture<'_, u64> {
                Box::pin(async { panic!("a bug in the command") })
            })
            .unwrap();
        let err = doomed.await.unwrap_err();
        assert!(
            matches!(err, RetryError::Failed(Error::Closed(_))),
            "{err:?}"
        );
        let fine = queue.try_submit(increment("a")).unwrap();
        assert_eq!(fine.await.unwrap(), 1);
        queue.shutdown().await;
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error() {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        assert!(matches!(
            RetryQueue::<()>::start(store, QueueConfig::default()),
            Err(Error::Closed(_))
        ));
    }
}
