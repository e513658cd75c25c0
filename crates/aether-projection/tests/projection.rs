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
    Handler, InMemoryProjectionStore, NatsProjectionStore, OnFailure, PositionKeeper, Projected,
    Projection, ProjectionConfig, ProjectionStore, SinkPosition,
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

/// A crash inside a sink: the handler that reaches the armed event (actor, version) says so
/// and never returns, so a projection aborted then is certainly interrupted at that event, with
/// the rest of the stream still to handle. It fires once: a projection started after the
/// crash goes through.
#[derive(Default)]
struct CrashPoint {
    at: Mutex<Option<(String, u64)>>,
    reached: AtomicBool,
}

impl CrashPoint {
    fn arm(&self, actor: &str, version: u64) {
        *self.at.lock().unwrap() = Some((actor.to_string(), version));
    }

    fn reached(&self) -> bool {
        self.reached.load(Ordering::SeqCst)
    }

    async fn hang_if_armed_for(&self, e: &Projected<Moved>) {
        let armed = self
            .at
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(actor, version)| *actor == e.actor_id && *version == e.version);
        if armed && !self.reached.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

/// A read model of balances, idempotent by (actor, version), that also records how often it
/// saw each event and checks each actor's events come in version order.
#[derive(Default)]
struct Balances {
    inner: Mutex<Model>,
    /// When set, deposits of exactly 13 fail (a poison event).
    poison: AtomicBool,
    /// Where the handler hangs after applying an event, before returning.
    crash: CrashPoint,
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
        {
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
        }
        // The update is applied and its position is not: the projection checkpoints the page
        // once the handler returns. A crash here falls between the two.
        self.crash.hang_if_armed_for(e).await;
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

/// Every event in the log, in its order.
async fn everything(log: &dyn EventLog) -> Vec<aether_core::LoggedEvent> {
    log.read_after(None, 10_000).await.unwrap()
}

/// Where (actor, version) is in `log`: its position and how many events come before it.
fn find(log: &[aether_core::LoggedEvent], actor: &str, version: u64) -> (LogPosition, usize) {
    let i = log
        .iter()
        .position(|l| l.event.actor_id == actor && l.event.version == version)
        .unwrap();
    (log[i].position, i)
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
        s.handled as usize == total && s.lag == Some(0)
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
    assert_eq!(p.status().lag_time, Some(Duration::ZERO));
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
            aether_core::StorageKind::Memory,
        )
        .await
        .unwrap(),
    );
    let log = everything(store.as_ref()).await;
    let head = log.last().unwrap().position;
    // The first worker dies at the 39th event, in the middle of a page (of 7), after the sink
    // applied the event and before the handler returned: its task is aborted, as a crash
    // would stop it.
    let (crash_at, before) = find(&log, "a2", 10);
    let sink = Arc::new(Balances::default());
    sink.crash.arm("a2", 10);
    let first = Arc::new(projection(store.clone(), state.clone(), sink.clone()));
    let task = tokio::spawn({
        let first = first.clone();
        async move { first.run(CancellationToken::new()).await }
    });
    wait_for("the crash point", || sink.crash.reached()).await;
    // Work remained when it crashed: the event's update is applied, its position is not (the
    // checkpoint is before it), and the events after it are not handled.
    let at_crash = state.checkpoint("balances").await.unwrap();
    assert!(
        at_crash.is_some_and(|c| c < crash_at),
        "checkpoint {at_crash:?}, crash at {crash_at}"
    );
    // Handled since the checkpoint: more than the interrupted event, so the redelivery below
    // covers fully handled events too.
    let since_checkpoint = log[..=before]
        .iter()
        .filter(|l| at_crash < Some(l.position))
        .count();
    assert!(since_checkpoint > 1, "the crash fell at a page's start");
    assert!(crash_at < head);
    assert_eq!(sink.inner.lock().unwrap().last_version["a2"], 10);
    assert_eq!(first.status().handled, before as u64);
    task.abort();
    let _ = task.await;
    assert_eq!(state.checkpoint("balances").await.unwrap(), at_crash);
    // A new worker (same sink: it survives the crash) resumes from the checkpoint.
    let second = projection(store.clone(), state.clone(), sink.clone());
    second.catch_up().await.unwrap();
    assert_eq!(second.status().lag, Some(0));
    let want = expected(store.as_ref(), &actors).await;
    assert_eq!(sink.inner.lock().unwrap().balance, want);
    // At least once, and no more than the crash requires: what was handled after the
    // checkpoint, up to the event whose update the crash left without its position, came
    // again (and the sink's (actor, version) check ignored it); the rest came once.
    let m = sink.inner.lock().unwrap();
    assert_eq!(m.deliveries.len(), 100);
    for l in &log {
        let again = at_crash < Some(l.position) && l.position <= crash_at;
        assert_eq!(
            m.deliveries[&l.event.id],
            if again { 2 } else { 1 },
            "event at {} (checkpoint {at_crash:?}, crash at {crash_at})",
            l.position
        );
    }
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
    // Parked events are reported apart from handled ones: three applied, two set aside.
    let report = p.catch_up().await.unwrap();
    assert_eq!((report.read, report.handled, report.parked), (5, 3, 2));
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
    assert_eq!((p.status().handled, p.status().parked), (3, 2));
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
    assert_eq!(p.catch_up().await.unwrap().handled, 3);
    let status = p.status();
    assert_eq!((status.lag, status.handled), (Some(0), 3));
    // A reset handles everything again (the idempotent sink ignores it).
    p.reset().await.unwrap();
    assert_eq!((p.status().position, p.status().lag), (None, None));
    assert_eq!(p.catch_up().await.unwrap().handled, 3);
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
        s.handled == 10 && s.lag == Some(0)
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
    /// Where the handler hangs after its transaction, before returning.
    crash: CrashPoint,
}

