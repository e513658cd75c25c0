//! The JetStream store against a real `nats-server` (each test starts its own).
#![cfg(feature = "jetstream")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_bus::EventBus;
use aether_core::{
    Delivery, Error, Event, EventBroadcaster, EventStore, EventStoreWithErrors, JetStreamConfig,
    Snapshot, SnapshotStore, StorageKind, EVENT_TYPE_EVENT_STORED,
};
use aether_store::JetStreamEventStore;
use aether_testkit::NatsServer;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use serde_json::json;

fn ev(actor: &str, v: u64) -> Event {
    Event::new("Happened", actor, v).with_field("n", v)
}

fn versions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("connect to the test server")
}

async fn open(server: &NatsServer, config: JetStreamConfig) -> JetStreamEventStore {
    JetStreamEventStore::new(connect(server).await, config)
        .await
        .expect("open the store")
}

fn start() -> NatsServer {
    NatsServer::start().expect("start nats-server")
}

#[tokio::test]
async fn saves_and_replays_in_order_with_from_version() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    assert_eq!(store.get_latest_version("a").await.unwrap(), 0);
    assert!(store.get_events("a", 0).await.unwrap().is_empty());

    let mut first = ev("a", 1).with_metadata("k", "v");
    first.set_correlation_id("corr");
    store.save_event(&first).await.unwrap();
    for v in 2..=5 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store.save_event(&ev("b", 1)).await.unwrap();

    let all = store.get_events("a", 0).await.unwrap();
    assert_eq!(versions(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all[0], first, "stored events come back exactly");
    assert_eq!(
        versions(&store.get_events("a", 3).await.unwrap()),
        [3, 4, 5]
    );
    assert!(store.get_events("a", 6).await.unwrap().is_empty());
    assert_eq!(store.get_latest_version("a").await.unwrap(), 5);
    assert_eq!(store.get_latest_version("b").await.unwrap(), 1);
    assert_eq!(store.get_latest_version("nobody").await.unwrap(), 0);
    assert_eq!(store.malformed_events(), 0);
}

