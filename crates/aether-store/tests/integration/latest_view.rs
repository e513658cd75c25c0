//! `LatestVersions`, the latest-version view with bounded staleness, against a real
//! `nats-server`: what it loads and follows, the staleness guarantee right after foreign saves
//! and once the bound has passed, monotonic answers, falling back (and failing typed) when it
//! cannot confirm, a re-created stream, and its task stopping.
//!
//! Distributed steps are awaited by polling against generous deadlines; the only timed waits
//! are for the bound itself, after which the guarantee must hold whatever the machine's load.
#![cfg(feature = "nats")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Error, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore, LatestVersions};
use aether_testkit::contract::event as ev;
use aether_testkit::NatsServer;
use tokio::time::Instant;

/// The staleness bound of most tests: long enough for confirmation rounds on a loaded
/// machine, short enough to wait out.
const BOUND: Duration = Duration::from_millis(400);
/// How long a distributed step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// A store on its own connection (as another process would have), with a short request
/// timeout so that reads against a stalled server fail quickly.
async fn open(server: &NatsServer) -> Arc<JetStreamEventStore> {
    let client = async_nats::connect(server.url())
        .await
        .expect("connect to the test server");
    Arc::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default().request_timeout(Duration::from_secs(1)),
        )
        .await
        .expect("open the store"),
    )
}

async fn start(store: &Arc<JetStreamEventStore>, bound: Duration) -> LatestVersions {
    LatestVersions::start(Arc::clone(store), bound)
        .await
        .expect("start the view")
}

/// Polls `check` until it holds, failing after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The view's answer for each actor, if every one of them was answered from the view (no
/// fallback) without error.
async fn from_view(view: &LatestVersions, actors: &[&str]) -> Option<BTreeMap<String, u64>> {
    let before = view.fallbacks();
    let mut answers = BTreeMap::new();
    for actor in actors {
        let version = view.get_latest_version(*actor).await.ok()?;
        answers.insert((*actor).to_string(), version);
    }
    (view.fallbacks() == before).then_some(answers)
}

