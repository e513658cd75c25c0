//! Golden files of the bus's wire forms (`tests/golden/<release>/`).
//!
//! The rule: a released golden file is never edited. A change to what the bus sends adds a
//! new release directory next to the old ones, and every old directory must keep being read
//! back to the same events, so that buses of two releases understand each other during a
//! rolling upgrade (and durable bus streams stay readable). The files of the current release
//! (the crate's `major.minor`) must also be exactly what the current code sends, so that no
//! format change goes unnoticed.
//!
//! Each `.msg` file is one message: its subject on the first line, then its headers
//! (`Name: value`, sorted by name), an empty line, and the payload's exact bytes. `01-framed`
//! is the framed form (the default), `02-headers` the form with the origin in headers (what a
//! bus writes with `WireFormat::Headers`, and what every bus wrote before frames). Both come
//! from publisher [`PUBLISHER`], with sequence numbers 7 and 8. The expected events are
//! written out below, not produced by the encoder under test. Every release's files hold the
//! same fixture; should a later release's fixture differ, make `expected` depend on the
//! release.
//!
//! `AETHER_BLESS_GOLDEN=1` rewrites the current release's files from what the bus encodes;
//! older directories are never written. Without it, the test never writes.
#![cfg(feature = "nats")]

use aether_bus::{NatsBusConfig, WireFormat, HEADER_PUBLISHER, HEADER_SEQUENCE};
use aether_core::{Event, EventBroadcaster};
use aether_testkit::golden::{GoldenFiles, GoldenMessage};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::nats_support::*;

const PUBLISHER: &str = "golden-publisher";
const NAMESPACE: &str = "orders";
const SUBJECT: &str = "aether.events.orders";
const FRAMED: &str = "01-framed.msg";
const HEADERS: &str = "02-headers.msg";

fn golden() -> GoldenFiles {
    GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"))
}

/// The headers of a golden message, to publish it raw.
fn header_map(m: &GoldenMessage) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (name, values) in &m.headers {
        for value in values {
            h.append(name.as_str(), value.as_str());
        }
    }
    h
}

