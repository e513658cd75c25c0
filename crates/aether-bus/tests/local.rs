//! The local event bus.

use std::sync::Arc;
use std::time::Duration;

use aether_bus::EventBus;
use aether_core::{
    Delivery, Error, Event, EventBroadcaster, OverflowPolicy, SubscribeOptions, SubscriptionFilter,
};

fn ev(actor: &str, v: u64) -> Event {
    Event::new("Happened", actor, v)
}

async fn next_event(sub: &mut aether_core::Subscription) -> Arc<Event> {
    match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
        Ok(Some(Delivery::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn exact_namespaces_are_isolated() {
    let bus = EventBus::new();
    let mut a = bus.subscribe("tenant-a").await.unwrap();
    let mut b = bus.subscribe("tenant-b").await.unwrap();
    bus.publish("tenant-a", &ev("x", 1)).await.unwrap();
    assert_eq!(next_event(&mut a).await.version, 1);
    assert!(b.try_recv().is_none());
    assert!(a.try_recv().is_none());
}

#[tokio::test]
async fn wildcards_follow_nats_rules() {
    let bus = EventBus::new();
    let mut star = bus.subscribe("prod.*").await.unwrap();
    let mut tail = bus.subscribe("prod.>").await.unwrap();
    let mut all = bus.subscribe(">").await.unwrap();
    bus.publish("prod.orders", &ev("o", 1)).await.unwrap();
    bus.publish("prod.orders.eu", &ev("o", 2)).await.unwrap();
    bus.publish("prod", &ev("o", 3)).await.unwrap();
    bus.publish("dev.orders", &ev("o", 4)).await.unwrap();
    let drain = |s: &mut aether_core::Subscription| {
        let mut v = Vec::new();
        while let Some(Delivery::Event(e)) = s.try_recv() {
            v.push(e.version);
        }
        v
    };
    assert_eq!(drain(&mut star), [1]);
    assert_eq!(drain(&mut tail), [1, 2]);
    assert_eq!(drain(&mut all), [1, 2, 3, 4]);
}

#[tokio::test]
async fn filters_by_type_and_actor_pattern_combine_with_and() {
    let bus = EventBus::new();
    let mut by_type = bus
        .subscribe_with_filter(
            "orders",
            SubscriptionFilter::new()
                .event_type("Placed")
                .event_type("Shipped"),
        )
        .await
        .unwrap();
    let mut by_actor = bus
        .subscribe_with_filter(
            "orders",
            SubscriptionFilter::new().actor_pattern("order.eu.*"),
        )
        .await
        .unwrap();
    let mut both = bus
        .subscribe_with_filter(
            "*",
            SubscriptionFilter::new()
                .event_type("Placed")
                .actor_pattern("order.eu.>"),
        )
        .await
        .unwrap();
    let events = [
        Event::new("Placed", "order.eu.1", 1),
        Event::new("Shipped", "order.us.1", 1),
        Event::new("Cancelled", "order.eu.2", 1),
        Event::new("Placed", "order.us.2", 1),
    ];
    for e in &events {
        bus.publish("orders", e).await.unwrap();
    }
    let ids = |s: &mut aether_core::Subscription| {
        let mut v = Vec::new();
        while let Some(Delivery::Event(e)) = s.try_recv() {
            v.push(format!("{}:{}", e.event_type, e.actor_id));
        }
        v
    };
    assert_eq!(
        ids(&mut by_type),
        [
            "Placed:order.eu.1",
            "Shipped:order.us.1",
            "Placed:order.us.2"
        ]
    );
    assert_eq!(
        ids(&mut by_actor),
        ["Placed:order.eu.1", "Cancelled:order.eu.2"]
    );
    assert_eq!(ids(&mut both), ["Placed:order.eu.1"]);
}

#[tokio::test]
async fn bad_patterns_and_namespaces_are_typed_errors() {
    let bus = EventBus::new();
    for bad in ["", "a..b", "a.>.b"] {
        assert!(
            matches!(bus.subscribe(bad).await, Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    for bad in ["", "a.*", ">", "a..b"] {
        assert!(matches!(
            bus.publish(bad, &ev("x", 1)).await,
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(bus
        .subscribe_with_filter("a", SubscriptionFilter::new().actor_pattern("x.>.y"))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_delivers_every_one_of_ten_thousand_events_in_order() {
    let bus = EventBus::new();
    let mut sub = bus
        .subscribe_with_options("ns", SubscribeOptions::default().buffer_size(16))
        .await
        .unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for v in 1..=10_000 {
                bus.publish("ns", &ev("a", v)).await.unwrap();
            }
        })
    };
    for v in 1..=10_000 {
        assert_eq!(next_event(&mut sub).await.version, v);
    }
    publisher.await.unwrap();
    let m = bus.metrics();
    assert_eq!(m.namespace("ns").published, 10_000);
    assert_eq!(m.namespace("ns").delivered, 10_000);
    assert_eq!(m.total.dropped, 0);
}

#[tokio::test]
async fn drop_newest_reports_every_gap_and_counts_it() {
    let bus = EventBus::new();
    let mut slow = bus
        .subscribe_with_options(
            "ns",
            SubscribeOptions::default()
                .buffer_size(100)
                .overflow(OverflowPolicy::DropNewest),
        )
        .await
        .unwrap();
    // The Go bus silently lost 900 of these 1000 events; here every one is accounted for.
    for v in 1..=1000 {
        bus.publish("ns", &ev("a", v)).await.unwrap();
    }
    let mut received = 0u64;
    let mut lagged = 0u64;
    while let Some(d) = slow.try_recv() {
        match d {
            Delivery::Event(_) => received += 1,
            Delivery::Lagged(n) => lagged += n,
        }
    }
    assert_eq!(received, 100);
    assert_eq!(lagged, 900);
    assert_eq!(received + lagged, 1000);
    assert_eq!(slow.dropped(), 900);
    let m = bus.metrics();
    assert_eq!(m.namespace("ns").dropped, 900);
    assert_eq!(m.namespace("ns").delivered, 100);
}

#[tokio::test]
async fn a_slow_dropping_subscriber_does_not_hold_back_others() {
    let bus = EventBus::new();
    let _slow = bus
        .subscribe_with_options(
            "ns",
            SubscribeOptions::default()
                .buffer_size(1)
                .overflow(OverflowPolicy::DropNewest),
        )
        .await
        .unwrap();
    let mut fast = bus
        .subscribe_with_options("ns", SubscribeOptions::default().buffer_size(1000))
        .await
        .unwrap();
    for v in 1..=500 {
        bus.publish("ns", &ev("a", v)).await.unwrap();
    }
    for v in 1..=500 {
        assert_eq!(next_event(&mut fast).await.version, v);
    }
}

#[tokio::test]
async fn multiple_subscribers_each_get_every_event_once() {
    let bus = EventBus::new();
    let mut subs = Vec::new();
    for _ in 0..10 {
        subs.push(bus.subscribe("ns").await.unwrap());
    }
    for v in 1..=20 {
        bus.publish("ns", &ev("a", v)).await.unwrap();
    }
    for s in &mut subs {
        for v in 1..=20 {
            assert_eq!(next_event(s).await.version, v);
        }
        assert!(s.try_recv().is_none());
    }
    assert_eq!(bus.metrics().namespace("ns").delivered, 200);
}

#[tokio::test]
async fn unsubscribe_by_drop_or_call_updates_active_count() {
    let bus = EventBus::new();
    let a = bus.subscribe("ns").await.unwrap();
    let b = bus.subscribe("ns.>").await.unwrap();
    let c = bus.subscribe("other").await.unwrap();
    assert_eq!(bus.metrics().active_subscriptions, 3);
    assert_eq!(bus.subscription_count(), 3);
    drop(a);
    b.unsubscribe();
    assert_eq!(bus.metrics().active_subscriptions, 1);
    bus.publish("ns", &ev("a", 1)).await.unwrap();
    assert_eq!(bus.metrics().namespace("ns").delivered, 0);
    drop(c);
    assert_eq!(bus.metrics().active_subscriptions, 0);
    assert_eq!(bus.subscription_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_per_publisher_order() {
    let bus = EventBus::new();
    let mut sub = bus
        .subscribe_with_options("ns", SubscribeOptions::default().buffer_size(8))
        .await
        .unwrap();
    let mut pubs = Vec::new();
    for p in 0..4 {
        let bus = bus.clone();
        pubs.push(tokio::spawn(async move {
            for v in 1..=1000 {
                bus.publish("ns", &ev(&format!("p{p}"), v)).await.unwrap();
            }
        }));
    }
    let mut last = [0u64; 4];
    for _ in 0..4000 {
        let e = next_event(&mut sub).await;
        let p: usize = e.actor_id[1..].parse().unwrap();
        assert_eq!(e.version, last[p] + 1, "publisher {p} out of order");
        last[p] = e.version;
    }
    for p in pubs {
        p.await.unwrap();
    }
    assert_eq!(last, [1000; 4]);
}

#[tokio::test]
async fn metadata_and_large_payloads_arrive_intact() {
    let bus = EventBus::new();
    let mut sub = bus.subscribe("ns").await.unwrap();
    let mut e = Event::new("Big", "a", 1).with_field("blob", "x".repeat(100 * 1024));
    e.set_correlation_id("c1");
    e.set_trace_id("t1");
    bus.publish("ns", &e).await.unwrap();
    assert_eq!(*next_event(&mut sub).await, e);
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let bus: Arc<dyn EventBroadcaster> = Arc::new(EventBus::new());
    let mut s = bus.subscribe("ns").await.unwrap();
    bus.publish("ns", &ev("a", 1)).await.unwrap();
    assert_eq!(next_event(&mut s).await.version, 1);
}
