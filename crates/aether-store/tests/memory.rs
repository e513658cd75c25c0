//! The in-memory store: the reference behaviour every store must match.

use std::collections::HashMap;
use std::sync::Arc;

use aether_bus::EventBus;
use aether_core::{
    Delivery, Error, Event, EventBroadcaster, EventStore, EventStoreWithErrors, Snapshot,
    SnapshotStore, EVENT_TYPE_EVENT_STORED, METADATA_CORRELATION_ID,
};
use aether_store::InMemoryEventStore;
use proptest::prelude::*;
use serde_json::json;

fn ev(actor: &str, v: u64) -> Event {
    Event::new("Happened", actor, v).with_field("n", v)
}

#[tokio::test]
async fn saves_and_replays_in_order_with_from_version() {
    let store = InMemoryEventStore::new();
    for v in 1..=5 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store.save_event(&ev("b", 1)).await.unwrap();
    let all = store.get_events("a", 0).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let tail = store.get_events("a", 3).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(store.get_events("a", 6).await.unwrap().is_empty());
    assert!(store.get_events("nobody", 0).await.unwrap().is_empty());
    assert_eq!(store.get_latest_version("a").await.unwrap(), 5);
    assert_eq!(store.get_latest_version("b").await.unwrap(), 1);
    assert_eq!(store.get_latest_version("nobody").await.unwrap(), 0);
    assert_eq!(store.actor_count(), 2);
    assert_eq!(store.event_count(), 6);
}

#[tokio::test]
async fn stored_events_are_exactly_what_was_saved() {
    let store = InMemoryEventStore::new();
    let mut e = Event::new("Deposited", "acc", 1).with_data(
        json!({"amount": 10, "nested": {"x": [1, 2]}})
            .as_object()
            .cloned()
            .unwrap(),
    );
    e.set_correlation_id("corr");
    store.save_event(&e).await.unwrap();
    let back = store.get_events("acc", 1).await.unwrap();
    assert_eq!(back, vec![e.clone()]);
    assert_eq!(
        back[0].metadata_value(METADATA_CORRELATION_ID),
        Some("corr")
    );
}

