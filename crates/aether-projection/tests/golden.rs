//! Golden files of what the NATS projection store keeps in its key-value bucket
//! (`tests/golden/<release>/bucket.kv`).
//!
//! The rule: a released golden file is never edited. A change to what the store keeps adds a
//! new release directory next to the old ones, and every old directory must keep reading back
//! to the same checkpoints, parked events, status and partition state, so that a rolling
//! upgrade (or a rollback) finds the projections where they were. The current release's file
//! (the crate's `major.minor`) must also be exactly what the current code writes, so that no
//! format change goes unnoticed.
//!
//! `bucket.kv` holds one entry per line, sorted by key: the key, one space, and the value's
//! exact bytes (every value is one line: compact JSON, a digit, a worker id or nothing). The
//! expected values are written out below, not produced by the encoder under test. Every
//! release's file holds the same fixture; should a later release's fixture differ, make
//! `expected` depend on the release.
//!
//! `AETHER_BLESS_GOLDEN=1` rewrites the current release's file from what the store writes;
//! older directories are never written. Without it, the test never writes.
#![cfg(feature = "nats")]

use std::collections::BTreeMap;

use aether_core::{Event, LogPosition, StorageKind};
use aether_projection::{
    NatsProjectionStore, ParkedEvent, PositionKeeper, ProjectionStore, ReportedStatus,
    PROJECTION_BUCKET_FORMAT,
};
use aether_testkit::golden::GoldenFiles;
use aether_testkit::NatsServer;
use futures::StreamExt;
use serde_json::{json, Value};

const BUCKET: &str = "PROJ_GOLDEN";
const FILE: &str = "bucket.kv";

fn golden() -> GoldenFiles {
    GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"))
}

type Entries = BTreeMap<String, Vec<u8>>;

fn read_entries(golden: &GoldenFiles, release: &str) -> Entries {
    golden
        .read(release, FILE)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let space = l
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or_else(|| panic!("{release}/{FILE}: a line without a space"));
            (
                String::from_utf8(l[..space].to_vec()).expect("utf-8 key"),
                l[space + 1..].to_vec(),
            )
        })
        .collect()
}

