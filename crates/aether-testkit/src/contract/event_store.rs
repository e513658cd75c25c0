//! The [`EventStore`] contract: append-only, strictly increasing versions per actor, optimistic
//! concurrency that lets exactly one of competing writers in, all-or-nothing batches, and
//! replays that return exactly what was stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{
    ActorKey, Error, Event, EventStore, EventStoreWithErrors, METADATA_CORRELATION_ID,
};
use serde_json::json;

use super::{event as ev, versions, StoreBackend};

/// Expands to one `#[tokio::test]` per case of the [`EventStore`] contract
/// ([`contract::event_store`](crate::contract::event_store)), each on a backend built by the
/// given expression (a [`StoreBackend`](crate::contract::StoreBackend) whose store also
/// implements [`EventStoreWithErrors`]).
///
/// ```ignore
/// mod in_memory {
///     aether_testkit::event_store_contract!(
///         aether_testkit::contract::Shared::new(aether_store::InMemoryEventStore::new())
///     );
/// }
/// ```
#[macro_export]
macro_rules! event_store_contract {
    ($backend:expr) => {
        $crate::__contract_cases!(event_store, $backend;
            saves_and_replays_in_order_with_from_version,
            stored_events_come_back_exactly,
            stale_and_equal_versions_conflict_with_the_current_version,
            invalid_events_are_typed_errors_and_store_nothing,
            concurrent_saves_of_one_version_give_one_success,
            batches_are_all_or_nothing,
            racing_batches_never_interleave_or_split,
            concurrent_writers_never_duplicate_a_version,
            corrections_are_new_events,
            any_actor_id_is_its_own_history,
            actors_of_two_types_with_one_id_have_two_histories,
            invalid_actor_types_are_refused_and_store_nothing,
            from_version_finds_its_start_in_long_interleaved_histories,
            replay_with_errors_is_clean_for_well_formed_history,
            usable_as_trait_objects,
        );
    };
}

/// Saves reach the actor's history in order; `from_version` cuts its start; unknown actors
/// have no events and version 0.
pub async fn saves_and_replays_in_order_with_from_version<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 0);
    assert!(store.get_events("a", 0).await.expect("replay").is_empty());
    for v in 1..=5 {
        store.save_event(&ev("a", v)).await.expect("save");
    }
    store.save_event(&ev("b", 1)).await.expect("save");

    let all = store.get_events("a", 0).await.expect("replay");
    assert_eq!(versions(&all), [1, 2, 3, 4, 5]);
    assert!(all.iter().all(|e| e.actor_id == "a"));
    let tail = store.get_events("a", 3).await.expect("replay");
    assert_eq!(versions(&tail), [3, 4, 5]);
    assert!(store.get_events("a", 6).await.expect("replay").is_empty());
    assert!(store
        .get_events("nobody", 0)
        .await
        .expect("replay")
        .is_empty());
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 5);
    assert_eq!(store.get_latest_version("b").await.expect("latest"), 1);
    assert_eq!(store.get_latest_version("nobody").await.expect("latest"), 0);
}

/// A stored event comes back equal to what was saved: id, type, nested data, metadata and
/// timestamp.
pub async fn stored_events_come_back_exactly<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    let data = json!({"amount": 10, "nested": {"x": [1, 2]}});
    let Some(data) = data.as_object().cloned() else {
        unreachable!("a JSON object literal")
    };
    let mut e = Event::new("Deposited", "acc", 1)
        .with_data(data)
        .with_metadata("k", "v");
    e.set_correlation_id("corr");
    store.save_event(&e).await.expect("save");
    let back = store.get_events("acc", 1).await.expect("replay");
    assert_eq!(back, vec![e.clone()]);
    assert_eq!(
        back[0].metadata_value(METADATA_CORRELATION_ID),
        Some("corr")
    );
    let fresh = backend.open().await;
    assert_eq!(
        fresh.get_events("acc", 0).await.expect("replay"),
        vec![e],
        "another handle reads the same"
    );
}

/// A save at or below the latest version fails with a conflict carrying the actor, the
/// attempted and the current version; versions may skip; nothing of a conflict is stored.
pub async fn stale_and_equal_versions_conflict_with_the_current_version<B: StoreBackend>(
    backend: &B,
) {
    let store = backend.open().await;
    store.save_event(&ev("a", 1)).await.expect("save");
    let err = store
        .save_event(&ev("a", 1))
        .await
        .expect_err("equal version");
    let c = err.as_version_conflict().expect("conflict");
    assert_eq!((c.attempted_version, c.current_version), (1, 1));
    // Versions need not be contiguous.
    store
        .save_event(&ev("a", 5))
        .await
        .expect("save with a gap");
    for attempted in [1, 3, 5] {
        let err = store
            .save_event(&ev("a", attempted))
            .await
            .expect_err("stale version");
        let c = err.as_version_conflict().expect("conflict");
        assert_eq!(
            (c.actor_id.as_str(), c.attempted_version, c.current_version),
            ("a", attempted, 5)
        );
    }
    assert_eq!(
        versions(&store.get_events("a", 0).await.expect("replay")),
        [1, 5]
    );
}

