//! NATS bus: publish on one connection, receive on another (a remote subscriber), next to raw
//! async-nats publish/subscribe of the same encoded event.
//!
//! Each iteration publishes a batch of 1 000 events and waits until the subscriber on the other
//! connection has received all of them.

use std::hint::black_box;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::{Delivery, Event, EventBroadcaster};
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;

const BATCH: u64 = 1000;

fn publish_receive(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let events: Vec<Event> = (1..=BATCH)
        .map(|v| Event::new("Deposited", "acc-1", v).with_field("amount", v))
        .collect();

    let (publisher, sub, raw_pub, raw_sub) = rt.block_on(async {
        let config = NatsBusConfig::default().subscription_capacity(65_536);
        let publisher = NatsEventBus::connect(&server.url(), config.clone())
            .await
            .expect("bus");
        let receiver = NatsEventBus::connect(&server.url(), config)
            .await
            .expect("bus");
        let sub = receiver
            .subscribe_with_options(
                "bank",
                aether_core::SubscribeOptions::default().buffer_size(65_536),
            )
            .await
            .expect("subscribe");
        let raw_pub = async_nats::connect(server.url()).await.expect("connect");
        let raw_recv = async_nats::ConnectOptions::new()
            .subscription_capacity(65_536)
            .connect(server.url())
            .await
            .expect("connect");
        let raw_sub = raw_recv.subscribe("raw.bank").await.expect("subscribe");
        raw_recv.flush().await.expect("flush");
        // Keep the receiving bus and client alive for the whole run.
        std::mem::forget(receiver);
        std::mem::forget(raw_recv);
        (
            publisher,
            tokio::sync::Mutex::new(sub),
            raw_pub,
            tokio::sync::Mutex::new(raw_sub),
        )
    });

    let mut g = c.benchmark_group("nats_bus_publish_receive");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    g.bench_function("aether", |b| {
        b.to_async(&rt).iter(|| {
            let publisher = &publisher;
            let events = &events;
            let sub = &sub;
            async move {
                let mut sub = sub.lock().await;
                for e in events {
                    publisher.publish("bank", e).await.expect("publish");
                }
                let mut got = 0;
                while got < BATCH {
                    match sub.recv().await {
                        Some(Delivery::Event(e)) => {
                            black_box(e);
                            got += 1;
                        }
                        Some(Delivery::Lagged(n)) => panic!("lagged by {n} in a benchmark"),
                        None => panic!("subscription closed"),
                    }
                }
            }
        })
    });
    g.bench_function("raw_async_nats", |b| {
        b.to_async(&rt).iter(|| {
            let raw_pub = &raw_pub;
            let events = &events;
            let raw_sub = &raw_sub;
            async move {
                let mut raw_sub = raw_sub.lock().await;
                for e in events {
                    let bytes = e.to_json_bytes().expect("encode");
                    raw_pub
                        .publish("raw.bank", bytes.into())
                        .await
                        .expect("publish");
                }
                raw_pub.flush().await.expect("flush");
                for _ in 0..BATCH {
                    let m = raw_sub.next().await.expect("message");
                    // The subscriber decodes, as the bus's subscriber does.
                    black_box(Event::from_json_bytes(&m.payload).expect("decode"));
                }
            }
        })
    });
    g.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = publish_receive
}
criterion_main!(benches);