/// Waits until the view answers `expected` for every actor, from the view itself.
async fn settles_to(view: &LatestVersions, expected: &[(&str, u64)]) {
    let actors: Vec<&str> = expected.iter().map(|(a, _)| *a).collect();
    let want: BTreeMap<String, u64> = expected
        .iter()
        .map(|(a, v)| ((*a).to_string(), *v))
        .collect();
    eventually(&format!("the view answers {want:?}"), || async {
        from_view(view, &actors).await.as_ref() == Some(&want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_existing_actors_and_follows_every_writer() {
    let server = NatsServer::start().expect("start nats-server");
    let store = open(&server).await;
    for v in 1..=3 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store
        .save_events("b", &(1..=4).map(|v| ev("b", v)).collect::<Vec<_>>())
        .await
        .unwrap();
    // A snapshot last in the stream: the view must confirm against the last *event* message.
    store
        .save_snapshot(&Snapshot::new("b", 4, Default::default()))
        .await
        .unwrap();

    assert!(matches!(
        LatestVersions::start(Arc::clone(&store), Duration::ZERO).await,
        Err(Error::InvalidInput(_))
    ));
    let view = start(&store, BOUND).await;
    eventually("the view is current", || async { view.is_current() }).await;
    settles_to(&view, &[("a", 3), ("b", 4), ("nobody", 0)]).await;
    assert_eq!(view.actors(), 2);
    assert!(matches!(
        view.get_latest_version("").await,
        Err(Error::InvalidInput(_))
    ));

    // Another process writes single events, batches and snapshots...
    let other = open(&server).await;
    other.save_event(&ev("c", 1)).await.unwrap();
    other.save_event(&ev("a", 4)).await.unwrap();
    other
        .save_events("b", &[ev("b", 5), ev("b", 6)])
        .await
        .unwrap();
    other
        .save_snapshot(&Snapshot::new("c", 1, Default::default()))
        .await
        .unwrap();
    // ...and a tool writes straight to the stream: a batch without the version header (read
    // from the payload), a payload that is no event, and a subject that names no actor.
    let js = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("connect the raw publisher"),
    );
    let legacy = serde_json::to_vec(&[ev("d", 1), ev("d", 2)]).unwrap();
    let raw = [
        (store.event_subject("d"), legacy),
        (store.event_subject("e"), b"not json".to_vec()),
        (format!("{}.events.!", store.stream_name()), b"{}".to_vec()),
    ];
    for (subject, payload) in raw {
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    other.save_event(&ev("a", 5)).await.unwrap();

    settles_to(&view, &[("a", 5), ("b", 6), ("c", 1), ("d", 2), ("e", 0)]).await;
    assert_eq!(view.malformed_messages(), 2);
    for (actor, version) in [("a", 5), ("b", 6), ("c", 1), ("d", 2)] {
        assert_eq!(store.get_latest_version(actor).await.unwrap(), version);
    }
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_a_foreign_save_the_answer_is_a_stored_version_and_after_the_bound_it_is_that_save(
) {
    let server = NatsServer::start().expect("start nats-server");
    let store = open(&server).await;
    let other = open(&server).await;
    let view = start(&store, BOUND).await;
    eventually("the view is current", || async { view.is_current() }).await;

    // Versions in steps of ten, so that an answer that was never stored would show.
    let mut last = 0;
    let mut from_map = 0;
    for i in 1..=8u64 {
        let version = 10 * i;
        // Saved while the view is current, so that the read right after is answered from the
        // map (the answer this test is about) unless a confirmation is late.
        eventually("the view is current", || async { view.is_current() }).await;
        other.save_event(&ev("x", version)).await.unwrap();
        let acked = Instant::now();

        let fallbacks = view.fallbacks();
        let right_after = view.get_latest_version("x").await.unwrap();
        if view.fallbacks() == fallbacks {
            from_map += 1;
        }
        assert!(
            right_after % 10 == 0 && right_after <= version && right_after >= last,
            "read right after saving {version} answered {right_after} (last answer {last})"
        );

        // Once the bound has passed since the acknowledgement, the save must show, whether
        // the answer comes from the view or from the store.
        tokio::time::sleep_until(acked + BOUND).await;
        last = view.get_latest_version("x").await.unwrap();
        assert_eq!(last, version, "read {BOUND:?} after saving {version}");
    }
    settles_to(&view, &[("x", 80)]).await;
    eprintln!(
        "reads right after a save answered from the view: {from_map} of 8; fallbacks: {}",
        view.fallbacks()
    );
    // Reads that fell back to the store would pass the checks above without testing the view:
    // most must have come from it.
    assert!(
        from_map >= 4,
        "only {from_map} of 8 reads right after a save were answered from the view"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_never_go_backwards_across_view_reads_and_fallbacks() {
    let server = NatsServer::start().expect("start nats-server");
    let store = open(&server).await;
    let other = open(&server).await;
    // A bound this short keeps the view on the edge of staleness: reads alternate between the
    // map and the store, which is where going backwards could happen.
    let view = start(&store, Duration::from_millis(3)).await;

    const LAST: u64 = 150;
    let attempted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (other, attempted) = (Arc::clone(&other), Arc::clone(&attempted));
        tokio::spawn(async move {
            for v in 1..=LAST {
                attempted.store(v, Ordering::SeqCst);
                other.save_event(&ev("m", v)).await.unwrap();
            }
        })
    };
    let mut last = 0;
    let mut reads = 0u64;
    while !writer.is_finished() {
        let version = view.get_latest_version("m").await.unwrap();
        assert!(version >= last, "answer went from {last} back to {version}");
        let ceiling = attempted.load(Ordering::SeqCst);
        assert!(
            version <= ceiling,
            "answered {version}, but only {ceiling} was ever written"
        );
        last = version;
        reads += 1;
    }
    writer.await.unwrap();
    eprintln!("{reads} reads, {} fell back", view.fallbacks());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let version = view.get_latest_version("m").await.unwrap();
        assert!(version >= last);
        last = version;
        if version == LAST {
            break;
        }
        assert!(Instant::now() < deadline, "the view never reached {LAST}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_confirmation_reads_fall_back_and_fail_typed_when_the_server_is_gone() {
    let mut server = NatsServer::start().expect("start nats-server");
    let store = open(&server).await;
    store.save_event(&ev("a", 1)).await.unwrap();
    let view = start(&store, BOUND).await;
    settles_to(&view, &[("a", 1)]).await;

    // A stalled server answers nothing: no round can confirm the view after the pause, so
    // once the bound has passed it is not current and reads go to the store, which fails.
    server.pause().unwrap();
    tokio::time::sleep_until(Instant::now() + BOUND + Duration::from_millis(50)).await;
    assert!(
        !view.is_current(),
        "current past the bound with the server paused"
    );
    let fallbacks = view.fallbacks();
    match view.get_latest_version("a").await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable from the paused server, got {other:?}"),
    }
    assert_eq!(view.fallbacks(), fallbacks + 1);
    server.resume().unwrap();
    settles_to(&view, &[("a", 1)]).await;
    let other = open(&server).await;
    other.save_event(&ev("a", 2)).await.unwrap();
    settles_to(&view, &[("a", 2)]).await;

    // A stopped server: the same, and the view recovers when it is back.
    server.stop().unwrap();
    tokio::time::sleep_until(Instant::now() + BOUND + Duration::from_millis(50)).await;
    assert!(
        !view.is_current(),
        "current past the bound with the server down"
    );
    match view.get_latest_version("a").await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable with the server down, got {other:?}"),
    }
    // The last answer stands until the view can confirm again.
    server.start_again().unwrap();
    settles_to(&view, &[("a", 2)]).await;
    eventually("a save after the restart succeeds", || async {
        other.save_event(&ev("a", 3)).await.is_ok()
    })
    .await;
    settles_to(&view, &[("a", 3)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_stream_is_loaded_again() {
    let server = NatsServer::start().expect("start nats-server");
    let store = open(&server).await;
    for v in 1..=5 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    let view = start(&store, BOUND).await;
    settles_to(&view, &[("a", 5)]).await;

    // Deleted by an operator and created again by another process, with a shorter history:
    // its sequences start over, below the ones the watch has seen.
    store
        .context()
        .delete_stream(store.stream_name())
        .await
        .expect("delete the stream");
    let other = open(&server).await;
    for v in 1..=2 {
        other.save_event(&ev("a", v)).await.unwrap();
    }
    other.save_event(&ev("b", 1)).await.unwrap();
    settles_to(&view, &[("a", 2), ("b", 1)]).await;
    assert_eq!(view.actors(), 2);
}

/// Subscriptions the server counts over all client connections.
fn subscriptions(server: &NatsServer) -> u64 {
    let connz = server.monitor("connz").expect("read connz");
    connz["connections"]
        .as_array()
        .map(|conns| {
            conns
                .iter()
                .filter_map(|c| c["subscriptions"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_stops_on_drop_and_on_shutdown() {
    let server = NatsServer::builder()
        .monitoring(true)
        .start()
        .expect("start nats-server");
    let store = open(&server).await;
    store.save_event(&ev("a", 1)).await.unwrap();
    // The store's own subscriptions (its request inbox) are there from its first request.
    let baseline = subscriptions(&server);

    let view = start(&store, BOUND).await;
    settles_to(&view, &[("a", 1)]).await;
    eventually("the watch subscribes", || async {
        subscriptions(&server) == baseline + 1
    })
    .await;
    drop(view);
    eventually("the dropped view's watch unsubscribes", || async {
        subscriptions(&server) == baseline
    })
    .await;

    let view = start(&store, BOUND).await;
    settles_to(&view, &[("a", 1)]).await;
    assert_eq!(subscriptions(&server), baseline + 1);
    // Shutdown returns once the task has finished, and its subscription goes with it.
    tokio::time::timeout(PATIENCE, view.shutdown())
        .await
        .expect("shutdown finishes");
    eventually("the shut-down view's watch unsubscribes", || async {
        subscriptions(&server) == baseline
    })
    .await;
}
