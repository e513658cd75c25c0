//! History that does not grow forever (`JetStreamConfig::compactable`,
//! `JetStreamEventStore::compact`) against a real `nats-server`: an actor's events before its
//! snapshot move to the archive and leave the stream; every read from before the cut still
//! sees the whole history, the version checks stay exact, other actors are untouched, and a
//! compaction cut short is finished by the next. The contract suites run on a store that
//! compacts at every snapshot (`contract.rs`).
#![cfg(feature = "nats")]

use aether_core::{
    ActorKey, Error, Event, EventLog, EventStore, LogPosition, Snapshot, SnapshotStore,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use serde_json::json;

use crate::jetstream::{connect, open, start};

fn ev(actor: &str, version: u64) -> Event {
    Event::new("Moved", actor, version)
        .with_actor_type("account")
        .with_field("n", version)
}

fn key(id: &str) -> ActorKey<'_> {
    ActorKey::new("account", id)
}

fn snapshot(actor: &str, version: u64) -> Snapshot {
    let mut s = Snapshot::new(
        actor,
        version,
        json!({"at": version})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    s.actor_type = Some("account".into());
    s
}

fn compactable(namespace: &str) -> JetStreamConfig {
    JetStreamConfig::default()
        .namespace(namespace)
        .compactable(true)
}

/// The total of the stream's messages.
async fn stream_messages(store: &JetStreamEventStore) -> u64 {
    store.stream_info().await.unwrap().state.messages
}

#[tokio::test]
async fn compaction_moves_old_events_to_the_archive_and_every_read_stays_whole() {
    let server = start();
    let store = open(&server, compactable("cut")).await;
    // a: 4 single events, a batch of 3, 3 singles; b and c: 10 each.
    for v in 1..=4 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store
        .save_events("a", &[ev("a", 5), ev("a", 6), ev("a", 7)])
        .await
        .unwrap();
    for v in 8..=10 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    for id in ["b", "c"] {
        for v in 1..=10 {
            store.save_event(&ev(id, v)).await.unwrap();
        }
    }
    // a's snapshot lies inside the batch: the batch's message is the first one kept.
    store.save_snapshot(&snapshot("a", 6)).await.unwrap();
    store.save_snapshot(&snapshot("b", 10)).await.unwrap();
    let mut before: Vec<Vec<Event>> = Vec::new();
    for id in ["a", "b", "c"] {
        before.push(store.events_of(key(id), 1).await.unwrap());
    }
    let total = stream_messages(&store).await;

    // A dry run counts and writes nothing.
    let dry = store.compact(key("a"), true).await.unwrap();
    assert_eq!(
        (
            dry.snapshot_version,
            dry.archived_events,
            dry.removed_messages,
            dry.dry_run
        ),
        (6, 4, 4, true)
    );
    assert_eq!(stream_messages(&store).await, total);

    let done = store.compact(key("a"), false).await.unwrap();
    assert_eq!(
        (done.archived_events, done.removed_messages, done.dry_run),
        (4, 4, false)
    );
    assert_eq!(
        stream_messages(&store).await,
        total - 4 - done.removed_snapshots
    );
    // The stream starts a's history at the batch holding version 6; the archive has 1 to 4.
    let archive = store.archive().await.unwrap();
    assert_eq!(
        archive.events_of(key("a"), 1).await.unwrap(),
        before[0][..4].to_vec()
    );

    // Every read is what it was: from the start, from inside the archive, from the cut,
    // from after it; by a fresh store too; and with errors.
    let fresh = open(&server, compactable("cut")).await;
    // A reader opened without asking for compaction (a tool) sees the stream is compactable.
    let tool = open(&server, JetStreamConfig::default().namespace("cut")).await;
    assert!(tool.compactable());
    for reader in [&store, &fresh, &tool] {
        assert_eq!(reader.events_of(key("a"), 1).await.unwrap(), before[0]);
        assert_eq!(reader.events_of(key("a"), 0).await.unwrap(), before[0]);
        assert_eq!(reader.events_of(key("a"), 3).await.unwrap(), before[0][2..]);
        assert_eq!(reader.events_of(key("a"), 6).await.unwrap(), before[0][5..]);
        assert_eq!(reader.events_of(key("a"), 9).await.unwrap(), before[0][8..]);
        assert_eq!(reader.events_of(key("b"), 1).await.unwrap(), before[1]);
        assert_eq!(reader.events_of(key("c"), 1).await.unwrap(), before[2]);
        assert_eq!(reader.latest_version_of(key("a")).await.unwrap(), 10);
    }
    // A rebuild that ignores the snapshot (a new state schema) reads across the cut.
    let read = store
        .snapshot_and_events_of(key("a"), &|_: Option<&Snapshot>| 1)
        .await
        .unwrap();
    assert_eq!(read.events, before[0]);
    let read = store
        .snapshot_and_events_of(key("a"), &|s: Option<&Snapshot>| {
            s.map_or(1, |s| s.version + 1)
        })
        .await
        .unwrap();
    assert_eq!(
        (read.snapshot.map(|s| s.version), read.events),
        (Some(6), before[0][6..].to_vec())
    );

    // The server's version checks are exact after the cut.
    let stale = store.save_event(&ev("a", 10)).await.unwrap_err();
    assert_eq!(
        stale.as_version_conflict().map(|c| c.current_version),
        Some(10)
    );
    fresh.save_event(&ev("a", 11)).await.unwrap();
    let stale = store.save_event(&ev("a", 11)).await.unwrap_err();
    assert_eq!(
        stale.as_version_conflict().map(|c| c.current_version),
        Some(11)
    );

    // Running it again moves nothing; a later snapshot moves the rest up to it.
    let again = store.compact(key("a"), false).await.unwrap();
    assert_eq!((again.archived_events, again.removed_messages), (0, 0));
    store.save_snapshot(&snapshot("a", 11)).await.unwrap();
    let later = store.compact(key("a"), false).await.unwrap();
    assert_eq!((later.archived_events, later.removed_messages), (6, 4));
    let mut whole = before[0].clone();
    whole.push(fresh.events_of(key("a"), 11).await.unwrap()[0].clone());
    assert_eq!(store.events_of(key("a"), 1).await.unwrap(), whole);
    assert_eq!(archive.latest_version_of(key("a")).await.unwrap(), 10);

    // The archive is an ordinary immutable store: its log holds what was moved, in order.
    let moved = archive.read_after(None::<LogPosition>, 100).await.unwrap();
    assert_eq!(moved.len(), 10);
    assert!(moved.iter().all(|l| l.event.actor_id == "a"));
    assert!(!archive.config().compactable);

    // An actor without a snapshot is refused, and so is a store that is not compactable.
    assert!(matches!(
        store.compact(key("c"), false).await,
        Err(Error::InvalidInput(m)) if m.contains("snapshot")
    ));
}

#[tokio::test]
async fn a_compaction_cut_short_is_finished_by_the_next() {
    let server = start();
    let store = open(&server, compactable("resume")).await;
    for v in 1..=8 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store.save_snapshot(&snapshot("a", 8)).await.unwrap();
    let before = store.events_of(key("a"), 1).await.unwrap();
    // As a crash leaves it: part of the history copied to the archive, nothing removed.
    let archive = store.archive().await.unwrap();
    for e in &before[..3] {
        archive.save_event(e).await.unwrap();
    }
    let report = store.compact(key("a"), false).await.unwrap();
    assert_eq!((report.archived_events, report.removed_messages), (4, 7));
    assert_eq!(archive.events_of(key("a"), 1).await.unwrap(), before[..7]);
    assert_eq!(store.events_of(key("a"), 1).await.unwrap(), before);
    // Copied but not removed yet, then a second run: both copies are never both read.
    assert_eq!(store.events_of(key("a"), 2).await.unwrap(), before[1..]);
}

#[tokio::test]
async fn only_a_compactable_stream_compacts() {
    let server = start();
    // The default stream denies purges forever: compaction is refused, nothing changes.
    let immutable = open(&server, JetStreamConfig::default().namespace("fixed")).await;
    immutable.save_event(&ev("a", 1)).await.unwrap();
    immutable.save_event(&ev("a", 2)).await.unwrap();
    immutable.save_snapshot(&snapshot("a", 2)).await.unwrap();
    assert!(matches!(
        immutable.compact(key("a"), false).await,
        Err(Error::InvalidInput(m)) if m.contains("cannot be compacted")
    ));
    assert!(matches!(
        immutable.archive().await,
        Err(Error::InvalidInput(_))
    ));
    // Asking for compaction on that stream later does not make it compactable.
    let reopened = open(&server, compactable("fixed")).await;
    assert!(matches!(
        reopened.compact(key("a"), false).await,
        Err(Error::InvalidInput(m)) if m.contains("cannot be compacted")
    ));
    assert_eq!(reopened.events_of(key("a"), 1).await.unwrap().len(), 2);
    // Not with partitions yet.
    let err = JetStreamEventStore::new(connect(&server).await, compactable("parts").partitions(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
}

#[tokio::test]
async fn a_retired_actor_is_removed_after_its_grace_period_and_others_are_untouched() {
    let server = start();
    let store = open(&server, compactable("retire")).await;
    for id in ["gone", "kept"] {
        for v in 1..=5 {
            store.save_event(&ev(id, v)).await.unwrap();
        }
    }
    store.save_snapshot(&snapshot("gone", 5)).await.unwrap();
    let kept = store.events_of(key("kept"), 1).await.unwrap();
    // Not retired: refused.
    assert!(matches!(
        store.remove_retired(key("gone"), std::time::Duration::ZERO, false).await,
        Err(Error::InvalidInput(m)) if m.contains("not retired")
    ));
    store
        .save_event(&Event::retirement("account", "gone", 6))
        .await
        .unwrap();
    // Within the grace period: refused.
    assert!(matches!(
        store.remove_retired(key("gone"), std::time::Duration::from_secs(3600), false).await,
        Err(Error::InvalidInput(m)) if m.contains("grace")
    ));
    let dry = store
        .remove_retired(key("gone"), std::time::Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(
        (dry.retired_version, dry.removed_messages, dry.dry_run),
        (6, 5, true)
    );
    assert_eq!(store.events_of(key("gone"), 1).await.unwrap().len(), 6);
    let removed = store
        .remove_retired(key("gone"), std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(
        (removed.removed_messages, removed.removed_snapshots),
        (5, 1)
    );
    // Only the final event is left: the actor stays retired at its version, and no write
    // can take a version it had.
    let left = store.events_of(key("gone"), 1).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].is_retirement());
    assert!(store
        .latest_snapshot_of(key("gone"))
        .await
        .unwrap()
        .is_none());
    for fresh in [&store, &open(&server, compactable("retire")).await] {
        assert_eq!(fresh.latest_version_of(key("gone")).await.unwrap(), 6);
        let stale = fresh.save_event(&ev("gone", 3)).await.unwrap_err();
        assert_eq!(
            stale.as_version_conflict().map(|c| c.current_version),
            Some(6)
        );
    }
    // Every other actor's history and checks are as they were.
    assert_eq!(store.events_of(key("kept"), 1).await.unwrap(), kept);
    let stale = store.save_event(&ev("kept", 5)).await.unwrap_err();
    assert_eq!(
        stale.as_version_conflict().map(|c| c.current_version),
        Some(5)
    );
    store.save_event(&ev("kept", 6)).await.unwrap();
}