#[tokio::test]
async fn version_rule_rejects_stale_and_equal_versions_with_the_current_version() {
    let store = InMemoryEventStore::new();
    store.save_event(&ev("a", 1)).await.unwrap();
    store.save_event(&ev("a", 5)).await.unwrap(); // gaps are allowed
    for attempted in [1, 3, 5] {
        let err = store.save_event(&ev("a", attempted)).await.unwrap_err();
        let c = err.as_version_conflict().expect("conflict");
        assert_eq!(
            (c.actor_id.as_str(), c.attempted_version, c.current_version),
            ("a", attempted, 5)
        );
    }
    assert_eq!(store.get_events("a", 0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_events_are_typed_errors_and_store_nothing() {
    let store = InMemoryEventStore::new();
    for bad in [
        Event::new("T", "", 1),
        Event::new("", "a", 1),
        Event::new("T", "a", 0),
    ] {
        assert!(matches!(
            store.save_event(&bad).await,
            Err(Error::InvalidInput(_))
        ));
    }
    assert_eq!(store.event_count(), 0);
    assert!(matches!(
        store
            .save_snapshot(&Snapshot::new("", 1, Default::default()))
            .await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_saves_of_one_version_give_one_success() {
    let store = Arc::new(InMemoryEventStore::new());
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .save_event(&ev("hot", 1).with_field("writer", i))
                .await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if e.is_version_conflict() => {
                assert_eq!(e.as_version_conflict().unwrap().current_version, 1);
                conflicts += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(store.get_events("hot", 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn save_events_is_all_or_nothing() {
    let store = InMemoryEventStore::new();
    store.save_event(&ev("a", 1)).await.unwrap();
    let batch = [ev("a", 2), ev("a", 3), ev("a", 4)];
    store.save_events("a", &batch).await.unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 4);
    // Conflicting batch: nothing of it is stored.
    let err = store
        .save_events("a", &[ev("a", 4), ev("a", 5)])
        .await
        .unwrap_err();
    assert_eq!(err.as_version_conflict().unwrap().current_version, 4);
    assert_eq!(store.get_latest_version("a").await.unwrap(), 4);
    // Malformed batches are invalid input and store nothing.
    assert!(matches!(
        store.save_events("a", &[ev("a", 6), ev("b", 7)]).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.save_events("a", &[ev("a", 7), ev("a", 6)]).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(store.get_latest_version("a").await.unwrap(), 4);
    store.save_events("a", &[]).await.unwrap();
}

#[tokio::test]
async fn snapshots_latest_wins_and_none_is_ok_none() {
    let store = InMemoryEventStore::new();
    assert_eq!(store.get_latest_snapshot("a").await.unwrap(), None);
    let s5 = Snapshot::new("a", 5, json!({"balance": 5}).as_object().cloned().unwrap());
    let s3 = Snapshot::new("a", 3, json!({"balance": 3}).as_object().cloned().unwrap());
    store.save_snapshot(&s5).await.unwrap();
    store.save_snapshot(&s3).await.unwrap();
    assert_eq!(store.get_latest_snapshot("a").await.unwrap(), Some(s5));
}

#[tokio::test]
async fn replay_with_errors_has_no_errors_in_memory() {
    let store = InMemoryEventStore::new();
    store.save_event(&ev("a", 1)).await.unwrap();
    let r = store.get_events_with_errors("a", 0).await.unwrap();
    assert_eq!(r.events.len(), 1);
    assert!(!r.has_errors());
}

#[tokio::test]
async fn usable_as_trait_objects() {
    let store: Arc<dyn SnapshotStore> = Arc::new(InMemoryEventStore::new());
    store.save_event(&ev("a", 1)).await.unwrap();
    let as_events: Arc<dyn EventStore> = Arc::new(store.clone());
    assert_eq!(as_events.get_latest_version("a").await.unwrap(), 1);
    let boxed: Box<dyn EventStoreWithErrors> = Box::new(InMemoryEventStore::new());
    assert!(boxed
        .get_events_with_errors("x", 0)
        .await
        .unwrap()
        .events
        .is_empty());
}

#[tokio::test]
async fn publishes_event_stored_after_success_only_and_in_order() {
    let bus = Arc::new(EventBus::new());
    let mut sub = bus.subscribe("store").await.unwrap();
    let store = InMemoryEventStore::with_broadcaster(bus.clone(), "store");
    let e1 = ev("a", 1);
    let e2 = ev("a", 2);
    store.save_event(&e1).await.unwrap();
    store.save_event(&e2).await.unwrap();
    assert!(store.save_event(&ev("a", 2)).await.is_err());
    store
        .save_events("a", &[ev("a", 3), ev("a", 4)])
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(Delivery::Event(n)) = sub.try_recv() {
        got.push(n);
    }
    assert_eq!(
        got.len(),
        4,
        "one notification per stored event, none for the conflict"
    );
    assert!(got.iter().all(|n| n.event_type == EVENT_TYPE_EVENT_STORED));
    assert_eq!(
        got.iter().map(|n| n.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(got[0].data["eventId"], json!(e1.id));
    assert_eq!(got[1].data["eventId"], json!(e2.id));
    assert_eq!(got[0].data["actorId"], json!("a"));
    assert_eq!(bus.metrics().namespace("store").published, 4);
    assert_eq!(store.notifier().map(|n| n.failures()), Some(0));
}

#[tokio::test]
async fn notification_failure_does_not_fail_the_save_and_is_counted() {
    // A namespace the bus refuses to publish to makes every notification fail.
    let bus = Arc::new(EventBus::new());
    let store = InMemoryEventStore::with_broadcaster(bus, "bad.>");
    store.save_event(&ev("a", 1)).await.unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 1);
    assert_eq!(store.notifier().map(|n| n.failures()), Some(1));
}

#[tokio::test]
async fn no_update_or_delete_corrections_are_new_events() {
    // The trait has no way to change or remove an event: a correction is appended.
    let store = InMemoryEventStore::new();
    store
        .save_event(&Event::new("Deposited", "acc", 1).with_field("amount", 100))
        .await
        .unwrap();
    store
        .save_event(&Event::new("DepositCorrected", "acc", 2).with_field("amount", -10))
        .await
        .unwrap();
    let history = store.get_events("acc", 0).await.unwrap();
    assert_eq!(
        history[0].data["amount"],
        json!(100),
        "the original is untouched"
    );
    let balance: i64 = history
        .iter()
        .map(|e| e.data["amount"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(balance, 90);
    // Mutating a returned copy does not touch the store.
    let mut copy = store.get_events("acc", 1).await.unwrap();
    copy[0].data.insert("amount".into(), json!(0));
    assert_eq!(
        store.get_events("acc", 1).await.unwrap()[0].data["amount"],
        json!(100)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For any set of concurrent save attempts on any actors, each actor's stored versions are
    /// strictly increasing and the latest version is the highest saved.
    #[test]
    fn concurrent_saves_keep_versions_strictly_increasing(
        attempts in proptest::collection::vec((0u8..4, 1u64..20), 1..120)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        rt.block_on(async {
            let store = Arc::new(InMemoryEventStore::new());
            let mut tasks = Vec::new();
            for (actor, version) in attempts {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let actor = format!("actor-{actor}");
                    let r = store.save_event(&ev(&actor, version)).await;
                    (actor, version, r.is_ok())
                }));
            }
            let mut max_ok: HashMap<String, u64> = HashMap::new();
            for t in tasks {
                let (actor, version, ok) = t.await.unwrap();
                if ok {
                    let m = max_ok.entry(actor).or_default();
                    *m = (*m).max(version);
                }
            }
            for (actor, max) in max_ok {
                let events = store.get_events(&actor, 0).await.unwrap();
                prop_assert!(events.windows(2).all(|w| w[0].version < w[1].version));
                prop_assert_eq!(store.get_latest_version(&actor).await.unwrap(), max);
            }
            Ok(())
        })?;
    }
}
