//! A bounded soak: many actors, concurrent writers, subscribers following the saves, and a
//! server crash (SIGKILL) and restart in the middle. Reports events/s and save latency, and
//! asserts that no acknowledged event is lost and no version is written twice.
//!
//! Slow, so not part of the normal suite: the test is ignored unless run through `scripts/soak`
//! (which sets `AETHER_SOAK=1` and passes `--ignored`). `AETHER_SOAK_SECS` sets the writing time
//! (default 40 s, at most 100; checking every event afterwards takes about as long again on a
//! fast server).
#![cfg(feature = "nats")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults_support::{
    actor_names, assert_all_retryable, connect, open_store, percentiles, verify, Load,
};
use aether_bus::EventBus;
use aether_core::{Delivery, EventBroadcaster, EventStore};
use aether_store::JetStreamConfig;
use aether_store::Notify;
use aether_testkit::NatsServer;

const WRITERS: usize = 8;
const ACTORS: usize = 500;
const SUBSCRIBERS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run scripts/soak"]
async fn soak_with_a_crash_in_the_middle() {
    assert_eq!(
        std::env::var("AETHER_SOAK").as_deref(),
        Ok("1"),
        "the soak runs through scripts/soak (AETHER_SOAK=1)"
    );
    let secs: u64 = std::env::var("AETHER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
        .clamp(5, 100);
    let mut server = NatsServer::builder().sync_always(true).start().unwrap();
    let urls = vec![server.url()];
    let config = JetStreamConfig::default().namespace("soak");

    // Subscribers follow the saves through the stores' EventStored notifications.
    let bus = Arc::new(EventBus::new());
    let notified = Arc::new(AtomicU64::new(0));
    let mut subscriber_tasks = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut sub = bus.subscribe("soak").await.unwrap();
        let notified = notified.clone();
        subscriber_tasks.push(tokio::spawn(async move {
            let mut lag = 0;
            while let Some(d) = sub.recv().await {
                match d {
                    Delivery::Event(_) => {
                        notified.fetch_add(1, Ordering::Relaxed);
                    }
                    Delivery::Lagged(n) => lag += n,
                }
            }
            lag
        }));
    }

    let mut stores = Vec::new();
    for _ in 0..WRITERS {
        let store = Notify::new(
            open_store(connect(&urls).await, config.clone(), Duration::from_secs(1)).await,
            bus.clone(),
            "soak",
        );
        stores.push(Arc::new(store));
    }
    let actors = actor_names("soak", ACTORS);
    let started = Instant::now();
    // Each writer owns its actors, as when actors are spread over the nodes of a cluster.
    let load = Load::start_with(stores.clone(), actors.clone(), true);

    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    let before = load.acked();
    let crash_at = started.elapsed();
    server.kill().unwrap();
    load.wait_for_failures(WRITERS as u64, Duration::from_secs(20))
        .await;
    server.start_again().unwrap();
    let back_at = started.elapsed();
    load.wait_for_acks(1, Duration::from_secs(30)).await;
    let recovered_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(secs - secs / 2)).await;
    let outcome = load.finish().await;
    let elapsed = started.elapsed();

    assert_all_retryable(&outcome);
    let store = open_store(connect(&urls).await, config, Duration::from_secs(5)).await;
    let stored = verify(&store, &actors, &outcome).await;
    let versions: u64 = {
        let mut sum = 0;
        for a in &actors {
            sum += store.get_latest_version(a).await.unwrap();
        }
        sum
    };

    drop(stores);
    drop(bus);
    let mut lag = 0;
    for t in subscriber_tasks {
        lag += t.await.unwrap();
    }
    let notified = notified.load(Ordering::Relaxed);
    let (p50, p99) = percentiles(&outcome.acked);
    let conflicts = outcome.failures.iter().filter(|f| f.conflict).count();
    let faults = outcome.faults().count();
    println!("soak: {WRITERS} writers, {ACTORS} actors, {SUBSCRIBERS} subscribers, {secs} s, nats-server {}", server.version());
    println!(
        "soak: {} saves acknowledged in {:.1} s = {:.0} events/s",
        outcome.acked.len(),
        elapsed.as_secs_f64(),
        outcome.acked.len() as f64 / elapsed.as_secs_f64()
    );
    println!("soak: save latency p50 {p50:?}, p99 {p99:?}");
    println!(
        "soak: crash at {crash_at:.1?} after {before} acks, server back at {back_at:.1?}, first ack after it at {recovered_at:.1?}"
    );
    println!("soak: {faults} failed saves/reads during the outage (all retryable), {conflicts} version conflicts");
    println!(
        "soak: {stored} events stored (acknowledged and in-doubt), highest versions sum {versions}"
    );
    println!("soak: {notified} notifications received by {SUBSCRIBERS} subscribers, lag {lag}");
    println!("soak: lost 0, duplicate versions 0");
    assert_eq!(stored as u64, versions, "versions are contiguous per actor");
    assert!(notified >= SUBSCRIBERS as u64 * outcome.acked.len() as u64 - lag);
}
