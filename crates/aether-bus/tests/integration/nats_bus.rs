//! What only the NATS event bus does, against a real nats-server: exactly-once delivery across
//! three buses, buses sharing a connection, subject prefixes, NATS slow consumers, the
//! server's payload limit, the lifecycle of the server's subscriptions, closing and dropping a
//! bus, and undecodable messages. What every bus does is checked by the contract suite
//! (`contract.rs`).
#![cfg(feature = "nats")]

use std::future::Future;
use std::time::Duration;

use crate::nats_support::*;
use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::{Delivery, Error, Event, EventBroadcaster, SubscribeOptions};
use aether_nats::{Connection, ConnectionMonitor};
use aether_testkit::contract::{broadcaster, BusBackend, BusCounts};
use aether_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_between_three_buses_once_each() {
    let server = server();
    let a = bus(&server).await;
    let b = bus(&server).await;
    let c = bus(&server).await;
    let mut on_a = a.subscribe("orders").await.unwrap();
    let mut on_b = b.subscribe("orders").await.unwrap();
    let mut on_c = c.subscribe("orders").await.unwrap();

    a.publish("orders", &ev("OrderPlaced", "order-1", 1))
        .await
        .unwrap();
    for sub in [&mut on_a, &mut on_b, &mut on_c] {
        let e = next_event(sub).await;
        assert_eq!((e.event_type.as_str(), e.version), ("OrderPlaced", 1));
    }
    // Usable behind the trait object, like every bus.
    let as_dyn: std::sync::Arc<dyn EventBroadcaster> = std::sync::Arc::new(b.clone());
    as_dyn
        .publish("orders", &ev("OrderShipped", "order-1", 2))
        .await
        .unwrap();
    for sub in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(next_event(sub).await.version, 2);
    }
    // a delivered its own event locally and b's via NATS (counted right after handing over).
    wait_for(|| async { a.metrics().namespace("orders").delivered == 2 }).await;
    // Exactly once: the publishing bus's own subscriber does not also get NATS's echo.
    assert_nothing_before_marker(&a, "orders", &mut on_a).await;
    assert_nothing_before_marker(&b, "orders", &mut on_b).await;
    assert_nothing_before_marker(&c, "orders", &mut on_c).await;

    assert_eq!(a.metrics().namespace("orders").published, 2);
    assert_eq!(b.metrics().namespace("orders").published, 2);
}

/// Buses that share one NATS connection.
struct OneConnection(async_nats::Client);

impl BusBackend for OneConnection {
    type Bus = NatsEventBus;

    fn open(&self) -> impl Future<Output = NatsEventBus> + Send {
        let client = self.0.clone();
        async move {
            NatsEventBus::new(client, NatsBusConfig::default())
                .await
                .expect("opening a bus")
        }
    }

