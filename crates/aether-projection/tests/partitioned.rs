//! Projections and projection workers over a partitioned log: several independent logs (here
//! in-memory stores), each actor in exactly one. Every event is handled once (at least once
//! after a crash, with at most the unfinished page again; exactly once with a sink that keeps
//! its position per log partition), each actor's events in order, each log partition from its
//! own checkpoint; status sums the partitions; a log that is one order keeps the checkpoint
//! name it always had; workers share the (log partition, partition) units and take over from
//! each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{
    BoxError, Error, Event, EventLog, EventStore, LogFilter, LogPage, LogPosition, LoggedEvent,
    Result,
};
use aether_projection::{
    Handler, InMemoryProjectionStore, OwnershipChange, Projected, Projection, ProjectionConfig,
    ProjectionStore, ProjectionWorker, SinkPosition, WorkerConfig,
};
use aether_store::InMemoryEventStore;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
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

/// A log spread over several in-memory stores, as the JetStream store spreads one over
/// several streams: its own reads are refused, its partitions are read.
struct PartitionedLog {
    parts: Vec<Arc<InMemoryEventStore>>,
}

impl PartitionedLog {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            parts: (0..n)
                .map(|_| Arc::new(InMemoryEventStore::new()))
                .collect(),
        })
    }

    /// The partition an actor lives in.
    fn partition_of(&self, actor: &str) -> usize {
        aether_placement::shard_for(actor, self.parts.len() as u32) as usize
    }

    async fn deposit(&self, actor: &str, version: u64, amount: i64) {
        let event = Event::new("Deposited", actor, version).with_field("amount", amount);
        self.parts[self.partition_of(actor)]
            .save_event(&event)
            .await
            .unwrap();
    }

    async fn heads(&self) -> Vec<Option<LogPosition>> {
        let mut heads = Vec::new();
        for p in &self.parts {
            heads.push(p.head().await.unwrap());
        }
        heads
    }
}

#[async_trait::async_trait]
impl EventLog for PartitionedLog {
    async fn read_after(&self, _: Option<LogPosition>, _: usize) -> Result<Vec<LoggedEvent>> {
        Err(Error::invalid("a partitioned log is read by partition"))
    }
    async fn head(&self) -> Result<Option<LogPosition>> {
        Err(Error::invalid("a partitioned log is read by partition"))
    }
    async fn read_filtered(
        &self,
        _: Option<LogPosition>,
        _: usize,
        _: &LogFilter,
    ) -> Result<LogPage> {
        Err(Error::invalid("a partitioned log is read by partition"))
    }
    fn partitions(&self) -> Vec<Arc<dyn EventLog>> {
        self.parts
            .iter()
            .map(|p| p.clone() as Arc<dyn EventLog>)
            .collect()
    }
}

/// Balances, idempotent by (actor, version): a version at or below the last one applied is
/// ignored, one further ahead than the next is an order violation. Records every delivery
/// and the name and log partition each event came with; optionally keeps its position per
/// projection name with its updates (exactly once).
#[derive(Default)]
struct Balances {
    inner: Mutex<Model>,
    keeps_position: bool,
    /// `(actor, version)` at which the handler hangs once, before applying: a crash.
    crash_at: Mutex<Option<(String, u64)>>,
    crashed: AtomicBool,
}

#[derive(Default, Clone, PartialEq, Debug)]
struct Model {
    balance: BTreeMap<String, i64>,
    last_version: HashMap<String, u64>,
    deliveries: BTreeMap<(String, u64), u32>,
    out_of_order: u32,
    /// Per actor, the projection names and log partitions its events came with.
    came_with: BTreeMap<String, BTreeSet<(String, u32)>>,
    positions: BTreeMap<String, LogPosition>,
}

impl Balances {
    fn keeping_position() -> Self {
        Self {
            keeps_position: true,
            ..Self::default()
        }
    }

    fn model(&self) -> Model {
        self.inner.lock().unwrap().clone()
    }

    fn total_deliveries(&self) -> u32 {
        self.inner.lock().unwrap().deliveries.values().sum()
    }
}

