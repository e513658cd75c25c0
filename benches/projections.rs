//! Projections: a projection reading a 10 000-event stream (100 actors) into a sink that does
//! nothing, next to a raw ordered consumer over the same subjects (its floor), into a sink
//! that keeps balances in a map (a small real read model), and into the SQLite read model of
//! the examples (`SqlBalances`: a file, one transaction per event with its position, exactly
//! once).

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{BoxError, Event, EventStore};
use aether_examples::bank::BankEvent;
use aether_examples::read_model::SqlBalances;
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dashmap::DashMap;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

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

criterion_group!(benches, projections);
criterion_main!(benches);
