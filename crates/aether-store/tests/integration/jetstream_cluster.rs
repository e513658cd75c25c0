//! The JetStream store on a three-node cluster with a replicated stream.
#![cfg(feature = "nats")]

use std::time::{Duration, Instant};

use crate::jetstream::retrying;
use aether_core::{Error, Event, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsCluster;

fn ev(actor: &str, v: u64) -> Event {
    Event::new("Happened", actor, v).with_field("n", v)
}

/// Opens a store on `url`, retrying while the young cluster cannot place the stream yet.
async fn open(url: &str, config: JetStreamConfig) -> JetStreamEventStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match JetStreamEventStore::connect(url, config.clone()).await {
            Ok(s) => return s,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("opening the store on {url}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_on_different_servers_share_one_replicated_history() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3)).expect("cluster");
    let mut config = JetStreamConfig::default().replicas(3);
    if !cluster.server(0).version().at_least(2, 11) {
        // Replicated streams are refused on servers with the leader-change bug fixed in 2.11
        // (see tests/faults_cluster.rs); sharing one history still works when accepted.
        config = config.allow_replication_on_old_servers(true);
    }
    let mut stores = Vec::new();
    for url in cluster.url_list() {
        stores.push(open(&url, config.clone()).await);
    }
    let info = retrying("the stream's info", || stores[0].stream_info()).await;
    assert_eq!(info.config.num_replicas, 3);

    // One writer per server races on one actor. Direct gets may be answered by a lagging
    // replica; the server's sequence check keeps the history exact anyway.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut handles = Vec::new();
    for store in stores {
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            while Instant::now() < deadline {
                let next = store.get_latest_version("acc").await.unwrap() + 1;
                match store.save_event(&ev("acc", next)).await {
                    Ok(()) => won.push(next),
                    Err(Error::VersionConflict(c)) => {
                        assert!(c.current_version >= c.attempted_version, "{c:?}")
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            (won, store)
        }));
    }
    let mut won = Vec::new();
    let mut stores = Vec::new();
    for h in handles {
        let (w, s) = h.await.unwrap();
        won.extend(w);
        stores.push(s);
    }
    won.sort_unstable();
    assert!(!won.is_empty());
    for store in &stores {
        let stored: Vec<u64> = store
            .get_events("acc", 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(stored, won, "every server serves the same, exact history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_streams_are_refused_on_servers_older_than_2_11() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3)).expect("cluster");
    let url = &cluster.url_list()[0];
    let config = JetStreamConfig::default().namespace("r3").replicas(3);
    let version = cluster.server(0).version();
    if version.at_least(2, 11) {
        let store = open(url, config).await;
        assert_eq!(
            retrying("the stream's info", || store.stream_info())
                .await
                .config
                .num_replicas,
            3
        );
        return;
    }
    let err = JetStreamEventStore::connect(url, config.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(_)) && !err.is_retryable(),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("2.11") && text.contains("allow_replication_on_old_servers"),
        "the refusal does not say what to do: {text}"
    );
    // Nothing was created by the refused attempt; one replica stays available.
    let single = open(url, JetStreamConfig::default().namespace("r1")).await;
    assert_eq!(single.stream_info().await.unwrap().config.num_replicas, 1);
    let accepted = open(url, config.allow_replication_on_old_servers(true)).await;
    assert_eq!(
        retrying("the stream's info", || accepted.stream_info())
            .await
            .config
            .num_replicas,
        3
    );
}