#[tokio::test]
async fn stale_versions_conflict_with_the_current_version() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    store.save_event(&ev("a", 1)).await.unwrap();
    let err = store.save_event(&ev("a", 1)).await.unwrap_err();
    let c = err.as_version_conflict().expect("conflict");
    assert_eq!((c.attempted_version, c.current_version), (1, 1));
    // versions need not be contiguous
    store.save_event(&ev("a", 3)).await.unwrap();
    let err = store.save_event(&ev("a", 2)).await.unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 3);
    assert_eq!(versions(&store.get_events("a", 0).await.unwrap()), [1, 3]);
    // invalid input never reaches the server
    assert!(matches!(
        store.save_event(&ev("a", 0)).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.save_event(&ev("", 1)).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.get_latest_version("").await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    store.save_events("a", &[]).await.unwrap();
    store
        .save_events("a", &[ev("a", 1), ev("a", 2), ev("a", 3)])
        .await
        .unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 3);

    // The batch conflicts on its first event: none of it is stored.
    let err = store
        .save_events("a", &[ev("a", 3), ev("a", 4), ev("a", 5)])
        .await
        .unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 3);
    assert_eq!(
        versions(&store.get_events("a", 0).await.unwrap()),
        [1, 2, 3]
    );

    // Invalid batches are rejected before anything is sent.
    for bad in [
        vec![ev("a", 5), ev("b", 6)],
        vec![ev("a", 6), ev("a", 6)],
        vec![ev("a", 7), ev("a", 0)],
    ] {
        assert!(matches!(
            store.save_events("a", &bad).await,
            Err(Error::InvalidInput(_))
        ));
    }

    store.save_event(&ev("a", 4)).await.unwrap();
    store
        .save_events("a", &[ev("a", 5), ev("a", 6), ev("a", 9)])
        .await
        .unwrap();
    assert_eq!(
        versions(&store.get_events("a", 0).await.unwrap()),
        [1, 2, 3, 4, 5, 6, 9]
    );
    // from_version inside a batch
    assert_eq!(versions(&store.get_events("a", 6).await.unwrap()), [6, 9]);
    assert_eq!(
        versions(&store.get_events("a", 2).await.unwrap()),
        [2, 3, 4, 5, 6, 9]
    );
    assert_eq!(store.get_latest_version("a").await.unwrap(), 9);

    // A fresh store (cold cache) sees the same.
    let other = open(&server, JetStreamConfig::default()).await;
    assert_eq!(other.get_latest_version("a").await.unwrap(), 9);
    let err = other
        .save_events("a", &[ev("a", 9), ev("a", 10)])
        .await
        .unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_batches_never_interleave_or_split() {
    let server = start();
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let store = open(&server, JetStreamConfig::default()).await;
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..25 {
                let latest = store.get_latest_version("acc").await.unwrap();
                let batch: Vec<Event> = (1..=3)
                    .map(|i| ev("acc", latest + i).with_field("writer", w))
                    .collect();
                match store.save_events("acc", &batch).await {
                    Ok(()) => won.push(latest + 1),
                    Err(e) => assert!(e.is_version_conflict(), "unexpected {e:?}"),
                }
            }
            won
        }));
    }
    let mut starts = BTreeSet::new();
    for h in handles {
        starts.extend(h.await.unwrap());
    }
    let reader = open(&server, JetStreamConfig::default()).await;
    let events = reader.get_events("acc", 0).await.unwrap();
    assert_eq!(events.len(), starts.len() * 3);
    for (i, chunk) in events.chunks(3).enumerate() {
        let start = chunk[0].version;
        assert!(starts.contains(&start));
        assert_eq!(versions(chunk), [start, start + 1, start + 2]);
        let writer = &chunk[0].data["writer"];
        assert!(
            chunk.iter().all(|e| &e.data["writer"] == writer),
            "batch {i} mixed writers"
        );
    }
    assert_eq!(
        versions(&events),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_eight_connections_never_duplicate_a_version() {
    let server = start();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut handles = Vec::new();
    for w in 0..8u64 {
        // Each writer has its own connection and its own store object.
        let store = open(&server, JetStreamConfig::default()).await;
        handles.push(tokio::spawn(async move {
            let (mut won, mut lost) = (Vec::new(), 0u64);
            let mut latest = 0;
            while Instant::now() < deadline {
                // Some writers skip versions, so a stale writer can still be ahead of the
                // current version: that case must be retried by the store, not lost.
                let attempt = latest + 1 + (w % 3);
                match store
                    .save_event(&ev("hot", attempt).with_field("w", w))
                    .await
                {
                    Ok(()) => {
                        won.push(attempt);
                        latest = attempt;
                    }
                    Err(Error::VersionConflict(c)) => {
                        assert!(c.current_version >= c.attempted_version, "{c:?}");
                        lost += 1;
                        latest = c.current_version;
                    }
                    Err(e) => panic!("writer {w}: unexpected {e:?}"),
                }
            }
            (won, lost)
        }));
    }
    let (mut won, mut lost) = (Vec::new(), 0);
    for h in handles {
        let (w, l) = h.await.unwrap();
        won.extend(w);
        lost += l;
    }
    let fresh = open(&server, JetStreamConfig::default()).await;
    let stored = versions(&fresh.get_events("hot", 0).await.unwrap());
    assert!(
        stored.windows(2).all(|p| p[0] < p[1]),
        "versions must strictly increase"
    );
    won.sort_unstable();
    assert_eq!(won, stored, "exactly the acknowledged saves are stored");
    assert!(lost > 0, "the race produced no conflicts");
    assert_eq!(
        fresh.get_latest_version("hot").await.unwrap(),
        *stored.last().unwrap()
    );
}

#[tokio::test]
async fn a_second_instance_makes_the_first_one_stale() {
    let server = start();
    let first = open(&server, JetStreamConfig::default()).await;
    let second = open(&server, JetStreamConfig::default()).await;
    for v in 1..=3 {
        first.save_event(&ev("a", v)).await.unwrap();
    }
    assert_eq!(first.cached_latest_version("a"), Some(3));
    second.save_event(&ev("a", 4)).await.unwrap();

    // first still believes 3: the server rejects its stale write and it learns 4.
    let err = first.save_event(&ev("a", 4)).await.unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 4);
    assert_eq!(first.get_latest_version("a").await.unwrap(), 4);
    assert_eq!(first.cached_latest_version("a"), Some(4));

    // A write above the other writer's version is retried with the fresh sequence.
    second.save_event(&ev("a", 5)).await.unwrap();
    first.save_event(&ev("a", 7)).await.unwrap();
    assert_eq!(
        versions(&second.get_events("a", 0).await.unwrap()),
        [1, 2, 3, 4, 5, 7]
    );

    // With cached reads, the latest version answers from memory (and may lag).
    let cached = open(&server, JetStreamConfig::default())
        .await
        .with_cached_reads(true);
    assert_eq!(cached.get_latest_version("a").await.unwrap(), 7);
    second.save_event(&ev("a", 8)).await.unwrap();
    assert_eq!(cached.get_latest_version("a").await.unwrap(), 7);
    let err = cached.save_event(&ev("a", 8)).await.unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 8);
    assert_eq!(cached.get_latest_version("a").await.unwrap(), 8);
}

