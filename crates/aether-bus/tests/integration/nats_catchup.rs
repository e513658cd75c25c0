//! Durable delivery from JetStream: a subscriber that was down catches up from its checkpoint,
//! then continues with live events, with no duplicates and no gaps.
#![cfg(feature = "nats")]

use std::time::{Duration, SystemTime};

use crate::nats_support::*;
use aether_bus::{BusStreamConfig, DurableSubscription, NatsBusConfig, NatsEventBus, StartFrom};
use aether_core::{Error, EventBroadcaster, SubscriptionFilter};
use aether_testkit::NatsServer;

fn js_config() -> NatsBusConfig {
    NatsBusConfig::default().jetstream(BusStreamConfig::default())
}

async fn js_bus(server: &NatsServer) -> NatsEventBus {
    bus_with(server, js_config()).await
}

async fn next_durable(sub: &mut DurableSubscription) -> aether_bus::DurableEvent {
    tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .expect("timed out waiting for a durable event")
        .expect("durable subscription ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_was_down_catches_up_then_continues_live() {
    let server = server();
    let writer = js_bus(&server).await;

    // A projection reads the first 50 events and checkpoints.
    let reader = js_bus(&server).await;
    let mut sub = reader
        .subscribe_durable("orders.>", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap();
    for v in 1..=50 {
        writer
            .publish("orders.eu", &ev("OrderPlaced", "o", v))
            .await
            .unwrap();
        // Other namespaces are in the stream too, and must not reach this subscriber.
        writer
            .publish("payments", &ev("Paid", "p", v))
            .await
            .unwrap();
    }
    let mut last_seq = 0;
    for v in 1..=50 {
        let d = next_durable(&mut sub).await;
        assert_eq!((d.event.version, d.namespace.as_str()), (v, "orders.eu"));
        assert!(d.sequence > last_seq);
        last_seq = d.sequence;
    }
    let checkpoint = sub.last_sequence().unwrap();
    assert_eq!(checkpoint, last_seq);
    let resume = sub.resume_from().unwrap();
    assert_eq!(resume, StartFrom::Sequence(checkpoint + 1));

    // The projection's process goes down; events keep coming.
    drop(sub);
    drop(reader);
    for v in 51..=100 {
        writer
            .publish("orders.us", &ev("OrderPlaced", "o", v))
            .await
            .unwrap();
    }

    // It comes back (a new bus, as a new process would), resumes from the checkpoint, and
    // also gets what is published while it catches up and afterwards.
    let reader = js_bus(&server).await;
    let mut sub = reader
        .subscribe_durable("orders.>", resume, SubscriptionFilter::new())
        .await
        .unwrap();
    let live_writer = writer.clone();
    let live = tokio::spawn(async move {
        for v in 101..=150 {
            live_writer
                .publish("orders.eu", &ev("OrderPlaced", "o", v))
                .await
                .unwrap();
        }
    });
    let mut last = checkpoint;
    for v in 51..=150 {
        let d = next_durable(&mut sub).await;
        assert_eq!(d.event.version, v, "no gap, no duplicate");
        assert!(d.sequence > last);
        last = d.sequence;
    }
    live.await.unwrap();
    // Nothing more: the next event is the marker published now.
    writer
        .publish("orders.end", &ev("Marker", "m", 1))
        .await
        .unwrap();
    assert_eq!(next_durable(&mut sub).await.event.event_type, "Marker");
    assert_eq!(reader.metrics().active_subscriptions, 1);
    drop(sub);
    assert_eq!(reader.metrics().active_subscriptions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_points_filters_and_live_subscribers_together() {
    let server = server();
    let bus = js_bus(&server).await;
    let mut live = bus.subscribe("a").await.unwrap();
    for v in 1..=5 {
        bus.publish("a", &ev("E", "x", v)).await.unwrap();
    }
    // JetStream publishing still delivers live, once.
    for v in 1..=5 {
        assert_eq!(next_event(&mut live).await.version, v);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for v in 6..=10 {
        bus.publish("a", &ev(if v % 2 == 0 { "Even" } else { "Odd" }, "x", v))
            .await
            .unwrap();
    }
    let mut from_time = bus
        .subscribe_durable("a", StartFrom::Time(between), SubscriptionFilter::new())
        .await
        .unwrap();
    assert_eq!(next_durable(&mut from_time).await.event.version, 6);

    let mut from_seq = bus
        .subscribe_durable("a", StartFrom::Sequence(3), SubscriptionFilter::new())
        .await
        .unwrap();
    let first = next_durable(&mut from_seq).await;
    assert_eq!((first.sequence, first.event.version), (3, 3));

    let mut even = bus
        .subscribe_durable(
            "*",
            StartFrom::Beginning,
            SubscriptionFilter::new().event_type("Even"),
        )
        .await
        .unwrap();
    for v in [6, 8, 10] {
        assert_eq!(next_durable(&mut even).await.event.version, v);
    }

    let mut only_new = bus
        .subscribe_durable("a", StartFrom::New, SubscriptionFilter::new())
        .await
        .unwrap();
    bus.publish("a", &ev("New", "x", 11)).await.unwrap();
    assert_eq!(next_durable(&mut only_new).await.event.version, 11);
    assert_live_got_6_to_11_once(&mut live, &bus).await;

    // Durable subscriptions need the stream.
    let plain = bus_with(&server, NatsBusConfig::default()).await;
    assert!(matches!(
        plain
            .subscribe_durable("a", StartFrom::Beginning, SubscriptionFilter::new())
            .await,
        Err(Error::InvalidInput(_))
    ));

    // Closing the bus ends durable subscriptions.
    assert_eq!(bus.metrics().active_subscriptions, 5);
    bus.close().await.unwrap();
    assert_eq!(bus.metrics().active_subscriptions, 0);
    let ended =
        tokio::time::timeout(DEADLINE, async { while only_new.recv().await.is_some() {} }).await;
    assert!(ended.is_ok());
}

async fn assert_live_got_6_to_11_once(live: &mut aether_core::Subscription, bus: &NatsEventBus) {
    for v in 6..=11 {
        assert_eq!(next_event(live).await.version, v);
    }
    assert_nothing_before_marker(bus, "a", live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_continues_after_a_server_restart() {
    let mut server = server();
    let bus = js_bus(&server).await;
    let mut sub = bus
        .subscribe_durable(">", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap();
    for v in 1..=10 {
        bus.publish("r", &ev("E", "x", v)).await.unwrap();
    }
    for v in 1..=10 {
        assert_eq!(next_durable(&mut sub).await.event.version, v);
    }
    tokio::task::block_in_place(|| server.restart()).expect("restarting nats-server");
    // Publishing works again once the client is back (the stream is on disk).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut v = 11;
    while v <= 20 {
        match bus.publish("r", &ev("E", "x", v)).await {
            Ok(()) => v += 1,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "publishing never recovered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The same subscription goes on from where it was, with nothing twice and nothing missed.
    for v in 11..=20 {
        assert_eq!(next_durable(&mut sub).await.event.version, v);
    }
}
