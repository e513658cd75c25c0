//! `aether repartition` against a real nats-server: a one-stream namespace copied over four
//! partitions and back to two, every actor's history whole, versions still checked; and the
//! refusals (target exists, same namespace, no partitions, missing or compactable source),
//! each one error line with nothing created; Ctrl-C during the copy deleting the target.

use std::collections::BTreeSet;
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use aether_core::{ActorKey, Error, Event, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use futures::TryStreamExt;

use crate::nats::{aether, assert_one_line_error, exited, stdout, BIN};

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

async fn open(url: &str, config: JetStreamConfig) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    JetStreamEventStore::new(client, config).await.unwrap()
}

async fn stream_names(url: &str) -> BTreeSet<String> {
    let client = async_nats::connect(url).await.unwrap();
    async_nats::jetstream::new(client)
        .stream_names()
        .try_collect()
        .await
        .unwrap()
}

/// The actors written by [`write_source`]: 18 untyped, and two `show` actors, one of them
/// with the id of an untyped one.
fn actors() -> Vec<(Option<&'static str>, String)> {
    let mut all: Vec<(Option<&'static str>, String)> =
        (0..18).map(|a| (None, format!("acc-{a}"))).collect();
    all.push((Some("show"), "acc-0".to_string()));
    all.push((Some("show"), "s-1".to_string()));
    all
}

/// Each actor: one event, then batches of 1 to 4 events, 16 events in all (320 in total),
/// with data and metadata; two snapshots, one in the middle of the log and one at its end.
async fn write_source(store: &JetStreamEventStore) -> u64 {
    let mut total = 0;
    let mut snapshotted = false;
    for (i, (actor_type, id)) in actors().into_iter().enumerate() {
        let event = |v: u64| {
            let e = Event::new(if v == 1 { "Opened" } else { "Deposited" }, id.as_str(), v)
                .with_field("amount", v * 10)
                .with_metadata("source", format!("test-{i}"));
            match actor_type {
                Some(t) => e.with_actor_type(t),
                None => e,
            }
        };
        store.save_event(&event(1)).await.unwrap();
        let mut version = 1;
        let mut size = 1 + (i as u64 % 4);
        while version < 16 {
            let last = (version + size).min(16);
            let batch: Vec<Event> = (version + 1..=last).map(event).collect();
            store.save_events(&id, &batch).await.unwrap();
            version = last;
            size = size % 4 + 1;
            if i == 0 && version < 16 && !snapshotted {
                snapshot(store, &id, version).await;
                snapshotted = true;
            }
        }
        total += 16;
    }
    // The log's last message is a snapshot, not an event.
    snapshot(store, "acc-1", 16).await;
    total
}

async fn snapshot(store: &JetStreamEventStore, id: &str, version: u64) {
    let mut state = aether_core::EventData::new();
    state.insert("balance".into(), (version * 10).into());
    store
        .save_snapshot(&Snapshot::new(id, version, state))
        .await
        .unwrap();
}

async fn assert_same_histories(source: &JetStreamEventStore, target: &JetStreamEventStore) {
    for (actor_type, id) in actors() {
        let key = ActorKey {
            actor_type,
            actor_id: &id,
        };
        let expected = source.events_of(key, 0).await.unwrap();
        assert_eq!(expected.len(), 16, "{key}");
        let copied = target.events_of(key, 0).await.unwrap();
        assert_eq!(copied, expected, "history of {key}");
    }
}

async fn messages(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(stream)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartition_copies_every_history_over_four_partitions_and_back_to_two() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let source = open(&url, JetStreamConfig::default().namespace("src")).await;
    let total = write_source(&source).await;

    let out = run(&[
        "repartition",
        "--namespace",
        "src",
        "--to-namespace",
        "dst",
        "--partitions",
        "4",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let expected = format!(
        "repartitioned {total} events of 20 actors from 1 stream into 4 partitions \
         (dst_AETHER_EVENTS_P0..P3) in "
    );
    assert!(lines[0].starts_with(&expected), "{text}");

    let target = open(
        &url,
        JetStreamConfig::default().namespace("dst").partitions(4),
    )
    .await;
    assert_same_histories(&source, &target).await;
    let mut copied = 0;
    for k in 0..4 {
        let n = messages(&url, &format!("dst_AETHER_EVENTS_P{k}")).await;
        assert!(n > 0, "partition {k} holds no message");
        copied += n;
    }
    // No snapshot was copied; every batch stayed one message.
    let source_messages = messages(&url, "src_AETHER_EVENTS").await;
    assert_eq!(copied + 2, source_messages);

    // The copied versions are checked like any other.
    let stale = target
        .save_event(&Event::new("Deposited", "acc-3", 9))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::VersionConflict(_)), "{stale:?}");
    let stale_typed = target
        .save_event(&Event::new("Deposited", "s-1", 16).with_actor_type("show"))
        .await
        .unwrap_err();
    assert!(
        matches!(stale_typed, Error::VersionConflict(_)),
        "{stale_typed:?}"
    );
    target
        .save_event(&Event::new("Deposited", "acc-3", 17))
        .await
        .unwrap();
    target
        .save_event(&Event::new("Deposited", "s-1", 17).with_actor_type("show"))
        .await
        .unwrap();

    // Four partitions into two.
    let out = run(&[
        "repartition",
        "--namespace",
        "dst",
        "--to-namespace",
        "dst2",
        "--partitions",
        "2",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "repartitioned {} events of 20 actors from 4 streams into 2 partitions \
             (dst2_AETHER_EVENTS_P0..P1) in ",
            total + 2
        )),
        "{text}"
    );
    let again = open(
        &url,
        JetStreamConfig::default().namespace("dst2").partitions(2),
    )
    .await;
    for (actor_type, id) in actors() {
        let key = ActorKey {
            actor_type,
            actor_id: &id,
        };
        assert_eq!(
            again.events_of(key, 0).await.unwrap(),
            target.events_of(key, 0).await.unwrap(),
            "history of {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartition_refuses_with_one_line_and_creates_nothing() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let source = open(&url, JetStreamConfig::default().namespace("src")).await;
    source
        .save_events(
            "a",
            &[
                Event::new("Opened", "a", 1),
                Event::new("Deposited", "a", 2),
            ],
        )
        .await
        .unwrap();
    let compactable = open(
        &url,
        JetStreamConfig::default()
            .namespace("comp")
            .compactable(true),
    )
    .await;
    compactable
        .save_event(&Event::new("Opened", "a", 1))
        .await
        .unwrap();
    let before = stream_names(&url).await;

    let repartition = |from: &'static str, to: &'static str, n: &'static str| {
        let url = url.clone();
        async move {
            run(&[
                "repartition",
                "--namespace",
                from,
                "--to-namespace",
                to,
                "--partitions",
                n,
                "--nats",
                &url,
            ])
            .await
        }
    };

    let out = repartition("src", "src", "4").await;
    assert_one_line_error(&out, "are the same store");
    let out = repartition("src", "dst", "0").await;
    assert_one_line_error(&out, "--partitions");
    let out = repartition("nowhere", "dst", "4").await;
    assert_one_line_error(&out, "nowhere_AETHER_EVENTS not found");
    let out = repartition("comp", "dst", "4").await;
    assert_one_line_error(&out, "is compactable");
    assert_eq!(stream_names(&url).await, before);

    // A stored message that does not decode as events: the copy would lack it, so the
    // command fails and deletes the target it made.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bad = open(&url, JetStreamConfig::default().namespace("bad")).await;
    bad.save_event(&Event::new("Opened", "a", 1)).await.unwrap();
    js.publish(
        bad.event_subject(ActorKey::untyped("b")),
        "not an event".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    bad.save_event(&Event::new("Opened", "c", 1)).await.unwrap();
    let with_bad = stream_names(&url).await;
    let out = repartition("bad", "dst", "2").await;
    assert_one_line_error(&out, "1 stored message of namespace \"bad\" did not decode");
    assert_eq!(stream_names(&url).await, with_bad);

    // A target that exists: the second run is refused and leaves the first's streams alone.
    let out = repartition("src", "dst", "2").await;
    assert!(out.status.success(), "{out:?}");
    let made = stream_names(&url).await;
    assert_eq!(made.len(), with_bad.len() + 2, "{made:?}");
    let out = repartition("src", "dst", "2").await;
    assert_one_line_error(&out, "dst_AETHER_EVENTS_P0, dst_AETHER_EVENTS_P1");
    // Another count for the same namespace is refused too.
    let out = repartition("src", "dst", "3").await;
    assert_one_line_error(&out, "already has event streams dst_AETHER_EVENTS_P0");
    assert_eq!(stream_names(&url).await, made);
    let target = open(
        &url,
        JetStreamConfig::default().namespace("dst").partitions(2),
    )
    .await;
    assert_eq!(
        target
            .events_of(ActorKey::untyped("a"), 0)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_repartition_deletes_the_streams_it_created() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let source = open(&url, JetStreamConfig::default().namespace("src")).await;
    // Enough saves that the copy is still going when the test freezes it.
    for v in 1..=1500 {
        for id in ["a", "b"] {
            source
                .save_event(&Event::new("Ticked", id, v))
                .await
                .unwrap();
        }
    }
    let before = stream_names(&url).await;
    // Through a proxy the test freezes once the target streams exist: the copy then waits for
    // its acknowledgements until Ctrl-C.
    let proxy = aether_testkit::TcpProxy::start(server.port()).unwrap();
    let child = StdCommand::new(BIN)
        .args([
            "repartition",
            "--namespace",
            "src",
            "--to-namespace",
            "dst",
            "--partitions",
            "2",
            "--nats",
            &proxy.nats_url(),
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let targets = ["dst_AETHER_EVENTS_P0", "dst_AETHER_EVENTS_P1"];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = stream_names(&url).await;
        if targets.iter().all(|t| names.contains(*t)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the target streams never appeared"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.freeze();
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.thaw();
    let output = exited(child).await;
    assert_one_line_error(
        &output,
        "interrupted; deleted the target streams this run had created \
         (dst_AETHER_EVENTS_P0, dst_AETHER_EVENTS_P1)",
    );
    assert_eq!(stream_names(&url).await, before);
}
