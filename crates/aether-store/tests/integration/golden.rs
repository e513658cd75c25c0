//! Golden files of the JetStream store's stored messages (`tests/golden/<release>/`).
//!
//! The rule: a released golden file is never edited. A change to what the store writes adds
//! a new release directory next to the old ones, and every old directory must keep reading
//! back to the same events and snapshot, so that a rolling upgrade can read what the previous
//! release wrote. The files of the current release (the crate's `major.minor`) must also be
//! exactly what the current code writes, so that no format change goes unnoticed.
//!
//! Each `.msg` file is one stored message: its subject on the first line, then its `Aether-*`
//! headers (`Name: value`, sorted by name), an empty line, and the payload's exact bytes.
//! The files of a directory are published raw, in file-name order, into a stream the store
//! created, and read back through the store; the expected values are written out below,
//! field by field, not produced by the encoder under test. Every release's files hold the
//! same fixture; should a later release's fixture differ, make `expected` depend on the
//! release.
//!
//! `AETHER_BLESS_GOLDEN=1` rewrites the current release's files from what the store writes;
//! older directories are never written. Without it, the test never writes.
#![cfg(feature = "nats")]

use std::collections::BTreeMap;

use aether_core::{ActorKey, Event, EventLog, EventStore, Snapshot, SnapshotStore, Transaction};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::golden::{GoldenFiles, GoldenMessage};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::jetstream::{connect, open, start};

/// The golden files of a release, in the order the fixture writes them.
const FILES: [&str; 6] = [
    "01-event.msg",
    "02-batch.msg",
    "03-untyped-event.msg",
    "04-snapshot.msg",
    "05-transaction-1.msg",
    "06-transaction-2.msg",
];

fn golden() -> GoldenFiles {
    GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"))
}

/// One stored message as a golden file holds it, from what the stream stores.
fn from_stored(m: &async_nats::jetstream::message::StreamMessage) -> GoldenMessage {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in m.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Aether-") {
            headers
                .entry(name.to_string())
                .or_default()
                .extend(values.iter().map(|v| v.as_str().to_string()));
        }
    }
    GoldenMessage {
        subject: m.subject.to_string(),
        headers,
        payload: m.payload.to_vec(),
    }
}

/// The `.msg` files of a release directory, in file-name order.
fn messages(golden: &GoldenFiles, release: &str) -> Vec<(String, GoldenMessage)> {
    golden
        .files(release)
        .into_iter()
        .filter(|name| name.ends_with(".msg"))
        .map(|name| {
            let m = golden.read_message(release, &name);
            (name, m)
        })
        .collect()
}

// The fixture, written out by hand.

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("timestamp")
        .with_timezone(&Utc)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

#[allow(clippy::too_many_arguments)]
fn event(
    id: &str,
    event_type: &str,
    actor_type: Option<&str>,
    actor_id: &str,
    version: u64,
    data: Value,
    timestamp: &str,
    metadata: &[(&str, &str)],
) -> Event {
    Event {
        id: id.into(),
        event_type: event_type.into(),
        actor_type: actor_type.map(str::to_string),
        actor_id: actor_id.into(),
        version,
        data: object(data),
        timestamp: at(timestamp),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

const TXN_ID: &str = "txn-golden-1";

struct Fixture {
    /// Saved with `save_event`: a typed actor's first event.
    opened: Event,
    /// Saved together with `save_events`: one message holding an array.
    batch: Vec<Event>,
    /// An untyped actor's event (the layout of streams written before actor types).
    untyped: Event,
    snapshot: Snapshot,
    /// Committed in transaction [`TXN_ID`]: one message per event.
    txn: Vec<Event>,
}

fn expected() -> Fixture {
    let opened = event(
        "00000000-0000-4000-8000-000000000001",
        "AccountOpened",
        Some("account"),
        "acct-1",
        1,
        json!({"owner": "Ada", "limit": 100, "tags": ["vip"], "address": {"city": "Lyon"}}),
        "2026-01-02T03:04:05.123456789Z",
        &[("correlationId", "corr-1"), ("userId", "u-7")],
    );
    let batch = vec![
        event(
            "00000000-0000-4000-8000-000000000002",
            "Deposited",
            Some("account"),
            "acct-1",
            2,
            json!({"amount": 50}),
            "2026-01-02T03:04:06Z",
            &[],
        ),
        event(
            "00000000-0000-4000-8000-000000000003",
            "Withdrawn",
            Some("account"),
            "acct-1",
            3,
            json!({"amount": 20.5, "note": "caf\u{e9} \"quoted\""}),
            "2026-01-02T03:04:07.5Z",
            &[("causationId", "00000000-0000-4000-8000-000000000002")],
        ),
    ];
    let untyped = event(
        "00000000-0000-4000-8000-000000000004",
        "Legacy",
        None,
        "legacy-1",
        1,
        json!({}),
        "2025-12-31T23:59:59Z",
        &[],
    );
    let snapshot = Snapshot {
        actor_type: Some("account".into()),
        actor_id: "acct-1".into(),
        version: 3,
        state: object(json!({"owner": "Ada", "balance": 29.5})),
        timestamp: at("2026-01-02T03:04:08Z"),
        schema_version: Some(2),
        command_ids: Some(vec!["cmd-1".into(), "cmd-2".into()]),
    };
    let txn = vec![
        event(
            "00000000-0000-4000-8000-000000000005",
            "TransferredOut",
            Some("account"),
            "acct-1",
            4,
            json!({"amount": 10, "to": "acct-2"}),
            "2026-01-02T03:04:09Z",
            &[("correlationId", "transfer-1")],
        ),
        event(
            "00000000-0000-4000-8000-000000000006",
            "TransferredIn",
            Some("account"),
            "acct-2",
            1,
            json!({"amount": 10, "from": "acct-1"}),
            "2026-01-02T03:04:09Z",
            &[("correlationId", "transfer-1")],
        ),
    ];
    Fixture {
        opened,
        batch,
        untyped,
        snapshot,
        txn,
    }
}

fn acct(id: &str) -> ActorKey<'_> {
    ActorKey::new("account", id)
}

/// Writes the fixture through the store, in the order of the golden files; returns whether
/// the transaction was written (servers before 2.12 refuse it, typed, and write nothing).
async fn write_fixture(store: &JetStreamEventStore, f: &Fixture) -> bool {
    store.save_event(&f.opened).await.expect("save_event");
    store
        .save_events("acct-1", &f.batch)
        .await
        .expect("save_events");
    store.save_event(&f.untyped).await.expect("untyped event");
    store
        .save_snapshot(&f.snapshot)
        .await
        .expect("save_snapshot");
    let txn = Transaction::with_id(TXN_ID)
        .append("acct-1", 3, vec![f.txn[0].clone()])
        .append("acct-2", 0, vec![f.txn[1].clone()]);
    match store.commit(&txn).await {
        Ok(_) => true,
        Err(aether_core::Error::Unsupported { .. }) => false,
        Err(e) => panic!("commit: {e:?}"),
    }
}

/// Every message of the store's stream, in order.
async fn stored_messages(store: &JetStreamEventStore) -> Vec<GoldenMessage> {
    let stream = store
        .context()
        .get_stream(store.stream_name())
        .await
        .expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("raw message");
        out.push(from_stored(&m));
    }
    out
}

