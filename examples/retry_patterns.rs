//! Retry patterns for version conflicts, side by side, all on the library's one retry policy
//! (`aether_actor::RetryPolicy`).
//!
//! Eight tasks increment one counter actor 25 times each, all at once, through each pattern of
//! `aether_examples::retry` against the in-memory store, writing to the store directly (an
//! `ActorHost` retries its own conflicts under the same policy). Every increment reads the latest
//! version, decides, and appends at the next one, so the tasks keep colliding; each pattern
//! must still end with exactly 200 events, versions 1 to 200. Then a circuit breaker is shown
//! riding out a backend outage.
//!
//! Run with `cargo run -p aether-examples --example retry_patterns`. See `examples/README.md` for when to use
//! which pattern.

use aether_core::ActorKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{Error, Event, EventStore, Result};
use aether_examples::retry::{
    next_version, AdaptiveConfig, AdaptiveRetry, Attempt, BreakerConfig, BreakerError,
    BreakerState, CircuitBreaker, ConflictAwareConfig, ConflictAwareRetry, DecideFuture, Decision,
    QueueConfig, RetryPattern, RetryPolicy, RetryQueue, SimpleRetry, StatsSnapshot,
};
use aether_store::InMemoryEventStore;

const TASKS: usize = 8;
const PER_TASK: usize = 25;
const ACTOR: &str = "counter-1";

/// The command every pattern runs: append one `Incremented` event at the next version. It
/// yields between reading and writing, as a command that does real work before deciding
/// would, which is what lets the tasks collide.
fn increment() -> impl for<'a> FnMut(&'a dyn EventStore, Attempt) -> DecideFuture<'a, u64> + Send {
    |store: &dyn EventStore, attempt: Attempt| -> DecideFuture<'_, u64> {
        Box::pin(async move {
            let version = next_version(store, ACTOR, &attempt).await?;
            tokio::task::yield_now().await;
            let event = Event::new("Incremented", ACTOR, version).with_field("by", 1);
            Ok(Decision::new(vec![event], version))
        })
    }
}

/// Fast retries with plenty of them, so the run shows the patterns' behaviour rather than
/// give-ups; jittered, as the library's default policy is.
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 999,
        initial_backoff: Duration::from_micros(100),
        max_backoff: Duration::from_millis(5),
        jitter: true,
    }
}

struct Row {
    pattern: &'static str,
    stats: StatsSnapshot,
    elapsed: Duration,
    note: String,
}

/// Checks the actor has exactly one event per increment, versions 1..=n with no gap.
async fn verify(store: &InMemoryEventStore) -> Result<()> {
    let events = store.get_events(ACTOR, 0).await?;
    let expected = (TASKS * PER_TASK) as u64;
    let contiguous = events
        .iter()
        .zip(1..)
        .all(|(e, v): (&Event, u64)| e.version == v);
    if events.len() as u64 != expected || !contiguous {
        return Err(Error::invalid(format!(
            "expected versions 1..={expected}, found {} events (contiguous: {contiguous})",
            events.len()
        )));
    }
    Ok(())
}

/// Runs the contention scenario through a blocking policy.
async fn contend<P: RetryPattern + 'static>(
    pattern: &'static str,
    policy: P,
    note: impl Fn(&P) -> String,
) -> Result<Row> {
    let store = Arc::new(InMemoryEventStore::new());
    let policy = Arc::new(policy);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, policy) = (store.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                policy.run(&*store, increment()).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::backend("task", e))??;
    }
    let elapsed = started.elapsed();
    verify(&store).await?;
    Ok(Row {
        pattern,
        stats: policy.stats(),
        elapsed,
        note: note(&policy),
    })
}

/// The same scenario through the retry queue: tasks submit and await receipts.
async fn through_queue() -> Result<Row> {
    let store = Arc::new(InMemoryEventStore::new());
    let config = QueueConfig::default()
        .with_concurrency(TASKS)
        .with_capacity(64)
        .with_retry(policy());
    let queue = Arc::new(RetryQueue::<u64>::start(store.clone(), config)?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for _ in 0..PER_TASK {
                let receipt = queue
                    .submit(increment())
                    .await
                    .map_err(|e| Error::Closed(e.to_string()))?;
                receipts.push(receipt);
            }
            // The task is free to do other work here: the writes happen in the background.
            for r in receipts {
                r.await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::backend("task", e))??;
    }
    queue.shutdown().await;
    let elapsed = started.elapsed();
    verify(&store).await?;
    Ok(Row {
        pattern: "retry queue",
        stats: queue.stats(),
        elapsed,
        note: format!("{TASKS} commands in flight at once"),
    })
}

