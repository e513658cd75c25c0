//! The JetStream store when things go wrong: restarts, crashes, oversized payloads, missing
//! streams, unreachable servers.
#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::{Error, Event, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;

fn ev(actor: &str, v: u64) -> Event {
    Event::new("Happened", actor, v).with_field("n", v)
}

fn versions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

async fn restart_keeps_history(mut server: NatsServer, crash: bool) {
    let client = async_nats::connect(server.url()).await.unwrap();
    // A short request timeout keeps the test fast: the client only notices the restart when a
    // request goes unanswered, and the store retries that.
    let store = JetStreamEventStore::new(
        client,
        JetStreamConfig::default().request_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    for v in 1..=5 {
        store.save_event(&ev("a", v)).await.unwrap();
    }
    store
        .save_events("a", &[ev("a", 6), ev("a", 7)])
        .await
        .unwrap();
    store
        .save_snapshot(&Snapshot::new("a", 7, Default::default()))
        .await
        .unwrap();

    if crash {
        server.kill().unwrap();
        server.start_again().unwrap();
    } else {
        server.restart().unwrap();
    }

    // Same store object, same connection: the first write after the restart succeeds (the
    // client reconnects by itself), and everything acknowledged before it is still there.
    store.save_event(&ev("a", 8)).await.unwrap();
    assert_eq!(
        versions(&store.get_events("a", 0).await.unwrap()),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        store
            .get_latest_snapshot("a")
            .await
            .unwrap()
            .map(|s| s.version),
        Some(7)
    );
    assert!(store
        .save_event(&ev("a", 8))
        .await
        .unwrap_err()
        .is_version_conflict());
    assert_eq!(store.get_latest_version("a").await.unwrap(), 8);
}

#[tokio::test]
async fn a_store_survives_a_server_restart() {
    restart_keeps_history(NatsServer::start().unwrap(), false).await;
}

#[tokio::test]
async fn a_store_survives_a_server_crash_with_sync_always() {
    let server = NatsServer::builder().sync_always(true).start().unwrap();
    restart_keeps_history(server, true).await;
}

#[tokio::test]
async fn oversized_payloads_are_refused_before_sending() {
    let server = NatsServer::builder()
        .max_payload(64 * 1024)
        .start()
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    assert_eq!(client.server_info().max_payload, 64 * 1024);
    let store = JetStreamEventStore::new(client, JetStreamConfig::default())
        .await
        .unwrap();
    let big = "x".repeat(100 * 1024);

    match store
        .save_event(&ev("a", 1).with_field("blob", big.as_str()))
        .await
    {
        Err(Error::PayloadTooLarge { size, limit }) => {
            assert_eq!(limit, 64 * 1024);
            assert!(size > 100 * 1024);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // A batch that only fits as a whole is refused as a whole.
    let third = "y".repeat(30 * 1024);
    let batch: Vec<Event> = (1..=3)
        .map(|v| ev("a", v).with_field("blob", third.as_str()))
        .collect();
    let err = store.save_events("a", &batch).await.unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 65536, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("65536"));
    let err = store
        .save_snapshot(&Snapshot::new(
            "a",
            1,
            serde_json::json!({ "blob": big })
                .as_object()
                .cloned()
                .unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }));

    // Nothing was written; normal saves still work.
    assert_eq!(store.get_latest_version("a").await.unwrap(), 0);
    store.save_event(&ev("a", 1)).await.unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 1);
}

#[tokio::test]
async fn a_missing_stream_is_not_found() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    // Servers before 2.10 let a direct get on a deleted stream time out; keep that short.
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().request_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    store.save_event(&ev("a", 1)).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.delete_stream(store.stream_name()).await.unwrap();

    let err = store.save_event(&ev("a", 2)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains(store.stream_name()), "{err}");
    let err = store.get_latest_version("b").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(store.get_events("a", 0).await.is_err());

    // Opening a store again recreates the stream.
    let again = JetStreamEventStore::connect(&server.url(), JetStreamConfig::default())
        .await
        .unwrap();
    assert_eq!(again.get_latest_version("a").await.unwrap(), 0);
    // The old store learns from the server that its cached view is gone.
    store.save_event(&ev("a", 1)).await.unwrap();
    assert_eq!(versions(&store.get_events("a", 0).await.unwrap()), [1]);
}