/// Events without an actor, a type or a version of at least 1 are refused as invalid input
/// and store nothing.
pub async fn invalid_events_are_typed_errors_and_store_nothing<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    for bad in [
        Event::new("T", "", 1),
        Event::new("", "a", 1),
        Event::new("T", "a", 0),
    ] {
        assert!(
            matches!(store.save_event(&bad).await, Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    assert!(store.get_events("a", 0).await.expect("replay").is_empty());
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 0);
}

/// Fifty concurrent saves of the same version: exactly one succeeds, the rest conflict at
/// version 1.
pub async fn concurrent_saves_of_one_version_give_one_success<B: StoreBackend>(backend: &B) {
    const WRITERS: usize = 50;
    let store = Arc::new(backend.open().await);
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .save_event(&ev("hot", 1).with_field("writer", i))
                .await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.expect("writer task") {
            Ok(()) => ok += 1,
            Err(e) if e.is_version_conflict() => {
                assert_eq!(e.as_version_conflict().map(|c| c.current_version), Some(1));
                conflicts += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, WRITERS - 1));
    assert_eq!(store.get_events("hot", 0).await.expect("replay").len(), 1);
}

/// A batch is stored whole or not at all: a conflict on its first event or a malformed batch
/// stores none of it; an empty batch does nothing; `from_version` may start inside a batch;
/// another handle sees the same.
pub async fn batches_are_all_or_nothing<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    store.save_events("a", &[]).await.expect("empty batch");
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 0);
    store
        .save_events("a", &[ev("a", 1), ev("a", 2), ev("a", 3)])
        .await
        .expect("batch");
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 3);

    // The batch conflicts on its first event: none of it is stored.
    let err = store
        .save_events("a", &[ev("a", 3), ev("a", 4), ev("a", 5)])
        .await
        .expect_err("conflicting batch");
    assert_eq!(
        err.as_version_conflict().map(|c| c.current_version),
        Some(3)
    );
    assert_eq!(
        versions(&store.get_events("a", 0).await.expect("replay")),
        [1, 2, 3]
    );

    // Malformed batches are invalid input and store nothing.
    for bad in [
        vec![ev("a", 5), ev("b", 6)],
        vec![ev("a", 6), ev("a", 6)],
        vec![ev("a", 7), ev("a", 6)],
        vec![ev("a", 7), ev("a", 0)],
    ] {
        assert!(
            matches!(
                store.save_events("a", &bad).await,
                Err(Error::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 3);

    store.save_event(&ev("a", 4)).await.expect("save");
    store
        .save_events("a", &[ev("a", 5), ev("a", 6), ev("a", 9)])
        .await
        .expect("batch");
    assert_eq!(
        versions(&store.get_events("a", 0).await.expect("replay")),
        [1, 2, 3, 4, 5, 6, 9]
    );
    // from_version inside a batch
    assert_eq!(
        versions(&store.get_events("a", 6).await.expect("replay")),
        [6, 9]
    );
    assert_eq!(
        versions(&store.get_events("a", 2).await.expect("replay")),
        [2, 3, 4, 5, 6, 9]
    );
    assert_eq!(store.get_latest_version("a").await.expect("latest"), 9);

    // Another handle (for a server-backed store: a cold cache) sees the same.
    let other = backend.open().await;
    assert_eq!(other.get_latest_version("a").await.expect("latest"), 9);
    let err = other
        .save_events("a", &[ev("a", 9), ev("a", 10)])
        .await
        .expect_err("conflicting batch");
    assert_eq!(
        err.as_version_conflict().map(|c| c.current_version),
        Some(9)
    );
}

/// Four writers race batches of three onto one actor: every stored batch is whole, from one
/// writer, and the history has no gaps.
pub async fn racing_batches_never_interleave_or_split<B: StoreBackend>(backend: &B) {
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let store = backend.open().await;
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..25 {
                let latest = store.get_latest_version("acc").await.expect("latest");
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
        starts.extend(h.await.expect("writer task"));
    }
    let reader = backend.open().await;
    let events = reader.get_events("acc", 0).await.expect("replay");
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

/// Eight writers, each on its own handle, race on one actor for up to two seconds, some
/// skipping versions: exactly the acknowledged saves are stored, versions strictly increase,
/// and every refusal is a conflict whose current version is at least the attempted one.
pub async fn concurrent_writers_never_duplicate_a_version<B: StoreBackend>(backend: &B) {
    const WRITERS: u64 = 8;
    // Bounds the work on fast in-process stores; a server-backed store reaches the deadline.
    const MAX_ATTEMPTS: u64 = 400;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let store = backend.open().await;
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + Duration::from_secs(2);
            let (mut won, mut lost) = (Vec::new(), 0u64);
            let mut latest = 0;
            let mut attempts = 0;
            while Instant::now() < deadline && attempts < MAX_ATTEMPTS {
                attempts += 1;
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
                // Lets the other writers in on a store that never waits.
                tokio::task::yield_now().await;
            }
            (won, lost)
        }));
    }
    let (mut won, mut lost) = (Vec::new(), 0);
    for h in handles {
        let (w, l) = h.await.expect("writer task");
        won.extend(w);
        lost += l;
    }
    let fresh = backend.open().await;
    let stored = versions(&fresh.get_events("hot", 0).await.expect("replay"));
    assert!(
        stored.windows(2).all(|p| p[0] < p[1]),
        "versions must strictly increase"
    );
    won.sort_unstable();
    assert_eq!(won, stored, "exactly the acknowledged saves are stored");
    assert!(lost > 0, "the race produced no conflicts");
    assert_eq!(
        fresh.get_latest_version("hot").await.expect("latest"),
        stored.last().copied().unwrap_or(0)
    );
}

