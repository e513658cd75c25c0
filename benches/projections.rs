//! Projections: a projection reading a 10 000-event stream (100 actors) into a sink that does
//! nothing, next to a raw ordered consumer over the same subjects (its floor), into a sink
//! that keeps balances in a map (a small real read model), and into the SQLite read model of
//! the examples (`SqlBalances`: a file, one transaction per event with its position, exactly
//! once).
//!
//! `projection_partitions` and `projection_partitions_remote`: the same 10 000 events (200
//! typed actors, 50 events each, one message per event) stored once in a log of one stream
//! (`n1`) and once in a log over 8 partitions (`n8`, `JetStreamConfig::partitions`), each read
//! by four `ProjectionWorker`s in this process (`WorkerConfig::partitions` = 4: 4 units of work
//! for `n1`, 8 × 4 = 32 for `n8`, 1 and 8 per worker). Each iteration is a full catch-up from
//! scratch: a fresh `InMemoryProjectionStore`, the four workers built and started, and the
//! time runs from their start until the sink has counted every event (polled, with a
//! deadline). Inside the measurement: the workers' first coordination round (partition
//! count, heartbeats, leases, in memory), every unit's start and reads, and the handling.
//! Outside: the events' writes, building the workers, and stopping them. The four
//! workers' heartbeats are written just before they start, as a group of workers that has
//! been running would have them, so that each worker's first round sees all four and claims
//! its share at once (no unit changes hands mid-catch-up; each iteration checks that every
//! worker holds a quarter of the units and that every event was handled exactly once).
//! Heartbeats every 50 ms, leases of 500 ms.
//!
//! The sinks: `projection_partitions` counts events and does nothing else (what reading
//! costs, CPU-bound on this machine); `projection_partitions_remote` awaits
//! `tokio::time::sleep(200 µs)` per event, modelling a read model written over the network
//! (one round trip per event, no CPU): the kind of sink partitions are meant for, since
//! units wait at once. Tokio's timer has a resolution of 1 ms, so each of those awaits
//! lasts longer than 200 µs: the bench prints the mean it measured.
//!
//! Both groups run in both orders, A B B A (`n1/n1_first`, `n8/n1_first`, then
//! `n8/n8_first`, `n1/n8_first`), so that `bench-report` gives the ratio of each order.
//!
//! A worker's unit `(l, k)` holds the actors of log partition `l` whose shard
//! (`aether_placement::shard_for`, of the actor id) is `k`. The store's partition is the same
//! hash of the id modulo N, so when N and P share a factor, most units hold no actor: with
//! N = 8, P = 4, partition `l` holds only shard `l mod 4`, and 8 of the 32 units hold every
//! event (the lcm of N and P). The bench prints how many units hold events and the largest
//! unit, which bounds what a latency-bound sink can gain.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{DomainEvent, EventCodec};
use aether_benches::setup::OrFail;
use aether_core::{BoxError, Event, EventStore};
use aether_examples::bank::BankEvent;
use aether_examples::read_model::SqlBalances;
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig, ProjectionStore,
    ProjectionWorker, WorkerConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use dashmap::DashMap;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const EVENTS: u64 = 10_000;
const ACTORS: u64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

struct NoOp(AtomicI64);

#[async_trait::async_trait]
impl Handler<Moved> for NoOp {
    async fn handle(&self, _: &Projected<Moved>) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Default)]
struct Balances(DashMap<String, (u64, i64)>);

#[async_trait::async_trait]
impl Handler<Moved> for Balances {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        let Moved::Deposited { amount } = e.event;
        let mut entry = self.0.entry(e.actor_id.clone()).or_default();
        if e.version > entry.0 {
            *entry = (e.version, entry.1 + amount);
        }
        Ok(())
    }
}