#[tokio::test]
async fn an_unreachable_server_gives_unavailable() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(
        client,
        JetStreamConfig::default().request_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    store.save_event(&ev("a", 1)).await.unwrap();
    server.kill().unwrap();

    let err = store.save_event(&ev("a", 2)).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = store.get_latest_version("other").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = store.get_events("a", 0).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    let err = JetStreamEventStore::connect(&url, JetStreamConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_went_unanswered_is_stored_at_most_once() {
    let mut server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = std::sync::Arc::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default().request_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    store.save_event(&ev("a", 1)).await.unwrap();

    // The server stalls while the publish is in flight, and stays stalled until the save has
    // returned: the store's retry and its checks go unanswered too, so it cannot know whether
    // the event landed and must say so. (Resumed any earlier, the retry may find the event and
    // return `Ok`, and this path would not run.)
    server.pause().unwrap();
    let event = ev("a", 2);
    let task = {
        let (store, event) = (store.clone(), event.clone());
        tokio::spawn(async move { store.save_event(&event).await })
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the save never returned while the server was stalled")
        .unwrap();
    server.resume().unwrap();
    let err = outcome.expect_err("a save was acknowledged by a stalled server");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());

    // Resumed, the server works through the publishes it received during the stall; a save on
    // the same connection, once acknowledged, is behind them in the stream. At most one of the
    // attempts can have gone in.
    store.save_event(&ev("after-the-stall", 1)).await.unwrap();
    let copies = |events: &[Event]| events.iter().filter(|e| e.id == event.id).count();
    let stored = copies(&store.get_events("a", 0).await.unwrap());
    eprintln!("unanswered save stored {stored} time(s) after the resume");
    assert!(stored <= 1, "an unanswered save stored {stored} times");
    // Saving the same event again either stores it now or finds it already there.
    match store.save_event(&event).await {
        Ok(()) => assert_eq!(stored, 0),
        Err(e) => {
            assert!(e.is_version_conflict(), "{e:?}");
            assert_eq!(stored, 1);
        }
    }
    let events = store.get_events("a", 0).await.unwrap();
    assert_eq!(copies(&events), 1);
    assert_eq!(versions(&events), [1, 2]);
}

/// A server whose JetStream storage is full (`max_file_store`): saves fail with
/// `Error::StorageFull`, nothing acknowledged is lost, and saves work again once space is
/// freed (here by deleting another stream that held most of it, as an operator would).
#[tokio::test]
async fn a_full_server_refuses_saves_with_a_typed_error_and_recovers_when_space_is_freed() {
    const LIMIT: u64 = 1 << 20;
    let server = NatsServer::builder()
        .sync_always(true)
        .max_file_store(LIMIT)
        .start()
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // Ballast: another stream holding most of the space.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BALLAST".into(),
        subjects: vec!["ballast".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Servers count their usage differently (2.9 reserves more per block), so fill until
    // half the limit or a refusal, whichever comes first.
    let chunk = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    let mut ballast = 0;
    for _ in 0..(LIMIT as usize / 2) / chunk.len() {
        match js.publish("ballast", chunk.clone()).await.unwrap().await {
            Ok(_) => ballast += 1,
            Err(e) => {
                eprintln!("ballast refused after {ballast} chunks: {e}");
                break;
            }
        }
    }
    let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
        .await
        .unwrap();
    // Save until the server refuses; every acknowledged save must stay.
    let mut acked = 0u64;
    let refusal = loop {
        let e = Event::new("Filled", "full", acked + 1).with_field("pad", "y".repeat(2048));
        match store.save_event(&e).await {
            Ok(()) => acked += 1,
            Err(err) => break err,
        }
        assert!(acked < 10_000, "the server never refused a save");
    };
    eprintln!("refused after {acked} saves: {refusal:?}");
    assert!(
        matches!(refusal, Error::StorageFull { .. }),
        "expected StorageFull, got {refusal:?}"
    );
    assert!(
        !refusal.is_retryable(),
        "retrying cannot help until space is freed"
    );
    assert_eq!(store.get_latest_version("full").await.unwrap(), acked);
    assert_eq!(
        versions(&store.get_events("full", 0).await.unwrap()),
        (1..=acked).collect::<Vec<_>>()
    );
    // Free the space; saves resume at the next version.
    js.delete_stream("BALLAST").await.unwrap();
    store
        .save_event(&Event::new("Filled", "full", acked + 1))
        .await
        .unwrap();
    assert_eq!(store.get_latest_version("full").await.unwrap(), acked + 1);
}

/// A tmpfs mounted on a directory for as long as it lives; unmounted on drop (lazily: the
/// server may still hold files in it, and is stopped only after).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("mount exited with {status}")));
        }
        Ok(Self(dir.to_path_buf()))
    }
}