    fn counts(bus: &NatsEventBus, namespace: &str) -> BusCounts {
        crate::contract::nats_counts(bus, namespace)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated_on_one_connection() {
    let server = server();
    let client = async_nats::connect(server.url()).await.unwrap();
    // Across two buses on the connection and within one (local delivery).
    broadcaster::namespaces_are_isolated(&OneConnection(client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_prefixes_do_not_see_each_other() {
    let server = server();
    let a = bus_with(&server, NatsBusConfig::default().subject_prefix("app1")).await;
    let b = bus_with(&server, NatsBusConfig::default().subject_prefix("app2")).await;
    let b2 = bus_with(&server, NatsBusConfig::default().subject_prefix("app2")).await;
    let mut on_b = b.subscribe(">").await.unwrap();
    a.publish("orders", &ev("Leak", "x", 1)).await.unwrap();
    assert_nothing_before_marker(&b2, "orders", &mut on_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_slow_consumer_is_surfaced_as_lag_and_transport_errors() {
    let server = server();
    let publisher = bus(&server).await;
    // A tiny client-side buffer so that NATS itself drops messages.
    let subscriber = bus_with(&server, NatsBusConfig::default().subscription_capacity(16)).await;
    check_slow_consumer(&publisher, &subscriber).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_surfaced_with_a_client_of_your_own() {
    let server = server();
    let publisher = bus(&server).await;
    let monitor = ConnectionMonitor::new();
    let client = monitor
        .install(async_nats::ConnectOptions::new().subscription_capacity(16))
        .connect(server.url())
        .await
        .unwrap();
    let connection = Connection::new(client, monitor);
    let subscriber = NatsEventBus::open(&connection, NatsBusConfig::default())
        .await
        .unwrap();
    check_slow_consumer(&publisher, &subscriber).await;
}

async fn check_slow_consumer(publisher: &NatsEventBus, subscriber: &NatsEventBus) {
    const N: u64 = 2_000;
    let mut sub = subscriber
        .subscribe_with_options("slow", SubscribeOptions::default().buffer_size(1))
        .await
        .unwrap();
    // Nobody reads while the flood arrives.
    for v in 1..=N {
        publisher
            .publish("slow", &ev("Tick", "clock", v))
            .await
            .unwrap();
    }
    publisher.client().flush().await.unwrap();
    // Now read; keep publishing numbered markers until one gets through, so that a gap at the
    // end of the flood is followed by a message that reveals it.
    let (mut received, mut lagged) = (0u64, 0u64);
    let mut marker = N;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let seen_marker = loop {
        assert!(tokio::time::Instant::now() < deadline, "no marker arrived");
        marker += 1;
        publisher
            .publish("slow", &ev("Marker", "clock", marker))
            .await
            .unwrap();
        let mut found = None;
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            match d {
                Delivery::Event(e) => {
                    received += 1;
                    if e.event_type == "Marker" {
                        found = Some(e.version);
                        break;
                    }
                }
                Delivery::Lagged(n) => lagged += n,
            }
        }
        if let Some(v) = found {
            break v;
        }
    };
    assert!(
        lagged > 0,
        "expected NATS to drop messages for a 16-message buffer"
    );
    assert_eq!(
        received + lagged,
        seen_marker,
        "every message received or reported"
    );
    wait_for(|| async { subscriber.monitor().slow_consumer_events() > 0 }).await;
    assert!(subscriber.metrics().transport_errors > 0);
    assert_eq!(subscriber.metrics().namespace("slow").dropped, lagged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_arrive_and_oversized_ones_fail_typed() {
    let server = NatsServer::builder()
        .max_payload(256 * 1024)
        .start()
        .unwrap();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut sub = subscriber.subscribe("big").await.unwrap();
    let blob: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big = Event::new("Blob", "b", 1).with_field("blob", blob.clone());
    publisher.publish("big", &big).await.unwrap();
    let got = next_event(&mut sub).await;
    assert_eq!(got.data["blob"], serde_json::Value::String(blob));

    let huge = Event::new("Blob", "b", 2).with_field("blob", "x".repeat(300 * 1024));
    match publisher.publish("big", &huge).await {
        Err(Error::PayloadTooLarge { size, limit }) => {
            assert_eq!(limit, 256 * 1024);
            assert!(size > limit);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // Nothing of the rejected event went anywhere, locally or remotely.
    let mut local = publisher.subscribe("big").await.unwrap();
    assert_nothing_before_marker(&publisher, "big", &mut sub).await;
    assert_nothing_before_marker(&publisher, "big", &mut local).await;
    assert_eq!(publisher.metrics().namespace("big").published, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unsubscribe_lifecycle() {
    let server = monitored_server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let base = server_subscriptions(&server).await;
    let mut subs = Vec::new();
    for p in ["a", "b", "a.*", ">"] {
        subs.push(subscriber.subscribe(p).await.unwrap());
    }
    assert_eq!(subscriber.metrics().active_subscriptions, 4);
    assert_eq!(subscriber.subscription_count(), 4);
    // The server's count settles once the bus's readiness probes are unsubscribed too.
    wait_for(|| async { server_subscriptions(&server).await == base + 4 }).await;

    let mut a = subs.remove(0);
    drop(subs);
    assert_eq!(subscriber.metrics().active_subscriptions, 1);
    assert_eq!(subscriber.subscription_count(), 1);
    // The NATS subscriptions of dropped bus subscriptions go away too.
    wait_for(|| async { server_subscriptions(&server).await == base + 1 }).await;

    publisher.publish("a", &ev("E", "x", 1)).await.unwrap();
    assert_eq!(next_event(&mut a).await.version, 1);
    a.unsubscribe();
    assert_eq!(subscriber.metrics().active_subscriptions, 0);
    wait_for(|| async { server_subscriptions(&server).await == base }).await;

    // Invalid patterns and namespaces are rejected.
    assert!(matches!(
        subscriber.subscribe("a..b").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        publisher.publish("a.*", &ev("E", "x", 1)).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        publisher.publish("", &ev("E", "x", 1)).await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_subscriptions_and_rejects_further_use() {
    let server = monitored_server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let base = server_subscriptions(&server).await;
    let mut remote = subscriber.subscribe("c").await.unwrap();
    let mut local = subscriber.subscribe(">").await.unwrap();
    publisher.publish("c", &ev("E", "x", 1)).await.unwrap();
    assert_eq!(next_event(&mut remote).await.version, 1);
    subscriber.publish("c", &ev("E", "x", 2)).await.unwrap();
    subscriber.close().await.unwrap();
    subscriber.close().await.unwrap();
    assert!(subscriber.is_closed());
    // What was buffered is still received, then the subscriptions end.
    let mut rest = Vec::new();
    while let Some(d) = tokio::time::timeout(DEADLINE, remote.recv()).await.unwrap() {
        rest.push(d);
    }
    assert_eq!(rest, vec![Delivery::Event(ev_like(&rest, 2))]);
    let mut seen = 0;
    while let Some(_d) = tokio::time::timeout(DEADLINE, local.recv()).await.unwrap() {
        seen += 1;
    }
    assert!(seen <= 2);
    assert_eq!(subscriber.metrics().active_subscriptions, 0);
    wait_for(|| async { server_subscriptions(&server).await == base }).await;
    assert!(matches!(
        subscriber.publish("c", &ev("E", "x", 3)).await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(
        subscriber.subscribe("c").await,
        Err(Error::Closed(_))
    ));
}

fn ev_like(rest: &[Delivery], version: u64) -> std::sync::Arc<Event> {
    match rest.first() {
        Some(Delivery::Event(e)) if e.version == version => e.clone(),
        other => panic!("expected version {version}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_bus_ends_its_subscriptions() {
    let server = server();
    let subscriber = bus(&server).await;
    let mut sub = subscriber.subscribe("d").await.unwrap();
    drop(subscriber);
    assert!(tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_counted_and_skipped() {
    let server = server();
    let subscriber = bus(&server).await;
    let publisher = bus(&server).await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut sub = subscriber.subscribe(">").await.unwrap();
    raw.publish("aether.events.orders", "not json".into())
        .await
        .unwrap();
    raw.publish("aether.events.bad%2aescape", "{}".into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    publisher
        .publish("orders", &ev("Good", "x", 1))
        .await
        .unwrap();
    // Messages from one connection keep their order, but these come from two connections:
    // the bad ones may come after the good one. The subscription reads NATS as the subscriber
    // asks, so keep asking until both were read past and counted; nothing else comes.
    assert_eq!(next_event(&mut sub).await.event_type, "Good");
    tokio::time::timeout(DEADLINE, async {
        while subscriber.metrics().transport_errors < 2 {
            assert!(sub.try_recv().is_none());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both undecodable messages counted");
    assert!(sub.try_recv().is_none());
}