fn projections(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let (store, stream) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .expect("store");
        for v in 1..=EVENTS / ACTORS {
            for a in 0..ACTORS {
                let e = Event::new("Deposited", format!("acct-{a}"), v).with_field("amount", 1);
                store.save_event(&e).await.expect("save");
            }
        }
        let stream = async_nats::jetstream::new(client)
            .get_stream(store.stream_name())
            .await
            .expect("stream");
        (Arc::new(store), stream)
    });
    let filter = format!("{}.events.*", store.stream_name());
    let mut g = c.benchmark_group("projection_10k");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    let run = |handler: Arc<dyn Handler<Moved>>| {
        let store = store.clone();
        async move {
            let p = Projection::new(
                "bench",
                store,
                Arc::new(InMemoryProjectionStore::new()),
                handler,
                EventCodec::<Moved>::default(),
                ProjectionConfig {
                    page_size: 1000,
                    ..ProjectionConfig::default()
                },
            )
            .expect("projection");
            let n = p.catch_up().await.expect("catch up").handled;
            assert_eq!(n, EVENTS);
        }
    };
    g.bench_function("noop_sink", |b| {
        b.to_async(&rt)
            .iter(|| run(Arc::new(NoOp(AtomicI64::new(0)))))
    });
    g.bench_function("map_sink", |b| {
        b.to_async(&rt).iter(|| run(Arc::new(Balances::default())))
    });
    g.bench_function("sqlite_sink", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // A fresh database each time, created outside the measurement.
                    let dir = tempfile::tempdir().expect("temp dir");
                    let sink = Arc::new(
                        SqlBalances::open(&dir.path().join("balances.db")).expect("sqlite"),
                    );
                    let p = Projection::new(
                        "bench",
                        store.clone(),
                        Arc::new(InMemoryProjectionStore::new()),
                        sink,
                        EventCodec::<BankEvent>::default(),
                        ProjectionConfig {
                            page_size: 1000,
                            ..ProjectionConfig::default()
                        },
                    )
                    .expect("projection");
                    let start = Instant::now();
                    let n = p.catch_up().await.expect("catch up").handled;
                    total += start.elapsed();
                    assert_eq!(n, EVENTS);
                }
                total
            }
        })
    });
    g.bench_function("raw_ordered_consumer", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let stream = stream.clone();
            let filter = filter.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let c = stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            filter_subject: filter.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("consumer");
                    let mut msgs = c.messages().await.expect("messages");
                    for _ in 0..EVENTS {
                        let m = msgs.next().await.expect("message").expect("ok");
                        black_box(m.payload.len());
                    }
                }
                start.elapsed()
            }
        })
    });
    g.finish();
}

/// Actors of the partitioned log's events, [`PART_VERSIONS`] events each.
const PART_ACTORS: u64 = 200;
const PART_VERSIONS: u64 = 50;
const PART_EVENTS: u64 = PART_ACTORS * PART_VERSIONS;
/// Log partitions of the `n8` side.
const LOG_PARTITIONS: u32 = 8;
/// Workers in the process, and the partitions (shards) of each log partition.
const WORKERS: usize = 4;
const SHARDS: u32 = 4;
/// The await of the latency-bound sink per event.
const REMOTE_WRITE: Duration = Duration::from_micros(200);
/// How long a catch-up may take before the bench stops.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);

/// Counts events and wakes the bench at the last; with a wait, awaits it per event first.
struct Counting {
    wait: Option<Duration>,
    handled: AtomicU64,
    waited_ns: AtomicU64,
    all_handled: Notify,
}

impl Counting {
    fn new(wait: Option<Duration>) -> Self {
        Self {
            wait,
            handled: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            all_handled: Notify::new(),
        }
    }

    fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Waits until every event is handled, or fails the bench after the deadline.
    async fn until_all_handled(&self, what: &str) {
        let deadline = Instant::now() + CATCH_UP_DEADLINE;
        while self.handled() < PART_EVENTS {
            let left = deadline
                .checked_duration_since(Instant::now())
                .or_fail(&format!(
                    "{what}: {} of {PART_EVENTS} events handled after {CATCH_UP_DEADLINE:?}",
                    self.handled()
                ));
            // A wake-up given before this wait is kept (`notify_one` stores it).
            let _ = tokio::time::timeout(left, self.all_handled.notified()).await;
        }
    }
}