#[async_trait::async_trait]
impl Handler<Moved> for Balances {
    async fn handle(&self, e: &Projected<Moved>) -> std::result::Result<(), BoxError> {
        let armed = self
            .crash_at
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(a, v)| *a == e.actor_id && *v == e.version);
        if armed && !self.crashed.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut m = self.inner.lock().unwrap();
        *m.deliveries
            .entry((e.actor_id.clone(), e.version))
            .or_default() += 1;
        m.came_with
            .entry(e.actor_id.clone())
            .or_default()
            .insert((e.projection.to_string(), e.log_partition()));
        let last = m.last_version.get(&e.actor_id).copied().unwrap_or(0);
        if e.version > last + 1 {
            m.out_of_order += 1;
        }
        if e.version > last {
            let Moved::Deposited { amount } = e.event;
            *m.balance.entry(e.actor_id.clone()).or_default() += amount;
            m.last_version.insert(e.actor_id.clone(), e.version);
        }
        if self.keeps_position {
            // In the same "transaction" as the update.
            m.positions.insert(e.projection.to_string(), e.position);
        }
        Ok(())
    }

    async fn position(&self, projection: &str) -> std::result::Result<SinkPosition, BoxError> {
        if !self.keeps_position {
            return Ok(SinkPosition::NotKept);
        }
        Ok(SinkPosition::Kept(
            self.inner
                .lock()
                .unwrap()
                .positions
                .get(projection)
                .copied(),
        ))
    }
}

fn config(page_size: usize) -> ProjectionConfig {
    ProjectionConfig {
        page_size,
        poll_interval: Duration::from_millis(5),
        ..ProjectionConfig::default()
    }
}

fn projection(
    name: &str,
    log: Arc<dyn EventLog>,
    state: Arc<dyn ProjectionStore>,
    sink: Arc<Balances>,
    page_size: usize,
) -> Projection<Moved> {
    Projection::new(
        name,
        log,
        state,
        sink,
        EventCodec::default(),
        config(page_size),
    )
    .unwrap()
}

const ACTORS: usize = 12;
const VERSIONS: u64 = 6;

/// `ACTORS` actors with `VERSIONS` events each, written interleaved; the amount of version
/// `v` of actor `a` is `a * 100 + v`.
async fn write_history(log: &PartitionedLog) {
    for v in 1..=VERSIONS {
        for a in 0..ACTORS {
            log.deposit(&format!("acc-{a}"), v, a as i64 * 100 + v as i64)
                .await;
        }
    }
}

