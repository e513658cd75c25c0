//! Every command and the dashboard over a partitioned store (`JetStreamConfig::partitions`):
//! the partition count detected from the streams or given, a count that disagrees refused,
//! `stats` per partition and in total, `events` routed to the actor's partition, `tail
//! --source store` merging one consumer per partition, projections' lag per log partition,
//! and the dashboard's data, against real nats-servers.

use std::collections::BTreeSet;
use std::process::{Command as StdCommand, Output, Stdio};

use aether_cli::events::StreamArgs;
use aether_cli::ui::DashboardConfig;
use aether_core::{Event, EventStore, LogPosition, StorageKind};
use aether_projection::{NatsProjectionStore, ProjectionStore};
use aether_store::{JetStreamConfig, JetStreamEventStore, PartitionKey};
use aether_testkit::NatsServer;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::actor_types::{lines_of, read_until, wait_line};
use crate::nats::{aether, assert_one_line_error, stdout, BIN};

const PARTITIONS: u32 = 4;

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

async fn partitioned(url: &str, namespace: &str, key: PartitionKey) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    JetStreamEventStore::new(
        client,
        JetStreamConfig::default()
            .namespace(namespace)
            .partitions(PARTITIONS)
            .partition_key(key),
    )
    .await
    .unwrap()
}

/// Twelve actors `acc-0` to `acc-11`, each with an event and a batch of two: 36 events in
/// 24 messages.
async fn write_accounts(s: &JetStreamEventStore) {
    for a in 0..12 {
        let id = format!("acc-{a}");
        s.save_event(&Event::new("Opened", id.as_str(), 1))
            .await
            .unwrap();
        s.save_events(
            &id,
            &[
                Event::new("Deposited", id.as_str(), 2).with_field("amount", 10),
                Event::new("Deposited", id.as_str(), 3).with_field("amount", 20),
            ],
        )
        .await
        .unwrap();
    }
}