/// The two events of the fixture, written out by hand: the framed message's and the header
/// message's.
fn expected() -> (Event, Event) {
    let mut placed = Event::new("OrderPlaced", "order-1", 1).with_actor_type("order");
    placed.id = "00000000-0000-4000-8000-00000000000a".into();
    placed.timestamp = "2026-01-02T03:04:05.123456789Z".parse().expect("time");
    if let Value::Object(data) = json!({"sku": "A-1", "qty": 2, "price": 9.5, "gift": false}) {
        placed.data = data;
    }
    placed.metadata = [("correlationId", "corr-9"), ("traceparent", "00-ab-cd-01")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut shipped = Event::new("OrderShipped", "order-1", 2);
    shipped.id = "00000000-0000-4000-8000-00000000000b".into();
    shipped.timestamp = "2026-01-02T03:05:00Z".parse().expect("time");
    (placed, shipped)
}

/// The files of the current release as the current code encodes the fixture.
#[cfg(feature = "fuzzing")]
fn encoded_now() -> (GoldenMessage, GoldenMessage) {
    let (placed, shipped) = expected();
    let framed = GoldenMessage {
        subject: SUBJECT.into(),
        headers: Default::default(),
        payload: aether_bus::fuzzing::encode_frame(PUBLISHER, 7, &placed).expect("frame"),
    };
    let headers = GoldenMessage {
        subject: SUBJECT.into(),
        headers: [
            (HEADER_PUBLISHER.to_string(), vec![PUBLISHER.to_string()]),
            (HEADER_SEQUENCE.to_string(), vec!["8".to_string()]),
        ]
        .into(),
        payload: shipped.to_json_bytes().expect("json"),
    };
    (framed, headers)
}

#[cfg(feature = "fuzzing")]
#[test]
fn golden_current_release_is_what_the_bus_encodes() {
    let (framed, headers) = encoded_now();
    let golden = golden();
    golden.pin(FRAMED, &framed.render());
    golden.pin(HEADERS, &headers.render());
}

#[cfg(feature = "fuzzing")]
#[test]
fn golden_every_release_parses_without_a_server() {
    let (placed, shipped) = expected();
    let golden = golden();
    for release in golden.releases() {
        for (name, event, seq) in [(FRAMED, &placed, 7), (HEADERS, &shipped, 8)] {
            let m = golden.read_message(&release, name);
            assert_eq!(m.subject, SUBJECT, "{release}/{name}");
            let (origin, json) = aether_bus::fuzzing::parse_message(
                &m.payload,
                m.header(HEADER_PUBLISHER),
                m.header(HEADER_SEQUENCE),
            )
            .unwrap_or_else(|e| panic!("{release}/{name}: {e}"));
            assert_eq!(
                origin,
                Some((PUBLISHER.to_string(), seq)),
                "{release}/{name}"
            );
            assert_eq!(
                &Event::from_json_bytes(&json).expect("event"),
                event,
                "{release}/{name}"
            );
        }
    }
}

/// Every release's messages, sent raw, reach a subscriber of the current bus as the expected
/// events; and a bus of each wire form puts the expected bytes on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_every_release_reads_back_through_a_bus() {
    let (placed, shipped) = expected();
    let golden = golden();
    let releases = golden.releases();
    let server = server();
    let raw = async_nats::connect(server.url()).await.unwrap();
    for release in &releases {
        // A bus per release: each release's messages come from the same publisher and
        // sequence numbers, which one subscription would take for repeats.
        let subscriber = bus(&server).await;
        assert_eq!(subscriber.subject_for(NAMESPACE).unwrap(), SUBJECT);
        let mut sub = subscriber.subscribe(NAMESPACE).await.unwrap();
        subscriber.client().flush().await.unwrap();
        for name in [FRAMED, HEADERS] {
            let m = golden.read_message(release, name);
            if m.headers.is_empty() {
                raw.publish(m.subject.clone(), m.payload.clone().into())
                    .await
                    .unwrap();
            } else {
                raw.publish_with_headers(m.subject.clone(), header_map(&m), m.payload.into())
                    .await
                    .unwrap();
            }
        }
        raw.flush().await.unwrap();
        assert_eq!(*next_event(&mut sub).await, placed, "{release}/{FRAMED}");
        assert_eq!(*next_event(&mut sub).await, shipped, "{release}/{HEADERS}");
        assert_eq!(subscriber.metrics().transport_errors, 0, "{release}");
    }

    // What real buses send: the golden bytes but for their own publisher id and sequence.
    let golden_framed = golden.read_message(golden.current(), FRAMED);
    let golden_headers = golden.read_message(golden.current(), HEADERS);
    let mut wire = raw.subscribe(SUBJECT).await.unwrap();
    raw.flush().await.unwrap();
    let framed = bus(&server).await;
    framed.publish(NAMESPACE, &placed).await.unwrap();
    let m = tokio::time::timeout(DEADLINE, wire.next())
        .await
        .unwrap()
        .unwrap();
    assert!(m.headers.is_none(), "the framed form has no headers");
    let id = framed.publisher_id().as_bytes();
    let mut want = vec![0xAE, 1, u8::try_from(id.len()).unwrap()];
    want.extend_from_slice(id);
    want.extend_from_slice(&1u64.to_be_bytes());
    let golden_prefix = 3 + PUBLISHER.len() + 8;
    want.extend_from_slice(&golden_framed.payload[golden_prefix..]);
    assert_eq!(&golden_framed.payload[..2], &[0xAE, 1]);
    assert_eq!(m.payload.to_vec(), want, "framed bytes on the wire");

    let legacy = bus_with(
        &server,
        NatsBusConfig::default().wire_format(WireFormat::Headers),
    )
    .await;
    legacy.publish(NAMESPACE, &shipped).await.unwrap();
    let m = tokio::time::timeout(DEADLINE, wire.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.payload.to_vec(),
        golden_headers.payload,
        "header-form payload"
    );
    let h = m.headers.expect("the header form has headers");
    let names: Vec<String> = h
        .iter()
        .map(|(n, _)| AsRef::<str>::as_ref(n).to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let golden_names: Vec<&String> = golden_headers.headers.keys().collect();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        golden_names,
        "header names"
    );
    assert_eq!(
        h.get(HEADER_PUBLISHER).map(|v| v.as_str()),
        Some(legacy.publisher_id())
    );
    assert_eq!(h.get(HEADER_SEQUENCE).map(|v| v.as_str()), Some("1"));
}
