//! The two wire forms against a real server: buses writing frames and buses writing headers
//! understand each other, a durable stream written in the older form stays readable, gaps are
//! found in either form, and a damaged frame is skipped and counted.
#![cfg(feature = "nats")]

use aether_bus::{
    BusStreamConfig, NatsBusConfig, StartFrom, WireFormat, HEADER_PUBLISHER, HEADER_SEQUENCE,
};
use aether_core::{Delivery, Event, EventBroadcaster, SubscriptionFilter};
use futures::StreamExt;

use crate::nats_support::*;

/// A frame as the framed form lays it out (see `WireFormat`), built by hand so that the test
/// checks the documented layout, not the library's encoder.
fn frame(publisher: &str, seq: u64, event: &Event) -> Vec<u8> {
    let mut out = vec![0xAE, 1, publisher.len() as u8];
    out.extend_from_slice(publisher.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&event.to_json_bytes().unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_and_header_buses_understand_each_other() {
    let server = server();
    let legacy = bus_with(
        &server,
        NatsBusConfig::default().wire_format(WireFormat::Headers),
    )
    .await;
    let framed = bus(&server).await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut wire = raw.subscribe("aether.events.orders").await.unwrap();
    raw.flush().await.unwrap();
    let mut at_legacy = legacy.subscribe("orders").await.unwrap();
    let mut at_framed = framed.subscribe("orders").await.unwrap();

    legacy.publish("orders", &ev("A", "o", 1)).await.unwrap();
    framed.publish("orders", &ev("B", "o", 2)).await.unwrap();
    legacy.publish("orders", &ev("C", "o", 3)).await.unwrap();
    framed.publish("orders", &ev("D", "o", 4)).await.unwrap();

    // Every subscriber gets every event once: its own bus's directly, the other's over NATS
    // (the echo of its own is recognised in both forms).
    for sub in [&mut at_legacy, &mut at_framed] {
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_event(sub).await.event_type.clone());
        }
        got.sort();
        assert_eq!(got, ["A", "B", "C", "D"]);
    }
    // No duplicate follows: once the server has every echo, a marker from the other bus (over
    // NATS, so behind the echoes) is the next thing each subscriber sees.
    legacy.client().flush().await.unwrap();
    framed.client().flush().await.unwrap();
    assert_nothing_before_marker(&framed, "orders", &mut at_legacy).await;
    assert_nothing_before_marker(&legacy, "orders", &mut at_framed).await;

    // On the wire: headers and plain JSON from one, a frame without headers from the other.
    // The two buses use two connections, so the server may have taken them in either order.
    let mut with_headers = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(DEADLINE, wire.next())
            .await
            .unwrap()
            .unwrap();
        match &m.headers {
            Some(h) => with_headers.push((h.clone(), m.payload.clone())),
            None => frames.push(m.payload.clone()),
        }
    }
    assert_eq!((with_headers.len(), frames.len()), (2, 2));
    for (i, (headers, payload)) in with_headers.iter().enumerate() {
        assert_eq!(
            headers.get(HEADER_PUBLISHER).map(|v| v.as_str()),
            Some(legacy.publisher_id())
        );
        let seq = (i + 1).to_string();
        assert_eq!(
            headers.get(HEADER_SEQUENCE).map(|v| v.as_str()),
            Some(seq.as_str())
        );
        let event = Event::from_json_bytes(payload).unwrap();
        assert_eq!(event.event_type, ["A", "C"][i]);
    }
    for (i, payload) in frames.iter().enumerate() {
        let event = Event::from_json_bytes(&payload[3 + 32 + 8..]).unwrap();
        assert_eq!(event.event_type, ["B", "D"][i]);
        let expected = frame(framed.publisher_id(), i as u64 + 1, &event);
        assert_eq!(&payload[..], &expected[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_found_in_either_form_and_damaged_frames_are_skipped() {
    let server = server();
    let subscriber = bus(&server).await;
    let mut sub = subscriber.subscribe("orders").await.unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let publish_headers = |seq: u64, version: u64| {
        let raw = raw.clone();
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert(HEADER_PUBLISHER, "old-bus");
            h.insert(HEADER_SEQUENCE, seq.to_string().as_str());
            let json = ev("Old", "o", version).to_json_bytes().unwrap();
            raw.publish_with_headers("aether.events.orders", h, json.into())
                .await
                .unwrap();
        }
    };
    let publish_frame = |seq: u64, version: u64| {
        let raw = raw.clone();
        async move {
            raw.publish(
                "aether.events.orders",
                frame("new-bus", seq, &ev("New", "o", version)).into(),
            )
            .await
            .unwrap();
        }
    };

    publish_headers(1, 1).await;
    publish_headers(3, 2).await; // 2 never arrives
    publish_frame(1, 3).await;
    // A frame of a version this bus does not know, then one cut short: skipped, counted.
    raw.publish("aether.events.orders", vec![0xAE, 9, 0].into())
        .await
        .unwrap();
    raw.publish("aether.events.orders", vec![0xAE, 1, 7, b'x'].into())
        .await
        .unwrap();
    publish_frame(4, 4).await; // 2 and 3 never arrive
    raw.flush().await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 6 {
        match next(&mut sub).await {
            Delivery::Event(e) => seen.push(format!("{}{}", e.event_type, e.version)),
            Delivery::Lagged(n) => seen.push(format!("lag{n}")),
        }
    }
    assert_eq!(seen, ["Old1", "lag1", "Old2", "New3", "lag2", "New4"]);
    wait_for(|| async { subscriber.metrics().transport_errors >= 2 }).await;
    assert_eq!(subscriber.metrics().transport_errors, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_written_with_headers_stays_readable() {
    let server = server();
    let stream = || NatsBusConfig::default().jetstream(BusStreamConfig::default());
    let old = bus_with(&server, stream().wire_format(WireFormat::Headers)).await;
    for v in 1..=3 {
        old.publish("orders", &ev("Old", "o", v)).await.unwrap();
    }
    old.close().await.unwrap();
    let new = bus_with(&server, stream()).await;
    for v in 4..=5 {
        new.publish("orders", &ev("New", "o", v)).await.unwrap();
    }
    let reader = bus_with(&server, stream()).await;
    let mut durable = reader
        .subscribe_durable("orders", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap();
    let mut versions = Vec::new();
    for _ in 0..5 {
        let d = tokio::time::timeout(DEADLINE, durable.recv())
            .await
            .expect("timed out reading the stream")
            .expect("durable subscription ended");
        versions.push((d.event.event_type.clone(), d.event.version));
    }
    assert_eq!(
        versions,
        [
            ("Old".to_string(), 1),
            ("Old".to_string(), 2),
            ("Old".to_string(), 3),
            ("New".to_string(), 4),
            ("New".to_string(), 5)
        ]
    );
    assert_eq!(reader.metrics().transport_errors, 0);
}