/// Every actor's events were each applied, in order, and came named with the actor's own
/// log partition.
fn assert_complete(log: &PartitionedLog, model: &Model, name: &str) {
    assert_eq!(model.out_of_order, 0, "an actor's events came out of order");
    assert_eq!(model.deliveries.len(), ACTORS * VERSIONS as usize);
    for a in 0..ACTORS {
        let actor = format!("acc-{a}");
        let expected: i64 = (1..=VERSIONS as i64).map(|v| a as i64 * 100 + v).sum();
        assert_eq!(model.balance.get(&actor), Some(&expected), "{actor}");
        let l = log.partition_of(&actor);
        assert_eq!(
            model.came_with[&actor],
            BTreeSet::from([(format!("{name}.l{l}"), l as u32)]),
            "{actor} lives in log partition {l}"
        );
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_catch_up_handles_every_partition_once_each_actor_in_order() {
    let log = PartitionedLog::new(4);
    write_history(&log).await;
    // Every partition holds some actors: a skipped partition would lose events.
    assert!(log.heads().await.iter().all(Option::is_some));
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    let p = projection("bal", log.clone(), state.clone(), sink.clone(), 4);
    assert_eq!(p.log_partitions(), 4);
    assert_eq!(
        p.checkpoint_names(),
        vec!["bal.l0", "bal.l1", "bal.l2", "bal.l3"]
    );
    assert_eq!(p.status().lag, None);

    let report = p.catch_up().await.unwrap();
    let total = ACTORS as u64 * VERSIONS;
    assert_eq!(
        (report.read, report.handled, report.parked),
        (total, total, 0)
    );
    let model = sink.model();
    assert!(model.deliveries.values().all(|&n| n == 1), "handled twice");
    assert_complete(&log, &model, "bal");

    // One checkpoint per partition, at that partition's own head; none under the name.
    for (l, head) in log.heads().await.into_iter().enumerate() {
        assert_eq!(state.checkpoint(&format!("bal.l{l}")).await.unwrap(), head);
    }
    assert_eq!(state.checkpoint("bal").await.unwrap(), None);

    let status = p.status();
    assert_eq!(
        (status.handled, status.lag, status.position),
        (total, Some(0), None)
    );
    let parts = p.partition_status();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts.iter().map(|s| s.handled).sum::<u64>(), total);
    for (l, s) in parts.iter().enumerate() {
        assert_eq!(s.name, format!("bal.l{l}"));
        assert_eq!(s.lag, Some(0));
    }

    // Nothing more to do.
    assert_eq!(p.catch_up().await.unwrap().read, 0);
}

#[tokio::test]
async fn the_lag_sums_each_partitions_head_against_its_own_position() {
    let log = PartitionedLog::new(3);
    write_history(&log).await;
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    let p = projection("lagging", log.clone(), state, sink.clone(), 50);
    p.catch_up().await.unwrap();
    assert_eq!(p.status().lag, Some(0));

    // Three new events in one partition, two in another, none in the third.
    let in_partition = |l: usize| {
        (0..ACTORS)
            .map(|a| format!("acc-{a}"))
            .find(|a| log.partition_of(a) == l)
            .unwrap()
    };
    let (a0, a2) = (in_partition(0), in_partition(2));
    for v in 1..=3 {
        log.deposit(&a0, VERSIONS + v, 1).await;
    }
    for v in 1..=2 {
        log.deposit(&a2, VERSIONS + v, 1).await;
    }
    // Paused, a catch-up looks at the log and handles nothing.
    p.pause();
    assert_eq!(p.catch_up().await.unwrap().read, 0);
    let lags: Vec<Option<u64>> = p.partition_status().iter().map(|s| s.lag).collect();
    assert_eq!(lags, vec![Some(3), Some(0), Some(2)]);
    assert_eq!(p.status().lag, Some(5));
    assert!(p.status().paused);

    p.resume();
    assert_eq!(p.catch_up().await.unwrap().handled, 5);
    assert_eq!(p.status().lag, Some(0));

    // Reset forgets every partition's checkpoint.
    p.reset().await.unwrap();
    assert_eq!(p.status().lag, None);
    let again = p.catch_up().await.unwrap();
    assert_eq!(again.read, ACTORS as u64 * VERSIONS + 5);
}

/// Runs `p` until the sink's armed crash point is reached and every other partition has
/// caught up, then drops it (a crash).
async fn run_until_crash(
    p: Projection<Moved>,
    log: &PartitionedLog,
    state: &InMemoryProjectionStore,
    sink: &Balances,
    crashed_partition: usize,
    name: &str,
) {
    let p = Arc::new(p);
    let running = tokio::spawn({
        let p = p.clone();
        async move { p.run(CancellationToken::new()).await }
    });
    let heads = log.heads().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut others_done = sink.crashed.load(Ordering::SeqCst);
        for (l, head) in heads.iter().enumerate() {
            if l == crashed_partition {
                continue;
            }
            let at = if sink.keeps_position {
                match sink.position(&format!("{name}.l{l}")).await.unwrap() {
                    SinkPosition::Kept(p) => p,
                    SinkPosition::NotKept => None,
                }
            } else {
                state.checkpoint(&format!("{name}.l{l}")).await.unwrap()
            };
            others_done &= at == *head;
        }
        if others_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other partitions never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.abort();
    let _ = running.await;
}

#[tokio::test]
async fn a_restart_resumes_each_partition_from_its_own_checkpoint() {
    let log = PartitionedLog::new(4);
    write_history(&log).await;
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    // A crash in the middle of partition 1's history.
    let victim = (0..ACTORS)
        .map(|a| format!("acc-{a}"))
        .find(|a| log.partition_of(a) == 1)
        .unwrap();
    *sink.crash_at.lock().unwrap() = Some((victim, 4));
    const PAGE: usize = 3;
    let p = projection("resumed", log.clone(), state.clone(), sink.clone(), PAGE);
    run_until_crash(p, &log, &state, &sink, 1, "resumed").await;
    let before = sink.total_deliveries();
    assert!(
        before < ACTORS as u32 * VERSIONS as u32,
        "crashed mid-stream"
    );

    let p = projection("resumed", log.clone(), state.clone(), sink.clone(), PAGE);
    p.catch_up().await.unwrap();
    let model = sink.model();
    assert_complete(&log, &model, "resumed");
    // Handed over again: only events of the crashed partition's unfinished page.
    let twice: Vec<&(String, u64)> = model
        .deliveries
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.len() <= PAGE, "more than a page again: {twice:?}");
    assert!(
        twice.iter().all(|(a, _)| log.partition_of(a) == 1),
        "an event of a partition that had checkpointed came again: {twice:?}"
    );
    assert!(model.deliveries.values().all(|&n| n <= 2));
}

