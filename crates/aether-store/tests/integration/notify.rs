//! `EventStored` notifications through `Notify`, around either store: one per stored event, in
//! order, after every successful save and never after a failed one.

use std::sync::Arc;

use aether_bus::EventBus;
use aether_core::{Delivery, EventBroadcaster, EventStore, EVENT_TYPE_EVENT_STORED};
use aether_store::{InMemoryEventStore, Notify};
use aether_testkit::contract::{event as ev, next_event};
use serde_json::json;

async fn notifies_after_success_only_and_in_order<S: EventStore>(store: S) {
    let bus = Arc::new(EventBus::new());
    let mut sub = bus.subscribe("orders").await.unwrap();
    let store = Notify::new(store, bus.clone(), "orders");
    assert_eq!(store.namespace(), "orders");

    let e1 = ev("o-1", 1);
    let e2 = ev("o-1", 2);
    store.save_event(&e1).await.unwrap();
    store.save_event(&e2).await.unwrap();
    for (e, v) in [(&e1, 1), (&e2, 2)] {
        let note = next_event(&mut sub).await;
        assert_eq!(note.event_type, EVENT_TYPE_EVENT_STORED);
        assert_eq!(note.actor_id, "o-1");
        assert_eq!(note.version, v);
        assert_eq!(note.data["eventId"], json!(e.id));
        assert_eq!(note.data["actorId"], json!("o-1"));
    }

    assert!(store.save_event(&ev("o-1", 2)).await.is_err());
    assert!(store
        .save_events("o-1", &[ev("o-1", 1), ev("o-1", 3)])
        .await
        .is_err());
    assert!(store.save_event(&ev("", 3)).await.is_err());
    assert!(sub.try_recv().is_none(), "no notification after a failure");

    store
        .save_events("o-1", &[ev("o-1", 3), ev("o-1", 4)])
        .await
        .unwrap();
    for v in [3, 4] {
        match sub.recv().await {
            Some(Delivery::Event(note)) => assert_eq!(note.version, v),
            other => panic!("expected EventStored {v}, got {other:?}"),
        }
    }
    assert!(sub.try_recv().is_none());
    assert_eq!(bus.metrics().namespace("orders").published, 4);
    assert_eq!(store.failures(), 0);
    assert_eq!(store.get_ref().get_latest_version("o-1").await.unwrap(), 4);
}

#[tokio::test]
async fn in_memory_store_notifies_after_success_only_and_in_order() {
    notifies_after_success_only_and_in_order(InMemoryEventStore::new()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn jetstream_store_notifies_after_success_only_and_in_order() {
    let server = crate::jetstream::start();
    let store = crate::jetstream::open(&server, aether_store::JetStreamConfig::default()).await;
    notifies_after_success_only_and_in_order(store).await;
}

#[tokio::test]
async fn notification_failure_does_not_fail_the_save_and_is_counted() {
    // A namespace the bus refuses to publish to makes every notification fail.
    let bus = Arc::new(EventBus::new());
    let store = Notify::new(InMemoryEventStore::new(), bus, "bad.>");
    store.save_event(&ev("a", 1)).await.unwrap();
    store
        .save_events("a", &[ev("a", 2), ev("a", 3)])
        .await
        .unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 3);
    assert_eq!(store.failures(), 3);
    assert_eq!(store.into_inner().event_count(), 3);
}
