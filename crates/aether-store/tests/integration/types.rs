//! Actor types on the JetStream store: where typed actors are stored (so the server can select
//! a type's events), and a stream written before actor types, read and extended through a
//! declared legacy type.
#![cfg(feature = "nats")]

use aether_core::{ActorKey, EventStore, SnapshotStore, METADATA_ACTOR_TYPE};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::contract::event as ev;
use async_nats::jetstream::stream;
use futures::StreamExt;

use crate::jetstream::{connect, open, start};

/// How many messages of the stream the server delivers to a consumer on `filter`.
async fn delivered(store: &JetStreamEventStore, filter: &str) -> Vec<String> {
    let stream = store
        .context()
        .get_stream(store.stream_name())
        .await
        .expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let pending = consumer.cached_info().num_pending as usize;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut batch = consumer
        .fetch()
        .max_messages(pending)
        .messages()
        .await
        .expect("fetch");
    while let Some(msg) = batch.next().await {
        out.push(msg.expect("message").subject.to_string());
    }
    out
}

#[tokio::test]
async fn typed_actors_live_on_subjects_the_server_selects_by_type() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    for v in 1..=3 {
        store
            .save_event(&ev("s-1", v).with_actor_type("show"))
            .await
            .unwrap();
    }
    store
        .save_event(&ev("s-1", 1).with_actor_type("customer"))
        .await
        .unwrap();
    store.save_event(&ev("s-1", 1)).await.unwrap();
    let show = store.event_subject(ActorKey::new("show", "s-1"));
    let bucket = aether_placement::bucket_for("s-1");
    assert_eq!(show, format!("AETHER_EVENTS.events.show.{bucket}.cy0x"));
    assert_eq!(store.event_subject("s-1"), "AETHER_EVENTS.events.cy0x");
    // The server, not the reader, picks one type's messages.
    assert_eq!(
        delivered(&store, "AETHER_EVENTS.events.show.*.*").await,
        [show.clone(), show.clone(), show]
    );
    assert_eq!(
        delivered(&store, "AETHER_EVENTS.events.customer.*.*")
            .await
            .len(),
        1
    );
    assert_eq!(delivered(&store, "AETHER_EVENTS.events.*").await.len(), 1);
    let info = store.stream_info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        [
            "AETHER_EVENTS.events.*",
            "AETHER_EVENTS.events.*.*.*",
            "AETHER_EVENTS.snapshots.*",
            "AETHER_EVENTS.snapshots.*.*.*"
        ]
    );
}

/// The stream as the store made it before actor types: id-only subjects, and a typed runtime
/// that recorded its type in the metadata.
async fn write_the_old_way(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "AETHER_EVENTS".into(),
        subjects: vec![
            "AETHER_EVENTS.events.*".into(),
            "AETHER_EVENTS.snapshots.*".into(),
        ],
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .expect("old stream");
    let token = aether_nats::subject::encode_actor_id("acct-1");
    for v in 1..=3u64 {
        let event = ev("acct-1", v)
            .with_field("amount", 10)
            .with_metadata(METADATA_ACTOR_TYPE, "account");
        let payload = serde_json::to_vec(&event).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Aether-Version", v.to_string().as_str());
        js.publish_with_headers(
            format!("AETHER_EVENTS.events.{token}"),
            headers,
            payload.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Another type's events under an id of the old stream (ids kept apart by convention).
    let other = aether_nats::subject::encode_actor_id("ord-1");
    let event = ev("ord-1", 1).with_metadata(METADATA_ACTOR_TYPE, "order");
    js.publish(
        format!("AETHER_EVENTS.events.{other}"),
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_written_before_actor_types_is_read_and_extended_through_a_declared_type() {
    let server = start();
    let client = connect(&server).await;
    write_the_old_way(&client).await;

    let store = open(
        &server,
        JetStreamConfig::default().legacy_actor_type("account"),
    )
    .await;
    // Opening widened the stream to the typed subjects; nothing moved.
    let info = store.stream_info().await.unwrap();
    assert!(info
        .config
        .subjects
        .contains(&"AETHER_EVENTS.events.*.*.*".to_string()));
    assert_eq!(info.state.messages, 4);

    let account = ActorKey::new("account", "acct-1");
    let old = store.events_of(account, 1).await.unwrap();
    assert_eq!(old.len(), 3);
    assert!(old
        .iter()
        .all(|e| e.actor_type.as_deref() == Some("account")));
    assert_eq!(store.latest_version_of(account).await.unwrap(), 3);
    // Appends continue the same history, on the same subject, under the server's check.
    store
        .save_event(&ev("acct-1", 4).with_actor_type("account"))
        .await
        .unwrap();
    assert!(store
        .save_event(&ev("acct-1", 4).with_actor_type("account"))
        .await
        .is_err());
    assert_eq!(
        store.event_subject(account),
        store.event_subject("acct-1"),
        "the legacy type keeps the id-only subject"
    );
    assert_eq!(store.get_latest_version("acct-1").await.unwrap(), 4);
    // Snapshots too.
    store
        .save_snapshot(
            &aether_core::Snapshot::new("acct-1", 4, Default::default()).with_actor_type("account"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .latest_snapshot_of(account)
            .await
            .unwrap()
            .map(|s| s.version),
        Some(4)
    );
    // Another type with the same id is a new actor, on typed subjects.
    store
        .save_event(&ev("acct-1", 1).with_actor_type("order"))
        .await
        .unwrap();
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("order", "acct-1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.latest_version_of(account).await.unwrap(), 4);
    // The other type's old actor reads as the declared type, its writer's type in the
    // metadata: the typed runtime reports it as another type's history.
    let stray = store
        .events_of(ActorKey::new("account", "ord-1"), 1)
        .await
        .unwrap();
    assert_eq!(stray.len(), 1);
    assert_eq!(stray[0].metadata_value(METADATA_ACTOR_TYPE), Some("order"));

    // Without the declaration, the typed account sees nothing of the old history; the
    // untyped actor still reads it all.
    let plain = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
        .await
        .unwrap();
    assert_eq!(plain.latest_version_of(account).await.unwrap(), 0);
    assert_eq!(plain.get_events("acct-1", 1).await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_declared_legacy_type_must_be_a_type_name() {
    let server = start();
    let r = JetStreamEventStore::new(
        connect(&server).await,
        JetStreamConfig::default().legacy_actor_type("not a type"),
    )
    .await;
    assert!(
        matches!(r, Err(aether_core::Error::InvalidInput(_))),
        "{r:?}"
    );
}