fn value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_events_cover_every_partition_with_the_count_detected_or_given() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = partitioned(&url, "parts", PartitionKey::ActorId).await;
    write_accounts(&s).await;
    let mut actors_per_partition = [0u64; PARTITIONS as usize];
    for a in 0..12 {
        actors_per_partition[s.partition_of(format!("acc-{a}").as_str()) as usize] += 1;
    }
    assert!(
        actors_per_partition.iter().filter(|&&n| n > 0).count() > 1,
        "the actors should spread: {actors_per_partition:?}"
    );

    // Detected, and given: the same figures.
    for given in [None, Some("4")] {
        let mut args = vec!["stats", "--namespace", "parts", "--nats", &url];
        if let Some(n) = given {
            args.extend(["--partitions", n]);
        }
        let out = run(&args).await;
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert!(
            value(&text, "stream")
                .starts_with("parts_AETHER_EVENTS (4 partitions: streams parts_AETHER_EVENTS_P0"),
            "{text}"
        );
        assert!(value(&text, "partitions").starts_with("4 "), "{text}");
        assert_eq!(value(&text, "actors"), "12", "{text}");
        assert!(
            value(&text, "events").starts_with("36 in 24 messages"),
            "{text}"
        );
        assert_eq!(value(&text, "messages"), "24", "{text}");
        // One row per partition, with its own stream and actors.
        for (k, expected) in actors_per_partition.iter().enumerate() {
            let name = format!("parts_AETHER_EVENTS_P{k}");
            let row = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no row for {name}: {text}"));
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[0], k.to_string(), "{row}");
            assert_eq!(cells[2], (expected * 2).to_string(), "messages: {row}");
            assert_eq!(cells[3], (expected * 3).to_string(), "events: {row}");
            assert_eq!(cells[4], expected.to_string(), "actors: {row}");
        }
    }
    // --fast and --type on a partitioned store.
    let out = run(&["stats", "--fast", "--namespace", "parts", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(value(&stdout(&out), "events").starts_with("not counted"));

    // A count that disagrees with the streams: one clear line, nothing created.
    for wrong in ["3", "8", "1"] {
        let out = run(&[
            "stats",
            "--partitions",
            wrong,
            "--namespace",
            "parts",
            "--nats",
            &url,
        ])
        .await;
        assert_one_line_error(
            &out,
            &format!(
                "--partitions {wrong} disagrees with the streams: the store parts_AETHER_EVENTS \
                 is spread over 4 partitions"
            ),
        );
    }
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    assert!(js.get_stream("parts_AETHER_EVENTS_P4").await.is_err());
    assert!(js.get_stream("parts_AETHER_EVENTS").await.is_err());
    let out = run(&["stats", "--partitions", "0", "--nats", &url]).await;
    assert!(!out.status.success(), "{out:?}");

    // An unpartitioned store given a count; no store at all given a count.
    let plain = crate::nats::store(&url, "plain").await;
    plain
        .save_event(&Event::new("Opened", "x", 1))
        .await
        .unwrap();
    let out = run(&[
        "stats",
        "--partitions",
        "4",
        "--namespace",
        "plain",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(
        &out,
        "plain_AETHER_EVENTS is the one stream of an unpartitioned store",
    );
    let out = run(&["stats", "--namespace", "plain", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout(&out).contains("partitions:"), "{out:?}");
    let out = run(&[
        "events",
        "x",
        "--partitions",
        "2",
        "--namespace",
        "nowhere",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(&out, "stream nowhere_AETHER_EVENTS_P0 not found");

    // An actor's history, from its partition, detected or given.
    for given in [None, Some("4")] {
        let mut args = vec![
            "events",
            "acc-7",
            "--json",
            "--namespace",
            "parts",
            "--nats",
            &url,
        ];
        if let Some(n) = given {
            args.extend(["--partitions", n]);
        }
        let out = run(&args).await;
        assert!(out.status.success(), "{out:?}");
        let events: Vec<Event> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 2, 3], "{out:?}");
        assert!(events.iter().all(|e| e.actor_id == "acc-7"));
    }
    let out = run(&["events", "nobody", "--namespace", "parts", "--nats", &url]).await;
    let partition = s.partition_of("nobody");
    assert_one_line_error(
        &out,
        &format!("actor nobody has no events in stream parts_AETHER_EVENTS_P{partition}"),
    );
    let out = run(&[
        "events",
        "acc-7",
        "--partitions",
        "3",
        "--namespace",
        "parts",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(&out, "--partitions 3 disagrees with the streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_needs_the_applications_partition_key_and_says_so() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let key = PartitionKey::IdPrefix('/');
    let s = partitioned(&url, "tenants", key).await;
    // An id whose prefix puts it in another partition than its whole id would.
    let id = (0..100)
        .map(|t| format!("tenant-{t}/order-1"))
        .find(|id| {
            key.partition_of(id, PARTITIONS) != PartitionKey::ActorId.partition_of(id, PARTITIONS)
        })
        .expect("some id lands elsewhere by its prefix");
    s.save_event(&Event::new("Placed", id.as_str(), 1))
        .await
        .unwrap();
    let out = run(&["events", &id, "--namespace", "tenants", "--nats", &url]).await;
    let elsewhere = key.partition_of(&id, PARTITIONS);
    assert_one_line_error(
        &out,
        &format!(
            "but stream tenants_AETHER_EVENTS_P{elsewhere} has some: give the --partition-key"
        ),
    );
    let out = run(&[
        "events",
        &id,
        "--partition-key",
        "prefix:/",
        "--namespace",
        "tenants",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Placed"), "{out:?}");
    for bad in ["prefix:", "prefix:ab", "hash", "\u{1b}]0;x"] {
        let out = run(&["events", &id, "--partition-key", bad, "--nats", &url]).await;
        assert!(!out.status.success(), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("prefix:<char>"), "{bad}: {err}");
        assert!(!err.contains('\u{1b}'), "{err}");
    }
}

/// An actor of each partition: `acc-<n>` for the smallest `n` landing there.
fn one_actor_per_partition(s: &JetStreamEventStore) -> Vec<String> {
    (0..PARTITIONS)
        .map(|k| {
            (0..1000)
                .map(|n| format!("acc-{n}"))
                .find(|id| s.partition_of(id.as_str()) == k)
                .expect("every partition gets an actor")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_from_the_store_merges_every_partition() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = partitioned(&url, "live", PartitionKey::ActorId).await;
    write_accounts(&s).await;
    let mut child = StdCommand::new(BIN)
        .args([
            "tail",
            "--source",
            "store",
            "--namespace",
            "live",
            "--nats",
            &url,
        ])
        .env("NO_COLOR", "1")
        .env_remove("NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let out = lines_of(child.stdout.take().unwrap());
    let (_err, said, ready) = wait_line(err, Vec::new(), |l| l.starts_with("listening on")).await;
    assert!(ready, "tail never said it was listening: {said:?}");
    let listening = said.last().unwrap();
    for k in 0..PARTITIONS {
        assert!(
            listening.contains(&format!("live_AETHER_EVENTS_P{k}.events.>")),
            "{listening}"
        );
    }
    assert!(listening.contains("4 partition streams"), "{listening}");

    // New events in every partition, each seen once.
    let actors = one_actor_per_partition(&s);
    for id in &actors {
        s.save_event(&Event::new("Tailed", id.as_str(), 4))
            .await
            .unwrap();
    }
    let wanted: BTreeSet<String> = actors.iter().map(|a| format!("{a} v4 Tailed")).collect();
    let mut lines = Vec::new();
    let mut out = out;
    let mut seen = BTreeSet::new();
    while seen.len() < wanted.len() {
        let (rest, got, found) = wait_line(out, Vec::new(), |l| l.contains("Tailed")).await;
        out = rest;
        assert!(
            found,
            "not every partition's event showed: {lines:?} {got:?}"
        );
        for l in got {
            if let Some(w) = wanted.iter().find(|w| l.contains(w.as_str())) {
                assert!(seen.insert(w.clone()), "seen twice: {l}");
            }
            lines.push(l);
        }
    }
    // Nothing written before the tail opened.
    assert!(lines.iter().all(|l| !l.contains("Opened")), "{lines:?}");
    assert!(child.try_wait().unwrap().is_none(), "the tail ended");
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "tail should exit 0 on Ctrl-C: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_lag_behind_their_own_log_partitions_head() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = partitioned(&url, "proj", PartitionKey::ActorId).await;
    write_accounts(&s).await;
    // One more actor in each partition, so that every head is past the checkpoints below.
    for k in 0..PARTITIONS {
        let id = (0..)
            .map(|n| format!("extra-{n}"))
            .find(|id| s.partition_of(id.as_str()) == k)
            .unwrap();
        s.save_event(&Event::new("Opened", id.as_str(), 1))
            .await
            .unwrap();
    }
    let heads: Vec<u64> = s
        .stream_infos()
        .await
        .unwrap()
        .iter()
        .map(|i| i.state.last_sequence)
        .collect();
    let client = async_nats::connect(&url).await.unwrap();
    let state = NatsProjectionStore::open(client, "AETHER_PROJECTIONS", StorageKind::File)
        .await
        .unwrap();
    for k in 0..PARTITIONS {
        state
            .save_checkpoint(&format!("ledger.l{k}"), LogPosition::new(1, 0))
            .await
            .unwrap();
    }
    let out = run(&["projections", "list", "--namespace", "proj", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for (k, head) in heads.iter().enumerate() {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("ledger.l{k} ")))
            .unwrap_or_else(|| panic!("no ledger.l{k}: {text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[2], (head - 1).to_string(), "{row}");
    }
    assert!(text.contains("heads of the 4 log partitions"), "{text}");
}

fn dashboard_config(namespace: &str) -> DashboardConfig {
    DashboardConfig {
        stream: StreamArgs {
            namespace: Some(namespace.into()),
            ..StreamArgs::default()
        },
        ..DashboardConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reports_every_partition() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = partitioned(&url, "dash", PartitionKey::ActorId).await;
    write_accounts(&s).await;
    let stop = CancellationToken::new();
    let addr = crate::ui::dashboard(&url, dashboard_config("dash"), &stop).await;
    let json = |body: &str| -> serde_json::Value { serde_json::from_str(body).unwrap() };

    let (status, _, body) = crate::ui::get(addr, "/api/stream", &[]).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["name"], "dash_AETHER_EVENTS", "{body}");
    assert_eq!(v["partitions"], 4, "{body}");
    assert_eq!(v["messages"], 24, "{body}");
    let parts = v["partitionStreams"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{body}");
    let mut messages = 0;
    for (k, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], k, "{body}");
        assert_eq!(p["name"], format!("dash_AETHER_EVENTS_P{k}"), "{body}");
        messages += p["messages"].as_u64().unwrap();
    }
    assert_eq!(messages, 24, "{body}");
    assert_eq!(v["subjects"], 12, "{body}");

    // An actor's page reads its partition's stream.
    let (status, _, body) = crate::ui::get(addr, "/api/actors/acc-5", &[]).await;
    assert_eq!(status, 200, "{body}");
    let a = json(&body);
    let k = s.partition_of("acc-5");
    assert_eq!(a["partition"], k, "{body}");
    assert_eq!(a["partitions"], 4, "{body}");
    assert_eq!(a["stream"], format!("dash_AETHER_EVENTS_P{k}"), "{body}");
    assert_eq!(a["latestVersion"], 3, "{body}");
    let (status, _, body) = crate::ui::get(addr, "/api/actors/nobody", &[]).await;
    assert_eq!(status, 404, "{body}");

    // The live tail of the store follows every partition.
    let mut tail = tokio::net::TcpStream::connect(addr).await.unwrap();
    tail.write_all(
        format!("GET /api/tail?source=store HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    assert!(
        read_until(&mut tail, &mut seen, "event: ready").await,
        "{seen}"
    );
    assert!(seen.contains("\"partitions\":4"), "{seen}");
    assert!(seen.contains("dash_AETHER_EVENTS_P3.events.>"), "{seen}");
    for id in one_actor_per_partition(&s) {
        s.save_event(&Event::new(format!("Tailed{id}"), id.as_str(), 4))
            .await
            .unwrap();
    }
    for id in one_actor_per_partition(&s) {
        assert!(
            read_until(&mut tail, &mut seen, &format!("Tailed{id}")).await,
            "{seen}"
        );
    }

    // Projections: each log partition's checkpoint against its own head.
    let client = async_nats::connect(&url).await.unwrap();
    let state = NatsProjectionStore::open(client, "AETHER_PROJECTIONS", StorageKind::File)
        .await
        .unwrap();
    state
        .save_checkpoint("ledger.l2", LogPosition::new(1, 0))
        .await
        .unwrap();
    let head2 = s.stream_infos().await.unwrap()[2].state.last_sequence;
    let (status, _, body) = crate::ui::get(addr, "/api/projections", &[]).await;
    assert_eq!(status, 200, "{body}");
    let p = json(&body);
    assert_eq!(p["logPartitions"], 4, "{body}");
    assert_eq!(p["heads"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(p["heads"][2]["sequence"], head2, "{body}");
    let ledger = p["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "ledger.l2")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(ledger["lag"], head2 - 1, "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_a_partition_count_that_disagrees() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = partitioned(&url, "dash", PartitionKey::ActorId).await;
    write_accounts(&s).await;
    let stop = CancellationToken::new();
    let mut config = dashboard_config("dash");
    config.stream.partitions = Some(2);
    let addr = crate::ui::dashboard(&url, config, &stop).await;
    let (status, _, body) = crate::ui::get(addr, "/api/stream", &[]).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("--partitions 2 disagrees with the streams"),
        "{body}"
    );
    stop.cancel();
}

/// `aether leaders` lists each partition's leader; `--spread` on a single server has nothing
/// to move (the cluster case is the store's own test, `partition_leaders_are_spread_over_the_servers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_lists_every_partitions_leader() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let _store = partitioned(&url, "lead", PartitionKey::ActorId).await;
    let out = run(&["leaders", "--namespace", "lead", "--nats", &url]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for k in 0..PARTITIONS {
        let row = text
            .lines()
            .find(|l| l.contains(&format!("lead_AETHER_EVENTS_P{k}")))
            .unwrap_or_else(|| panic!("no row for partition {k}: {text}"));
        // One server: it leads everything, and no replica could take over.
        assert!(row.trim_end().ends_with('-'), "{row}");
    }
    let out = run(&["leaders", "--spread", "--namespace", "lead", "--nats", &url]).await;
    assert!(out.status.success());
    assert!(stdout(&out).contains("nothing to move"), "{}", stdout(&out));
    // No store: one line, nothing created.
    let out = run(&["leaders", "--namespace", "none", "--nats", &url]).await;
    assert_one_line_error(&out, "not found");
}
