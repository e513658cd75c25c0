//! The partitioned log (`JetStreamConfig::partitions`) against a real `nats-server`: actors
//! spread over streams and read back whole, each partition's log read from its own position,
//! transactions refused across partitions, the count fixed at creation, one partition being
//! the unpartitioned layout, and the latest-version view over partitions. The contract suites
//! run on a partitioned store in `contract.rs`, the transfer runs in `transactions.rs`.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{
    log_partitions, ActorKey, Error, Event, EventLog, EventStore, LogFilter, LogPosition, Snapshot,
    SnapshotStore, Transaction,
};
use aether_store::{JetStreamConfig, JetStreamEventStore, LatestVersions, PartitionKey};
use aether_testkit::contract::event as ev;
use tokio::time::Instant;

use crate::jetstream::{connect, open, retrying, start};

const PARTITIONS: u32 = 4;

fn partitioned(namespace: &str) -> JetStreamConfig {
    JetStreamConfig::default()
        .namespace(namespace)
        .partitions(PARTITIONS)
}

/// Reads every event of `log` from the start, partition by partition, each from its own
/// position, a page of `page` at a time.
async fn read_all(log: Arc<dyn EventLog>, page: usize) -> Vec<(usize, LogPosition, Event)> {
    let mut out = Vec::new();
    for (k, part) in log_partitions(&log).into_iter().enumerate() {
        let mut after = None;
        loop {
            let read = part
                .read_after(after, page)
                .await
                .expect("read a partition");
            if read.is_empty() {
                break;
            }
            for logged in read {
                if let Some(a) = after {
                    assert!(logged.position > a, "positions grow within a partition");
                }
                after = Some(logged.position);
                out.push((k, logged.position, logged.event));
            }
        }
    }
    out
}

#[tokio::test]
async fn actors_spread_over_the_partitions_and_read_back_whole() {
    let server = start();
    let store = open(&server, partitioned("spread")).await;
    assert_eq!(store.partition_count(), PARTITIONS);
    assert_eq!(store.stream_name(), "spread_AETHER_EVENTS");
    assert_eq!(
        store.stream_names(),
        [
            "spread_AETHER_EVENTS_P0",
            "spread_AETHER_EVENTS_P1",
            "spread_AETHER_EVENTS_P2",
            "spread_AETHER_EVENTS_P3"
        ]
    );
    assert_eq!(
        JetStreamEventStore::stream_names_for(store.config()),
        store.stream_names()
    );
    // 40 actors, typed and untyped, with 3 events each (one batch of two).
    let actors: Vec<(Option<&str>, String)> = (0..40)
        .map(|i| {
            let t = if i % 2 == 0 { Some("order") } else { None };
            (t, format!("actor-{i}"))
        })
        .collect();
    for (t, id) in &actors {
        let typed = |e: Event| match t {
            Some(t) => e.with_actor_type(*t),
            None => e,
        };
        store.save_event(&typed(ev(id, 1))).await.unwrap();
        store
            .save_events(id, &[typed(ev(id, 2)), typed(ev(id, 3))])
            .await
            .unwrap();
    }
    // Each actor's messages are in its partition's stream, and every partition has some.
    let infos = store.stream_infos().await.unwrap();
    assert_eq!(infos.len(), PARTITIONS as usize);
    let mut expected = vec![0u64; PARTITIONS as usize];
    for (t, id) in &actors {
        let actor = ActorKey {
            actor_type: *t,
            actor_id: id,
        };
        let k = store.partition_of(actor);
        assert!(store
            .event_subject(actor)
            .starts_with(&format!("spread_AETHER_EVENTS_P{k}.events.")));
        expected[k as usize] += 2;
        let events = store.events_of(actor, 0).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(store.latest_version_of(actor).await.unwrap(), 3);
        // A stale write is refused in its partition as anywhere.
        let stale = match t {
            Some(t) => ev(id, 3).with_actor_type(*t),
            None => ev(id, 3),
        };
        let err = store.save_event(&stale).await.unwrap_err();
        assert!(err.is_version_conflict(), "{err:?}");
    }
    let stored: Vec<u64> = infos.iter().map(|i| i.state.messages).collect();
    assert_eq!(stored, expected);
    assert!(stored.iter().all(|&m| m > 0), "{stored:?}");

    // The whole log has no single order; its partitions together hold every event once.
    let log: Arc<dyn EventLog> = Arc::new(open(&server, partitioned("spread")).await);
    assert!(matches!(
        log.read_after(None, 10).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(log.head().await, Err(Error::InvalidInput(_))));
    assert!(matches!(
        log.read_filtered(None, 10, &LogFilter::all()).await,
        Err(Error::InvalidInput(_))
    ));
    let all = read_all(Arc::clone(&log), 7).await;
    assert_eq!(all.len(), actors.len() * 3);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, _, event) in &all {
        assert_eq!(
            *k as u32,
            store.partition_of(event.actor_key()),
            "an event is read from its actor's partition"
        );
        seen.entry(event.actor_id.clone())
            .or_default()
            .push(event.version);
    }
    assert!(seen.values().all(|v| v == &[1, 2, 3]), "{seen:?}");
    // Each partition's head is where its reads end; filtered reads select types per partition.
    for (k, part) in log_partitions(&log).into_iter().enumerate() {
        let last = all
            .iter()
            .filter(|(p, ..)| *p == k)
            .map(|(_, pos, _)| pos.sequence)
            .max();
        assert_eq!(part.head().await.unwrap().map(|h| h.sequence), last);
        let page = part
            .read_filtered(None, 1000, &LogFilter::types(["order"]))
            .await
            .unwrap();
        assert!(page
            .events
            .iter()
            .all(|l| l.event.actor_type.as_deref() == Some("order")));
    }
}

