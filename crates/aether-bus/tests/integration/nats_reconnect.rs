//! The NATS bus across a server restart: subscriptions made before it keep receiving after
//! it, and publishing works again, without the application doing anything.
#![cfg(feature = "nats")]

use std::time::Duration;

use crate::nats_support::*;
use aether_bus::NatsEventBus;
use aether_core::{Delivery, EventBroadcaster, Subscription};

/// Publishes numbered probes until one reaches `sub`; returns the lag seen on the way (events
/// published while a connection was down are lost for the subscriber and reported as lag).
async fn probe_until_delivered(publisher: &NatsEventBus, sub: &mut Subscription) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut lagged = 0;
    for k in 1u64.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe got through after the restart"
        );
        // Publishing may fail while the client reconnects; it is retried with the next probe.
        let _ = publisher.publish("orders", &ev("Probe", "p", k)).await;
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            match d {
                Delivery::Event(e) if e.event_type == "Probe" && e.version == k => return lagged,
                Delivery::Event(_) => {}
                Delivery::Lagged(n) => lagged += n,
            }
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_server_restart() {
    let mut server = server();
    let a = bus(&server).await;
    let b = bus(&server).await;
    let mut remote = b.subscribe("orders").await.unwrap();
    let mut wildcard = b.subscribe(">").await.unwrap();
    let mut local = a.subscribe("orders").await.unwrap();

    a.publish("orders", &ev("Before", "x", 1)).await.unwrap();
    for sub in [&mut remote, &mut wildcard, &mut local] {
        assert_eq!(next_event(sub).await.event_type, "Before");
    }

    tokio::task::block_in_place(|| server.restart()).expect("restarting nats-server");

    // No re-subscribe: the same subscriptions receive again once the clients are back.
    probe_until_delivered(&a, &mut remote).await;
    probe_until_delivered(&a, &mut wildcard).await;
    // Everything published from now on arrives, in order, on every subscription.
    for v in 1..=100 {
        a.publish("orders", &ev("After", "x", v)).await.unwrap();
    }
    for sub in [&mut remote, &mut wildcard, &mut local] {
        let mut next_version = 1;
        while next_version <= 100 {
            match next(sub).await {
                Delivery::Event(e) if e.event_type == "After" => {
                    assert_eq!(e.version, next_version);
                    next_version += 1;
                }
                // Probes from before (or lag from the outage on the wildcard subscription).
                Delivery::Event(_) | Delivery::Lagged(_) => {}
            }
        }
    }
    // And the other direction works too.
    b.publish("orders", &ev("FromB", "y", 1)).await.unwrap();
    let mut from_b = false;
    while !from_b {
        if let Delivery::Event(e) = next(&mut local).await {
            from_b = e.event_type == "FromB";
        }
    }
    // The client reports its events asynchronously.
    wait_for(|| async { a.monitor().disconnects() >= 1 && b.monitor().disconnects() >= 1 }).await;
    assert_eq!(b.metrics().active_subscriptions, 2);
}
