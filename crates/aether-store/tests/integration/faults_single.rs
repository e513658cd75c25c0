//! One JetStream server killed with SIGKILL while writers append: every acknowledged event
//! survives exactly once, versions never repeat, and saves during the outage fail with a typed,
//! retryable error rather than a wrong success; with group commit on as well.
#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::Duration;

use crate::faults_support::{actor_names, assert_all_retryable, connect, open_store, verify, Load};
use aether_core::EventStore;
use aether_store::JetStreamConfig;
use aether_testkit::NatsServer;

const WRITERS: usize = 4;
const ACTORS: usize = 20;
const PHASE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_event() {
    kill_9_during_writes(JetStreamConfig::default().namespace("crash"), 1).await;
}

/// The same crashes with four writers sharing each store (and its connection), so that
/// saves of different actors are in flight together on one connection when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_shared_store_writes_loses_no_acknowledged_event() {
    kill_9_during_writes(JetStreamConfig::default().namespace("crash"), 4).await;
}

/// `WRITERS` stores, each shared by `per_store` writers, through two crashes.
async fn kill_9_during_writes(config: JetStreamConfig, per_store: usize) {
    let mut server = NatsServer::builder().sync_always(true).start().unwrap();
    let urls = vec![server.url()];
    let mut stores = Vec::new();
    for _ in 0..WRITERS {
        let client = connect(&urls).await;
        stores.push(Arc::new(
            open_store(client, config.clone(), Duration::from_millis(500)).await,
        ));
    }
    let writers: Vec<_> = stores
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), per_store))
        .collect();
    let actors = actor_names("acct", ACTORS);
    let load = Load::start(writers, actors.clone());

    // Two crashes, each in the middle of a steady stream of writes.
    for round in 0..2 {
        load.wait_for_acks(200, PHASE).await;
        server.kill().unwrap();
        load.wait_for_failures(WRITERS as u64, PHASE).await;
        server.start_again().unwrap();
        load.wait_for_acks(200, PHASE).await;
        eprintln!(
            "round {round}: {} acked, {} failed so far",
            load.acked(),
            load.failed()
        );
    }
    let outcome = load.finish().await;
    assert!(
        outcome.faults().count() > 0,
        "the crashes caused no failed save; the test did not test anything"
    );
    assert_all_retryable(&outcome);

    // A fresh client and store see every acknowledged event exactly once.
    let store = open_store(connect(&urls).await, config, Duration::from_secs(5)).await;
    let total = verify(&store, &actors, &outcome).await;
    assert!(total >= outcome.acked.len());
    eprintln!(
        "{} acked, {} stored, {} failures ({} conflicts)",
        outcome.acked.len(),
        total,
        outcome.failures.len(),
        outcome.failures.iter().filter(|f| f.conflict).count()
    );

    // And the history continues where it stopped: the next version of each actor is free,
    // the current one is taken.
    let actor = &actors[0];
    let latest = store.get_latest_version(actor).await.unwrap();
    assert!(store
        .save_event(&aether_core::Event::new("Ticked", actor.as_str(), latest))
        .await
        .unwrap_err()
        .is_version_conflict());
    store
        .save_event(&aether_core::Event::new(
            "Ticked",
            actor.as_str(),
            latest + 1,
        ))
        .await
        .unwrap();
}
