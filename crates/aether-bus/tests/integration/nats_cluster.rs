//! The NATS bus on a three-server cluster: buses connected to different servers see each
//! other's events, and a durable subscription reads a replicated bus stream.
#![cfg(feature = "nats")]

use std::time::Duration;

use crate::nats_support::*;
use aether_bus::{BusStreamConfig, NatsBusConfig, NatsEventBus, StartFrom};
use aether_core::{Delivery, EventBroadcaster, Subscription, SubscriptionFilter};
use aether_testkit::NatsCluster;

/// Subscription interest reaches the other servers of a cluster asynchronously: publish
/// probes until one arrives.
async fn await_interest(publisher: &NatsEventBus, namespace: &str, sub: &mut Subscription) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for k in 1u64.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "interest never propagated"
        );
        publisher
            .publish(namespace, &ev("Probe", "p", k))
            .await
            .unwrap();
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
            if matches!(d, Delivery::Event(e) if e.event_type == "Probe" && e.version == k) {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buses_on_different_servers_of_a_cluster() {
    let cluster = tokio::task::block_in_place(|| NatsCluster::start(3)).expect("cluster");
    let urls = cluster.url_list();
    let config = NatsBusConfig::default().jetstream(BusStreamConfig::default().replicas(3));
    let mut buses = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for url in &urls {
        // Right after the cluster elects a leader, placing a replicated stream can still fail
        // ("no suitable peers") until every server has reported in: retry, as the error says.
        let bus = loop {
            match NatsEventBus::connect(url, config.clone()).await {
                Ok(b) => break b,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connecting: {e:?}"),
            }
        };
        buses.push(bus);
    }
    let mut subs = Vec::new();
    for b in &buses {
        subs.push(b.subscribe("orders").await.unwrap());
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        await_interest(&buses[(i + 1) % 3], "orders", sub).await;
        await_interest(&buses[(i + 2) % 3], "orders", sub).await;
    }
    for (i, b) in buses.iter().enumerate() {
        for v in 1..=20 {
            b.publish("orders", &ev("E", &i.to_string(), v))
                .await
                .unwrap();
        }
    }
    for sub in &mut subs {
        let mut last = [0u64; 3];
        while last != [20; 3] {
            let e = next_event(sub).await;
            if e.event_type == "Probe" {
                continue;
            }
            let p: usize = e.actor_id.parse().unwrap();
            assert_eq!(e.version, last[p] + 1);
            last[p] = e.version;
        }
    }
    // Every acknowledged event is in the replicated stream, readable from any server.
    let mut durable = buses[2]
        .subscribe_durable(
            "orders",
            StartFrom::Beginning,
            SubscriptionFilter::new().event_type("E"),
        )
        .await
        .unwrap();
    let mut count = 0;
    while count < 60 {
        tokio::time::timeout(DEADLINE, durable.recv())
            .await
            .unwrap()
            .unwrap();
        count += 1;
    }
}
