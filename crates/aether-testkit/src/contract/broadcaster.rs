//! The [`EventBroadcaster`] contract: namespaces isolated, NATS wildcard rules, filters, typed
//! errors for bad names, no loss under backpressure, every drop reported, per-publisher order,
//! every subscriber served once, events delivered intact.
//!
//! Cases publish on one bus of the backend and subscribe on another
//! ([`BusBackend::open`]), so on a networked backend every event crosses the transport; on an
//! in-process backend both are the same bus.

use std::sync::Arc;

use aether_core::{
    Delivery, Error, Event, EventBroadcaster, OverflowPolicy, SubscribeOptions, Subscription,
    SubscriptionFilter,
};

use super::{assert_nothing_before_marker, next, next_event, wait_for, BusBackend};

/// Expands to one `#[tokio::test]` per case of the [`EventBroadcaster`] contract
/// ([`contract::broadcaster`](crate::contract::broadcaster)), each on a backend built by the
/// given expression (a [`BusBackend`](crate::contract::BusBackend)).
#[macro_export]
macro_rules! broadcaster_contract {
    ($backend:expr) => {
        $crate::__contract_cases!(broadcaster, $backend;
            namespaces_are_isolated,
            wildcards_follow_nats_rules,
            filters_select_by_type_and_actor_pattern,
            invalid_patterns_and_namespaces_are_typed_errors,
            backpressure_delivers_every_event_in_order,
            drop_newest_reports_every_gap,
            drop_newest_under_a_slow_reader_accounts_for_every_event,
            a_slow_dropping_subscriber_does_not_hold_back_others,
            every_subscriber_gets_every_event_once,
            the_publishing_bus_serves_its_own_subscribers_once,
            unsubscribing_by_drop_or_call_stops_delivery,
            concurrent_publishers_keep_per_publisher_order,
            events_of_one_publisher_arrive_in_order,
            metadata_and_large_payloads_arrive_intact,
            usable_as_a_trait_object,
        );
    };
}

fn ev(event_type: &str, actor: &str, version: u64) -> Event {
    Event::new(event_type, actor, version)
}

async fn subscribe<B: EventBroadcaster>(bus: &B, pattern: &str) -> Subscription {
    bus.subscribe(pattern)
        .await
        .unwrap_or_else(|e| panic!("subscribing to {pattern:?}: {e}"))
}

async fn subscribe_with<B: EventBroadcaster>(
    bus: &B,
    pattern: &str,
    options: SubscribeOptions,
) -> Subscription {
    bus.subscribe_with_options(pattern, options)
        .await
        .unwrap_or_else(|e| panic!("subscribing to {pattern:?}: {e}"))
}

async fn publish<B: EventBroadcaster>(bus: &B, namespace: &str, event: &Event) {
    bus.publish(namespace, event)
        .await
        .unwrap_or_else(|e| panic!("publishing to {namespace:?}: {e}"));
}

async fn check_isolation<B: EventBroadcaster>(publisher: &B, subscriber: &B) {
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
        subs.push(subscribe(subscriber, n).await);
    }
    for n in names {
        publish(publisher, n, &ev("Hello", n, 1)).await;
    }
    for (n, sub) in names.iter().zip(subs.iter_mut()) {
        let e = next_event(sub).await;
        assert_eq!(e.actor_id, *n, "subscriber of {n:?}");
        assert_nothing_before_marker(publisher, n, sub).await;
    }
}

/// An exact subscriber receives only its own namespace's events, also for namespaces that
/// share prefixes, look like wildcards or need encoding; across buses and within one.
pub async fn namespaces_are_isolated<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    check_isolation(&publisher, &subscriber).await;
    check_isolation(&publisher, &publisher).await;
}