#[tokio::test]
async fn snapshots_and_replays_from_them_live_in_the_partition() {
    let server = start();
    let store = open(&server, partitioned("snaps")).await;
    for i in 0..12 {
        let id = format!("s-{i}");
        for v in 1..=4 {
            store.save_event(&ev(&id, v)).await.unwrap();
        }
        let mut state = serde_json::Map::new();
        state.insert("at".into(), 2.into());
        let snapshot = Snapshot::new(id.as_str(), 2, state);
        store.save_snapshot(&snapshot).await.unwrap();
        let got = store
            .get_latest_snapshot(&id)
            .await
            .unwrap()
            .expect("the snapshot");
        assert_eq!(got.version, 2);
        let k = store.partition_of(id.as_str());
        assert!(store
            .snapshot_subject(id.as_str())
            .starts_with(&format!("snaps_AETHER_EVENTS_P{k}.snapshots.")));
        let both = store
            .snapshot_and_events_of(ActorKey::untyped(&id), &|s: Option<&Snapshot>| {
                s.map_or(1, |s| s.version + 1)
            })
            .await
            .unwrap();
        assert_eq!(both.snapshot.map(|s| s.version), Some(2));
        assert_eq!(
            both.events.iter().map(|e| e.version).collect::<Vec<_>>(),
            [3, 4]
        );
    }
}