/// Publishes single-event messages straight to the stream, pipelined, to build a long history
/// quickly.
async fn publish_history(server: &NatsServer, store: &JetStreamEventStore, actor: &str, n: u64) {
    let js = async_nats::jetstream::new(connect(server).await);
    let subject = store.event_subject(actor);
    let mut acks = Vec::with_capacity(n as usize);
    for v in 1..=n {
        let payload = ev(actor, v).to_json_bytes().unwrap();
        acks.push(
            js.publish(subject.clone(), payload.into())
                .await
                .expect("publish"),
        );
        if acks.len() >= 500 {
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in acks {
        a.await.expect("ack");
    }
}

#[tokio::test]
async fn ten_thousand_events_replay_complete_and_in_order() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    publish_history(&server, &store, "long", 10_000).await;
    store.save_event(&ev("other", 1)).await.unwrap();
    // The store continues the history it did not write itself.
    assert_eq!(store.get_latest_version("long").await.unwrap(), 10_000);
    store.save_event(&ev("long", 10_001)).await.unwrap();

    let all = store.get_events("long", 0).await.unwrap();
    assert_eq!(all.len(), 10_001);
    assert!(all
        .iter()
        .zip(1..)
        .all(|(e, v)| e.version == v && e.actor_id == "long"));
    let tail = store.get_events("long", 9_000).await.unwrap();
    assert_eq!(versions(&tail), (9_000..=10_001).collect::<Vec<_>>());
    let last = store.get_events("long", 10_001).await.unwrap();
    assert_eq!(versions(&last), [10_001]);
    assert!(store.get_events("long", 10_002).await.unwrap().is_empty());
    assert_eq!(versions(&store.get_events("other", 0).await.unwrap()), [1]);
}

#[tokio::test]
async fn malformed_messages_are_skipped_counted_and_reported() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    store.save_event(&ev("a", 1)).await.unwrap();
    let js = async_nats::jetstream::new(connect(&server).await);
    let garbage = b"{ not an event".to_vec();
    let bad_seq = js
        .publish(store.event_subject("a"), garbage.clone().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    // Last message malformed: the latest version is still found, and the next save works.
    let cold = open(&server, JetStreamConfig::default()).await;
    assert_eq!(cold.get_latest_version("a").await.unwrap(), 1);
    cold.save_event(&ev("a", 2)).await.unwrap();
    assert!(cold
        .save_event(&ev("a", 2))
        .await
        .unwrap_err()
        .is_version_conflict());

    // Another actor's event published on this actor's subject is not this actor's history.
    let foreign = ev("intruder", 3).to_json_bytes().unwrap();
    let foreign_seq = js
        .publish(store.event_subject("a"), foreign.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    store.save_event(&ev("a", 3)).await.unwrap();

    let events = store.get_events("a", 0).await.unwrap();
    assert_eq!(versions(&events), [1, 2, 3]);
    assert_eq!(store.malformed_events(), 2);

    let replay = store.get_events_with_errors("a", 0).await.unwrap();
    assert_eq!(versions(&replay.events), [1, 2, 3]);
    assert!(replay.has_errors());
    assert_eq!(replay.errors.len(), 2);
    assert_eq!(replay.errors[0].sequence, bad_seq);
    assert_eq!(replay.errors[0].raw, garbage);
    assert!(!replay.errors[0].error.is_empty());
    assert_eq!(replay.errors[1].sequence, foreign_seq);
    assert!(replay.errors[1].error.contains("intruder"));
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let server = start();
    let client = connect(&server).await;
    let a = JetStreamEventStore::with_namespace(client.clone(), "EVENTS", "tenant-a")
        .await
        .unwrap();
    let b = JetStreamEventStore::with_namespace(client.clone(), "EVENTS", "tenant b.*>")
        .await
        .unwrap();
    let plain = JetStreamEventStore::new(client, JetStreamConfig::default().stream_name("EVENTS"))
        .await
        .unwrap();
    assert_eq!(a.namespace(), Some("tenant-a"));
    assert_eq!(a.stream_name(), "tenant-a_EVENTS");
    assert_eq!(b.namespace(), Some("tenant b.*>"));
    assert_eq!(b.stream_name(), "tenant_b____EVENTS");
    assert_eq!(plain.namespace(), None);
    assert_eq!(plain.stream_name(), "EVENTS");

    a.save_event(&ev("shared", 1).with_field("tenant", "a"))
        .await
        .unwrap();
    a.save_event(&ev("shared", 2)).await.unwrap();
    b.save_event(&ev("shared", 1).with_field("tenant", "b"))
        .await
        .unwrap();

    assert_eq!(a.get_latest_version("shared").await.unwrap(), 2);
    assert_eq!(b.get_latest_version("shared").await.unwrap(), 1);
    assert_eq!(plain.get_latest_version("shared").await.unwrap(), 0);
    let from_b = b.get_events("shared", 0).await.unwrap();
    assert_eq!(from_b.len(), 1);
    assert_eq!(from_b[0].data["tenant"], json!("b"));
    assert!(plain.get_events("shared", 0).await.unwrap().is_empty());

    // A second store in the same namespace shares the stream.
    let a2 = JetStreamEventStore::with_namespace(connect(&server).await, "EVENTS", "tenant-a")
        .await
        .unwrap();
    assert_eq!(a2.get_latest_version("shared").await.unwrap(), 2);
}

#[tokio::test]
async fn the_stream_is_immutable_and_retained_by_age() {
    let server = start();
    let config = JetStreamConfig::default()
        .max_age(Duration::from_secs(3600))
        .storage(StorageKind::File);
    let store = open(&server, config.clone()).await;
    store.save_event(&ev("a", 1)).await.unwrap();
    let info = store.stream_info().await.unwrap();
    let c = &info.config;
    assert!(c.deny_delete && c.deny_purge && c.allow_direct);
    assert_eq!(c.retention, RetentionPolicy::Limits);
    assert_eq!(c.max_age, Duration::from_secs(3600));
    assert_eq!(c.storage, StorageType::File);
    assert_eq!(c.num_replicas, 1);
    assert_eq!(info.state.messages, 1);

    // The server itself refuses deletes and purges.
    let js = async_nats::jetstream::new(connect(&server).await);
    let stream = js.get_stream(store.stream_name()).await.unwrap();
    assert!(stream.delete_message(1).await.is_err());
    assert!(stream.purge().await.is_err());
    assert_eq!(store.get_latest_version("a").await.unwrap(), 1);

    // A second store with other settings attaches to the existing stream instead of failing.
    let other = open(
        &server,
        config
            .max_age(Duration::from_secs(60))
            .storage(StorageKind::Memory),
    )
    .await;
    assert_eq!(other.get_latest_version("a").await.unwrap(), 1);
    assert_eq!(
        other.stream_info().await.unwrap().config.max_age,
        Duration::from_secs(3600)
    );

    // Zero settings fall back to the defaults (365 days, one replica).
    let defaults = open(
        &server,
        JetStreamConfig {
            stream_name: "ZEROED".into(),
            namespace: None,
            max_age: Duration::ZERO,
            replicas: 0,
            storage: StorageKind::Memory,
            allow_replication_on_old_servers: false,
        },
    )
    .await;
    let c = defaults.stream_info().await.unwrap().config;
    assert_eq!(c.max_age, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(c.num_replicas, 1);
    assert_eq!(c.storage, StorageType::Memory);
}

#[tokio::test]
async fn any_actor_id_is_its_own_subject() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    let ids = [
        "a",
        "a.b",
        "a.*",
        "a.>",
        "a b",
        "ключ",
        ">",
        "*",
        "a\tb\u{1}",
        "a.b.c",
    ];
    for (i, id) in ids.iter().enumerate() {
        for v in 1..=(i as u64 + 1) {
            store
                .save_event(&ev(id, v).with_field("id", *id))
                .await
                .unwrap();
        }
    }
    let fresh = open(&server, JetStreamConfig::default()).await;
    for (i, id) in ids.iter().enumerate() {
        let events = fresh.get_events(id, 0).await.unwrap();
        assert_eq!(events.len(), i + 1, "actor {id:?}");
        assert!(
            events
                .iter()
                .all(|e| e.actor_id == *id && e.data["id"] == json!(id)),
            "actor {id:?} read another actor's events"
        );
        assert_eq!(fresh.get_latest_version(id).await.unwrap(), i as u64 + 1);
    }
    // `a.*` and `a.>` are not wildcards over `a.b`'s history.
    assert!(fresh
        .get_events("a.*", 0)
        .await
        .unwrap()
        .iter()
        .all(|e| e.actor_id == "a.*"));
    assert_eq!(fresh.get_latest_version("a.*").await.unwrap(), 3);
    assert_eq!(fresh.get_latest_version("a.>").await.unwrap(), 4);
    assert_eq!(fresh.get_latest_version("a.b").await.unwrap(), 2);
    assert_eq!(fresh.get_latest_version("a.c").await.unwrap(), 0);
    // Too long an id is refused with a clear error.
    let long = "x".repeat(aether_store::MAX_ACTOR_ID_BYTES + 1);
    assert!(matches!(
        fresh.save_event(&ev(&long, 1)).await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn event_stored_is_published_after_success_only() {
    let server = start();
    let bus = Arc::new(EventBus::new());
    let mut sub = bus.subscribe("orders").await.unwrap();
    let store = open(&server, JetStreamConfig::default())
        .await
        .with_broadcaster(bus.clone() as Arc<dyn EventBroadcaster>, "orders");
    assert_eq!(store.notifier().map(|n| n.namespace()), Some("orders"));

    let e1 = ev("o-1", 1);
    store.save_event(&e1).await.unwrap();
    match sub.recv().await {
        Some(Delivery::Event(note)) => {
            assert_eq!(note.event_type, EVENT_TYPE_EVENT_STORED);
            assert_eq!(note.actor_id, "o-1");
            assert_eq!(note.version, 1);
            assert_eq!(note.data["eventId"], json!(e1.id));
        }
        other => panic!("expected EventStored, got {other:?}"),
    }

    assert!(store.save_event(&ev("o-1", 1)).await.is_err());
    assert!(store
        .save_events("o-1", &[ev("o-1", 1), ev("o-1", 2)])
        .await
        .is_err());
    assert!(sub.try_recv().is_none(), "no notification after a conflict");

    store
        .save_events("o-1", &[ev("o-1", 2), ev("o-1", 3)])
        .await
        .unwrap();
    for v in [2, 3] {
        match sub.recv().await {
            Some(Delivery::Event(note)) => assert_eq!(note.version, v),
            other => panic!("expected EventStored {v}, got {other:?}"),
        }
    }
    assert!(sub.try_recv().is_none());
    assert_eq!(store.notifier().unwrap().failures(), 0);
}

#[tokio::test]
async fn snapshots_latest_wins() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    assert_eq!(store.get_latest_snapshot("a.b").await.unwrap(), None);
    let state = |n: i64| json!({ "balance": n }).as_object().cloned().unwrap();
    let s5 = Snapshot::new("a.b", 5, state(5));
    let s10 = Snapshot::new("a.b", 10, state(10));
    store.save_snapshot(&s5).await.unwrap();
    assert_eq!(store.get_latest_snapshot("a.b").await.unwrap(), Some(s5));
    store.save_snapshot(&s10).await.unwrap();
    // An older snapshot arriving late does not replace a newer one.
    store
        .save_snapshot(&Snapshot::new("a.b", 7, state(7)))
        .await
        .unwrap();
    let fresh = open(&server, JetStreamConfig::default()).await;
    assert_eq!(fresh.get_latest_snapshot("a.b").await.unwrap(), Some(s10));
    assert_eq!(fresh.get_latest_snapshot("a.*").await.unwrap(), None);
    assert_eq!(fresh.get_latest_snapshot("a").await.unwrap(), None);
    // Snapshots are not events.
    assert!(fresh.get_events("a.b", 0).await.unwrap().is_empty());
    assert_eq!(fresh.get_latest_version("a.b").await.unwrap(), 0);
    assert!(matches!(
        fresh.save_snapshot(&Snapshot::new("a", 0, state(0))).await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn the_store_is_usable_behind_trait_objects() {
    let server = start();
    let store: Arc<dyn EventStoreWithErrors> =
        Arc::new(open(&server, JetStreamConfig::default()).await);
    store.save_event(&ev("a", 1)).await.unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 1);
    let snaps: Box<dyn SnapshotStore> = Box::new(open(&server, JetStreamConfig::default()).await);
    assert_eq!(snaps.get_events("a", 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn from_version_finds_its_start_in_long_interleaved_histories() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    // 600 versions of `long` in batches of three, interleaved with another actor's events, so
    // the actor's messages are spread over twice as many stream sequences.
    for b in 0..200u64 {
        let batch: Vec<Event> = (1..=3).map(|i| ev("long", b * 3 + i)).collect();
        store.save_events("long", &batch).await.unwrap();
        store.save_event(&ev("noise", b + 1)).await.unwrap();
    }
    for from in [1, 2, 299, 300, 301, 302, 450, 598, 599, 600] {
        let got = versions(&store.get_events("long", from).await.unwrap());
        assert_eq!(got, (from..=600).collect::<Vec<_>>(), "from_version {from}");
    }
    assert!(store.get_events("long", 601).await.unwrap().is_empty());
    assert_eq!(store.get_events("noise", 150).await.unwrap().len(), 51);
}