#[tokio::test]
async fn golden_current_release_is_what_the_store_writes() {
    let server = start();
    let store = open(&server, JetStreamConfig::default()).await;
    let f = expected();
    let transactions = write_fixture(&store, &f).await;
    assert_eq!(transactions, server.version().at_least(2, 12));
    // Without transactions (before 2.12) the files up to the snapshot are compared.
    let files = if transactions {
        &FILES[..]
    } else {
        &FILES[..4]
    };
    // The subjects are part of the layout: pin them along with the messages.
    assert_eq!(
        store.event_subject(acct("acct-1")),
        format!(
            "AETHER_EVENTS.events.account.{}.{}",
            aether_placement::bucket_for("acct-1"),
            aether_nats::subject::encode_actor_id("acct-1")
        )
    );
    let written = stored_messages(&store).await;
    assert_eq!(
        written.len(),
        files.len(),
        "messages written by the fixture"
    );
    let golden = golden();
    for (name, m) in files.iter().zip(&written) {
        golden.pin(name, &m.render());
    }
    // A file nothing writes any more would still be published by the read-back test.
    let current = golden.current();
    assert_eq!(
        messages(&golden, current)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>(),
        FILES,
        "golden files of release {current}"
    );
}

#[tokio::test]
async fn golden_every_release_reads_back() {
    let f = expected();
    let golden = golden();
    for release in golden.releases() {
        let server = start();
        // The store creates the stream; the golden messages go in raw.
        let store = open(&server, JetStreamConfig::default()).await;
        let js = async_nats::jetstream::new(connect(&server).await);
        for (_, m) in messages(&golden, &release) {
            let mut headers = async_nats::HeaderMap::new();
            for (name, values) in &m.headers {
                for v in values {
                    headers.append(name.as_str(), v.as_str());
                }
            }
            js.publish_with_headers(m.subject.clone(), headers, m.payload.clone().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        // A fresh store, with nothing cached from the writes above.
        drop(store);
        let store = open(&server, JetStreamConfig::default()).await;
        let mut acct1 = vec![f.opened.clone()];
        acct1.extend(f.batch.iter().cloned());
        acct1.push(f.txn[0].clone());
        assert_eq!(
            store.events_of(acct("acct-1"), 0).await.unwrap(),
            acct1,
            "{release}: acct-1"
        );
        assert_eq!(
            store.events_of(acct("acct-2"), 0).await.unwrap(),
            std::slice::from_ref(&f.txn[1]),
            "{release}: acct-2"
        );
        assert_eq!(
            store.get_events("legacy-1", 0).await.unwrap(),
            std::slice::from_ref(&f.untyped),
            "{release}: legacy-1"
        );
        assert_eq!(store.latest_version_of(acct("acct-1")).await.unwrap(), 4);
        assert_eq!(store.get_latest_version("legacy-1").await.unwrap(), 1);
        assert_eq!(
            store.latest_snapshot_of(acct("acct-1")).await.unwrap(),
            Some(f.snapshot.clone()),
            "{release}: snapshot"
        );
        let snap = store
            .snapshot_and_events_of(acct("acct-1"), &|s: Option<&Snapshot>| {
                s.map_or(1, |s| s.version + 1)
            })
            .await
            .unwrap();
        assert_eq!(snap.snapshot.as_ref(), Some(&f.snapshot));
        assert_eq!(
            snap.events,
            std::slice::from_ref(&f.txn[0]),
            "{release}: after snapshot"
        );
        // The global log, in the order the messages were stored.
        let log: Vec<Event> = store
            .read_after(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.event)
            .collect();
        let mut all = vec![f.opened.clone()];
        all.extend(f.batch.iter().cloned());
        all.push(f.untyped.clone());
        all.extend(f.txn.iter().cloned());
        assert_eq!(log, all, "{release}: log");
        assert_eq!(store.malformed_events(), 0, "{release}");
    }
}
