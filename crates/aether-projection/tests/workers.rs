//! Partitioned projections and persistent subscriptions over both stores: workers joining,
//! leaving and dying mid-stream while writers append; each partition handled by one worker at
//! a time, each actor's events in order, nothing lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec, RetryPolicy};
use aether_core::{BoxError, Event, EventLog, EventStore, LogPosition};
use aether_projection::{
    Handler, InMemoryProjectionStore, NatsProjectionStore, Order, OwnershipChange, Park,
    ParkedEvent, PartitionLease, Projected, ProjectionConfig, ProjectionStore, ProjectionWorker,
    ReportedStatus, WorkerConfig, WorkerHeartbeat,
};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
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

/// A shared read model, idempotent by (actor, version), that records what would break the
/// promises: an actor's version applied before the one preceding it.
#[derive(Default)]
struct Sink {
    inner: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    applied: HashMap<String, u64>,
    gaps: Vec<String>,
    deliveries: u64,
}

#[async_trait::async_trait]
impl Handler<Moved> for Sink {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let mut s = self.inner.lock().unwrap();
        s.deliveries += 1;
        let last = s.applied.get(&e.actor_id).copied().unwrap_or(0);
        if e.version == last + 1 {
            s.applied.insert(e.actor_id.clone(), e.version);
        } else if e.version > last + 1 {
            let gap = format!("{} v{} after v{last}", e.actor_id, e.version);
            s.gaps.push(gap);
        }
        Ok(())
    }
}

/// Which worker holds which partition, from the workers' own reports: a partition taken while
/// another worker still holds it is a violation, unless that worker crashed and its lease on
/// the partition has expired.
#[derive(Default)]
struct Register {
    holders: Mutex<BTreeMap<u32, String>>,
    violations: Mutex<Vec<String>>,
    moves: AtomicU32,
    /// For each crashed worker, its partitions and the earliest moment each lease can expire.
    crashed: Mutex<HashMap<String, BTreeMap<u32, Instant>>>,
    /// Partitions of crashed workers taken over: partition, from, by, when.
    takeovers: Mutex<Vec<(u32, String, String, Instant)>>,
}

impl Register {
    fn observe(self: &Arc<Self>, worker: &str) -> aether_projection::OwnershipObserver {
        let (register, worker) = (self.clone(), worker.to_string());
        Arc::new(move |change| {
            let mut holders = register.holders.lock().unwrap();
            match change {
                OwnershipChange::Acquired(p) => {
                    let now = Instant::now();
                    register.moves.fetch_add(1, Ordering::SeqCst);
                    let Some(other) = holders.insert(p, worker.clone()) else {
                        return;
                    };
                    let expires = register
                        .crashed
                        .lock()
                        .unwrap()
                        .get(&other)
                        .and_then(|leases| leases.get(&p).copied());
                    let violation = match expires {
                        Some(at) if now >= at => {
                            let mut takeovers = register.takeovers.lock().unwrap();
                            takeovers.push((p, other, worker.clone(), now));
                            return;
                        }
                        Some(at) => format!(
                            "{worker} took partition {p} from crashed {other} {:?} before its \
                             lease could expire",
                            at - now
                        ),
                        None => format!("{worker} took partition {p} held by {other}"),
                    };
                    register.violations.lock().unwrap().push(violation);
                }
                OwnershipChange::Released(p) => {
                    if holders.get(&p) == Some(&worker) {
                        holders.remove(&p);
                    } else {
                        register
                            .violations
                            .lock()
                            .unwrap()
                            .push(format!("{worker} released partition {p} it did not hold"));
                    }
                }
            }
        })
    }

    /// A worker that crashed (it released nothing): its partitions stay its own until their
    /// leases expire, no sooner than the lease timeout after its last lease write went
    /// through was sent. Returns them.
    fn crashed(&self, worker: &str, writes: &LeaseWrites, timeout: Duration) -> BTreeSet<u32> {
        let holders = self.holders.lock().unwrap();
        let sent = writes.sent.lock().unwrap();
        let leases: BTreeMap<u32, Instant> = holders
            .iter()
            .filter(|(_, w)| *w == worker)
            .map(|(p, _)| (*p, sent[p] + timeout))
            .collect();
        let held = leases.keys().copied().collect();
        self.crashed
            .lock()
            .unwrap()
            .insert(worker.to_string(), leases);
        held
    }
}

/// A worker's view of the projection store that records when it sent each lease write that
/// went through. The others see the new revision later than that, and take the partition
/// over only once the revision has stayed unchanged for the lease timeout.
struct LeaseWrites {
    inner: Arc<dyn ProjectionStore>,
    sent: Mutex<HashMap<u32, Instant>>,
}

