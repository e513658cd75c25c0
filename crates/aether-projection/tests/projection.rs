//! Projections over both stores: catching up and following live writes with no gap and no
//! duplicate, resuming from the checkpoint after a crash, parking a poison event and replaying
//! it after a fix, lag going to zero, and state kept in a NATS key-value bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec, RetryPolicy};
use aether_core::{BoxError, Event, EventLog, EventStore, LogPosition};
use aether_projection::{
    Handler, InMemoryProjectionStore, NatsProjectionStore, OnFailure, Projected, Projection,
    ProjectionConfig, ProjectionStore, SinkPosition,
};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// A read model of balances, idempotent by (actor, version), that also records how often it
/// saw each event and checks each actor's events come in version order.
#[derive(Default)]
struct Balances {
    inner: Mutex<Model>,
    /// When set, deposits of exactly 13 fail (a poison event).
    poison: AtomicBool,
}

#[derive(Default)]
struct Model {
    balance: BTreeMap<String, i64>,
    last_version: HashMap<String, u64>,
    deliveries: HashMap<String, u32>,
    out_of_order: u32,
}

#[async_trait::async_trait]
impl Handler<Moved> for Balances {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let Moved::Deposited { amount } = e.event;
        if amount == 13 && self.poison.load(Ordering::SeqCst) {
            return Err("13 is unlucky".into());
        }
        let mut m = self.inner.lock().unwrap();
        *m.deliveries.entry(e.event_id.clone()).or_default() += 1;
        let last = m.last_version.get(&e.actor_id).copied().unwrap_or(0);
        if e.version <= last {
            return Ok(()); // a redelivery: already applied
        }
        if e.version != last + 1 {
            m.out_of_order += 1;
        }
        m.last_version.insert(e.actor_id.clone(), e.version);
        *m.balance.entry(e.actor_id.clone()).or_default() += amount;
        Ok(())
    }
}

fn deposit(actor: &str, version: u64, amount: i64) -> Event {
    Event::new("Deposited", actor, version).with_field("amount", amount)
}

fn config() -> ProjectionConfig {
    ProjectionConfig {
        page_size: 7,
        poll_interval: Duration::from_millis(5),
        retry: RetryPolicy::default()
            .max_retries(2)
            .initial_backoff(Duration::from_millis(1)),
        on_failure: OnFailure::Park,
        ..ProjectionConfig::default()
    }
}

fn projection(
    log: Arc<dyn EventLog>,
    state: Arc<dyn ProjectionStore>,
    sink: Arc<Balances>,
) -> Projection<Moved> {
    Projection::new(
        "balances",
        log,
        state,
        sink,
        EventCodec::default(),
        config(),
    )
    .unwrap()
}

