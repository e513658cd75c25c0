//! In-memory store: saves per second and latest-version lookups.

use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aether_core::{Event, EventStore};
use aether_store::InMemoryEventStore;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn events(actor: &str, n: u64) -> Vec<Event> {
    (1..=n)
        .map(|v| Event::new("Deposited", actor, v).with_field("amount", v))
        .collect()
}

fn save(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("memory_save_event");
    g.throughput(Throughput::Elements(1));
    // One actor, strictly increasing versions: the hot path of an active actor.
    g.bench_function("aether", |b| {
        b.iter_custom(|iters| {
            let store = InMemoryEventStore::new();
            let evs = events("acc-1", iters);
            let start = Instant::now();
            rt.block_on(async {
                for e in &evs {
                    store.save_event(black_box(e)).await.unwrap();
                }
            });
            start.elapsed()
        })
    });
    // Many actors, one event each.
    g.bench_function("aether_many_actors", |b| {
        b.iter_batched(
            || {
                (
                    InMemoryEventStore::new(),
                    (0..1000)
                        .map(|i| Event::new("Opened", format!("acc-{i}"), 1))
                        .collect::<Vec<_>>(),
                )
            },
            |(store, evs)| {
                rt.block_on(async {
                    for e in &evs {
                        store.save_event(e).await.unwrap();
                    }
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn latest(c: &mut Criterion) {
    let store = InMemoryEventStore::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..10_000 {
            store
                .save_event(&Event::new("Opened", format!("acc-{i}"), 1))
                .await
                .unwrap();
        }
    });
    let mut g = c.benchmark_group("memory_get_latest_version");
    // The lookup itself.
    g.bench_function("aether", |b| {
        b.iter(|| black_box(store.latest_version(black_box("acc-4242"))))
    });
    // Through the object-safe async trait: the boxed future, polled once (it never waits).
    g.bench_function("aether_via_trait", |b| {
        let dyn_store: &dyn EventStore = &store;
        let mut cx = Context::from_waker(Waker::noop());
        b.iter(|| {
            let mut fut = dyn_store.get_latest_version(black_box("acc-4242"));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => black_box(v.ok()),
                Poll::Pending => None,
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = save, latest
}
criterion_main!(benches);
