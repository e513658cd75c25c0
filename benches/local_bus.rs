//! Local bus publish → subscribers receive, next to a tokio `broadcast` channel doing the same.
//!
//! Each iteration publishes a batch of 1 000 events (smaller than every buffer, so neither side
//! waits or drops) and then receives them all on every subscriber. Both sides take the event by
//! reference and clone it once into an `Arc`, as a caller holding an `&Event` must.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aether_bus::EventBus;
use aether_core::{Event, EventBroadcaster, SubscribeOptions, SubscriptionFilter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::sync::broadcast;

const BATCH: usize = 1000;

fn batch() -> Vec<Event> {
    (1..=BATCH as u64)
        .map(|v| {
            let t = if v % 2 == 0 { "Deposited" } else { "Withdrawn" };
            Event::new(t, format!("acc-{}", v % 64), v).with_field("amount", v)
        })
        .collect()
}

fn bench_fanout(c: &mut Criterion, name: &str, subscribers: usize, filter: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let events = batch();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("aether", |b| {
        let bus = EventBus::new();
        let mut subs = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..subscribers {
                let mut opts = SubscribeOptions::default().buffer_size(BATCH * 2);
                if filter {
                    opts = opts.filter(SubscriptionFilter::new().event_type("Deposited"));
                }
                v.push(bus.subscribe_with_options("bank", opts).await.unwrap());
            }
            v
        });
        b.iter(|| {
            rt.block_on(async {
                for e in &events {
                    bus.publish("bank", e).await.unwrap();
                }
                for s in &mut subs {
                    while let Some(d) = s.try_recv() {
                        black_box(d);
                    }
                }
            })
        })
    });

    g.bench_function("tokio_broadcast", |b| {
        let (tx, _keep) = broadcast::channel::<Arc<Event>>(BATCH * 2);
        let mut rxs: Vec<_> = (0..subscribers).map(|_| tx.subscribe()).collect();
        b.iter(|| {
            for e in &events {
                let _ = tx.send(Arc::new(e.clone()));
            }
            for rx in &mut rxs {
                while let Ok(e) = rx.try_recv() {
                    if !filter || e.event_type == "Deposited" {
                        black_box(e);
                    }
                }
            }
        })
    });
    g.finish();
}

fn one_subscriber(c: &mut Criterion) {
    bench_fanout(c, "local_bus_1_subscriber", 1, false);
}
fn ten_subscribers(c: &mut Criterion) {
    bench_fanout(c, "local_bus_10_subscribers", 10, false);
}
fn filtered(c: &mut Criterion) {
    bench_fanout(c, "local_bus_filtered", 1, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = one_subscriber, ten_subscribers, filtered
}
criterion_main!(benches);