fn render(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in entries {
        out.extend_from_slice(key.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// What the fixture keeps, written out by hand.
struct Fixture {
    checkpoint: LogPosition,
    partition_checkpoint: LogPosition,
    parked: ParkedEvent,
    status: ReportedStatus,
}

fn expected() -> Fixture {
    let mut event = Event::new("OrderPlaced", "order-1", 3).with_actor_type("order");
    event.id = "00000000-0000-4000-8000-000000000021".into();
    event.timestamp = "2026-01-02T03:04:05.000000001Z".parse().expect("time");
    if let Value::Object(data) = json!({"sku": "A-1", "qty": 2}) {
        event.data = data;
    }
    event.metadata = [("correlationId".to_string(), "corr-3".to_string())].into();
    Fixture {
        checkpoint: LogPosition {
            sequence: 42,
            index: 1,
        },
        partition_checkpoint: LogPosition {
            sequence: 17,
            index: 0,
        },
        parked: ParkedEvent {
            position: LogPosition {
                sequence: 40,
                index: 2,
            },
            event,
            error: "handler failed: \"boom\"".into(),
            attempts: 5,
        },
        status: ReportedStatus {
            position_kept_by: PositionKeeper::Sink,
            position: Some(LogPosition {
                sequence: 100,
                index: 0,
            }),
            head: Some(LogPosition {
                sequence: 120,
                index: 3,
            }),
            lag: Some(20),
            handled: 100,
            parked: 1,
            last_error: Some("sink timeout".into()),
            paused: false,
            reported_at: "2026-01-02T03:04:05.500Z".parse().expect("time"),
            interval_ms: 5000,
        },
    }
}

async fn open(client: &async_nats::Client) -> NatsProjectionStore {
    NatsProjectionStore::open(client.clone(), BUCKET, StorageKind::Memory)
        .await
        .expect("open the projection store")
}

async fn raw_bucket(client: &async_nats::Client) -> async_nats::jetstream::kv::Store {
    async_nats::jetstream::new(client.clone())
        .get_key_value(BUCKET)
        .await
        .expect("the bucket")
}

#[tokio::test]
async fn golden_current_release_is_what_the_store_writes() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = open(&client).await;
    let f = expected();
    store.save_checkpoint("orders", f.checkpoint).await.unwrap();
    store
        .save_checkpoint("orders.p3", f.partition_checkpoint)
        .await
        .unwrap();
    store.park("orders", &f.parked).await.unwrap();
    store.request_replay("orders").await.unwrap();
    store.report_status("audit", &f.status).await.unwrap();
    assert_eq!(store.partition_count("workers", 4).await.unwrap(), 4);
    store.heartbeat("workers", "w-1").await.unwrap();
    assert!(store
        .write_lease("workers", 2, Some("w-1"), 0)
        .await
        .unwrap()
        .is_some());

    let kv = raw_bucket(&client).await;
    let mut keys = kv.keys().await.unwrap();
    let mut written = Entries::new();
    while let Some(key) = keys.next().await {
        let key = key.unwrap();
        let value = kv.get(&key).await.unwrap().expect("a value");
        written.insert(key, value.to_vec());
    }
    golden().pin(FILE, &render(&written));
}

#[tokio::test]
async fn golden_every_release_reads_back() {
    let f = expected();
    let golden = golden();
    for release in golden.releases() {
        let server = NatsServer::start().expect("nats-server");
        let client = async_nats::connect(server.url()).await.unwrap();
        // The store creates the bucket; the golden entries go in raw.
        drop(open(&client).await);
        let kv = raw_bucket(&client).await;
        for (key, value) in read_entries(&golden, &release) {
            kv.put(key, value.into()).await.unwrap();
        }
        let store = open(&client).await;
        let r = &release;
        assert_eq!(
            store.checkpoint("orders").await.unwrap(),
            Some(f.checkpoint),
            "{r}"
        );
        assert_eq!(
            store.checkpoint("orders.p3").await.unwrap(),
            Some(f.partition_checkpoint),
            "{r}"
        );
        assert_eq!(
            store.parked("orders").await.unwrap(),
            std::slice::from_ref(&f.parked),
            "{r}"
        );
        assert_eq!(
            store.reported_status("audit").await.unwrap().as_ref(),
            Some(&f.status),
            "{r}"
        );
        assert_eq!(store.partition_count("workers", 9).await.unwrap(), 4, "{r}");
        let workers: Vec<String> = store
            .workers("workers")
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.worker)
            .collect();
        assert_eq!(workers, ["w-1"], "{r}");
        let lease = store.lease("workers", 2).await.unwrap();
        assert_eq!(lease.owner.as_deref(), Some("w-1"), "{r}");
        assert_eq!(store.projections().await.unwrap(), ["orders", "orders.p3"]);
        let summaries = store.summaries().await.unwrap();
        let audit = summaries.iter().find(|s| s.name == "audit").expect("audit");
        assert_eq!(audit.kept_by, PositionKeeper::Sink, "{r}");
        assert_eq!(audit.reported.as_ref(), Some(&f.status), "{r}");
        let orders = summaries
            .iter()
            .find(|s| s.name == "orders")
            .expect("orders");
        assert_eq!(
            (orders.kept_by, orders.position, orders.parked),
            (PositionKeeper::Store, Some(f.checkpoint), 1),
            "{r}"
        );
        assert!(store.take_replay_request("orders").await.unwrap(), "{r}");
    }
}

/// The bucket records its format: a bucket kept before the record existed reads as format 1
/// and gets the record; a newer format is refused before anything is read or written, and a
/// malformed record is a decoding error.
#[tokio::test]
async fn the_bucket_records_its_format_and_a_newer_one_is_refused() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    drop(open(&client).await);
    let kv = raw_bucket(&client).await;
    let format = kv.get("format").await.unwrap().expect("the format record");
    assert_eq!(
        &format[..],
        format!("{{\"version\":{PROJECTION_BUCKET_FORMAT}}}").as_bytes()
    );

    // A bucket without the record, as the first release kept it: read, and the record added.
    kv.purge("format").await.unwrap();
    let f = expected();
    kv.put(
        "cp.orders",
        serde_json::to_vec(&f.checkpoint).unwrap().into(),
    )
    .await
    .unwrap();
    let store = open(&client).await;
    assert_eq!(
        store.checkpoint("orders").await.unwrap(),
        Some(f.checkpoint)
    );
    assert!(kv.get("format").await.unwrap().is_some());

    // A newer release's format: refused, with nothing written.
    kv.put("format", r#"{"version":2}"#.into()).await.unwrap();
    let revision = kv.status().await.unwrap().values();
    let refused = NatsProjectionStore::open(client.clone(), BUCKET, StorageKind::Memory).await;
    match refused {
        Err(aether_core::Error::Unsupported { reason, .. }) => {
            assert!(reason.contains("format 2"), "{reason}")
        }
        other => panic!("a newer format must be refused: {other:?}"),
    }
    assert_eq!(kv.status().await.unwrap().values(), revision);

    // A malformed record.
    kv.put("format", "two".into()).await.unwrap();
    let malformed = NatsProjectionStore::open(client.clone(), BUCKET, StorageKind::Memory).await;
    assert!(
        matches!(malformed, Err(aether_core::Error::Decoding(_))),
        "{malformed:?}"
    );
}