#[async_trait::async_trait]
impl Handler<Moved> for Transactional {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let Moved::Deposited { amount } = e.event;
        if amount == 13 && self.poison.load(Ordering::SeqCst) {
            return Err("13 is unlucky".into());
        }
        {
            let mut t = self.inner.lock().unwrap();
            *t.0.entry(e.actor_id.clone()).or_default() += amount;
            t.1 = Some(e.position);
            *t.2.entry(e.event_id.clone()).or_default() += 1;
        }
        // Committed with its position: a crash can fall before this transaction or after
        // it, never between the update and the position.
        self.crash.hang_if_armed_for(e).await;
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
    let log = everything(store.as_ref()).await;
    let sink = Arc::new(Transactional::default());
    sink.poison.store(true, Ordering::SeqCst);
    // The crash falls at the 115th event, after the poison event (the 78th) was parked, once
    // the sink has committed the event with its position and before the handler returns: the
    // projection has not seen it handled, the sink has it.
    let (crash_at, before) = find(&log, "x2", 29);
    sink.crash.arm("x2", 29);
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
    wait_for("the crash point", || sink.crash.reached()).await;
    // Work remained when it crashed: the sink holds the event and its position, the projection
    // has handled or parked only the events before it, and events come after it.
    assert_eq!(sink.inner.lock().unwrap().1, Some(crash_at));
    let s = first.status();
    assert_eq!((s.handled, s.parked), (before as u64 - 1, 1), "{s:?}");
    assert!(crash_at < log.last().unwrap().position);
    task.abort();
    let _ = task.await;
    let second = make();
    second.catch_up().await.unwrap();
    let (balances, position, deliveries) = {
        let t = sink.inner.lock().unwrap();
        (t.0.clone(), t.1, t.2.clone())
    };
    assert_eq!(deliveries.len(), 199, "every event but the poison one");
    assert!(
        deliveries.values().all(|n| *n == 1),
        "applied exactly once: {:?}",
        deliveries
            .iter()
            .filter(|(_, n)| **n != 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(position, store.head().await.unwrap());
    assert_eq!(balances["x1"], 49);
    assert_eq!(second.parked().await.unwrap().len(), 1);
    assert_eq!(state.checkpoint("exactly-once").await.unwrap(), None);
    // No checkpoint, but a report of where it stands, for operators' tools.
    let report = state
        .reported_status("exactly-once")
        .await
        .unwrap()
        .expect("a status report");
    assert_eq!(report.position_kept_by, PositionKeeper::Sink);
    assert_eq!(report.lag, Some(0));
    assert_eq!(report.parked, second.status().parked);
}

/// A log whose reads wait until the test opens the gate.
struct GatedLog {
    inner: Arc<InMemoryEventStore>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl EventLog for GatedLog {
    async fn read_after(
        &self,
        after: Option<LogPosition>,
        max: usize,
    ) -> aether_core::Result<Vec<aether_core::LoggedEvent>> {
        let _open = self.gate.acquire().await;
        self.inner.read_after(after, max).await
    }
    async fn head(&self) -> aether_core::Result<Option<LogPosition>> {
        self.inner.head().await
    }
}

/// A sink that applies one event, then waits for the test before each of the others.
struct Stepwise {
    applied: std::sync::atomic::AtomicU64,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Handler<Moved> for Stepwise {
    async fn handle(&self, _e: &Projected<Moved>) -> Result<(), BoxError> {
        if self.applied.load(Ordering::SeqCst) > 0 {
            let permit = self.gate.acquire().await?;
            permit.forget();
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_is_unknown_until_the_head_is_read_and_counts_a_page_until_it_is_handled() {
    let store = Arc::new(InMemoryEventStore::new());
    for v in 1..=200 {
        store.save_event(&deposit("a", v, 1)).await.unwrap();
    }
    let log = Arc::new(GatedLog {
        inner: store.clone(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let sink = Arc::new(Stepwise {
        applied: Default::default(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let p = Arc::new(
        Projection::new(
            "stepwise",
            log.clone(),
            Arc::new(InMemoryProjectionStore::new()),
            sink.clone(),
            EventCodec::<Moved>::default(),
            ProjectionConfig {
                page_size: 500,
                ..config()
            },
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    // Right after the spawn it has not read the log: how far behind it is, is not known.
    let s = p.status();
    assert_eq!(
        (s.lag, s.lag_time, s.head, s.handled),
        (None, None, None, 0)
    );

    // One event of the page applied, 199 to go: the page counts as not handled yet, so
    // nobody waiting for a lag of 0 reads a half-applied read model.
    log.gate.add_permits(usize::MAX >> 4);
    wait_for("the first event", || p.status().handled == 1).await;
    let s = p.status();
    assert_eq!(s.head, Some(store.head().await.unwrap().unwrap()));
    assert_eq!(s.lag, Some(200), "{s:?}");
    sink.gate.add_permits(199);
    wait_for("lag to reach zero", || p.status().lag == Some(0)).await;
    assert_eq!(p.status().handled, 200);
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Projection state in memory that counts the status reports.
#[derive(Default)]
struct CountingReports {
    inner: InMemoryProjectionStore,
    reports: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl ProjectionStore for CountingReports {
    async fn checkpoint(&self, p: &str) -> aether_core::Result<Option<LogPosition>> {
        self.inner.checkpoint(p).await
    }
    async fn save_checkpoint(&self, p: &str, at: LogPosition) -> aether_core::Result<()> {
        self.inner.save_checkpoint(p, at).await
    }
    async fn clear_checkpoint(&self, p: &str) -> aether_core::Result<()> {
        self.inner.clear_checkpoint(p).await
    }
    async fn park(&self, p: &str, e: &aether_projection::ParkedEvent) -> aether_core::Result<()> {
        self.inner.park(p, e).await
    }
    async fn parked(&self, p: &str) -> aether_core::Result<Vec<aether_projection::ParkedEvent>> {
        self.inner.parked(p).await
    }
    async fn unpark(&self, p: &str, at: LogPosition) -> aether_core::Result<()> {
        self.inner.unpark(p, at).await
    }
    async fn report_status(
        &self,
        p: &str,
        status: &aether_projection::ReportedStatus,
    ) -> aether_core::Result<()> {
        self.reports.fetch_add(1, Ordering::SeqCst);
        self.inner.report_status(p, status).await
    }
    async fn reported_status(
        &self,
        p: &str,
    ) -> aether_core::Result<Option<aether_projection::ReportedStatus>> {
        self.inner.reported_status(p).await
    }
    async fn request_replay(&self, p: &str) -> aether_core::Result<()> {
        self.inner.request_replay(p).await
    }
    async fn take_replay_request(&self, p: &str) -> aether_core::Result<bool> {
        self.inner.take_replay_request(p).await
    }
    async fn partition_count(&self, p: &str, proposed: u32) -> aether_core::Result<u32> {
        self.inner.partition_count(p, proposed).await
    }
    async fn heartbeat(&self, p: &str, w: &str) -> aether_core::Result<()> {
        self.inner.heartbeat(p, w).await
    }
    async fn workers(
        &self,
        p: &str,
    ) -> aether_core::Result<Vec<aether_projection::WorkerHeartbeat>> {
        self.inner.workers(p).await
    }
    async fn leave(&self, p: &str, w: &str) -> aether_core::Result<()> {
        self.inner.leave(p, w).await
    }
    async fn lease(
        &self,
        p: &str,
        partition: u32,
    ) -> aether_core::Result<aether_projection::PartitionLease> {
        self.inner.lease(p, partition).await
    }
    async fn write_lease(
        &self,
        p: &str,
        partition: u32,
        owner: Option<&str>,
        expected: u64,
    ) -> aether_core::Result<Option<u64>> {
        self.inner.write_lease(p, partition, owner, expected).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_keeps_its_position_reports_its_status_at_a_bounded_rate() {
    let store = Arc::new(InMemoryEventStore::new());
    for v in 1..=100 {
        store.save_event(&deposit("a", v, 1)).await.unwrap();
    }
    let state = Arc::new(CountingReports::default());
    let sink = Arc::new(Transactional::default());
    let p = Arc::new(
        Projection::new(
            "kept",
            store.clone(),
            state.clone(),
            sink.clone(),
            EventCodec::<Moved>::default(),
            ProjectionConfig {
                status_interval: Duration::from_millis(200),
                ..config()
            },
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    let deadline = started + Duration::from_secs(60);
    loop {
        let report = state.reported_status("kept").await.unwrap();
        if report.is_some_and(|r| r.lag == Some(0) && r.position == sink.inner.lock().unwrap().1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no report of the end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle, it keeps reporting (its report's age says it is alive), at most once an interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    let reports = state.reports.load(Ordering::SeqCst);
    let most = (elapsed.as_millis() / 200) as u32 + 1;
    assert!(
        (2..=most).contains(&reports),
        "{reports} reports in {elapsed:?} for 100 events (at most {most})"
    );
    let report = state.reported_status("kept").await.unwrap().unwrap();
    assert_eq!(report.position_kept_by, PositionKeeper::Sink);
    assert_eq!(report.position, store.head().await.unwrap());
    assert_eq!((report.handled, report.parked), (100, 0));

    // A projection whose store keeps the checkpoint reports nothing: the checkpoint says it.
    let plain = Arc::new(CountingReports::default());
    projection(store.clone(), plain.clone(), Arc::new(Balances::default()))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(plain.reports.load(Ordering::SeqCst), 0);
    assert_eq!(plain.reported_status("balances").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_lists_a_projection_whose_sink_keeps_its_position() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(client.clone(), JetStreamConfig::default().namespace("kept"))
            .await
            .unwrap(),
    );
    for v in 1..=5 {
        store.save_event(&deposit("a", v, 1)).await.unwrap();
    }
    let state = Arc::new(
        NatsProjectionStore::open(client, "PROJ_KEPT", aether_core::StorageKind::Memory)
            .await
            .unwrap(),
    );
    let sink = Arc::new(Transactional::default());
    Projection::new(
        "kept",
        store.clone(),
        state.clone(),
        sink.clone(),
        EventCodec::<Moved>::default(),
        config(),
    )
    .unwrap()
    .catch_up()
    .await
    .unwrap();
    let head = store.head().await.unwrap();
    let listed = state.summaries().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "kept");
    assert_eq!(listed[0].kept_by, PositionKeeper::Sink);
    assert_eq!(listed[0].position, head);
    assert_eq!(listed[0].lag(head), 0);
    assert_eq!(
        state.summary("kept").await.unwrap(),
        Some(listed[0].clone())
    );
    // The same name later run with the checkpoint in the bucket: the newer of the two counts.
    projection(store.clone(), state.clone(), Arc::new(Balances::default()))
        .catch_up()
        .await
        .unwrap();
    state.save_checkpoint("kept", head.unwrap()).await.unwrap();
    let listed = state.summaries().await.unwrap();
    let kept = listed.iter().find(|s| s.name == "kept").unwrap();
    assert_eq!(kept.kept_by, PositionKeeper::Store);
    assert!(listed.iter().any(|s| s.name == "balances"));
    assert_eq!(state.summary("nobody").await.unwrap(), None);
}
