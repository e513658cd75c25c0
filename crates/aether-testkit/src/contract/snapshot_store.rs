//! The [`SnapshotStore`] contract: the latest snapshot wins, snapshots are not events, and
//! invalid snapshots are refused.

use std::sync::Arc;

use aether_core::{ActorKey, Error, EventData, EventStore, Snapshot, SnapshotStore};
use serde_json::json;

use super::{event, versions, StoreBackend};

/// Expands to one `#[tokio::test]` per case of the [`SnapshotStore`] contract
/// ([`contract::snapshot_store`](crate::contract::snapshot_store)), each on a backend built by
/// the given expression (a [`StoreBackend`](crate::contract::StoreBackend) whose store
/// implements [`SnapshotStore`]).
#[macro_export]
macro_rules! snapshot_store_contract {
    ($backend:expr) => {
        $crate::__contract_cases!(snapshot_store, $backend;
            latest_snapshot_wins,
            snapshots_are_not_events,
            invalid_snapshots_are_refused,
            snapshots_of_two_types_with_one_id_are_apart,
            usable_as_trait_objects,
            snapshot_and_events_read_what_a_rebuild_needs,
        );
    };
}

fn state(balance: i64) -> EventData {
    let mut data = EventData::new();
    data.insert("balance".into(), json!(balance));
    data
}

/// Snapshots are keyed by actor type and id: two types with one id (and the untyped actor)
/// keep their own latest snapshot, and a snapshot comes back with its type.
pub async fn snapshots_of_two_types_with_one_id_are_apart<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store = backend.open().await;
    let show = Snapshot::new("s-1", 4, state(4)).with_actor_type("show");
    let customer = Snapshot::new("s-1", 9, state(9)).with_actor_type("customer");
    store.save_snapshot(&show).await.expect("save");
    store.save_snapshot(&customer).await.expect("save");
    assert_eq!(
        store
            .latest_snapshot_of(ActorKey::new("show", "s-1"))
            .await
            .expect("read"),
        Some(show)
    );
    assert_eq!(
        store
            .latest_snapshot_of(ActorKey::new("customer", "s-1"))
            .await
            .expect("read"),
        Some(customer)
    );
    assert_eq!(store.get_latest_snapshot("s-1").await.expect("read"), None);
    let bad = Snapshot::new("s-1", 1, state(1)).with_actor_type("a.b");
    assert!(matches!(
        store.save_snapshot(&bad).await,
        Err(Error::InvalidInput(_))
    ));
}

/// No snapshot is `Ok(None)`; the snapshot with the highest version wins, also when an older
/// one arrives late; another handle reads the same; actor ids are not patterns.
pub async fn latest_snapshot_wins<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store = backend.open().await;
    assert_eq!(store.get_latest_snapshot("a.b").await.expect("read"), None);
    let s5 = Snapshot::new("a.b", 5, state(5));
    let s10 = Snapshot::new("a.b", 10, state(10));
    store.save_snapshot(&s5).await.expect("save");
    assert_eq!(
        store.get_latest_snapshot("a.b").await.expect("read"),
        Some(s5.clone())
    );
    // An older snapshot arriving late does not replace a newer one.
    store
        .save_snapshot(&Snapshot::new("a.b", 3, state(3)))
        .await
        .expect("save");
    assert_eq!(
        store.get_latest_snapshot("a.b").await.expect("read"),
        Some(s5)
    );
    store.save_snapshot(&s10).await.expect("save");
    store
        .save_snapshot(&Snapshot::new("a.b", 7, state(7)))
        .await
        .expect("save");
    let fresh = backend.open().await;
    assert_eq!(
        fresh.get_latest_snapshot("a.b").await.expect("read"),
        Some(s10)
    );
    assert_eq!(fresh.get_latest_snapshot("a.*").await.expect("read"), None);
    assert_eq!(fresh.get_latest_snapshot("a").await.expect("read"), None);
}

/// Saving a snapshot adds no event and no version.
pub async fn snapshots_are_not_events<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store = backend.open().await;
    store
        .save_snapshot(&Snapshot::new("s", 4, state(4)))
        .await
        .expect("save");
    let fresh = backend.open().await;
    assert!(fresh.get_events("s", 0).await.expect("replay").is_empty());
    assert_eq!(fresh.get_latest_version("s").await.expect("latest"), 0);
    assert!(fresh
        .get_latest_snapshot("s")
        .await
        .expect("read")
        .is_some());
}

