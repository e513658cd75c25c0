//! Group commit: concurrent saves of different actors through one store share atomic batches
//! (nats-server 2.12+). Every save keeps its own server-enforced check: a stale save in a group
//! fails alone while the others are stored; a lone writer's saves never wait for a group;
//! servers before 2.12 never group.
#![cfg(feature = "nats")]

use std::sync::Arc;

use aether_core::{Error, Event, EventStore};
use aether_store::{GroupCommit, GroupCommitMode, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use futures::future::join_all;

fn grouped(max_in_flight: usize) -> JetStreamConfig {
    JetStreamConfig {
        group_commit: GroupCommit {
            mode: GroupCommitMode::Always,
            max_in_flight,
            ..Default::default()
        },
        ..Default::default()
    }
    .namespace("group")
}

async fn open(server: &NatsServer, config: JetStreamConfig) -> JetStreamEventStore {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamEventStore::new(client, config).await.unwrap()
}

/// Every actor's history is exactly `1..=expected` with the ids saved.
async fn assert_histories(store: &JetStreamEventStore, saved: &[Vec<Event>]) {
    for events in saved {
        let actor = &events[0].actor_id;
        let stored = store.get_events(actor, 0).await.unwrap();
        let ids: Vec<_> = stored.iter().map(|e| (e.version, e.id.clone())).collect();
        let want: Vec<_> = events.iter().map(|e| (e.version, e.id.clone())).collect();
        assert_eq!(ids, want, "history of {actor}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_of_different_actors_share_batches_and_all_land() {
    let server = NatsServer::start().unwrap();
    let store = open(&server, grouped(1)).await;
    // No atomic batches before 2.12: there the store saves each event alone, and every save
    // must land just the same.
    let groups = server.version().at_least(2, 12);
    assert_eq!(store.group_commit_active(), groups);
    let store = Arc::new(store);
    const ACTORS: usize = 16;
    const ROUNDS: u64 = 20;
    let mut saved: Vec<Vec<Event>> = vec![Vec::new(); ACTORS];
    for v in 1..=ROUNDS {
        let events: Vec<Event> = (0..ACTORS)
            .map(|a| Event::new("Ticked", format!("a-{a}"), v).with_field("round", v))
            .collect();
        let results = join_all(events.iter().map(|e| store.save_event(e))).await;
        for (a, (r, e)) in results.into_iter().zip(events).enumerate() {
            r.unwrap_or_else(|err| panic!("save of {} v{v}: {err}", e.actor_id));
            saved[a].push(e);
        }
    }
    assert_histories(&store, &saved).await;
    match store.group_commit_stats() {
        Some(stats) => {
            eprintln!("{stats:?}");
            // With one publish in flight, every round's saves but the first go out in groups.
            assert!(stats.groups >= ROUNDS, "{stats:?}");
            assert!(
                stats.grouped_saves >= ROUNDS * (ACTORS as u64 - 1) / 2,
                "{stats:?}"
            );
            assert_eq!((stats.refused, stats.failed), (0, 0), "{stats:?}");
        }
        None => assert!(!groups),
    }
    // A batch of one actor's events (save_events) goes in a group too, as one message.
    let batch: Vec<Event> = (ROUNDS + 1..=ROUNDS + 3)
        .map(|v| Event::new("Ticked", "a-0", v))
        .collect();
    let one = Event::new("Ticked", "a-1", ROUNDS + 1);
    let two = Event::new("Ticked", "a-2", ROUNDS + 1);
    let (r0, r1, r2) = tokio::join!(
        store.save_event(&two),
        store.save_events("a-0", &batch),
        store.save_event(&one),
    );
    r0.unwrap();
    r1.unwrap();
    r2.unwrap();
    assert_eq!(store.get_latest_version("a-0").await.unwrap(), ROUNDS + 3);
    assert_eq!(store.get_latest_version("a-1").await.unwrap(), ROUNDS + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_save_in_a_group_fails_alone_and_the_others_are_stored() {
    let server = NatsServer::start().unwrap();
    // Before 2.12 the same saves go out alone, with the same outcome, and nothing is grouped.
    let groups = server.version().at_least(2, 12);
    let store = Arc::new(open(&server, grouped(1)).await);
    let other = open(&server, grouped(1)).await;
    const ACTORS: usize = 8;
    // Every actor at version 1, known to `store`'s cache.
    store
        .save_event(&Event::new("Opened", "lead", 1))
        .await
        .unwrap();
    for a in 0..ACTORS {
        store
            .save_event(&Event::new("Opened", format!("a-{a}"), 1))
            .await
            .unwrap();
    }
    // Another process moves actor a-3 on: `store`'s view of it is now stale.
    other
        .save_event(&Event::new("Moved", "a-3", 2))
        .await
        .unwrap();

    // A lead save of a fresh actor goes out alone; the eight saves polled while it is under
    // way form one group, whose stale member makes the server refuse it whole.
    let lead = Event::new("Ticked", "lead", 2);
    let events: Vec<Event> = (0..ACTORS)
        .map(|a| Event::new("Ticked", format!("a-{a}"), 2))
        .collect();
    let (lead_result, results) = tokio::join!(
        store.save_event(&lead),
        join_all(events.iter().map(|e| store.save_event(e)))
    );
    lead_result.unwrap();
    for (a, r) in results.iter().enumerate() {
        if a == 3 {
            match r {
                Err(Error::VersionConflict(c)) => {
                    assert_eq!((c.attempted_version, c.current_version), (2, 2))
                }
                other => panic!("the stale save must fail with its conflict: {other:?}"),
            }
        } else {
            assert!(r.is_ok(), "save of a-{a} must be stored: {r:?}");
        }
    }
    match store.group_commit_stats() {
        Some(stats) => assert!(stats.refused >= 1, "the group was not refused: {stats:?}"),
        None => assert!(
            !groups,
            "group commit inactive on a server that has batches"
        ),
    }
    for (a, event) in events.iter().enumerate() {
        let history = store.get_events(&format!("a-{a}"), 0).await.unwrap();
        let last = history.last().unwrap();
        if a == 3 {
            assert_eq!((history.len(), last.event_type.as_str()), (2, "Moved"));
        } else {
            assert_eq!((history.len(), last.id.as_str()), (2, event.id.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_never_waits_for_a_group() {
    let server = NatsServer::start().unwrap();
    let groups = server.version().at_least(2, 12);
    let store = open(&server, grouped(1)).await;
    for v in 1..=30 {
        store
            .save_event(&Event::new("Ticked", format!("a-{}", v % 3), v / 3 + 1))
            .await
            .unwrap();
    }
    // Before 2.12 there is no group commit at all.
    let grouped = store.group_commit_stats().map(|s| s.groups);
    assert_eq!(
        grouped,
        groups.then_some(0),
        "sequential saves must go out alone"
    );
    assert_eq!(store.get_latest_version("a-0").await.unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_of_one_actor_never_share_a_group() {
    // On every server version: before 2.12 the saves go out alone, with the same outcome.
    let server = NatsServer::start().unwrap();
    let store = Arc::new(open(&server, grouped(1)).await);
    store
        .save_event(&Event::new("Opened", "solo", 1))
        .await
        .unwrap();
    // Two saves of the same next version and one of another actor, all at once: one of the
    // two same-actor saves must fail with a conflict, whichever group it rode in.
    let a = Event::new("Ticked", "solo", 2);
    let b = Event::new("Ticked", "solo", 2);
    let c = Event::new("Ticked", "lead", 1);
    let (rc, ra, rb) = tokio::join!(
        store.save_event(&c),
        store.save_event(&a),
        store.save_event(&b)
    );
    rc.unwrap();
    assert!(
        ra.is_ok() ^ rb.is_ok(),
        "exactly one same-version save may win: {ra:?} {rb:?}"
    );
    let loser = if ra.is_ok() { rb } else { ra };
    assert!(matches!(loser, Err(Error::VersionConflict(_))), "{loser:?}");
    let history = store.get_events("solo", 0).await.unwrap();
    assert_eq!(history.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_follows_its_mode() {
    let server = NatsServer::start().unwrap();
    let atomic = server.version().at_least(2, 12);
    // Off by default (`Never`), on a single-replica stream with `Replicated`, and with `Never`.
    let default = open(&server, JetStreamConfig::default().namespace("dflt")).await;
    assert!(!default.group_commit_active());
    let replicated = open(
        &server,
        JetStreamConfig::default()
            .namespace("replicated")
            .group_commit(GroupCommitMode::Replicated),
    )
    .await;
    assert!(!replicated.group_commit_active());
    let never = open(
        &server,
        JetStreamConfig::default()
            .namespace("never")
            .group_commit(GroupCommitMode::Never),
    )
    .await;
    assert!(!never.group_commit_active());
    let always = open(
        &server,
        JetStreamConfig::default()
            .namespace("always")
            .group_commit(GroupCommitMode::Always),
    )
    .await;
    assert_eq!(always.group_commit_active(), atomic);
}