#[tokio::test]
async fn a_transaction_across_partitions_is_refused_and_writes_nothing() {
    let server = start();
    let store = open(&server, partitioned("across")).await;
    // Two actors in different partitions, two in the same one.
    let ids: Vec<String> = (0..64).map(|i| format!("acc-{i}")).collect();
    let a = &ids[0];
    let other = ids
        .iter()
        .find(|id| store.partition_of(id.as_str()) != store.partition_of(a.as_str()))
        .expect("an actor in another partition");
    let txn = Transaction::new()
        .append(a.as_str(), 0, vec![ev(a, 1)])
        .append(other.as_str(), 0, vec![ev(other, 1)]);
    let err = store.commit(&txn).await.unwrap_err();
    let cross = err.as_cross_partition().expect("a cross-partition error");
    assert_eq!(cross.transaction_id, txn.id());
    let named: BTreeSet<u32> = cross.actors.iter().map(|(_, p)| *p).collect();
    assert_eq!(named.len(), 2, "{cross:?}");
    assert!(err.to_string().contains("process manager"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.kind(), "cross_partition");
    for id in [a, other] {
        assert_eq!(store.get_latest_version(id).await.unwrap(), 0);
    }
    let messages: u64 = store
        .stream_infos()
        .await
        .unwrap()
        .iter()
        .map(|i| i.state.messages)
        .sum();
    assert_eq!(messages, 0, "nothing was sent");

    // Bad input is still reported as such, whatever the partitions.
    let bad = Transaction::new().append("x", 0, vec![ev("y", 1)]);
    assert!(matches!(
        store.commit(&bad).await,
        Err(Error::InvalidInput(_))
    ));

    // A partition key keeps a group in one partition, where a transaction is whole.
    let grouped = open(
        &server,
        partitioned("grouped").partition_key(PartitionKey::IdPrefix('/')),
    )
    .await;
    let (x, y) = ("tenant-3/account-1", "tenant-3/account-2");
    assert_eq!(grouped.partition_of(x), grouped.partition_of(y));
    let txn = Transaction::new()
        .append(x, 0, vec![ev(x, 1)])
        .append(y, 0, vec![ev(y, 1)]);
    let result = grouped.commit(&txn).await;
    if server.version().at_least(2, 12) {
        result.unwrap();
        assert_eq!(grouped.get_latest_version(x).await.unwrap(), 1);
        assert_eq!(grouped.get_latest_version(y).await.unwrap(), 1);
    } else {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn the_partition_count_is_fixed_when_the_streams_are_created() {
    let server = start();
    let _four = open(&server, partitioned("fixed")).await;
    let client = connect(&server).await;
    let err = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace("fixed").partitions(2),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("partition 0 of 4"), "{err}");
    let err = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace("fixed").partitions(8),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("fixed when its streams are created"),
        "{err}"
    );

    // An unpartitioned store with history is not hidden behind new partitions.
    let plain = open(&server, JetStreamConfig::default().namespace("grown")).await;
    plain.save_event(&ev("a", 1)).await.unwrap();
    let err = JetStreamEventStore::new(client.clone(), partitioned("grown"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("unpartitioned"), "{err}");

    // Out of range counts are refused before anything is created.
    for bad in [0, aether_store::MAX_PARTITIONS + 1] {
        let err = JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default()
                .namespace("range")
                .partitions(bad),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
    let js = async_nats::jetstream::new(client);
    assert!(js.get_stream("range_AETHER_EVENTS_P0").await.is_err());
}

#[tokio::test]
async fn one_partition_is_the_unpartitioned_layout() {
    let server = start();
    // Written as every earlier release writes.
    let before = open(&server, JetStreamConfig::default().namespace("one")).await;
    before.save_event(&ev("a", 1)).await.unwrap();
    before
        .save_event(&ev("b", 1).with_actor_type("order"))
        .await
        .unwrap();
    let one = open(
        &server,
        JetStreamConfig::default().namespace("one").partitions(1),
    )
    .await;
    assert_eq!(one.stream_names(), ["one_AETHER_EVENTS"]);
    assert_eq!(one.event_subject("a"), before.event_subject("a"));
    assert_eq!(
        one.event_subject(ActorKey::new("order", "b")),
        before.event_subject(ActorKey::new("order", "b"))
    );
    assert_eq!(one.get_latest_version("a").await.unwrap(), 1);
    one.save_event(&ev("a", 2)).await.unwrap();
    assert_eq!(before.get_latest_version("a").await.unwrap(), 2);
    // Its log is one order, read directly.
    assert!(one.partitions().is_empty());
    assert_eq!(one.read_after(None, 10).await.unwrap().len(), 3);
    let info = one.stream_info().await.unwrap();
    assert_eq!(
        info.config.description.as_deref(),
        Some("Aether event store: append-only actor histories")
    );
}

#[tokio::test]
async fn the_latest_version_view_watches_every_partition() {
    let server = start();
    let store = Arc::new(open(&server, partitioned("view")).await);
    let writer = open(&server, partitioned("view")).await;
    for i in 0..20 {
        writer.save_event(&ev(&format!("v-{i}"), 1)).await.unwrap();
    }
    let view = LatestVersions::start(Arc::clone(&store), Duration::from_millis(400))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while view.actors() < 20 || !view.is_current() {
        assert!(
            Instant::now() < deadline,
            "the view never loaded every partition"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..20 {
        writer.save_event(&ev(&format!("v-{i}"), 2)).await.unwrap();
    }
    // Once the bound has passed, every partition's saves are reflected.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for i in 0..20 {
        let id = format!("v-{i}");
        assert_eq!(
            view.get_latest_version(id.as_str()).await.unwrap(),
            2,
            "{id}"
        );
    }
    assert!(format!("{view:?}").contains("partitions: 4"));
    view.shutdown().await;
}

/// Asks partition `stream`'s leader to hand over to `to` (a test's way to pile leaders up),
/// retrying a request that goes unanswered while the cluster is busy.
async fn move_leader(store: &JetStreamEventStore, stream: &str, to: &str) {
    let body = serde_json::json!({ "placement": { "preferred": to } });
    retrying("a step-down request", || async {
        store
            .context()
            .request::<_, _, serde_json::Value>(format!("STREAM.LEADER.STEPDOWN.{stream}"), &body)
            .await
            .map_err(|e| Error::unavailable("asking for a step-down", e))
    })
    .await;
}

/// Polls the partitions' leaders until `done` holds of the count per server.
async fn leaders_until(
    store: &JetStreamEventStore,
    what: &str,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut count = BTreeMap::new();
        let mut leaderless = false;
        for p in store.partition_leaders().await.unwrap_or_default() {
            match p.leader {
                Some(l) => *count.entry(l).or_insert(0) += 1,
                None => leaderless = true,
            }
        }
        if !leaderless && done(&count) {
            return count;
        }
        assert!(Instant::now() < deadline, "leaders never {what}: {count:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leaders_are_spread_over_the_servers() {
    let cluster = aether_testkit::NatsCluster::start(3).unwrap();
    let client = async_nats::ConnectOptions::new()
        .connect(cluster.url_list())
        .await
        .unwrap();
    if !cluster.servers()[0].version().at_least(2, 11) {
        // Replicated event streams are refused before 2.11 (see `jetstream_cluster`); on one
        // replica there is nothing to spread.
        let store = JetStreamEventStore::new(client, partitioned("lead"))
            .await
            .unwrap();
        assert!(store.spread_leaders().await.unwrap().is_empty());
        return;
    }
    let config = JetStreamConfig::default()
        .namespace("lead")
        .replicas(3)
        .partitions(6);
    let store = JetStreamEventStore::new(client, config).await.unwrap();
    // Pile every leader onto one server, as a rolling restart can leave them.
    leaders_until(&store, "elected", |c| c.values().sum::<usize>() == 6).await;
    let first = retrying("the partitions' leaders", || store.partition_leaders()).await;
    let target = first
        .iter()
        .find_map(|p| p.leader.clone())
        .expect("a leader");
    for p in &first {
        if p.leader.as_deref() != Some(target.as_str()) {
            move_leader(&store, &p.stream, &target).await;
        }
    }
    leaders_until(&store, "gathered on one server", |c| {
        c.get(&target) == Some(&6)
    })
    .await;
    // Spread them: two each, every partition still writable.
    // The plan moves four leaders off the crowded server (a retried spread below may find
    // some of them moved already, so the pure plan is what is checked here).
    let crowded = retrying("the partitions' leaders", || store.partition_leaders()).await;
    let planned = aether_store::leaders::plan(&crowded);
    assert_eq!(planned.len(), 4, "{planned:?}");
    assert!(planned.iter().all(|m| m.from == target && m.to != target));
    let moves = retrying("spreading the leaders", || store.spread_leaders()).await;
    assert!(moves.iter().all(|m| m.to != target), "{moves:?}");
    let spread = leaders_until(&store, "spread two per server", |c| {
        c.len() == 3 && c.values().all(|&n| n == 2)
    })
    .await;
    eprintln!("leaders per server after spreading: {spread:?}");
    for i in 0..12 {
        let id = format!("after-{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = store.save_event(&ev(&id, 1)).await {
            assert!(e.is_retryable(), "{e:?}");
            assert!(Instant::now() < deadline, "no save after the moves: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Balanced, it moves nothing more.
    assert!(retrying("spreading the leaders", || store.spread_leaders())
        .await
        .is_empty());
}
