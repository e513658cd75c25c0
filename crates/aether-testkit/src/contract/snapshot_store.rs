//! The [`SnapshotStore`] contract: the latest snapshot wins, snapshots are not events, and
//! invalid snapshots are refused.

use std::sync::Arc;

use aether_core::{ActorKey, Error, EventData, EventStore, Snapshot, SnapshotStore};
use serde_json::json;

use super::StoreBackend;

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
