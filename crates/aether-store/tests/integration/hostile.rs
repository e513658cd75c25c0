//! Hostile input: names with subject syntax, control characters and extreme lengths, extreme
//! versions, oversized payloads, and malformed bytes in the stream. Each input either works
//! safely (round-trips and stays with its own actor or namespace) or is refused with a typed
//! error; no input panics a decoder or reaches another actor's data.
#![cfg(feature = "nats")]

use std::collections::HashSet;
use std::time::Duration;

use aether_core::{Error, Event, EventStore, EventStoreWithErrors, Snapshot, SnapshotStore};
use aether_nats::subject::{decode_actor_id, encode_actor_id, MAX_ACTOR_ID_BYTES};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use proptest::prelude::*;

/// Names that mean something to NATS subjects, JSON, terminals or protocol parsers.
fn hostile_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "a.b",
        "a.*",
        "a.>",
        "*",
        ">",
        ".",
        "..",
        "a..b",
        ".leading",
        "trailing.",
        " ",
        "a b",
        "\t",
        "a\tb\nc\r\n",
        "\0",
        "a\0b",
        "\u{7f}\u{1b}[31m",
        "PUB x 1\r\nhi\r\n",
        "\"quoted\" \\ back",
        "ключ",
        "🦀.>",
        "$JS.API.>",
        "_INBOX.*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(MAX_ACTOR_ID_BYTES));
    v.push("é".repeat(MAX_ACTOR_ID_BYTES / 2));
    v
}

async fn store_on(
    server: &NatsServer,
    config: JetStreamConfig,
) -> Result<JetStreamEventStore, Error> {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamEventStore::new(client, config.request_timeout(Duration::from_secs(5))).await
}