#[tokio::test]
async fn a_sink_keeping_one_position_per_partition_gets_every_event_exactly_once() {
    let log = PartitionedLog::new(3);
    write_history(&log).await;
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::keeping_position());
    let victim = (0..ACTORS)
        .map(|a| format!("acc-{a}"))
        .find(|a| log.partition_of(a) == 2)
        .unwrap();
    *sink.crash_at.lock().unwrap() = Some((victim, 3));
    let p = projection("exact", log.clone(), state.clone(), sink.clone(), 4);
    run_until_crash(p, &log, &state, &sink, 2, "exact").await;

    let p = projection("exact", log.clone(), state.clone(), sink.clone(), 4);
    p.catch_up().await.unwrap();
    let model = sink.model();
    assert_complete(&log, &model, "exact");
    assert!(
        model.deliveries.values().all(|&n| n == 1),
        "an event was applied twice"
    );
    // One position per log partition, each at its own head; no checkpoint in the store.
    let heads = log.heads().await;
    let expected: BTreeMap<String, LogPosition> = heads
        .iter()
        .enumerate()
        .map(|(l, h)| (format!("exact.l{l}"), h.unwrap()))
        .collect();
    assert_eq!(model.positions, expected);
    for l in 0..3 {
        assert_eq!(
            state.checkpoint(&format!("exact.l{l}")).await.unwrap(),
            None
        );
    }
    assert!(p.status().kept_by_sink);
    assert_eq!(p.status().lag, Some(0));
}

#[tokio::test]
async fn a_log_that_is_one_order_keeps_the_checkpoint_under_the_name() {
    let store = Arc::new(InMemoryEventStore::new());
    for v in 1..=3 {
        store
            .save_event(&Event::new("Deposited", "acc", v).with_field("amount", 1))
            .await
            .unwrap();
    }
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    let p = projection("single", store.clone(), state.clone(), sink.clone(), 10);
    assert_eq!(p.log_partitions(), 1);
    assert_eq!(p.checkpoint_names(), vec!["single"]);
    assert_eq!(p.catch_up().await.unwrap().handled, 3);
    assert_eq!(
        state.checkpoint("single").await.unwrap(),
        store.head().await.unwrap()
    );
    assert_eq!(state.checkpoint("single.l0").await.unwrap(), None);
    assert_eq!(
        sink.model().came_with["acc"],
        BTreeSet::from([("single".to_string(), 0)])
    );
    assert_eq!(p.status().name, "single");
    assert_eq!(p.status().position, store.head().await.unwrap());
}

fn worker(
    id: &str,
    log: Arc<dyn EventLog>,
    state: Arc<dyn ProjectionStore>,
    sink: Arc<Balances>,
    partitions: u32,
    changes: Arc<Mutex<Vec<(String, OwnershipChange)>>>,
) -> Arc<ProjectionWorker<Moved>> {
    let me = id.to_string();
    Arc::new(
        ProjectionWorker::new(
            "spread",
            id,
            log,
            state,
            sink,
            EventCodec::default(),
            config(5),
            WorkerConfig {
                partitions,
                heartbeat: Duration::from_millis(20),
                lease_timeout: Duration::from_millis(300),
            },
        )
        .unwrap()
        .with_observer(Arc::new(move |c| {
            changes.lock().unwrap().push((me.clone(), c))
        })),
    )
}