#[async_trait::async_trait]
impl ProjectionStore for LeaseWrites {
    async fn checkpoint(&self, p: &str) -> aether_core::Result<Option<LogPosition>> {
        self.inner.checkpoint(p).await
    }
    async fn save_checkpoint(&self, p: &str, at: LogPosition) -> aether_core::Result<()> {
        self.inner.save_checkpoint(p, at).await
    }
    async fn clear_checkpoint(&self, p: &str) -> aether_core::Result<()> {
        self.inner.clear_checkpoint(p).await
    }
    async fn park(&self, p: &str, e: &ParkedEvent) -> aether_core::Result<()> {
        self.inner.park(p, e).await
    }
    async fn parked(&self, p: &str) -> aether_core::Result<Vec<ParkedEvent>> {
        self.inner.parked(p).await
    }
    async fn unpark(&self, p: &str, at: LogPosition) -> aether_core::Result<()> {
        self.inner.unpark(p, at).await
    }
    async fn report_status(&self, p: &str, status: &ReportedStatus) -> aether_core::Result<()> {
        self.inner.report_status(p, status).await
    }
    async fn reported_status(&self, p: &str) -> aether_core::Result<Option<ReportedStatus>> {
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
    async fn workers(&self, p: &str) -> aether_core::Result<Vec<WorkerHeartbeat>> {
        self.inner.workers(p).await
    }
    async fn leave(&self, p: &str, w: &str) -> aether_core::Result<()> {
        self.inner.leave(p, w).await
    }
    async fn lease(&self, p: &str, partition: u32) -> aether_core::Result<PartitionLease> {
        self.inner.lease(p, partition).await
    }
    async fn write_lease(
        &self,
        p: &str,
        partition: u32,
        owner: Option<&str>,
        expected: u64,
    ) -> aether_core::Result<Option<u64>> {
        let sent = Instant::now();
        let written = self
            .inner
            .write_lease(p, partition, owner, expected)
            .await?;
        if written.is_some() {
            self.sent.lock().unwrap().insert(partition, sent);
        }
        Ok(written)
    }
}

const PARTITIONS: u32 = 8;

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        partitions: PARTITIONS,
        heartbeat: Duration::from_millis(100),
        // Long enough that a worker starved by a loaded machine is not taken for dead.
        lease_timeout: Duration::from_secs(3),
    }
}