#[tokio::test]
async fn hostile_actor_ids_round_trip_and_stay_isolated() {
    let server = NatsServer::start().unwrap();
    let store = store_on(&server, JetStreamConfig::default()).await.unwrap();
    let names = hostile_names();
    // Also plain ids the wildcard-looking ones would match if used verbatim as subjects.
    let mut ids = names.clone();
    ids.extend(["a", "a.c", "b"].map(String::from));

    for id in &ids {
        store
            .save_event(&Event::new("Opened", id.as_str(), 1).with_field("owner", id.as_str()))
            .await
            .unwrap_or_else(|e| panic!("saving for {id:?}: {e:?}"));
        store
            .save_events(
                id,
                &[
                    Event::new("Moved", id.as_str(), 2),
                    Event::new("Moved", id.as_str(), 3),
                ],
            )
            .await
            .unwrap();
        store
            .save_snapshot(&Snapshot::new(
                id.as_str(),
                3,
                serde_json::json!({ "owner": id })
                    .as_object()
                    .cloned()
                    .unwrap(),
            ))
            .await
            .unwrap();
    }
    for id in &ids {
        let events = store.get_events(id, 0).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 3],
            "history of {id:?}"
        );
        assert!(
            events.iter().all(|e| &e.actor_id == id),
            "{id:?} sees another actor"
        );
        assert_eq!(events[0].data["owner"], id.as_str());
        assert_eq!(store.get_latest_version(id).await.unwrap(), 3);
        let snap = store.get_latest_snapshot(id).await.unwrap().unwrap();
        assert_eq!((&snap.actor_id, snap.version), (id, 3));
        assert!(store
            .save_event(&Event::new("Moved", id.as_str(), 3))
            .await
            .unwrap_err()
            .is_version_conflict());
    }
    // Nothing else was stored: 3 messages per actor (2 saves of events, 1 snapshot).
    let info = store.stream_info().await.unwrap();
    assert_eq!(info.state.messages, 3 * ids.len() as u64);

    // Refused with a typed error, nothing written.
    let too_long = "x".repeat(10 * 1024);
    for (id, what) in [("", "empty"), (too_long.as_str(), "10 KB")] {
        let err = store.save_event(&Event::new("T", id, 1)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{what} id: {err:?}");
        let err = store.get_events(id, 0).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{what} id: {err:?}");
        let err = store.get_latest_version(id).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{what} id: {err:?}");
        let err = store
            .save_snapshot(&Snapshot::new(id, 1, Default::default()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{what} id: {err:?}");
    }
    let one_over = "x".repeat(MAX_ACTOR_ID_BYTES + 1);
    assert!(matches!(
        store
            .save_event(&Event::new("T", one_over.as_str(), 1))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        store.stream_info().await.unwrap().state.messages,
        3 * ids.len() as u64
    );
}

#[tokio::test]
async fn hostile_event_types_round_trip_and_empty_is_refused() {
    let server = NatsServer::start().unwrap();
    let store = store_on(&server, JetStreamConfig::default()).await.unwrap();
    let mut types = hostile_names();
    types.push("T".repeat(10 * 1024));
    for (i, t) in types.iter().enumerate() {
        store
            .save_event(&Event::new(t.as_str(), "typed", i as u64 + 1))
            .await
            .unwrap_or_else(|e| panic!("event type {t:?}: {e:?}"));
    }
    let events = store.get_events("typed", 0).await.unwrap();
    let got: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let want: Vec<&str> = types.iter().map(String::as_str).collect();
    assert_eq!(got, want);

    let err = store
        .save_event(&Event::new("", "typed", 1000))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err = store
        .save_events(
            "typed",
            &[
                Event::new("ok", "typed", 1000),
                Event::new("", "typed", 1001),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(
        store.get_latest_version("typed").await.unwrap(),
        types.len() as u64
    );
}

#[tokio::test]
async fn hostile_namespaces_work_in_their_own_stream_or_are_refused() {
    let server = NatsServer::start().unwrap();
    // Distinct after sanitising (see `sanitize_stream_name`), so each must be its own world.
    let namespaces = [
        "tenant.a",
        "tenant.*b",
        "tenant.>c",
        "ten ant d",
        "tab\te",
        "nul\0f",
        "ключg",
        ".h",
        ">",
        "i.j.k.",
    ];
    let sanitised: HashSet<String> = namespaces
        .iter()
        .map(|n| aether_nats::subject::sanitize_stream_name(n))
        .collect();
    assert_eq!(sanitised.len(), namespaces.len(), "test namespaces collide");

    let mut stores = Vec::new();
    for ns in namespaces {
        let store = store_on(&server, JetStreamConfig::default().namespace(ns))
            .await
            .unwrap_or_else(|e| panic!("namespace {ns:?}: {e:?}"));
        assert!(!store
            .stream_name()
            .contains(['.', '*', '>', ' ', '\t', '\0']));
        store
            .save_event(&Event::new("Owned", "shared", 1).with_field("ns", ns))
            .await
            .unwrap();
        stores.push((ns, store));
    }
    // The same actor id in every namespace: each sees only its own event.
    for (ns, store) in &stores {
        let events = store.get_events("shared", 0).await.unwrap();
        assert_eq!(events.len(), 1, "namespace {ns:?}");
        assert_eq!(
            events[0].data["ns"], *ns,
            "namespace {ns:?} sees another's event"
        );
        assert!(store
            .save_event(&Event::new("Owned", "shared", 1))
            .await
            .unwrap_err()
            .is_version_conflict());
    }
    // A store without namespace shares none of it.
    let plain = store_on(&server, JetStreamConfig::default()).await.unwrap();
    assert_eq!(plain.get_latest_version("shared").await.unwrap(), 0);

    // Empty means no namespace; a 10 KB namespace either works or is refused with a typed
    // error (the server limits stream names), never a panic or a wrong stream.
    let empty = store_on(&server, JetStreamConfig::default().namespace(""))
        .await
        .unwrap();
    assert_eq!(empty.stream_name(), plain.stream_name());
    // Stream names become directory names on the server, so about 255 bytes is the limit; a
    // longer namespace is refused before anything is sent, with a clear `InvalidInput`.
    for n in [300, 10 * 1024] {
        let long = "n".repeat(n);
        match store_on(&server, JetStreamConfig::default().namespace(long.as_str())).await {
            Ok(store) => panic!(
                "a {n}-byte namespace opened stream {}",
                store.stream_name().len()
            ),
            Err(e) => {
                eprintln!(
                    "{n}-byte namespace: {}",
                    e.to_string().replace(&long, "<name>")
                );
                assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
            }
        }
    }
    assert_eq!(plain.get_latest_version("shared").await.unwrap(), 0);
}

#[tokio::test]
async fn extreme_versions_and_sizes_give_typed_errors() {
    let server = NatsServer::builder()
        .max_payload(256 * 1024)
        .start()
        .unwrap();
    let store = store_on(&server, JetStreamConfig::default()).await.unwrap();

    // Version 0 is invalid, alone or in a batch.
    for err in [
        store
            .save_event(&Event::new("T", "v", 0))
            .await
            .unwrap_err(),
        store
            .save_events("v", &[Event::new("T", "v", 0), Event::new("T", "v", 1)])
            .await
            .unwrap_err(),
        store
            .save_snapshot(&Snapshot::new("v", 0, Default::default()))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }

    // u64::MAX is a valid version; after it nothing fits, and nothing overflows.
    store.save_event(&Event::new("T", "v", 1)).await.unwrap();
    store
        .save_event(&Event::new("T", "v", u64::MAX))
        .await
        .unwrap();
    assert_eq!(store.get_latest_version("v").await.unwrap(), u64::MAX);
    for v in [1, u64::MAX - 1, u64::MAX] {
        let err = store
            .save_event(&Event::new("T", "v", v))
            .await
            .unwrap_err();
        let c = err
            .as_version_conflict()
            .unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!((c.attempted_version, c.current_version), (v, u64::MAX));
    }
    let from_max = store.get_events("v", u64::MAX).await.unwrap();
    assert_eq!(from_max.len(), 1);
    assert_eq!(from_max[0].version, u64::MAX);
    assert_eq!(store.get_events("v", 0).await.unwrap().len(), 2);
    store
        .save_events(
            "w",
            &[
                Event::new("T", "w", u64::MAX - 1),
                Event::new("T", "w", u64::MAX),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.get_latest_version("w").await.unwrap(), u64::MAX);
    store
        .save_snapshot(&Snapshot::new("w", u64::MAX, Default::default()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_latest_snapshot("w")
            .await
            .unwrap()
            .unwrap()
            .version,
        u64::MAX
    );

    // Oversized payloads: refused before sending, with both sizes.
    let big = "x".repeat(300 * 1024);
    for err in [
        store
            .save_event(&Event::new("T", "big", 1).with_field("b", big.as_str()))
            .await
            .unwrap_err(),
        store
            .save_event(&Event::new(big.as_str(), "big", 1))
            .await
            .unwrap_err(),
        store
            .save_snapshot(&Snapshot::new(
                "big",
                1,
                serde_json::json!({ "b": big })
                    .as_object()
                    .cloned()
                    .unwrap(),
            ))
            .await
            .unwrap_err(),
    ] {
        match err {
            Error::PayloadTooLarge { size, limit } => {
                assert_eq!(limit, 256 * 1024);
                assert!(size > 300 * 1024);
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
    }
    assert_eq!(store.get_latest_version("big").await.unwrap(), 0);
}

#[tokio::test]
async fn malformed_stored_messages_are_typed_replay_errors() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let actor = "victim";
    let subject = store.event_subject(actor);
    store.save_event(&Event::new("T", actor, 1)).await.unwrap();

    let good = Event::new("T", actor, 2).to_json_bytes().unwrap();
    let good_json: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let with_ts = |ts: serde_json::Value| {
        let mut j = good_json.clone();
        j["timestamp"] = ts;
        j["version"] = 5.into();
        serde_json::to_vec(&j).unwrap()
    };
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let foreign = Event::new("T", "someone-else", 9).to_json_bytes().unwrap();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (with_ts("+300000-01-01T00:00:00Z".into()), "year beyond chrono's range"),
        (with_ts("2024-13-45T99:99:99Z".into()), "impossible date"),
        (with_ts(1e300.into()), "number as timestamp"),
        (with_ts(serde_json::Value::Null), "null timestamp"),
        (b"\xff\xfe\x00garbage".to_vec(), "not UTF-8"),
        (b"[]".to_vec(), "empty batch"),
        (nested.into_bytes(), "deeply nested"),
        (foreign, "event of another actor"),
        (b"{\"version\": -1}".to_vec(), "negative version"),
        (
            format!("{{\"id\":\"x\",\"eventType\":\"T\",\"actorId\":\"{actor}\",\"version\":18446744073709551616,\"timestamp\":\"2024-01-01T00:00:00Z\"}}")
                .into_bytes(),
            "version beyond u64",
        ),
    ];
    for (payload, _) in &bad {
        js.publish(subject.clone(), payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    store.save_event(&Event::new("T", actor, 3)).await.unwrap();

    let replay = store.get_events_with_errors(actor, 0).await.unwrap();
    assert_eq!(
        replay.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(replay.errors.len(), bad.len(), "{:#?}", replay.errors);
    for (err, (payload, what)) in replay.errors.iter().zip(&bad) {
        assert_eq!(&err.raw, payload, "{what}");
        assert!(err.sequence > 1, "{what}");
        assert!(!err.error.is_empty(), "{what}");
    }
    // The lenient read skips them and counts them.
    assert_eq!(store.get_events(actor, 0).await.unwrap().len(), 2);
    assert!(store.malformed_events() >= bad.len() as u64);
    // The malformed messages do not confuse the version check.
    assert!(store
        .save_event(&Event::new("T", actor, 3))
        .await
        .unwrap_err()
        .is_version_conflict());
    store.save_event(&Event::new("T", actor, 4)).await.unwrap();

    // A malformed snapshot is a typed decoding error.
    js.publish(store.snapshot_subject(actor), "{\"nope\":1}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let err = store.get_latest_snapshot(actor).await.unwrap_err();
    assert!(matches!(err, Error::Decoding(_)), "{err:?}");
}

#[tokio::test]
async fn arbitrary_actor_ids_round_trip_through_the_store() {
    // Property over a live server: any non-empty id up to the limit stores and reads back under
    // its own name only. Few cases, since each is a round trip.
    let server = NatsServer::start().unwrap();
    let store = store_on(&server, JetStreamConfig::default()).await.unwrap();
    let mut runner = proptest::test_runner::TestRunner::default();
    let strategy = prop_oneof![
        any::<String>(),
        "[.*> \t\r\n\0a-c]{1,20}",
        proptest::collection::vec(any::<char>(), 1..200).prop_map(|c| c.into_iter().collect()),
    ];
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    use proptest::strategy::ValueTree;
    for _ in 0..40 {
        let id = strategy.new_tree(&mut runner).unwrap().current();
        if !id.is_empty() && id.len() <= MAX_ACTOR_ID_BYTES && seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    for id in &ids {
        store
            .save_event(&Event::new("T", id.as_str(), 1).with_field("me", id.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
    }
    for id in &ids {
        let events = store.get_events(id, 0).await.unwrap();
        assert_eq!(events.len(), 1, "{id:?}");
        assert_eq!(events[0].data["me"], id.as_str());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn event_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::from_json_bytes(&bytes);
        let _ = Snapshot::from_json_bytes(&bytes);
    }

    #[test]
    fn event_decoding_of_near_json_never_panics(
        version in prop_oneof![Just("0".to_string()), Just("-1".to_string()), Just("1e400".to_string()),
            Just("18446744073709551616".to_string()), any::<u64>().prop_map(|v| v.to_string())],
        ts in prop_oneof![Just("\"+262144-01-01T00:00:00Z\"".to_string()),
            Just("\"-262144-01-01T00:00:00Z\"".to_string()),
            "\"[0-9:TZ+.-]{0,40}\"", any::<i64>().prop_map(|n| n.to_string())],
        data in prop_oneof![Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string()),
            Just("\"s\"".to_string()), Just("{\"a\":[[[[1]]]]}".to_string())],
        actor in any::<String>(),
    ) {
        let json = format!(
            "{{\"id\":\"i\",\"eventType\":\"T\",\"actorId\":{},\"version\":{version},\"data\":{data},\"timestamp\":{ts}}}",
            serde_json::to_string(&actor).unwrap()
        );
        match Event::from_json_bytes(json.as_bytes()) {
            Ok(e) => {
                // Whatever decodes encodes again and decodes to the same event.
                let again = Event::from_json_bytes(&e.to_json_bytes().unwrap()).unwrap();
                prop_assert_eq!(again, e);
            }
            Err(e) => prop_assert!(matches!(e, Error::Decoding(_))),
        }
        let snap = format!(
            "{{\"actorId\":{},\"version\":{version},\"state\":{data},\"timestamp\":{ts}}}",
            serde_json::to_string(&actor).unwrap()
        );
        if let Err(e) = Snapshot::from_json_bytes(snap.as_bytes()) {
            prop_assert!(matches!(e, Error::Decoding(_)));
        }
    }

    #[test]
    fn actor_id_decoding_never_panics(token in any::<String>()) {
        match decode_actor_id(&token) {
            Ok(id) => prop_assert_eq!(encode_actor_id(&id), token),
            Err(e) => prop_assert!(matches!(e, Error::Decoding(_))),
        }
    }

    #[test]
    fn actor_id_decoding_of_subject_like_tokens_never_panics(token in "[A-Za-z0-9_=.*> -]{0,40}") {
        if let Ok(id) = decode_actor_id(&token) {
            prop_assert_eq!(encode_actor_id(&id), token);
        }
    }
}