/// `*` matches one token, `>` one or more, at any position.
pub async fn wildcards_follow_nats_rules<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut all = subscribe(&subscriber, ">").await;
    let mut one_token = subscribe(&subscriber, "*").await;
    let mut prod_one = subscribe(&subscriber, "prod.*").await;
    let mut prod_all = subscribe(&subscriber, "prod.>").await;
    let mut middle = subscribe(&subscriber, "*.orders").await;

    let published = [
        "prod",
        "prod.orders",
        "prod.orders.eu",
        "dev.orders",
        "orders",
    ];
    for (i, ns) in published.iter().enumerate() {
        publish(&publisher, ns, &ev("E", ns, i as u64 + 1)).await;
    }
    // One end marker each subscription matches.
    for ns in ["zz.end", "prod.end", "end", "end.orders"] {
        publish(&publisher, ns, &ev("End", "end", 1)).await;
    }

    async fn collect(sub: &mut Subscription) -> Vec<String> {
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

/// Event types within a filter are alternatives, the actor pattern follows the wildcard rules,
/// and a filter's parts combine with "and"; a malformed actor pattern is refused up front.
pub async fn filters_select_by_type_and_actor_pattern<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let filtered = |pattern: &'static str, filter: SubscriptionFilter| {
        let subscriber = subscriber.clone();
        async move {
            subscriber
                .subscribe_with_filter(pattern, filter)
                .await
                .unwrap_or_else(|e| panic!("subscribing to {pattern:?}: {e}"))
        }
    };
    let mut placed = filtered("orders", SubscriptionFilter::new().event_type("Placed")).await;
    let mut by_type = filtered(
        "orders",
        SubscriptionFilter::new()
            .event_type("Placed")
            .event_type("Shipped"),
    )
    .await;
    let mut by_actor = filtered(
        "orders",
        SubscriptionFilter::new().actor_pattern("order.eu.*"),
    )
    .await;
    let mut both = filtered(
        "*",
        SubscriptionFilter::new()
            .event_type("Placed")
            .actor_pattern("order.eu.>"),
    )
    .await;
    let mut eu = filtered(
        ">",
        SubscriptionFilter::new()
            .event_type("Placed")
            .event_type("Shipped")
            .actor_pattern("order.eu.*"),
    )
    .await;
    let events = [
        ev("Placed", "order.eu.1", 1),
        ev("Shipped", "order.us.1", 1),
        ev("Cancelled", "order.eu.2", 1),
        ev("Placed", "order.us.2", 1),
        ev("Shipped", "order.eu.1", 2),
        ev("Shipped", "order.eu.1.line", 3),
    ];
    for e in &events {
        publish(&publisher, "orders", e).await;
    }
    async fn take(sub: &mut Subscription, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..n {
            let e = next_event(sub).await;
            got.push(format!("{}:{}", e.event_type, e.actor_id));
        }
        got
    }
    assert_eq!(
        take(&mut placed, 2).await,
        ["Placed:order.eu.1", "Placed:order.us.2"]
    );
    assert_eq!(
        take(&mut by_type, 5).await,
        [
            "Placed:order.eu.1",
            "Shipped:order.us.1",
            "Placed:order.us.2",
            "Shipped:order.eu.1",
            "Shipped:order.eu.1.line"
        ]
    );
    assert_eq!(
        take(&mut by_actor, 3).await,
        [
            "Placed:order.eu.1",
            "Cancelled:order.eu.2",
            "Shipped:order.eu.1"
        ]
    );
    assert_eq!(take(&mut both, 1).await, ["Placed:order.eu.1"]);
    assert_eq!(
        take(&mut eu, 2).await,
        ["Placed:order.eu.1", "Shipped:order.eu.1"]
    );
    // Once a later marker is through, nothing else is pending for the filtered subscriptions.
    let mut marker = filtered("orders", SubscriptionFilter::new().event_type("Marker")).await;
    publish(&publisher, "orders", &ev("Marker", "marker", 1)).await;
    next_event(&mut marker).await;
    for sub in [&mut placed, &mut by_type, &mut by_actor, &mut both, &mut eu] {
        assert!(sub.try_recv().is_none(), "{} got more", sub.pattern());
    }
    for bad in ["x.>.y", "a.>.b"] {
        assert!(
            matches!(
                subscriber
                    .subscribe_with_filter("orders", SubscriptionFilter::new().actor_pattern(bad))
                    .await,
                Err(Error::InvalidInput(_))
            ),
            "actor pattern {bad:?}"
        );
    }
}