/// The balances a rebuild from scratch gives.
async fn expected(store: &dyn EventStore, actors: &[String]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for a in actors {
        let sum: i64 = store
            .get_events(a, 1)
            .await
            .unwrap()
            .iter()
            .map(|e| e.data["amount"].as_i64().unwrap())
            .sum();
        if sum != 0 {
            out.insert(a.clone(), sum);
        }
    }
    out
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Writers append while the projection runs; it catches up and follows, and every event is
/// handled once, in each actor's order.
async fn follows_live_writes<S: EventStore + EventLog + 'static>(store: Arc<S>) {
    let actors: Vec<String> = (0..5).map(|i| format!("acct-{i}")).collect();
    for a in &actors {
        store.save_event(&deposit(a, 1, 1)).await.unwrap();
    }
    let sink = Arc::new(Balances::default());
    let p = Arc::new(projection(
        store.clone(),
        Arc::new(InMemoryProjectionStore::new()),
        sink.clone(),
    ));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    let writers: Vec<_> = actors
        .iter()
        .cloned()
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                for v in 2..=30 {
                    store.save_event(&deposit(&a, v, 2)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let total = actors.len() * 30;
    wait_for("the projection to catch up", || {
        let s = p.status();
        s.handled as usize == total && s.lag == 0
    })
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let want = expected(store.as_ref(), &actors).await;
    {
        let m = sink.inner.lock().unwrap();
        assert_eq!(m.deliveries.len(), total);
        assert!(
            m.deliveries.values().all(|n| *n == 1),
            "an event was handled twice"
        );
        assert_eq!(m.out_of_order, 0);
    }
    assert_eq!(sink.inner.lock().unwrap().balance, want);
    assert_eq!(p.status().lag_time, Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_projection_follows_live_writes() {
    follows_live_writes(Arc::new(InMemoryEventStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_projection_follows_live_writes() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("proj"))
        .await
        .unwrap();
    follows_live_writes(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_projection_resumes_from_its_checkpoint_in_a_nats_bucket() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace("crash"),
        )
        .await
        .unwrap(),
    );
    let actors: Vec<String> = (0..4).map(|i| format!("a{i}")).collect();
    for v in 1..=25 {
        for a in &actors {
            store.save_event(&deposit(a, v, v as i64)).await.unwrap();
        }
    }
    let state = Arc::new(
        NatsProjectionStore::open(
            client.clone(),
            "PROJ_TEST",
            aether_nats::StorageKind::Memory,
        )
        .await
        .unwrap(),
    );
    let sink = Arc::new(Balances::default());
    // The first worker dies in the middle (its task is aborted, as a crash would stop it).
    let first = Arc::new(projection(store.clone(), state.clone(), sink.clone()));
    let task = tokio::spawn({
        let first = first.clone();
        async move { first.run(CancellationToken::new()).await }
    });
    wait_for("some progress", || first.status().handled >= 30).await;
    task.abort();
    let _ = task.await;
    let checkpoint = state
        .checkpoint("balances")
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(checkpoint > LogPosition::default());
    // A new worker (same sink: it survives the crash) resumes from the checkpoint.
    let second = projection(store.clone(), state.clone(), sink.clone());
    second.catch_up().await.unwrap();
    assert_eq!(second.status().lag, 0);
    let want = expected(store.as_ref(), &actors).await;
    assert_eq!(sink.inner.lock().unwrap().balance, want);
    // At least once: the redelivered events (of the page the crash interrupted) were ignored
    // by the sink's (actor, version) check, and nothing before the checkpoint came again.
    let m = sink.inner.lock().unwrap();
    assert_eq!(m.deliveries.len(), 100);
    assert!(m.deliveries.values().all(|n| *n <= 2));
    assert!(m.deliveries.values().filter(|n| **n == 2).count() <= config().page_size);
}

#[tokio::test]
async fn a_poison_event_is_parked_the_rest_goes_on_and_a_replay_after_the_fix_applies_it_once() {
    let store = Arc::new(InMemoryEventStore::new());
    store.save_event(&deposit("a", 1, 5)).await.unwrap();
    store.save_event(&deposit("a", 2, 13)).await.unwrap();
    store.save_event(&deposit("b", 1, 7)).await.unwrap();
    // An event that fits no version of the type: parked without retries.
    store
        .save_event(&Event::new("Deposited", "c", 1).with_field("amount", "lots"))
        .await
        .unwrap();
    store.save_event(&deposit("b", 2, 1)).await.unwrap();
    let sink = Arc::new(Balances::default());
    sink.poison.store(true, Ordering::SeqCst);
    let state = Arc::new(InMemoryProjectionStore::new());
    let p = projection(store.clone(), state.clone(), sink.clone());
    assert_eq!(p.catch_up().await.unwrap(), 5);
    let parked = p.parked().await.unwrap();
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].event.version, 2);
    assert_eq!(parked[0].attempts, 3, "the first try and two retries");
    assert!(parked[0].error.contains("unlucky"));
    assert_eq!(parked[1].attempts, 1);
    assert!(
        parked[1].error.contains("does not decode"),
        "{}",
        parked[1].error
    );
    assert_eq!(p.status().parked, 2);
    assert!(p.status().last_error.is_some());
    // The rest was processed.
    assert_eq!(sink.inner.lock().unwrap().balance.get("b"), Some(&8));
    // The fix: replaying applies the poison event once; the undecodable one stays parked.
    sink.poison.store(false, Ordering::SeqCst);
    assert_eq!(p.replay_parked().await.unwrap(), 1);
    assert_eq!(p.replay_parked().await.unwrap(), 0);
    assert_eq!(sink.inner.lock().unwrap().balance.get("a"), Some(&18));
    let left = p.parked().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attempts, 3, "tried again twice more");
}

#[tokio::test]
async fn stop_on_failure_stops_at_the_event_and_lag_and_reset_say_where_it_is() {
    let store = Arc::new(InMemoryEventStore::new());
    for v in 1..=3 {
        store.save_event(&deposit("a", v, 13)).await.unwrap();
    }
    let sink = Arc::new(Balances::default());
    sink.poison.store(true, Ordering::SeqCst);
    let p = Projection::new(
        "stopper",
        store.clone(),
        Arc::new(InMemoryProjectionStore::new()),
        sink.clone(),
        EventCodec::<Moved>::default(),
        ProjectionConfig {
            on_failure: OnFailure::Stop,
            ..config()
        },
    )
    .unwrap();
    let err = p.catch_up().await.unwrap_err();
    assert!(err.to_string().contains("stopped at"), "{err}");
    assert_eq!(p.status().handled, 0);
    sink.poison.store(false, Ordering::SeqCst);
    assert_eq!(p.catch_up().await.unwrap(), 3);
    let status = p.status();
    assert_eq!((status.lag, status.handled), (0, 3));
    // A reset handles everything again (the idempotent sink ignores it).
    p.reset().await.unwrap();
    assert_eq!(p.status().position, None);
    assert_eq!(p.catch_up().await.unwrap(), 3);
    assert!(Projection::new(
        "bad name",
        store,
        Arc::new(InMemoryProjectionStore::new()),
        sink,
        EventCodec::<Moved>::default(),
        config(),
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_projection_waits_and_reports_its_lag() {
    let store = Arc::new(InMemoryEventStore::new());
    let sink = Arc::new(Balances::default());
    let p = Arc::new(projection(
        store.clone(),
        Arc::new(InMemoryProjectionStore::new()),
        sink.clone(),
    ));
    p.pause();
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    for v in 1..=10 {
        store.save_event(&deposit("a", v, 1)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(p.status().handled, 0);
    assert!(p.status().paused);
    p.resume();
    wait_for("lag to reach zero", || {
        let s = p.status();
        s.handled == 10 && s.lag == 0
    })
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Balances, the position of the last event applied, and deliveries per event id.
type Ledger = (
    BTreeMap<String, i64>,
    Option<LogPosition>,
    HashMap<String, u32>,
);

/// A sink that stores the position of each event with its update, in one critical section
/// (standing in for a database transaction): exactly once.
#[derive(Default)]
struct Transactional {
    inner: Mutex<Ledger>,
    poison: AtomicBool,
}

#[async_trait::async_trait]
impl Handler<Moved> for Transactional {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let Moved::Deposited { amount } = e.event;
        if amount == 13 && self.poison.load(Ordering::SeqCst) {
            return Err("13 is unlucky".into());
        }
        let mut t = self.inner.lock().unwrap();
        *t.0.entry(e.actor_id.clone()).or_default() += amount;
        t.1 = Some(e.position);
        *t.2.entry(e.event_id.clone()).or_default() += 1;
        Ok(())
    }

    async fn position(&self, _projection: &str) -> Result<SinkPosition, BoxError> {
        Ok(SinkPosition::Kept(self.inner.lock().unwrap().1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_keeps_its_position_gets_every_event_exactly_once_across_a_crash() {
    let store = Arc::new(InMemoryEventStore::new());
    let actors: Vec<String> = (0..4).map(|i| format!("x{i}")).collect();
    for v in 1..=50 {
        for a in &actors {
            let amount = if v == 20 && a == "x1" { 13 } else { 1 };
            store.save_event(&deposit(a, v, amount)).await.unwrap();
        }
    }
    let sink = Arc::new(Transactional::default());
    sink.poison.store(true, Ordering::SeqCst);
    // The projection's store keeps the parked events; the checkpoint that counts is the
    // sink's own, so the store is never asked for one.
    let state = Arc::new(InMemoryProjectionStore::new());
    let make = || {
        Projection::new(
            "exactly-once",
            store.clone(),
            state.clone(),
            sink.clone(),
            EventCodec::<Moved>::default(),
            config(),
        )
        .unwrap()
    };
    let first = Arc::new(make());
    let task = tokio::spawn({
        let first = first.clone();
        async move { first.run(CancellationToken::new()).await }
    });
    wait_for("some progress", || first.status().handled >= 40).await;
    task.abort();
    let _ = task.await;
    let second = make();
    second.catch_up().await.unwrap();
    let (balances, position, deliveries) = {
        let t = sink.inner.lock().unwrap();
        (t.0.clone(), t.1, t.2.clone())
    };
    assert_eq!(deliveries.len(), 199, "every event but the poison one");
    assert!(deliveries.values().all(|n| *n == 1), "applied exactly once");
    assert_eq!(position, store.head().await.unwrap());
    assert_eq!(balances["x1"], 49);
    assert_eq!(second.parked().await.unwrap().len(), 1);
    assert_eq!(state.checkpoint("exactly-once").await.unwrap(), None);
}