/// There is no update or delete: a correction is a new event, the original stays as it was,
/// and changing a returned copy changes nothing stored.
pub async fn corrections_are_new_events<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    store
        .save_event(&Event::new("Deposited", "acc", 1).with_field("amount", 100))
        .await
        .expect("save");
    store
        .save_event(&Event::new("DepositCorrected", "acc", 2).with_field("amount", -10))
        .await
        .expect("save");
    let history = store.get_events("acc", 0).await.expect("replay");
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
    let mut copy = store.get_events("acc", 1).await.expect("replay");
    copy[0].data.insert("amount".into(), json!(0));
    assert_eq!(
        store.get_events("acc", 1).await.expect("replay")[0].data["amount"],
        json!(100)
    );
}

/// Any actor id, dots, wildcards, spaces, control characters and non-ASCII included, names
/// its own history: none reads another's events, and `a.*` is not a pattern over `a.b`.
pub async fn any_actor_id_is_its_own_history<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
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
                .unwrap_or_else(|e| panic!("saving {id:?}: {e}"));
        }
    }
    let fresh = backend.open().await;
    for (i, id) in ids.iter().enumerate() {
        let events = fresh.get_events(id, 0).await.expect("replay");
        assert_eq!(events.len(), i + 1, "actor {id:?}");
        assert!(
            events
                .iter()
                .all(|e| e.actor_id == *id && e.data["id"] == json!(id)),
            "actor {id:?} read another actor's events"
        );
        assert_eq!(
            fresh.get_latest_version(id).await.expect("latest"),
            i as u64 + 1
        );
    }
    assert!(fresh
        .get_events("a.*", 0)
        .await
        .expect("replay")
        .iter()
        .all(|e| e.actor_id == "a.*"));
    assert_eq!(fresh.get_latest_version("a.*").await.expect("latest"), 3);
    assert_eq!(fresh.get_latest_version("a.>").await.expect("latest"), 4);
    assert_eq!(fresh.get_latest_version("a.b").await.expect("latest"), 2);
    assert_eq!(fresh.get_latest_version("a.c").await.expect("latest"), 0);
}

/// An actor is its type and its id: two types (and the untyped actor) with one id have three
/// histories, with their own versions and conflicts, and every event comes back with its
/// type. Batches and replays with errors name the type too.
pub async fn actors_of_two_types_with_one_id_have_two_histories<B: StoreBackend>(backend: &B)
where
    B::Store: EventStoreWithErrors,
{
    let store = backend.open().await;
    let show = ActorKey::new("show", "s-1");
    let customer = ActorKey::new("customer", "s-1");
    let typed = |t: &str, v: u64| ev("s-1", v).with_actor_type(t).with_field("by", t);
    for v in 1..=3 {
        store.save_event(&typed("show", v)).await.expect("save");
    }
    store
        .save_events("s-1", &[typed("customer", 1), typed("customer", 2)])
        .await
        .expect("batch");
    store.save_event(&ev("s-1", 1)).await.expect("untyped");
    // Each actor conflicts on its own version only.
    let stale = store.save_event(&typed("customer", 2)).await;
    assert!(
        matches!(&stale, Err(Error::VersionConflict(c)) if c.current_version == 2),
        "{stale:?}"
    );
    let fresh = backend.open().await;
    for (actor, count) in [(show, 3), (customer, 2), (ActorKey::untyped("s-1"), 1)] {
        let events = fresh.events_of(actor, 0).await.expect("replay");
        assert_eq!(versions(&events).len(), count, "{actor}");
        assert!(
            events.iter().all(|e| e.actor_key() == actor),
            "{actor} read another actor's events: {events:?}"
        );
        assert_eq!(
            fresh.latest_version_of(actor).await.expect("latest"),
            count as u64
        );
        let checked = fresh.events_with_errors_of(actor, 0).await.expect("replay");
        assert!(!checked.has_errors());
        assert_eq!(checked.events, events);
    }
    assert_eq!(
        versions(&fresh.events_of(show, 2).await.expect("replay")),
        [2, 3]
    );
    assert_eq!(fresh.get_latest_version("s-1").await.expect("latest"), 1);
    assert_eq!(
        fresh
            .latest_version_of(ActorKey::new("nobody", "s-1"))
            .await
            .expect("latest"),
        0
    );
}