/// Malformed patterns cannot be subscribed to, and events cannot be published to patterns or
/// malformed namespaces: both are [`Error::InvalidInput`].
pub async fn invalid_patterns_and_namespaces_are_typed_errors<B: BusBackend>(backend: &B) {
    let bus = backend.open().await;
    for bad in ["", "a..b", "a.>.b"] {
        assert!(
            matches!(bus.subscribe(bad).await, Err(Error::InvalidInput(_))),
            "subscribing to {bad:?}"
        );
    }
    for bad in ["", "a.*", ">", "a..b"] {
        assert!(
            matches!(
                bus.publish(bad, &ev("E", "x", 1)).await,
                Err(Error::InvalidInput(_))
            ),
            "publishing to {bad:?}"
        );
    }
    assert_eq!(B::counts(&bus, "a.*").published, 0);
}

/// Under backpressure a subscriber with a 16-event buffer receives every one of 10,000 events
/// in order, and nothing is dropped.
pub async fn backpressure_delivers_every_event_in_order<B: BusBackend>(backend: &B) {
    const N: u64 = 10_000;
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut sub = subscribe_with(
        &subscriber,
        "ns",
        SubscribeOptions::default().buffer_size(16),
    )
    .await;
    let sending = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for v in 1..=N {
                publish(&publisher, "ns", &ev("Tick", "a", v)).await;
            }
        })
    };
    for v in 1..=N {
        assert_eq!(next_event(&mut sub).await.version, v);
    }
    sending.await.expect("publisher task");
    assert_eq!(B::counts(&publisher, "ns").published, N);
    // A networked bus counts a delivery just after handing it over.
    wait_for(|| async { B::counts(&subscriber, "ns").delivered == N }).await;
    let received = B::counts(&subscriber, "ns");
    assert_eq!(received.dropped, 0);
    assert_eq!(received.total_dropped, 0);
}

/// Under `DropNewest`, 1,000 events to a subscriber that does not read and holds 100: it
/// receives the first 100 and is told of the other 900 as lag, and the bus counts the same.
pub async fn drop_newest_reports_every_gap<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut slow = subscribe_with(
        &subscriber,
        "ns",
        SubscribeOptions::default()
            .buffer_size(100)
            .overflow(OverflowPolicy::DropNewest),
    )
    .await;
    for v in 1..=1000 {
        publish(&publisher, "ns", &ev("Tick", "a", v)).await;
    }
    wait_for(|| async {
        let c = B::counts(&subscriber, "ns");
        c.delivered + c.dropped == 1000
    })
    .await;
    let (mut received, mut lagged) = (0u64, 0u64);
    while let Some(d) = slow.try_recv() {
        match d {
            Delivery::Event(e) => {
                received += 1;
                assert_eq!(e.version, received, "the first events are kept, in order");
            }
            Delivery::Lagged(n) => lagged += n,
        }
    }
    assert_eq!((received, lagged), (100, 900));
    assert_eq!(slow.dropped(), 900);
    let c = B::counts(&subscriber, "ns");
    assert_eq!((c.delivered, c.dropped), (100, 900));
}

/// Under `DropNewest`, a slow reader with a 16-event buffer sees 10,000 events as events in
/// order plus lag notices that add up to all of them, and the bus counts the same.
pub async fn drop_newest_under_a_slow_reader_accounts_for_every_event<B: BusBackend>(backend: &B) {
    const N: u64 = 10_000;
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut sub = subscribe_with(
        &subscriber,
        "flood",
        SubscribeOptions::default()
            .buffer_size(16)
            .overflow(OverflowPolicy::DropNewest),
    )
    .await;
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
        publish(&publisher, "flood", &ev("Tick", "clock", v)).await;
    }
    let (received, lagged) = consumer.await.expect("consumer task");
    assert_eq!(received + lagged, N);
    wait_for(|| async {
        let c = B::counts(&subscriber, "flood");
        c.delivered + c.dropped == N
    })
    .await;
    let c = B::counts(&subscriber, "flood");
    assert_eq!(c.delivered, received);
    assert_eq!(c.dropped, lagged);
}