impl Tmpfs {
    /// Bytes still free on the filesystem (`df`).
    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A server whose store directory is on a filesystem that fills up: a real "no space left on
/// device", not a quota (the test above). The server stops answering publishes to the stream
/// (nats-server 2.9 also its reads) and goes on failing them after space is freed, until it is
/// restarted. Saves fail with `Unavailable`, typed as retryable and as "may or may not be
/// stored"; nothing acknowledged is lost, the unanswered saves are stored at most once; after
/// the restart saves resume at the next version.
///
/// The filesystem is a tmpfs, so the test must be allowed to mount one (root, as in CI). Where
/// it is not, the test fails unless `AETHER_TEST_NO_TMPFS=1` says to skip it, so that it never
/// passes without running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_fails_saves_as_unavailable_and_loses_nothing_acknowledged() {
    const FILESYSTEM: u64 = 2 << 20;
    // Far above the filesystem, so that the filesystem fills up before any quota applies
    // (by default JetStream limits itself to 75% of the free space it finds at start).
    const QUOTA: u64 = 1 << 30;
    let mut server = NatsServer::builder()
        .sync_always(true)
        .max_file_store(QUOTA)
        .start()
        .unwrap();
    // The store directory moves onto the small filesystem while the server is stopped.
    server.stop().unwrap();
    let filesystem = match Tmpfs::mount(&server.store_dir(), FILESYSTEM) {
        Ok(f) => f,
        Err(e) if std::env::var("AETHER_TEST_NO_TMPFS").as_deref() == Ok("1") => {
            eprintln!("NOT RUN: cannot mount a tmpfs ({e}), and AETHER_TEST_NO_TMPFS=1");
            return;
        }
        Err(e) => panic!(
            "mounting a tmpfs for the full-filesystem test failed ({e}); it needs root. Set \
             AETHER_TEST_NO_TMPFS=1 to skip it on this machine"
        ),
    };
    // Room the "operator" frees once the filesystem is full.
    let ballast = server.store_dir().join("ballast");
    std::fs::write(&ballast, vec![0u8; 512 * 1024]).unwrap();
    server.start_again().unwrap();

    let client = async_nats::connect(server.url()).await.unwrap();
    let store = JetStreamEventStore::new(
        client,
        JetStreamConfig::default().request_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let event = |v: u64| Event::new("Filled", "full", v).with_field("pad", "y".repeat(2048));
    let mut acked = 0u64;
    let (unanswered, refusal) = loop {
        let next = event(acked + 1);
        match store.save_event(&next).await {
            Ok(()) => acked += 1,
            Err(err) => break (next, err),
        }
        assert!(acked < 10_000, "the filesystem never filled up");
    };
    eprintln!("failed after {acked} saves: {refusal:?}");
    assert!(acked > 0);
    assert!(
        filesystem.free_bytes() < 64 * 1024,
        "the save failed before the filesystem was full"
    );
    // The server does not answer, so the store cannot tell whether the event went in.
    assert!(
        matches!(refusal, Error::Unavailable { .. }) && refusal.is_retryable(),
        "expected a retryable Unavailable, got {refusal:?}"
    );

    // Space freed: the server goes on failing the stream's writes (observed on 2.9 and 2.15;
    // a server that recovers by itself fails here, and docs/guarantees.md needs updating).
    std::fs::remove_file(&ballast).unwrap();
    let still = store.save_event(&unanswered).await;
    assert!(
        matches!(still, Err(Error::Unavailable { .. })),
        "a save after space was freed, before the restart: {still:?}"
    );
    // Then the server restarted. Killed rather than stopped: 2.9 does not stop on SIGTERM in
    // this state, and 2.15 loses nothing acknowledged to a kill (`sync_interval: always`).
    tokio::task::block_in_place(|| {
        server.kill()?;
        server.start_again()
    })
    .unwrap();
    let stored = store.get_events("full", 0).await.unwrap();
    let latest = stored.len() as u64;
    assert_eq!(versions(&stored), (1..=latest).collect::<Vec<_>>());
    // The unanswered event (sent several times: two saves, each retried) may have gone in
    // once, at its version.
    assert!(
        latest == acked || (latest == acked + 1 && stored[acked as usize].id == unanswered.id),
        "{acked} saves acknowledged, {latest} events stored"
    );
    eprintln!("after the restart: {latest} events, {acked} acknowledged");
    store.save_event(&event(latest + 1)).await.unwrap();
    assert_eq!(store.get_latest_version("full").await.unwrap(), latest + 1);
}