/// A snapshot without an actor or with version 0 is invalid input and is not stored.
pub async fn invalid_snapshots_are_refused<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store = backend.open().await;
    for bad in [
        Snapshot::new("", 1, state(1)),
        Snapshot::new("a", 0, state(0)),
    ] {
        assert!(
            matches!(store.save_snapshot(&bad).await, Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    assert_eq!(store.get_latest_snapshot("a").await.expect("read"), None);
}

/// The store works behind `Arc<dyn SnapshotStore>` (also as an `EventStore`) and
/// `Box<dyn SnapshotStore>`.
pub async fn usable_as_trait_objects<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store: Arc<dyn SnapshotStore> = Arc::new(backend.open().await);
    store.save_event(&super::event("a", 1)).await.expect("save");
    store
        .save_snapshot(&Snapshot::new("a", 1, state(1)))
        .await
        .expect("save");
    let as_events: Arc<dyn EventStore> = Arc::new(Arc::clone(&store));
    assert_eq!(as_events.get_latest_version("a").await.expect("latest"), 1);
    let boxed: Box<dyn SnapshotStore> = Box::new(backend.open().await);
    assert_eq!(boxed.get_events("a", 1).await.expect("replay").len(), 1);
    assert_eq!(
        boxed
            .get_latest_snapshot("a")
            .await
            .expect("read")
            .map(|s| s.version),
        Some(1)
    );
}

/// [`SnapshotStore::snapshot_and_events_of`] reads the latest snapshot and the events from the
/// version `start` picks, exactly as the two reads one after the other would: whether the
/// events after the snapshot follow it in the store, were stored before it (a late snapshot),
/// lie in one batch with older ones, skip versions or are many.
pub async fn snapshot_and_events_read_what_a_rebuild_needs<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: SnapshotStore,
{
    let store = backend.open().await;
    let after_snapshot = |s: Option<&Snapshot>| s.map_or(1, |s| s.version + 1);
    let one = |actor: &str, v: u64| event(actor, v).with_actor_type("acct");
    let many = |actor: &str, vs: std::ops::RangeInclusive<u64>| {
        vs.map(|v| one(actor, v)).collect::<Vec<_>>()
    };
    let snapshot = |actor: &str, v: u64| {
        Snapshot::new(actor, v, state(v as i64))
            .with_actor_type("acct")
            .with_command_ids(["c"])
    };

    // Nothing stored: `start` sees no snapshot, and there are no events.
    let read = store
        .snapshot_and_events_of(ActorKey::new("acct", "none"), &|s| {
            assert!(s.is_none());
            1
        })
        .await
        .expect("read");
    assert_eq!((read.snapshot, read.from_version), (None, 1));
    assert!(read.events.is_empty());

    // Events after the snapshot follow it: few (read one by one) and many (a consumer).
    for (actor, after) in [("few", 2), ("lots", 12)] {
        for e in many(actor, 1..=3) {
            store.save_event(&e).await.expect("save");
        }
        let saved = snapshot(actor, 3);
        store.save_snapshot(&saved).await.expect("snapshot");
        for e in many(actor, 4..=3 + after) {
            store.save_event(&e).await.expect("save");
        }
        let read = store
            .snapshot_and_events_of(ActorKey::new("acct", actor), &after_snapshot)
            .await
            .expect("read");
        assert_eq!(read.snapshot, Some(saved), "{actor}");
        assert_eq!(read.from_version, 4);
        assert_eq!(versions(&read.events), (4..=3 + after).collect::<Vec<_>>());
        // A start before the snapshot reads from there.
        let read = store
            .snapshot_and_events_of(ActorKey::new("acct", actor), &|_| 2)
            .await
            .expect("read");
        assert_eq!(versions(&read.events), (2..=3 + after).collect::<Vec<_>>());
    }

    // A late snapshot: the events after its version were stored before it.
    for e in many("late", 1..=6) {
        store.save_event(&e).await.expect("save");
    }
    store
        .save_snapshot(&snapshot("late", 2))
        .await
        .expect("snapshot");
    let read = store
        .snapshot_and_events_of(ActorKey::new("acct", "late"), &after_snapshot)
        .await
        .expect("read");
    assert_eq!(versions(&read.events), vec![3, 4, 5, 6]);

    // The snapshot's version inside a batch stored before it, then more events.
    store
        .save_events("batch", &many("batch", 1..=3))
        .await
        .expect("save");
    store
        .save_snapshot(&snapshot("batch", 2))
        .await
        .expect("snapshot");
    store.save_event(&one("batch", 4)).await.expect("save");
    let read = store
        .snapshot_and_events_of(ActorKey::new("acct", "batch"), &after_snapshot)
        .await
        .expect("read");
    assert_eq!(versions(&read.events), vec![3, 4]);

    // Versions that skip: the first event after the snapshot is not the next version.
    for v in [1, 2] {
        store.save_event(&one("gaps", v)).await.expect("save");
    }
    store
        .save_snapshot(&snapshot("gaps", 2))
        .await
        .expect("snapshot");
    for v in [5, 9] {
        store.save_event(&one("gaps", v)).await.expect("save");
    }
    let read = store
        .snapshot_and_events_of(ActorKey::new("acct", "gaps"), &after_snapshot)
        .await
        .expect("read");
    assert_eq!(versions(&read.events), vec![5, 9]);

    // A snapshot of the last version: nothing after it.
    for e in many("tip", 1..=3) {
        store.save_event(&e).await.expect("save");
    }
    store
        .save_snapshot(&snapshot("tip", 3))
        .await
        .expect("snapshot");
    let fresh = backend.open().await;
    let read = fresh
        .snapshot_and_events_of(ActorKey::new("acct", "tip"), &after_snapshot)
        .await
        .expect("read");
    assert_eq!(read.snapshot.map(|s| s.version), Some(3));
    assert!(read.events.is_empty());
    // Through a trait object too.
    let shared: Arc<dyn SnapshotStore> = Arc::new(fresh);
    let read = shared
        .snapshot_and_events_of(ActorKey::new("acct", "few"), &after_snapshot)
        .await
        .expect("read");
    assert_eq!(versions(&read.events), vec![4, 5]);
}