fn projection_config() -> ProjectionConfig {
    ProjectionConfig {
        page_size: 20,
        poll_interval: Duration::from_millis(10),
        ..ProjectionConfig::default()
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<aether_core::Result<()>>,
    worker: Arc<ProjectionWorker<Moved>>,
}

fn start(
    name: &str,
    log: Arc<dyn EventLog>,
    state: Arc<dyn ProjectionStore>,
    sink: Arc<Sink>,
    register: &Arc<Register>,
) -> Running {
    let worker = Arc::new(
        ProjectionWorker::new(
            "balances",
            name,
            log,
            state,
            sink,
            EventCodec::default(),
            projection_config(),
            worker_config(),
        )
        .unwrap()
        .with_observer(register.observe(name)),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        async move { worker.run(stop).await }
    });
    Running { stop, task, worker }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ACTORS: usize = 24;
const VERSIONS: u64 = 30;

/// Four workers, one leaving and one joining while writers append; then one dying.
async fn workers_share_the_partitions<S: EventStore + EventLog + 'static>(
    store: Arc<S>,
    state: Arc<dyn ProjectionStore>,
) {
    let sink = Arc::new(Sink::default());
    let register = Arc::new(Register::default());
    // w3 will crash: its lease writes are timed, to know when its leases can expire.
    let w3_writes = Arc::new(LeaseWrites {
        inner: state.clone(),
        sent: Mutex::default(),
    });
    let mut workers: BTreeMap<String, Running> = ["w1", "w2", "w3", "w4"]
        .into_iter()
        .map(|w| {
            let state = match w {
                "w3" => w3_writes.clone(),
                _ => state.clone(),
            };
            (
                w.to_string(),
                start(w, store.clone(), state, sink.clone(), &register),
            )
        })
        .collect();
    let actors: Vec<String> = (0..ACTORS).map(|i| format!("acct-{i}")).collect();
    let writers: Vec<_> = actors
        .chunks(ACTORS / 3)
        .map(|chunk| {
            let (store, chunk) = (store.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for v in 1..=VERSIONS {
                    for a in &chunk {
                        store
                            .save_event(&Event::new("Deposited", a, v).with_field("amount", 1))
                            .await
                            .unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let applied = || -> u64 { sink.inner.lock().unwrap().applied.values().sum() };
    let total = ACTORS as u64 * VERSIONS;

    wait_for("the four workers to hold every partition", || {
        register.holders.lock().unwrap().len() == PARTITIONS as usize
    })
    .await;
    wait_for("a third of the events", || applied() >= total / 3).await;
    // w2 leaves cleanly; w5 joins.
    let w2 = workers.remove("w2").unwrap();
    w2.stop.cancel();
    w2.task.await.unwrap().unwrap();
    assert!(w2.worker.owned().is_empty());
    workers.insert(
        "w5".into(),
        start("w5", store.clone(), state.clone(), sink.clone(), &register),
    );
    wait_for("w5 to take partitions", || {
        !workers["w5"].worker.owned().is_empty()
    })
    .await;
    wait_for("two thirds of the events", || applied() >= 2 * total / 3).await;
    wait_for("w3 to hold partitions", || {
        register.holders.lock().unwrap().values().any(|w| w == "w3")
    })
    .await;
    // w3 dies: its future is dropped, nothing is released. Its partitions stay its own until
    // their leases expire (the register calls an earlier takeover a violation), then others
    // take them over.
    let w3 = workers.remove("w3").unwrap();
    w3.task.abort();
    let _ = w3.task.await;
    let crashed_at = Instant::now();
    let orphans = register.crashed("w3", &w3_writes, worker_config().lease_timeout);
    assert!(!orphans.is_empty());

    for w in writers {
        w.await.unwrap();
    }
    wait_for("every event", || applied() == total).await;
    wait_for("every partition held by a live worker", || {
        let holders = register.holders.lock().unwrap();
        holders.len() == PARTITIONS as usize && holders.values().all(|w| w != "w3")
    })
    .await;
    // Each of w3's partitions was taken over once, after its lease expired.
    let violations = register.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    let takeovers = register.takeovers.lock().unwrap().clone();
    let taken: BTreeSet<u32> = takeovers.iter().map(|(p, ..)| *p).collect();
    assert_eq!(taken, orphans, "{takeovers:?}");
    assert_eq!(takeovers.len(), orphans.len(), "{takeovers:?}");
    assert!(
        takeovers
            .iter()
            .all(|(_, from, _, at)| from == "w3" && *at > crashed_at),
        "{takeovers:?}"
    );

    // Each partition is held by exactly one live worker, as each worker sees it too.
    let mut owned = BTreeSet::new();
    for r in workers.values() {
        for p in r.worker.owned() {
            assert!(owned.insert(p), "partition {p} owned twice");
        }
    }
    assert_eq!(owned.len(), PARTITIONS as usize);
    for (name, r) in workers {
        r.stop.cancel();
        r.task.await.unwrap().unwrap();
        assert!(r.worker.owned().is_empty(), "{name} still holds partitions");
    }
    assert!(
        register.violations.lock().unwrap().is_empty(),
        "{:?}",
        register.violations.lock().unwrap()
    );
    assert!(
        register.moves.load(Ordering::SeqCst) > PARTITIONS,
        "no partition moved"
    );
    {
        let s = sink.inner.lock().unwrap();
        assert!(
            s.gaps.is_empty(),
            "an actor's events came out of order: {:?}",
            s.gaps
        );
        assert!(actors.iter().all(|a| s.applied.get(a) == Some(&VERSIONS)));
        // At least once: a partition changing hands may hand a page over again, no more.
        assert!(s.deliveries >= total);
    }
    // Every partition has a checkpoint, within the stream.
    let head = store.head().await.unwrap().unwrap();
    for p in 0..PARTITIONS {
        let cp = state.checkpoint(&format!("balances.p{p}")).await.unwrap();
        assert!(cp.is_some_and(|c| c <= head), "partition {p}: {cp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_workers_share_the_partitions_as_they_join_leave_and_die() {
    workers_share_the_partitions(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemoryProjectionStore::new()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_workers_share_the_partitions_as_they_join_leave_and_die() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace("parts"),
    )
    .await
    .unwrap();
    let state = NatsProjectionStore::open(client, "PARTS", aether_core::StorageKind::Memory)
        .await
        .unwrap();
    workers_share_the_partitions(Arc::new(store), Arc::new(state)).await;
}

#[tokio::test]
async fn a_worker_configured_with_another_partition_count_refuses_to_start() {
    let state = Arc::new(InMemoryProjectionStore::new());
    assert_eq!(
        state.partition_count("balances", PARTITIONS).await.unwrap(),
        PARTITIONS
    );
    let worker = ProjectionWorker::<Moved>::new(
        "balances",
        "w1",
        Arc::new(InMemoryEventStore::new()),
        state,
        Arc::new(Sink::default()),
        EventCodec::default(),
        projection_config(),
        WorkerConfig {
            partitions: PARTITIONS + 1,
            ..worker_config()
        },
    )
    .unwrap();
    let err = worker.run(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, aether_core::Error::InvalidInput(_)), "{err}");
}

/// Work for competing consumers: sends that fail now and then, and some never succeed.
#[derive(Default)]
struct Mailer {
    sent: Mutex<HashMap<String, u32>>,
    attempts: Mutex<HashMap<String, u32>>,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
}

#[async_trait::async_trait]
impl Handler<Moved> for Mailer {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let key = format!("{}/{}", e.actor_id, e.version);
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Moved::Deposited { amount } = e.event;
        match amount {
            // A bad address: parked at once.
            -1 => return Err(Park::new("no such mailbox").into()),
            // A flaky server: fails twice, then succeeds.
            7 if attempt <= 2 => return Err("try again".into()),
            // Never succeeds: parked once the retries run out.
            99 => return Err("server down".into()),
            _ => {}
        }
        *self.sent.lock().unwrap().entry(key).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscription_spreads_work_retries_and_parks() {
    let store = Arc::new(InMemoryEventStore::new());
    let state = Arc::new(InMemoryProjectionStore::new());
    let mut expected_sent = 0;
    for a in 0..20 {
        for v in 1..=5u64 {
            let amount = match (a, v) {
                (3, 2) => -1,
                (5, 4) => 99,
                (_, 3) => 7,
                _ => 1,
            };
            if amount == 1 || amount == 7 {
                expected_sent += 1;
            }
            store
                .save_event(
                    &Event::new("Deposited", format!("user-{a}"), v).with_field("amount", amount),
                )
                .await
                .unwrap();
        }
    }
    let mailer = Arc::new(Mailer::default());
    let config = ProjectionConfig {
        page_size: 50,
        poll_interval: Duration::from_millis(10),
        concurrency: 8,
        order: Order::Any,
        retry: RetryPolicy::default()
            .max_retries(3)
            .initial_backoff(Duration::from_millis(1)),
        ..ProjectionConfig::default()
    };
    let workers: Vec<_> = ["c1", "c2"]
        .into_iter()
        .map(|name| {
            let worker = Arc::new(
                ProjectionWorker::new(
                    "mail",
                    name,
                    store.clone(),
                    state.clone(),
                    mailer.clone(),
                    EventCodec::<Moved>::default(),
                    config,
                    WorkerConfig {
                        partitions: 4,
                        ..worker_config()
                    },
                )
                .unwrap(),
            );
            let stop = CancellationToken::new();
            let task = tokio::spawn({
                let (worker, stop) = (worker.clone(), stop.clone());
                async move { worker.run(stop).await }
            });
            (worker, stop, task)
        })
        .collect();
    wait_for("every mail sent or parked", || {
        mailer.sent.lock().unwrap().len() == expected_sent
    })
    .await;
    // Both workers took a share of the partitions, and handled several events at once.
    wait_for("both workers to hold partitions", || {
        workers.iter().all(|(w, _, _)| !w.owned().is_empty())
    })
    .await;
    assert!(mailer.most_in_flight.load(Ordering::SeqCst) > 1);
    let parked_of = |state: Arc<InMemoryProjectionStore>| async move {
        let mut all = Vec::new();
        for p in 0..4 {
            all.extend(state.parked(&format!("mail.p{p}")).await.unwrap());
        }
        all
    };
    wait_for_async(|| {
        let state = state.clone();
        async move { parked_of(state).await.len() == 2 }
    })
    .await;
    let parked = parked_of(state.clone()).await;
    let by_actor: BTreeMap<String, (u64, u32)> = parked
        .iter()
        .map(|p| (p.event.actor_id.clone(), (p.event.version, p.attempts)))
        .collect();
    // The bad address was parked at its first attempt; the dead server after 1 + 3 retries.
    assert_eq!(by_actor["user-3"], (2, 1));
    assert_eq!(by_actor["user-5"], (4, 4));
    // Every mail went out (at least once: a partition changing hands may hand a page over
    // again), the flaky ones after two failed attempts.
    let sent = mailer.sent.lock().unwrap().clone();
    assert!(sent.values().all(|n| *n >= 1));
    assert!(mailer.attempts.lock().unwrap()["user-0/3"] >= 3);
    for (_, stop, task) in workers {
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}

async fn wait_for_async<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
