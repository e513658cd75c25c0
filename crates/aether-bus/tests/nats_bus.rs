//! The NATS event bus against a real nats-server: delivery across buses, isolation, wildcards,
//! filters, ordering, metadata, payload limits and the subscription lifecycle.
#![cfg(feature = "nats")]

mod nats_support;

use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus, TransportMonitor};
use aether_core::{
    Delivery, Error, Event, EventBroadcaster, OverflowPolicy, SubscribeOptions, SubscriptionFilter,
};
use aether_testkit::NatsServer;
use nats_support::*;

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

async fn check_isolation(publisher: &NatsEventBus, subscriber: &NatsEventBus) {
    // Namespaces that share prefixes, look like wildcards or need encoding.
    let names = [
        "tenant-a",
        "tenant-b",
        "tenant-a.orders",
        "tenant",
        "order*",
        "order>",
        "a b",
        "ключ",
        "x%2Ay",
        "x*y",
    ];
    let mut subs = Vec::new();
    for n in names {
        subs.push(subscriber.subscribe(n).await.unwrap());
    }
    for n in names {
        publisher
            .publish(n, &ev("Hello", n, 1))
            .await
            .unwrap_or_else(|e| panic!("{n:?}: {e}"));
    }
    for (n, sub) in names.iter().zip(subs.iter_mut()) {
        let e = next_event(sub).await;
        assert_eq!(e.actor_id, *n, "subscriber of {n:?}");
        assert_nothing_before_marker(publisher, n, sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated_on_one_connection() {
    let server = server();
    let client = async_nats::connect(server.url()).await.unwrap();
    let a = NatsEventBus::new(client.clone(), NatsBusConfig::default())
        .await
        .unwrap();
    let b = NatsEventBus::new(client, NatsBusConfig::default())
        .await
        .unwrap();
    check_isolation(&a, &b).await;
    // And within a single bus (local delivery).
    check_isolation(&a, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated_across_connections() {
    let server = server();
    let a = bus(&server).await;
    let b = bus(&server).await;
    check_isolation(&a, &b).await;
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
async fn wildcard_subscribers_use_nats_wildcards() {
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut all = subscriber.subscribe(">").await.unwrap();
    let mut one_token = subscriber.subscribe("*").await.unwrap();
    let mut prod_one = subscriber.subscribe("prod.*").await.unwrap();
    let mut prod_all = subscriber.subscribe("prod.>").await.unwrap();
    let mut middle = subscriber.subscribe("*.orders").await.unwrap();

    let published = [
        "prod",
        "prod.orders",
        "prod.orders.eu",
        "dev.orders",
        "orders",
    ];
    for (i, ns) in published.iter().enumerate() {
        publisher
            .publish(ns, &ev("E", ns, i as u64 + 1))
            .await
            .unwrap();
    }
    publisher
        .publish("zz.end", &ev("End", "end", 1))
        .await
        .unwrap();
    publisher
        .publish("prod.end", &ev("End", "end", 1))
        .await
        .unwrap();
    publisher
        .publish("end", &ev("End", "end", 1))
        .await
        .unwrap();
    publisher
        .publish("end.orders", &ev("End", "end", 1))
        .await
        .unwrap();

    async fn collect(sub: &mut aether_core::Subscription) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let e = next_event(sub).await;
            if e.event_type == "End" {
                return got;
            }
            got.push(e.actor_id.clone());
        }
    }
    assert_eq!(collect(&mut all).await, published);
    assert_eq!(collect(&mut one_token).await, ["prod", "orders"]);
    assert_eq!(collect(&mut prod_one).await, ["prod.orders"]);
    assert_eq!(
        collect(&mut prod_all).await,
        ["prod.orders", "prod.orders.eu"]
    );
    assert_eq!(collect(&mut middle).await, ["prod.orders", "dev.orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_on_the_receiving_side() {
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut placed = subscriber
        .subscribe_with_filter(
            "orders",
            SubscriptionFilter::new().event_type("OrderPlaced"),
        )
        .await
        .unwrap();
    let mut eu = subscriber
        .subscribe_with_filter(
            ">",
            SubscriptionFilter::new()
                .event_type("OrderPlaced")
                .event_type("OrderShipped")
                .actor_pattern("order.eu.*"),
        )
        .await
        .unwrap();
    let events = [
        ev("OrderPlaced", "order.eu.1", 1),
        ev("OrderPlaced", "order.us.1", 1),
        ev("OrderShipped", "order.eu.1", 2),
        ev("OrderCancelled", "order.eu.2", 2),
        ev("OrderShipped", "order.eu.1.line", 3),
    ];
    for e in &events {
        publisher.publish("orders", e).await.unwrap();
    }
    let a = next_event(&mut placed).await;
    let b = next_event(&mut placed).await;
    assert_eq!(
        (a.actor_id.as_str(), b.actor_id.as_str()),
        ("order.eu.1", "order.us.1")
    );
    let c = next_event(&mut eu).await;
    let d = next_event(&mut eu).await;
    assert_eq!(
        (c.event_type.as_str(), d.event_type.as_str()),
        ("OrderPlaced", "OrderShipped")
    );
    let mut marker_filter = subscriber
        .subscribe_with_filter("orders", SubscriptionFilter::new().event_type("Marker"))
        .await
        .unwrap();
    publisher
        .publish("orders", &ev("Marker", "order.eu.9", 1))
        .await
        .unwrap();
    next_event(&mut marker_filter).await;
    assert!(placed.try_recv().is_none());
    assert!(eu.try_recv().is_none());
    // A malformed actor pattern is rejected up front.
    let bad = subscriber
        .subscribe_with_filter("orders", SubscriptionFilter::new().actor_pattern("a.>.b"))
        .await;
    assert!(matches!(bad, Err(Error::InvalidInput(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_throughput_under_backpressure_loses_nothing() {
    const N: u64 = 10_000;
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut sub = subscriber.subscribe("flood").await.unwrap();
    // `subscribe` returns once the subscription is live on the server: no sleep needed.
    let consumer = tokio::spawn(async move {
        let mut next_version = 1;
        while next_version <= N {
            match next(&mut sub).await {
                Delivery::Event(e) => {
                    assert_eq!(e.version, next_version);
                    next_version += 1;
                }
                Delivery::Lagged(n) => panic!("lagged {n} under backpressure"),
            }
        }
        sub
    });
    for v in 1..=N {
        publisher
            .publish("flood", &ev("Tick", "clock", v))
            .await
            .unwrap();
    }
    let _sub = consumer.await.unwrap();
    let m = subscriber.metrics();
    assert_eq!(m.namespace("flood").delivered, N);
    assert_eq!(m.namespace("flood").dropped, 0);
    assert_eq!(publisher.metrics().namespace("flood").published, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_throughput_with_drop_newest_reports_every_gap() {
    const N: u64 = 10_000;
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut sub = subscriber
        .subscribe_with_options(
            "flood",
            SubscribeOptions::default()
                .buffer_size(16)
                .overflow(OverflowPolicy::DropNewest),
        )
        .await
        .unwrap();
    let consumer = tokio::spawn(async move {
        let (mut received, mut lagged, mut last) = (0u64, 0u64, 0u64);
        while received + lagged < N {
            match next(&mut sub).await {
                Delivery::Event(e) => {
                    assert!(e.version > last, "out of order: {} after {last}", e.version);
                    last = e.version;
                    received += 1;
                }
                Delivery::Lagged(n) => lagged += n,
            }
            // A slow consumer, so that the small buffer overflows.
            if received % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        (received, lagged)
    });
    for v in 1..=N {
        publisher
            .publish("flood", &ev("Tick", "clock", v))
            .await
            .unwrap();
    }
    let (received, lagged) = consumer.await.unwrap();
    assert_eq!(received + lagged, N);
    let m = subscriber.metrics().namespace("flood");
    assert_eq!(m.delivered, received);
    assert_eq!(m.dropped, lagged);
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
    let monitor = TransportMonitor::new();
    let client = monitor
        .install(async_nats::ConnectOptions::new().subscription_capacity(16))
        .connect(server.url())
        .await
        .unwrap();
    let subscriber = NatsEventBus::with_monitor(client, NatsBusConfig::default(), monitor)
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
async fn events_of_one_publisher_arrive_in_order() {
    const N: u64 = 2_000;
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut remote = subscriber.subscribe("ordered").await.unwrap();
    let mut local = publisher.subscribe("ordered").await.unwrap();
    let mut wildcard = subscriber.subscribe(">").await.unwrap();
    let consume = |mut sub: aether_core::Subscription| {
        tokio::spawn(async move {
            for v in 1..=N {
                assert_eq!(next_event(&mut sub).await.version, v);
            }
        })
    };
    let tasks = [consume(remote), consume(local), consume(wildcard)];
    for v in 1..=N {
        publisher
            .publish("ordered", &ev("Step", "seq", v))
            .await
            .unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    remote = subscriber.subscribe("ordered").await.unwrap();
    local = publisher.subscribe("ordered").await.unwrap();
    wildcard = subscriber.subscribe(">").await.unwrap();
    drop((remote, local, wildcard));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_subscribers() {
    const PER: u64 = 500;
    let server = server();
    let buses = [bus(&server).await, bus(&server).await, bus(&server).await];
    let mut consumers = Vec::new();
    for b in &buses {
        for pattern in ["conc", ">"] {
            let mut sub = b.subscribe(pattern).await.unwrap();
            consumers.push(tokio::spawn(async move {
                let mut last = [0u64; 3];
                for _ in 0..PER * 3 {
                    let e = next_event(&mut sub).await;
                    let p: usize = e.actor_id.parse().unwrap();
                    assert_eq!(e.version, last[p] + 1, "publisher {p} out of order");
                    last[p] = e.version;
                }
                last
            }));
        }
    }
    let mut publishers = Vec::new();
    for (p, b) in buses.iter().enumerate() {
        let b = b.clone();
        publishers.push(tokio::spawn(async move {
            for v in 1..=PER {
                b.publish("conc", &ev("Tick", &p.to_string(), v))
                    .await
                    .unwrap();
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for c in consumers {
        assert_eq!(c.await.unwrap(), [PER; 3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_subscribers_to_one_namespace_each_get_every_event() {
    let server = server();
    let publisher = bus(&server).await;
    let other = bus(&server).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(other.subscribe("shared").await.unwrap());
        subs.push(publisher.subscribe("shared").await.unwrap());
    }
    for v in 1..=20 {
        publisher.publish("shared", &ev("E", "a", v)).await.unwrap();
    }
    for sub in &mut subs {
        for v in 1..=20 {
            assert_eq!(next_event(sub).await.version, v);
        }
        assert_nothing_before_marker(&publisher, "shared", sub).await;
    }
    assert_eq!(other.metrics().active_subscriptions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_data_arrive_intact() {
    let server = server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let mut sub = subscriber.subscribe("meta").await.unwrap();
    let mut event = Event::new("Paid", "invoice-ü-1", 7)
        .with_field("amount", 12.5)
        .with_field("currency", "EUR")
        .with_field("lines", serde_json::json!([{"sku": "a", "qty": 2}]))
        .with_metadata("custom", "välue \"quoted\"\nline");
    event.set_correlation_id("corr-1");
    event.set_causation_id("cause-1");
    event.set_trace_id("trace-1");
    event.set_span_id("span-1");
    event.set_user_id("user-1");
    publisher.publish("meta", &event).await.unwrap();
    let got = next_event(&mut sub).await;
    assert_eq!(*got, event);
    assert_eq!(got.correlation_id(), Some("corr-1"));
    assert_eq!(got.causation_id(), Some("cause-1"));
    assert_eq!(got.trace_id(), Some("trace-1"));
    assert_eq!(got.span_id(), Some("span-1"));
    assert_eq!(got.user_id(), Some("user-1"));
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
    let (server, http) = monitored_server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let base = server_subscriptions(http).await;
    let mut subs = Vec::new();
    for p in ["a", "b", "a.*", ">"] {
        subs.push(subscriber.subscribe(p).await.unwrap());
    }
    assert_eq!(subscriber.metrics().active_subscriptions, 4);
    assert_eq!(subscriber.subscription_count(), 4);
    // The server's count settles once the bus's readiness probes are unsubscribed too.
    wait_for(|| async { server_subscriptions(http).await == base + 4 }).await;

    let mut a = subs.remove(0);
    drop(subs);
    assert_eq!(subscriber.metrics().active_subscriptions, 1);
    assert_eq!(subscriber.subscription_count(), 1);
    // The NATS subscriptions of dropped bus subscriptions go away too.
    wait_for(|| async { server_subscriptions(http).await == base + 1 }).await;

    publisher.publish("a", &ev("E", "x", 1)).await.unwrap();
    assert_eq!(next_event(&mut a).await.version, 1);
    a.unsubscribe();
    assert_eq!(subscriber.metrics().active_subscriptions, 0);
    wait_for(|| async { server_subscriptions(http).await == base }).await;

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
    let (server, http) = monitored_server();
    let publisher = bus(&server).await;
    let subscriber = bus(&server).await;
    let base = server_subscriptions(http).await;
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
    wait_for(|| async { server_subscriptions(http).await == base }).await;
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
    // wait until both bad ones were counted.
    assert_eq!(next_event(&mut sub).await.event_type, "Good");
    wait_for(|| async { subscriber.metrics().transport_errors >= 2 }).await;
    assert!(sub.try_recv().is_none());
}
