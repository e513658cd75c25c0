//! What only the in-memory store has: its counters, and a property test of the version rule
//! under concurrency (cheap enough here to run many cases). The behaviour every store shares
//! is checked by the contract suites (`contract.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use aether_core::{Event, EventStore};
use aether_store::InMemoryEventStore;
use aether_testkit::contract::event as ev;
use proptest::prelude::*;

#[tokio::test]
async fn counts_actors_and_stored_events_only() {
    let store = InMemoryEventStore::new();
    assert!(store.save_event(&Event::new("T", "a", 0)).await.is_err());
    assert!(store.save_event(&Event::new("T", "", 1)).await.is_err());
    assert_eq!((store.actor_count(), store.event_count()), (0, 0));
    for v in 1..=5 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store.save_event(&ev("b", 1)).await.unwrap();
    assert!(store.save_event(&ev("b", 1)).await.is_err());
    assert_eq!(store.actor_count(), 2);
    assert_eq!(store.event_count(), 6);
    assert_eq!(store.latest_version("a"), 5);
    assert_eq!(store.latest_version("nobody"), 0);
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
