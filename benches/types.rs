//! Actor types: what reading by type saves, and what a transaction across types costs.
//!
//! - `projection_types`: a projection of one actor type in five over a 10 000-event log (2 000
//!   events of its type, one message each) against a projection of the whole log: the server
//!   delivers only the type's subjects.
//! - `worker_partitions`: a worker holding all 8 partitions of a partitioned projection of one
//!   type against a worker holding its only partition, over the same events: each
//!   partition asks the server for its own buckets, so 8 partitions read the type about once
//!   (before nats-server 2.10 each partition reads the whole type). 20 000 events of one type
//!   in a stream of their own; each sample starts a new projection (its leases and first
//!   reads included) and stops once every event is handled, and prints how many messages the
//!   server delivered.
//! - `transact_types`: one transfer between two actors decided and committed by the actor
//!   runtime, `ActorHost::transact` over two actors of one type against `Transact` over
//!   actors of two types, on JetStream (nats-server 2.12+; older servers measure nothing).
//!   Both rebuild their two actors from the store and commit one atomic batch of two events;
//!   every transaction is over two new actors, so both load empty histories (loading replays
//!   the history, which would otherwise grow under whichever runs second).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{
    Actor, ActorHost, CommandMeta, DomainEvent, EventCodec, RuntimeConfig, Transact,
};
use aether_benches::setup::OrFail;
use aether_core::{
    BoxError, Event, EventLog, EventStore, LogFilter, LogPage, LogPosition, LoggedEvent,
};
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig, ProjectionWorker,
    WorkerConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const TYPES: [&str; 5] = ["show", "customer", "venue", "seat", "invoice"];
const ACTORS_PER_TYPE: u64 = 20;
const VERSIONS: u64 = 100;
const PER_TYPE: u64 = ACTORS_PER_TYPE * VERSIONS;
/// Actors of the one type the partitioned projection reads.
const PARTITIONED_ACTORS: u64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

struct Count(AtomicU64);

#[async_trait::async_trait]
impl Handler<Moved> for Count {
    async fn handle(&self, _: &Projected<Moved>) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The store as a log that does not select shards: every partition reads its whole type and
/// keeps its own actors, as partitions did before the subjects carried buckets.
struct NoShardSelection(Arc<JetStreamEventStore>);

#[async_trait::async_trait]
impl EventLog for NoShardSelection {
    async fn read_after(
        &self,
        after: Option<LogPosition>,
        max: usize,
    ) -> aether_core::Result<Vec<LoggedEvent>> {
        self.0.read_after(after, max).await
    }

    async fn head(&self) -> aether_core::Result<Option<LogPosition>> {
        self.0.head().await
    }