/// A full dropping subscriber does not slow down or starve the others.
pub async fn a_slow_dropping_subscriber_does_not_hold_back_others<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let _slow = subscribe_with(
        &subscriber,
        "ns",
        SubscribeOptions::default()
            .buffer_size(1)
            .overflow(OverflowPolicy::DropNewest),
    )
    .await;
    let mut fast = subscribe_with(
        &subscriber,
        "ns",
        SubscribeOptions::default().buffer_size(1000),
    )
    .await;
    for v in 1..=500 {
        publish(&publisher, "ns", &ev("Tick", "a", v)).await;
    }
    for v in 1..=500 {
        assert_eq!(next_event(&mut fast).await.version, v);
    }
}

/// Ten subscribers of one namespace each receive every event exactly once, and the bus counts
/// ten deliveries per event.
pub async fn every_subscriber_gets_every_event_once<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut subs = Vec::new();
    for _ in 0..10 {
        subs.push(subscribe(&subscriber, "shared").await);
    }
    assert_eq!(B::counts(&subscriber, "shared").active_subscriptions, 10);
    for v in 1..=20 {
        publish(&publisher, "shared", &ev("E", "a", v)).await;
    }
    for sub in &mut subs {
        for v in 1..=20 {
            assert_eq!(next_event(sub).await.version, v);
        }
    }
    wait_for(|| async { B::counts(&subscriber, "shared").delivered == 200 }).await;
    for sub in &mut subs {
        assert_nothing_before_marker(&publisher, "shared", sub).await;
    }
}

/// Subscribers on the publishing bus and on another bus each receive every event exactly once
/// (the publisher's own subscribers are not served twice).
pub async fn the_publishing_bus_serves_its_own_subscribers_once<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let other = backend.open().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(subscribe(&other, "shared").await);
        subs.push(subscribe(&publisher, "shared").await);
    }
    for v in 1..=20 {
        publish(&publisher, "shared", &ev("E", "a", v)).await;
    }
    for sub in &mut subs {
        for v in 1..=20 {
            assert_eq!(next_event(sub).await.version, v);
        }
        assert_nothing_before_marker(&publisher, "shared", sub).await;
    }
}

/// Dropping a subscription or calling `unsubscribe` ends it: the counts go down and later
/// events are not delivered to it.
pub async fn unsubscribing_by_drop_or_call_stops_delivery<B: BusBackend>(backend: &B) {
    let bus = backend.open().await;
    let a = subscribe(&bus, "ns").await;
    let b = subscribe(&bus, "ns.>").await;
    let c = subscribe(&bus, "other").await;
    let counts = B::counts(&bus, "ns");
    assert_eq!((counts.active_subscriptions, counts.subscriptions), (3, 3));
    drop(a);
    b.unsubscribe();
    let counts = B::counts(&bus, "ns");
    assert_eq!((counts.active_subscriptions, counts.subscriptions), (1, 1));
    publish(&bus, "ns", &ev("E", "a", 1)).await;
    assert_eq!(B::counts(&bus, "ns").delivered, 0);
    drop(c);
    let counts = B::counts(&bus, "ns");
    assert_eq!((counts.active_subscriptions, counts.subscriptions), (0, 0));
}