/// The same scenario through a circuit breaker around a simple retry: conflicts are retried
/// inside and never trip it.
async fn through_breaker() -> Result<Row> {
    let store = Arc::new(InMemoryEventStore::new());
    let breaker = Arc::new(CircuitBreaker::new(
        BreakerConfig::default(),
        SimpleRetry::new(policy()),
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, breaker) = (store.clone(), breaker.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                breaker.call(&*store, increment()).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::backend("task", e))??;
    }
    let elapsed = started.elapsed();
    verify(&store).await?;
    Ok(Row {
        pattern: "circuit breaker",
        stats: breaker.stats(),
        elapsed,
        note: format!(
            "state {:?}, opened {} times",
            breaker.state(),
            breaker.times_opened()
        ),
    })
}

/// An in-memory store that can be switched off, to show the circuit breaker at work.
#[derive(Debug, Default)]
struct SwitchableStore {
    inner: InMemoryEventStore,
    down: AtomicBool,
}

impl SwitchableStore {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::unavailable("event store", "connection refused"))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl EventStore for SwitchableStore {
    async fn save_event(&self, event: &Event) -> Result<()> {
        self.check()?;
        self.inner.save_event(event).await
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        self.check()?;
        self.inner.save_events(actor_id, events).await
    }
    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        self.check()?;
        self.inner.events_of(actor, from_version).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.check()?;
        self.inner.latest_version_of(actor).await
    }
}

/// A breaker around a short retry loop, through an outage and a recovery.
async fn outage() -> Result<()> {
    let store = SwitchableStore::default();
    let cooldown = Duration::from_millis(200);
    let breaker = CircuitBreaker::new(
        BreakerConfig::default()
            .with_failure_threshold(3)
            .with_cooldown(cooldown),
        SimpleRetry::new(
            RetryPolicy::default()
                .max_retries(2)
                .initial_backoff(Duration::from_millis(1))
                .max_backoff(Duration::from_millis(10)),
        ),
    );
    println!("\ncircuit breaker through an outage (threshold 3, cooldown {cooldown:?}):");
    breaker.call(&store, increment()).await?;
    println!("  backend up:   call ok, state {:?}", breaker.state());

    store.down.store(true, Ordering::SeqCst);
    for i in 1..=5 {
        match breaker.call(&store, increment()).await {
            Err(BreakerError::Open { retry_after }) => println!(
                "  backend down: call {i} refused at once (open, retry after {retry_after:?})"
            ),
            Err(e) => println!(
                "  backend down: call {i} failed after retries ({e}); state {:?}",
                breaker.state()
            ),
            Ok(_) => println!("  backend down: call {i} unexpectedly succeeded"),
        }
    }

    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(cooldown).await;
    println!("  backend back, cooldown over: state {:?}", breaker.state());
    let version = breaker.call(&store, increment()).await?;
    println!(
        "  probe call ok (version {version}), state {:?}; opened {} time(s), refused {} call(s)",
        breaker.state(),
        breaker.times_opened(),
        breaker.rejected()
    );
    if breaker.state() != BreakerState::Closed {
        return Err(Error::invalid(
            "the breaker should have closed after the probe",
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    println!(
        "{TASKS} tasks x {PER_TASK} increments of one actor through each pattern \
         (in-memory store)\n"
    );
    let mut rows = Vec::new();
    rows.push(
        contend(
            "backoff, no jitter",
            SimpleRetry::new(policy().jitter(false)),
            |_| "deterministic waits".into(),
        )
        .await?,
    );
    rows.push(
        contend("backoff, jitter", SimpleRetry::new(policy()), |_| {
            "the library default: full jitter".into()
        })
        .await?,
    );
    rows.push(
        contend(
            "conflict-aware",
            ConflictAwareRetry::new(ConflictAwareConfig::default().with_policy(policy())),
            |p| {
                format!(
                    "{} immediate retries, largest gap {}",
                    p.immediate_retries(),
                    p.largest_gap()
                )
            },
        )
        .await?,
    );
    rows.push(
        contend(
            "adaptive",
            AdaptiveRetry::new(AdaptiveConfig::default().with_policy(policy())),
            |p| format!("conflict rate now {:.2}", p.contention()),
        )
        .await?,
    );
    rows.push(through_queue().await?);
    rows.push(through_breaker().await?);

    println!(
        "{:<20} {:>7} {:>9} {:>10} {:>10}  notes",
        "pattern", "events", "attempts", "conflicts", "time"
    );
    for r in &rows {
        println!(
            "{:<20} {:>7} {:>9} {:>10} {:>8.1}ms  {}",
            r.pattern,
            r.stats.successes,
            r.stats.attempts,
            r.stats.conflicts,
            r.elapsed.as_secs_f64() * 1000.0,
            r.note
        );
    }
    println!(
        "\nevery pattern ended with exactly {} events, versions 1..={} with no gap",
        TASKS * PER_TASK,
        TASKS * PER_TASK
    );

    outage().await?;
    Ok(())
}