    async fn read_filtered(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filter: &LogFilter,
    ) -> aether_core::Result<LogPage> {
        let types = LogFilter::types(filter.actor_types.iter().cloned());
        self.0.read_filtered(after, max, &types).await
    }
}

fn config() -> ProjectionConfig {
    ProjectionConfig {
        page_size: 1000,
        poll_interval: Duration::from_millis(2),
        ..ProjectionConfig::default()
    }
}

fn projections(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    let store = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client, JetStreamConfig::default())
            .await
            .or_fail("store");
        for v in 1..=VERSIONS {
            for a in 0..ACTORS_PER_TYPE {
                for t in TYPES {
                    let e = Event::new("Deposited", format!("id-{a}"), v)
                        .with_actor_type(t)
                        .with_field("amount", 1);
                    store.save_event(&e).await.or_fail("save");
                }
            }
        }
        Arc::new(store)
    });

    let mut g = c.benchmark_group("projection_types");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PER_TYPE * TYPES.len() as u64));
    let run = |types: &'static [&'static str], want: u64| {
        let store = store.clone();
        async move {
            let sink = Arc::new(Count(AtomicU64::new(0)));
            let mut p = Projection::new(
                "bench",
                store,
                Arc::new(InMemoryProjectionStore::new()),
                sink.clone(),
                EventCodec::<Moved>::default(),
                config(),
            )
            .or_fail("projection");
            if !types.is_empty() {
                p = p.actor_types(types.iter().copied()).or_fail("types");
            }
            let n = p.catch_up().await.or_fail("catch up").handled;
            assert_eq!(n, want);
        }
    };
    g.bench_function("one_type_of_five", |b| {
        b.to_async(&rt).iter(|| run(&["show"], PER_TYPE))
    });
    g.bench_function("whole_log", |b| {
        b.to_async(&rt)
            .iter(|| run(&[], PER_TYPE * TYPES.len() as u64))
    });
    g.finish();

    // The partitions read a log of one type only, long enough that reading, not starting the
    // partitions, sets the time.
    let partitioned = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("parts"))
            .await
            .or_fail("store");
        for v in 1..=VERSIONS {
            for a in 0..PARTITIONED_ACTORS {
                let e = Event::new("Deposited", format!("id-{a}"), v)
                    .with_actor_type("show")
                    .with_field("amount", 1);
                store.save_event(&e).await.or_fail("save");
            }
        }
        Arc::new(store)
    });
    let per_type = PARTITIONED_ACTORS * VERSIONS;
    let mut g = c.benchmark_group("worker_partitions");
    g.sample_size(10);
    g.throughput(Throughput::Elements(per_type));
    for (partitions, select) in [(8u32, true), (8, false), (1, true)] {
        let name = match select {
            true => format!("{partitions}_partitions"),
            false => format!("{partitions}_partitions_client_side"),
        };
        g.bench_function(name.as_str(), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = partitioned.clone();
                let name = name.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let sink = Arc::new(Count(AtomicU64::new(0)));
                        let log: Arc<dyn EventLog> = match select {
                            true => store.clone(),
                            false => Arc::new(NoShardSelection(store.clone())),
                        };
                        let worker = ProjectionWorker::new(
                            "bench",
                            "w1",
                            log,
                            Arc::new(InMemoryProjectionStore::new()),
                            sink.clone(),
                            EventCodec::<Moved>::default(),
                            // Caught-up partitions look for new events at the default pace,
                            // not hammering the server while the others still read.
                            ProjectionConfig {
                                page_size: 1000,
                                ..ProjectionConfig::default()
                            },
                            WorkerConfig {
                                partitions,
                                ..WorkerConfig::default()
                            },
                        )
                        .or_fail("worker")
                        .actor_types(["show"])
                        .or_fail("types");
                        let worker = Arc::new(worker);
                        let stop = CancellationToken::new();
                        let start = Instant::now();
                        let running = tokio::spawn({
                            let (worker, stop) = (worker.clone(), stop.clone());
                            async move { worker.run(stop).await }
                        });
                        let read_before = store.log_messages_read();
                        while sink.0.load(Ordering::Relaxed) < per_type {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        total += start.elapsed();
                        stop.cancel();
                        running.await.or_fail("worker task").or_fail("worker");
                        eprintln!(
                            "worker_partitions/{name}: {} messages read for {per_type} events",
                            store.log_messages_read() - read_before
                        );
                    }
                    total
                }
            })
        });
    }
    g.finish();
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Balance {
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BalanceEvent {
    Moved { cents: i64 },
}

impl DomainEvent for BalanceEvent {
    fn event_type(&self) -> &'static str {
        "Moved"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never refused")]
struct Never;

/// Two actor types with the same shape, so the two transactions do the same work.
macro_rules! balance_actor {
    ($name:ident, $type_name:literal) => {
        struct $name;

        impl Actor for $name {
            type State = Balance;
            type Command = ();
            type Event = BalanceEvent;
            type Reply = ();
            type Error = Never;
            const TYPE: &'static str = $type_name;

            async fn decide(
                &self,
                _: &str,
                _: &Balance,
                _: &(),
            ) -> Result<Vec<BalanceEvent>, Never> {
                Ok(Vec::new())
            }

            fn apply(state: &mut Balance, event: &BalanceEvent) {
                let BalanceEvent::Moved { cents } = event;
                state.cents += cents;
            }

            fn reply(_: &Balance, _: &(), _: &[BalanceEvent]) {}
        }
    };
}

balance_actor!(Shows, "show");
balance_actor!(Customers, "customer");

fn transactions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    let store = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        Arc::new(
            JetStreamEventStore::new(client, JetStreamConfig::default())
                .await
                .or_fail("store"),
        )
    });
    let atomic = rt
        .block_on(store.stream_info())
        .map(|i| i.config.allow_atomic_publish)
        .unwrap_or(false);
    if !atomic {
        eprintln!("transact_types: needs nats-server 2.12+ (atomic batches); nothing measured");
        return;
    }
    let config = RuntimeConfig::default();
    let shows = ActorHost::new(Shows, store.clone(), config);
    let customers = ActorHost::new(Customers, store.clone(), config);
    let mut g = c.benchmark_group("transact_types");
    g.throughput(Throughput::Elements(1));
    // Fresh actors for every transaction, so that both kinds load two empty histories and
    // neither pays for the other's growing ones (loading replays the history).
    let next = AtomicU64::new(0);
    let ids = || {
        let n = next.fetch_add(1, Ordering::Relaxed);
        (format!("a-{n}"), format!("b-{n}"))
    };
    g.bench_function("same_type", |b| {
        b.to_async(&rt).iter(|| async {
            let (from, to) = ids();
            shows
                .transact(&[&from, &to], CommandMeta::default(), |_| {
                    Ok((
                        vec![
                            vec![BalanceEvent::Moved { cents: -1 }],
                            vec![BalanceEvent::Moved { cents: 1 }],
                        ],
                        (),
                    ))
                })
                .await
                .or_fail("same-type transaction");
        })
    });
    g.bench_function("cross_type", |b| {
        b.to_async(&rt).iter(|| async {
            let (from, to) = ids();
            let mut tx = Transact::new(CommandMeta::default());
            let show = tx.actor(&shows, &from);
            let customer = tx.actor(&customers, &to);
            tx.run(|d| {
                d.emit(&show, [BalanceEvent::Moved { cents: -1 }]);
                d.emit(&customer, [BalanceEvent::Moved { cents: 1 }]);
                Ok(())
            })
            .await
            .or_fail("cross-type transaction");
        })
    });
    g.finish();
}

criterion_group!(benches, projections, transactions);
criterion_main!(benches);