/// An actor type must be a name of letters, digits, `-` and `_`; a batch names one type.
/// Anything else is refused before a write.
pub async fn invalid_actor_types_are_refused_and_store_nothing<B: StoreBackend>(backend: &B) {
    let store = backend.open().await;
    for bad in ["", "a.b", "a*", ">", "a b", "é"] {
        let r = store.save_event(&ev("x", 1).with_actor_type(bad)).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{bad:?}: {r:?}");
    }
    let mixed = [
        ev("x", 1).with_actor_type("a"),
        ev("x", 2).with_actor_type("b"),
    ];
    let r = store.save_events("x", &mixed).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    for t in ["a", "b"] {
        assert_eq!(
            store
                .latest_version_of(ActorKey::new(t, "x"))
                .await
                .expect("latest"),
            0
        );
    }
    assert_eq!(store.get_latest_version("x").await.expect("latest"), 0);
}

/// 600 versions saved in batches of three, interleaved with another actor's events: a replay
/// from any version starts exactly there.
pub async fn from_version_finds_its_start_in_long_interleaved_histories<B: StoreBackend>(
    backend: &B,
) {
    let store = backend.open().await;
    for b in 0..200u64 {
        let batch: Vec<Event> = (1..=3).map(|i| ev("long", b * 3 + i)).collect();
        store.save_events("long", &batch).await.expect("batch");
        store.save_event(&ev("noise", b + 1)).await.expect("save");
    }
    for from in [1, 2, 299, 300, 301, 302, 450, 598, 599, 600] {
        let got = versions(&store.get_events("long", from).await.expect("replay"));
        assert_eq!(got, (from..=600).collect::<Vec<_>>(), "from_version {from}");
    }
    assert!(store
        .get_events("long", 601)
        .await
        .expect("replay")
        .is_empty());
    assert_eq!(
        store.get_events("noise", 150).await.expect("replay").len(),
        51
    );
}

/// Replaying well-formed history with error reporting returns the events and no errors.
pub async fn replay_with_errors_is_clean_for_well_formed_history<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: EventStoreWithErrors,
{
    let store = backend.open().await;
    store.save_event(&ev("a", 1)).await.expect("save");
    store
        .save_events("a", &[ev("a", 2), ev("a", 3)])
        .await
        .expect("batch");
    let r = store.get_events_with_errors("a", 0).await.expect("replay");
    assert_eq!(versions(&r.events), [1, 2, 3]);
    assert!(!r.has_errors());
    assert_eq!(r.events, store.get_events("a", 0).await.expect("replay"));
    let none = store.get_events_with_errors("x", 0).await.expect("replay");
    assert!(none.events.is_empty() && !none.has_errors());
}

/// The store works behind `Arc<dyn EventStore>`, an `Arc` of an `Arc`, and
/// `Box<dyn EventStoreWithErrors>`.
pub async fn usable_as_trait_objects<B>(backend: &B)
where
    B: StoreBackend,
    B::Store: EventStoreWithErrors,
{
    let store: Arc<dyn EventStore> = Arc::new(backend.open().await);
    store.save_event(&ev("a", 1)).await.expect("save");
    let nested: Arc<dyn EventStore> = Arc::new(Arc::clone(&store));
    assert_eq!(nested.get_latest_version("a").await.expect("latest"), 1);
    let boxed: Box<dyn EventStoreWithErrors> = Box::new(backend.open().await);
    assert_eq!(
        versions(
            &boxed
                .get_events_with_errors("a", 0)
                .await
                .expect("replay")
                .events
        ),
        [1]
    );
    assert!(boxed
        .get_events_with_errors("x", 0)
        .await
        .expect("replay")
        .events
        .is_empty());
}
