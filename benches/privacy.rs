//! Crypto-shredding's cost: saving and replaying events whose personal fields are sealed
//! (`aether-privacy`'s `PrivateStore` over the JetStream store, keys in a NATS bucket)
//! against the same events with the same fields in clear, on the same store.
//!
//! - `privacy_save`: one event with two personal fields (a name and an email address) and one
//!   plain field, saved one after another. `plain` writes the values as strings; `sealed`
//!   writes them as `Personal` values, each sealed with its subject's key (one subject per
//!   actor, its key read once and then cached, as in steady state).
//! - `privacy_replay`: an actor's 100 such events read back; `sealed` opens 200 fields.
//!
//! Goal (the data-lifecycle issue): sealed ≤ 1.3× plain for both.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aether_benches::setup::OrFail;
use aether_core::{ActorKey, Event, EventStore};
use aether_nats::Connection;
use aether_privacy::{KeyStoreConfig, NatsKeyStore, Personal, PrivateStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

const HISTORY: u64 = 100;

fn event(actor: &str, version: u64, sealed: bool) -> Event {
    let subject = format!("person-{actor}");
    let (name, email) = ("Ada Lovelace".to_string(), "ada@example.org".to_string());
    let field = |v: String| -> Value {
        if sealed {
            serde_json::to_value(Personal::new(subject.clone(), v)).or_fail("encode")
        } else {
            Value::String(v)
        }
    };
    Event::new("Registered", actor, version)
        .with_actor_type("member")
        .with_field("name", field(name))
        .with_field("email", field(email))
        .with_field("plan", "pro")
}

fn privacy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    eprintln!("benchmarking against nats-server {}", server.version());
    let (plain, sealed) = rt.block_on(async {
        let connection = Connection::connect(&server.url(), Default::default())
            .await
            .or_fail("connect");
        let inner = Arc::new(
            JetStreamEventStore::new(connection.client().clone(), JetStreamConfig::default())
                .await
                .or_fail("store"),
        );
        // Steady state: each subject's key read once and kept for the whole run.
        let keys = Arc::new(
            NatsKeyStore::open(
                &connection,
                KeyStoreConfig::default().cache_ttl(std::time::Duration::from_secs(3600)),
            )
            .await
            .or_fail("keys"),
        );
        let sealed = Arc::new(PrivateStore::new(inner.clone(), keys));
        for v in 1..=HISTORY {
            inner
                .save_event(&event("replayed", v, false))
                .await
                .or_fail("plain history");
            sealed
                .save_event(&event("replayed-sealed", v, true))
                .await
                .or_fail("sealed history");
        }
        (inner, sealed)
    });

    let next = AtomicU64::new(1);
    let mut g = c.benchmark_group("privacy_save");
    g.throughput(Throughput::Elements(1));
    for (row, is_sealed) in [("plain", false), ("sealed", true)] {
        let actor = format!("saver-{row}");
        g.bench_function(row, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let first = next.fetch_add(iters, Ordering::Relaxed);
                let events: Vec<Event> = (first..first + iters)
                    .map(|v| event(&actor, v, is_sealed))
                    .collect();
                let (plain, sealed) = (plain.clone(), sealed.clone());
                async move {
                    let start = Instant::now();
                    for e in &events {
                        if is_sealed {
                            sealed.save_event(e).await.or_fail("save");
                        } else {
                            plain.save_event(e).await.or_fail("save");
                        }
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("privacy_replay");
    g.throughput(Throughput::Elements(HISTORY));
    g.bench_function("plain", |b| {
        b.to_async(&rt).iter(|| async {
            let events = plain
                .events_of(ActorKey::new("member", "replayed"), 1)
                .await
                .or_fail("replay");
            assert_eq!(events.len() as u64, HISTORY);
            black_box(events)
        })
    });
    g.bench_function("sealed", |b| {
        b.to_async(&rt).iter(|| async {
            let events = sealed
                .events_of(ActorKey::new("member", "replayed-sealed"), 1)
                .await
                .or_fail("replay");
            assert_eq!(events.len() as u64, HISTORY);
            black_box(events)
        })
    });
    g.finish();
}

criterion_group!(benches, privacy);
criterion_main!(benches);
