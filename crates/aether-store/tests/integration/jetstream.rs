//! What only the JetStream store does, against a real `nats-server` (each test starts its
//! own): its version cache, long histories it did not write, malformed messages, namespaces,
//! the stream's settings and the limits of its subjects. The behaviour every store shares is
//! checked by the contract suites (`contract.rs`).
#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::StorageKind;
use aether_core::{Error, EventStore, EventStoreWithErrors};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::contract::{event as ev, versions};
use aether_testkit::NatsServer;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use serde_json::json;

pub(crate) async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("connect to the test server")
}

pub(crate) async fn open(server: &NatsServer, config: JetStreamConfig) -> JetStreamEventStore {
    JetStreamEventStore::new(connect(server).await, config)
        .await
        .expect("open the store")
}

pub(crate) fn start() -> NatsServer {
    NatsServer::start().expect("start nats-server")
}

/// Retries `op` while it fails with a retryable error, for up to a minute: a three-server
/// cluster that has just created replicated streams, on a loaded machine, can let an API
/// request time out while it elects their leaders.
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(e.is_retryable(), "{what}: {e:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
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

/// Short replays (a young actor, or the last few events of a long history once the search
/// found them) are read with direct gets instead of a consumer: the same events, in order, as
/// of the replay's start, and a history longer than its versions promise (messages this store
/// did not write) still read whole.
#[tokio::test]
async fn short_replays_read_exactly_the_wanted_events() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    for v in 1..=600 {
        store.save_event(&ev("long", v)).await.unwrap();
        if v <= 3 {
            store.save_event(&ev("young", v)).await.unwrap();
        }
    }
    let cold = open(&server, JetStreamConfig::default()).await;
    for from in 0..=4 {
        let expected: Vec<u64> = (from.max(1)..=3).collect();
        assert_eq!(
            versions(&cold.get_events("young", from).await.unwrap()),
            expected
        );
    }
    for from in [597, 598, 600] {
        let expected: Vec<u64> = (from..=600).collect();
        assert_eq!(
            versions(&cold.get_events("long", from).await.unwrap()),
            expected
        );
    }
    assert!(cold.get_events("long", 601).await.unwrap().is_empty());

    // Two messages of another writer on the young actor's subject (a version 3 history now
    // spans five messages): more than the direct reads allow, so the consumer reads it all.
    let js = async_nats::jetstream::new(connect(&server).await);
    for _ in 0..2 {
        js.publish(store.event_subject("young"), "{ not an event".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    store.save_event(&ev("young", 4)).await.unwrap();
    let replay = cold.get_events_with_errors("young", 0).await.unwrap();
    assert_eq!(versions(&replay.events), [1, 2, 3, 4]);
    assert_eq!(replay.errors.len(), 2);
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
    // Well-formed histories count nothing.
    store.save_event(&ev("b", 1)).await.unwrap();
    let clean = open(&server, JetStreamConfig::default()).await;
    assert_eq!(versions(&clean.get_events("b", 0).await.unwrap()), [1]);
    assert_eq!(clean.malformed_events(), 0);
}

#[tokio::test]
async fn actor_ids_are_checked_before_reaching_the_server() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    // Reads refuse an empty actor id (the in-memory store answers 0).
    assert!(matches!(
        store.get_latest_version("").await,
        Err(Error::InvalidInput(_))
    ));
    // Too long an id does not fit a subject token and is refused with a clear error.
    let long = "x".repeat(aether_nats::subject::MAX_ACTOR_ID_BYTES + 1);
    assert!(matches!(
        store.save_event(&ev(&long, 1)).await,
        Err(Error::InvalidInput(_))
    ));
    let longest = "x".repeat(aether_nats::subject::MAX_ACTOR_ID_BYTES);
    store.save_event(&ev(&longest, 1)).await.unwrap();
    assert_eq!(store.get_latest_version(&longest).await.unwrap(), 1);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let server = start();
    let client = connect(&server).await;
    let a = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default()
            .stream_name("EVENTS")
            .namespace("tenant-a"),
    )
    .await
    .unwrap();
    let b = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default()
            .stream_name("EVENTS")
            .namespace("tenant b.*>"),
    )
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
    let a2 = JetStreamEventStore::new(
        connect(&server).await,
        JetStreamConfig::default()
            .stream_name("EVENTS")
            .namespace("tenant-a"),
    )
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

    // Unset settings take the defaults (kept forever, one replica).
    let defaults = open(
        &server,
        JetStreamConfig {
            stream_name: "DEFAULTS".into(),
            storage: StorageKind::Memory,
            ..Default::default()
        },
    )
    .await;
    let c = defaults.stream_info().await.unwrap().config;
    assert_eq!(c.max_age, Duration::ZERO, "no age limit");
    assert_eq!(c.num_replicas, 1);
    assert_eq!(c.storage, StorageType::Memory);
}

/// The domain setting reaches the requests: a domain no server serves gets a typed error (a
/// store that ignored it would open on the server's own domain).
#[tokio::test]
async fn a_domain_nobody_serves_is_a_typed_error() {
    let server = start();
    let client = connect(&server).await;
    let config = JetStreamConfig::default()
        .domain("elsewhere")
        .request_timeout(std::time::Duration::from_secs(1));
    let err = JetStreamEventStore::new(client, config).await.unwrap_err();
    assert!(
        matches!(err, aether_core::Error::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    // The same settings without the domain open the store on the server's own.
    let client = connect(&server).await;
    let config = JetStreamConfig::default().request_timeout(std::time::Duration::from_secs(1));
    JetStreamEventStore::new(client, config).await.unwrap();
}