/// Replays the observers' reports: no unit is ever held by two workers at once.
fn assert_never_shared(changes: &[(String, OwnershipChange)]) {
    let mut holder: HashMap<u32, String> = HashMap::new();
    for (w, c) in changes {
        match c {
            OwnershipChange::Acquired(u) => {
                if let Some(other) = holder.insert(*u, w.clone()) {
                    panic!("unit {u} taken by {w} while {other} held it");
                }
            }
            OwnershipChange::Released(u) => {
                assert_eq!(holder.remove(u).as_deref(), Some(w.as_str()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_units_of_a_partitioned_log_and_take_over_from_each_other() {
    const SHARDS: u32 = 2;
    let log = PartitionedLog::new(3);
    write_history(&log).await;
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let a = worker(
        "a",
        log.clone(),
        state.clone(),
        sink.clone(),
        SHARDS,
        changes.clone(),
    );
    let b = worker(
        "b",
        log.clone(),
        state.clone(),
        sink.clone(),
        SHARDS,
        changes.clone(),
    );
    assert_eq!((a.log_partitions(), a.units()), (3, 6));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let run_a = tokio::spawn({
        let (w, s) = (a.clone(), stop_a.clone());
        async move { w.run(s).await }
    });
    let run_b = tokio::spawn({
        let (w, s) = (b.clone(), stop_b.clone());
        async move { w.run(s).await }
    });

    // Both hold units, and between them every one of the six.
    eventually("both workers hold units covering all six", || {
        let (ua, ub) = (a.owned(), b.owned());
        let all: BTreeSet<u32> = ua.iter().chain(&ub).copied().collect();
        !ua.is_empty() && !ub.is_empty() && all.len() == 6 && ua.len() + ub.len() == 6
    })
    .await;
    let units: BTreeSet<(u32, u32)> = a.owned_units().into_iter().chain(b.owned_units()).collect();
    let expected: BTreeSet<(u32, u32)> = (0..3)
        .flat_map(|l| (0..SHARDS).map(move |k| (l, k)))
        .collect();
    assert_eq!(units, expected);

    // Writes go on while `a` stops mid-stream; `b` takes its units over.
    let writer = tokio::spawn({
        let log = log.clone();
        async move {
            for v in VERSIONS + 1..=VERSIONS + 20 {
                for x in 0..ACTORS {
                    log.deposit(&format!("acc-{x}"), v, 1).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop_a.cancel();
    run_a.await.unwrap().unwrap();
    assert!(a.owned().is_empty());
    writer.await.unwrap();
    let heads = log.heads().await;
    eventually(
        "b holds every unit and every unit is at its partition's head",
        || b.owned().len() == 6,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for l in 0..3u32 {
            for k in 0..SHARDS {
                let at = state
                    .checkpoint(&format!("spread.l{l}.p{k}"))
                    .await
                    .unwrap();
                done &= at == heads[l as usize];
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the units never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_b.cancel();
    run_b.await.unwrap().unwrap();

    assert_never_shared(&changes.lock().unwrap());
    let model = sink.model();
    assert_eq!(model.out_of_order, 0, "an actor's events came out of order");
    // Each actor went through its own log partition and its own shard only.
    for (actor, came) in &model.came_with {
        let l = log.partition_of(actor);
        let k = aether_placement::shard_for(actor, SHARDS);
        assert_eq!(
            *came,
            BTreeSet::from([(format!("spread.l{l}.p{k}"), l as u32)]),
            "{actor}"
        );
    }
    // Nothing under the names of a log that is one order.
    assert_eq!(state.checkpoint("spread.p0").await.unwrap(), None);

    // The read model equals a rebuild from scratch.
    let rebuilt = Arc::new(Balances::default());
    projection(
        "rebuild",
        log.clone(),
        Arc::new(InMemoryProjectionStore::new()),
        rebuilt.clone(),
        100,
    )
    .catch_up()
    .await
    .unwrap();
    let rebuilt = rebuilt.model();
    assert_eq!(rebuilt.deliveries.len(), ACTORS * (VERSIONS as usize + 20));
    assert_eq!(model.balance, rebuilt.balance);
    assert_eq!(model.last_version, rebuilt.last_version);
}

#[tokio::test]
async fn a_worker_of_another_log_partitioning_refuses_to_start() {
    let partitioned = PartitionedLog::new(3);
    let state = Arc::new(InMemoryProjectionStore::new());
    let sink = Arc::new(Balances::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let first = worker(
        "first",
        partitioned.clone(),
        state.clone(),
        sink.clone(),
        4,
        changes.clone(),
    );
    let stop = CancellationToken::new();
    stop.cancel();
    // Cancelled at once: it stores the layout and leaves.
    first.run(stop.clone()).await.unwrap();

    // The same partition count over a log that is one order, or over two partitions, and
    // the same unit count split otherwise: all refused.
    let one_order: Arc<dyn EventLog> = Arc::new(InMemoryEventStore::new());
    for (log, partitions) in [
        (one_order, 4),
        (PartitionedLog::new(2) as Arc<dyn EventLog>, 4),
        (PartitionedLog::new(4) as Arc<dyn EventLog>, 3),
        (partitioned.clone() as Arc<dyn EventLog>, 2),
    ] {
        let other = worker(
            "other",
            log,
            state.clone(),
            sink.clone(),
            partitions,
            changes.clone(),
        );
        let err = other.run(stop.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("log partitions"), "{err}");
    }
    // The same layout starts.
    let same = worker("same", partitioned, state.clone(), sink, 4, changes);
    same.run(stop).await.unwrap();
}

#[tokio::test]
async fn a_worker_over_a_log_that_is_one_order_stores_its_partition_count_as_before() {
    let store: Arc<dyn EventLog> = Arc::new(InMemoryEventStore::new());
    let state = Arc::new(InMemoryProjectionStore::new());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let w = worker(
        "solo",
        store,
        state.clone(),
        Arc::new(Balances::default()),
        4,
        changes,
    );
    assert_eq!((w.log_partitions(), w.units()), (1, 4));
    let stop = CancellationToken::new();
    stop.cancel();
    w.run(stop).await.unwrap();
    // Already stored: the proposal is ignored.
    assert_eq!(state.partition_count("spread", 99).await.unwrap(), 4);
}