#[async_trait::async_trait]
impl Handler<Moved> for Counting {
    async fn handle(&self, _: &Projected<Moved>) -> Result<(), BoxError> {
        if let Some(wait) = self.wait {
            let t = Instant::now();
            tokio::time::sleep(wait).await;
            self.waited_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == PART_EVENTS {
            self.all_handled.notify_one();
        }
        Ok(())
    }
}

/// A store of `partitions` partitions holding the [`PART_EVENTS`] events.
async fn partitioned_store(url: &str, partitions: u32) -> Arc<JetStreamEventStore> {
    let client = async_nats::connect(url).await.or_fail("connect");
    let config = JetStreamConfig::default()
        .namespace(format!("parts{partitions}"))
        .partitions(partitions);
    let store = Arc::new(
        JetStreamEventStore::new(client, config)
            .await
            .or_fail("store"),
    );
    futures::stream::iter(0..PART_ACTORS)
        .for_each_concurrent(16, |a| {
            let store = store.clone();
            async move {
                for v in 1..=PART_VERSIONS {
                    let e = Event::new("Deposited", format!("acct-{a}"), v)
                        .with_actor_type("account")
                        .with_field("amount", 1);
                    store.save_event(&e).await.or_fail("save");
                }
            }
        })
        .await;
    // Which units of work hold events: (log partition, shard) of each actor.
    let mut units = std::collections::BTreeMap::<(u32, u32), u64>::new();
    for a in 0..PART_ACTORS {
        let id = format!("acct-{a}");
        let unit = (
            store.partition_of(id.as_str()),
            aether_placement::shard_for(&id, SHARDS),
        );
        *units.entry(unit).or_default() += PART_VERSIONS;
    }
    eprintln!(
        "projection_partitions: N = {partitions}: {} of {} units hold events, the largest {} of {PART_EVENTS}",
        units.len(),
        partitions * SHARDS,
        units.values().max().copied().unwrap_or(0)
    );
    store
}

/// One catch-up from scratch by [`WORKERS`] workers; the time from their start until the
/// sink has every event.
async fn catch_up_with_workers(store: Arc<JetStreamEventStore>, sink: Arc<Counting>) -> Duration {
    let state = Arc::new(InMemoryProjectionStore::new());
    let names: Vec<String> = (0..WORKERS).map(|w| format!("w{w}")).collect();
    for name in &names {
        state.heartbeat("bench", name).await.or_fail("heartbeat");
    }
    let workers: Vec<Arc<ProjectionWorker<Moved>>> = names
        .iter()
        .map(|name| {
            Arc::new(
                ProjectionWorker::new(
                    "bench",
                    name.as_str(),
                    store.clone(),
                    state.clone(),
                    sink.clone(),
                    EventCodec::<Moved>::default(),
                    ProjectionConfig {
                        page_size: 1000,
                        ..ProjectionConfig::default()
                    },
                    WorkerConfig {
                        partitions: SHARDS,
                        heartbeat: Duration::from_millis(50),
                        lease_timeout: Duration::from_millis(500),
                    },
                )
                .or_fail("worker"),
            )
        })
        .collect();
    let stop = CancellationToken::new();
    let start = Instant::now();
    let running: Vec<_> = workers
        .iter()
        .map(|w| {
            let (w, stop) = (w.clone(), stop.clone());
            tokio::spawn(async move { w.run(stop).await })
        })
        .collect();
    sink.until_all_handled("catch-up").await;
    let elapsed = start.elapsed();
    let units = workers[0].units() as usize;
    for w in &workers {
        assert_eq!(w.owned().len(), units / WORKERS, "units of {}", w.worker());
    }
    stop.cancel();
    for r in running {
        r.await.or_fail("worker task").or_fail("worker");
    }
    assert_eq!(sink.handled(), PART_EVENTS, "every event handled once");
    elapsed
}

fn partitions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let (n1, n8) = rt.block_on(async {
        (
            partitioned_store(&server.url(), 1).await,
            partitioned_store(&server.url(), LOG_PARTITIONS).await,
        )
    });
    for (group, wait) in [
        ("projection_partitions", None),
        ("projection_partitions_remote", Some(REMOTE_WRITE)),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(PART_EVENTS));
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        for (id, order) in [
            ("n1", "n1_first"),
            ("n8", "n1_first"),
            ("n8", "n8_first"),
            ("n1", "n8_first"),
        ] {
            let store = if id == "n1" { n1.clone() } else { n8.clone() };
            g.bench_function(BenchmarkId::new(id, order), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        let (mut waited, mut waits) = (0u64, 0u64);
                        let read_before = store.log_messages_read();
                        for _ in 0..iters {
                            let sink = Arc::new(Counting::new(wait));
                            total += catch_up_with_workers(store.clone(), sink.clone()).await;
                            waited += sink.waited_ns.load(Ordering::Relaxed);
                            waits += PART_EVENTS;
                        }
                        let read = (store.log_messages_read() - read_before) / iters;
                        let mut line = format!(
                            "{group}/{id}/{order}: {read} messages delivered per catch-up of \
                             {PART_EVENTS} events"
                        );
                        if wait.is_some() {
                            line += &format!(
                                "; each await of {REMOTE_WRITE:?} lasted {:.0} µs on average",
                                waited as f64 / waits as f64 / 1_000.0
                            );
                        }
                        eprintln!("{line}");
                        total
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, projections, partitions);
criterion_main!(benches);