/// Four publishers on their own buses publish concurrently; every subscriber (exact and
/// wildcard, on every bus, with small buffers) receives each publisher's events in its order.
pub async fn concurrent_publishers_keep_per_publisher_order<B: BusBackend>(backend: &B) {
    const PUBLISHERS: usize = 4;
    const PER: u64 = 500;
    let mut buses = Vec::new();
    for _ in 0..PUBLISHERS {
        buses.push(backend.open().await);
    }
    let mut consumers = Vec::new();
    for bus in &buses {
        for pattern in ["conc", ">"] {
            let mut sub =
                subscribe_with(bus, pattern, SubscribeOptions::default().buffer_size(8)).await;
            consumers.push(tokio::spawn(async move {
                let mut last = [0u64; PUBLISHERS];
                for _ in 0..PER * PUBLISHERS as u64 {
                    let e = next_event(&mut sub).await;
                    let p: usize = e.actor_id.parse().expect("publisher number");
                    assert_eq!(e.version, last[p] + 1, "publisher {p} out of order");
                    last[p] = e.version;
                }
                last
            }));
        }
    }
    let mut publishers = Vec::new();
    for (p, bus) in buses.iter().enumerate() {
        let bus = bus.clone();
        publishers.push(tokio::spawn(async move {
            for v in 1..=PER {
                publish(&bus, "conc", &ev("Tick", &p.to_string(), v)).await;
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher task");
    }
    for c in consumers {
        assert_eq!(c.await.expect("consumer task"), [PER; PUBLISHERS]);
    }
}

/// One publisher's events arrive in order at a subscriber on another bus, on its own bus and
/// through a wildcard.
pub async fn events_of_one_publisher_arrive_in_order<B: BusBackend>(backend: &B) {
    const N: u64 = 2_000;
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let consume = |mut sub: Subscription| {
        tokio::spawn(async move {
            for v in 1..=N {
                assert_eq!(next_event(&mut sub).await.version, v);
            }
        })
    };
    let tasks = [
        consume(subscribe(&subscriber, "ordered").await),
        consume(subscribe(&publisher, "ordered").await),
        consume(subscribe(&subscriber, ">").await),
    ];
    for v in 1..=N {
        publish(&publisher, "ordered", &ev("Step", "seq", v)).await;
    }
    for t in tasks {
        t.await.expect("consumer task");
    }
}

/// Every metadata field, nested data, non-ASCII text and a 100 KiB field arrive unchanged.
pub async fn metadata_and_large_payloads_arrive_intact<B: BusBackend>(backend: &B) {
    let publisher = backend.open().await;
    let subscriber = backend.open().await;
    let mut sub = subscribe(&subscriber, "meta").await;
    let blob: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut event = Event::new("Paid", "invoice-ü-1", 7)
        .with_field("amount", 12.5)
        .with_field("currency", "EUR")
        .with_field("lines", serde_json::json!([{"sku": "a", "qty": 2}]))
        .with_field("blob", blob)
        .with_metadata("custom", "välue \"quoted\"\nline");
    event.set_correlation_id("corr-1");
    event.set_causation_id("cause-1");
    event.set_trace_id("trace-1");
    event.set_span_id("span-1");
    event.set_user_id("user-1");
    publish(&publisher, "meta", &event).await;
    let got = next_event(&mut sub).await;
    assert_eq!(*got, event);
    assert_eq!(got.correlation_id(), Some("corr-1"));
    assert_eq!(got.causation_id(), Some("cause-1"));
    assert_eq!(got.trace_id(), Some("trace-1"));
    assert_eq!(got.span_id(), Some("span-1"));
    assert_eq!(got.user_id(), Some("user-1"));
}

/// The bus works behind `Arc<dyn EventBroadcaster>`.
pub async fn usable_as_a_trait_object<B: BusBackend>(backend: &B) {
    let publisher: Arc<dyn EventBroadcaster> = Arc::new(backend.open().await);
    let subscriber: Arc<dyn EventBroadcaster> = Arc::new(backend.open().await);
    let mut sub = subscriber
        .subscribe("ns")
        .await
        .unwrap_or_else(|e| panic!("subscribing: {e}"));
    publisher
        .publish("ns", &ev("E", "a", 1))
        .await
        .unwrap_or_else(|e| panic!("publishing: {e}"));
    assert_eq!(next_event(&mut sub).await.version, 1);
}
