use super::*;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ev {
    Opened {
        owner: String,
    },
    #[serde(rename = "MoneyIn")]
    Deposited {
        cents: i64,
        #[serde(default)]
        note: Option<String>,
    },
    Closed,
    Wrapped(Inner),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    n: u32,
}

impl DomainEvent for Ev {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Deposited { .. } => "MoneyIn",
            Self::Closed => "Closed",
            Self::Wrapped(_) => "Wrapped",
        }
    }
    fn schema_version(&self) -> u32 {
        match self {
            Self::Deposited { .. } => 2,
            _ => 1,
        }
    }
}

fn stored(event_type: &str, version: u32, data: serde_json::Value) -> Event {
    Event::new(event_type, "acc-1", 7)
        .with_data(data.as_object().cloned().unwrap())
        .with_metadata(METADATA_SCHEMA_VERSION, version.to_string())
}

#[test]
fn variants_round_trip_through_their_stored_form() {
    let codec = EventCodec::<Ev>::default();
    for ev in [
        Ev::Opened {
            owner: "Ada".into(),
        },
        Ev::Deposited {
            cents: 5,
            note: Some("x".into()),
        },
        Ev::Closed,
        Ev::Wrapped(Inner { n: 3 }),
    ] {
        let encoded = codec.encode(&ev).unwrap();
        assert_eq!(encoded.event_type, ev.event_type());
        let stored = encoded.into_event("acc-1", 1);
        assert_eq!(
            stored.metadata_value(METADATA_SCHEMA_VERSION),
            Some(ev.schema_version().to_string().as_str())
        );
        assert_eq!(codec.decode(&stored).unwrap(), ev);
    }
    let opened = codec
        .encode(&Ev::Opened {
            owner: "Ada".into(),
        })
        .unwrap();
    assert_eq!(opened.data, *json!({"owner": "Ada"}).as_object().unwrap());
    assert!(codec.encode(&Ev::Closed).unwrap().data.is_empty());
}

#[test]
fn a_payload_that_does_not_fit_is_a_typed_error_naming_the_event() {
    let codec = EventCodec::<Ev>::default();
    let cases = [
        stored("MoneyIn", 2, json!({"cents": "ten"})),
        stored("MoneyIn", 2, json!({})),
        stored("Unknown", 1, json!({})),
        stored("Opened", 1, json!({"owner": 5})),
    ];
    for e in cases {
        let err = codec.decode(&e).unwrap_err();
        assert_eq!(err.actor_id, "acc-1");
        assert_eq!(err.version, 7);
        assert_eq!(err.event_id, e.id);
        assert_eq!(err.event_type, e.event_type);
        let text = err.to_string();
        assert!(
            text.contains("acc-1") && text.contains("version 7"),
            "{text}"
        );
    }
    // A schema version that is not a number.
    let mut e = stored("Opened", 1, json!({"owner": "Ada"}));
    e.set_metadata(METADATA_SCHEMA_VERSION, "two");
    assert!(codec
        .decode(&e)
        .unwrap_err()
        .reason
        .contains("not a number"));
    // Written by a newer schema than the code knows, or an old one with no upcaster.
    let newer = codec
        .decode(&stored("Opened", 3, json!({"owner": "Ada"})))
        .unwrap_err();
    assert!(newer.reason.contains("no upcaster"), "{newer}");
    let older = codec
        .decode(&stored("MoneyIn", 1, json!({"cents": 1})))
        .unwrap_err();
    assert_eq!(older.schema_version, 1);
}

#[test]
fn no_schema_version_means_version_one() {
    let codec = EventCodec::<Ev>::default();
    let e = Event::new("Opened", "a", 1).with_field("owner", "Ada");
    assert_eq!(
        codec.decode(&e).unwrap(),
        Ev::Opened {
            owner: "Ada".into()
        }
    );
}

#[test]
fn upcasters_turn_old_payloads_and_names_into_the_current_shape() {
    let codec = EventCodec::<Ev>::new(Upcasters::new().rename("Deposited", 1, "MoneyIn").upcast(
        "MoneyIn",
        1,
        |mut d: EventData| {
            let units = d
                .remove("amount")
                .and_then(|v| v.as_i64())
                .ok_or("amount missing")?;
            d.insert("cents".into(), json!(units * 100));
            Ok(d)
        },
    ));
    let old = stored("Deposited", 1, json!({"amount": 3}));
    assert_eq!(
        codec.decode(&old).unwrap(),
        Ev::Deposited {
            cents: 300,
            note: None
        }
    );
    // Current events pass untouched.
    let current = stored("MoneyIn", 2, json!({"cents": 4}));
    assert_eq!(
        codec.decode(&current).unwrap(),
        Ev::Deposited {
            cents: 4,
            note: None
        }
    );
    // An upcaster's failure is the event's decoding error.
    let broken = codec
        .decode(&stored("Deposited", 1, json!({"amountt": 3})))
        .unwrap_err();
    assert!(broken.reason.contains("amount missing"), "{broken}");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Mislabelled {
    A { x: i64 },
    B(i64),
}

impl DomainEvent for Mislabelled {
    fn event_type(&self) -> &'static str {
        match self {
            Self::A { .. } => "Other",
            Self::B(_) => "B",
        }
    }
}

#[test]
fn encoding_refuses_events_that_would_not_decode() {
    let codec = EventCodec::<Mislabelled>::default();
    let e = codec.encode(&Mislabelled::A { x: 1 }).unwrap_err();
    assert!(e.reason.contains("must agree"), "{e}");
    let e = codec.encode(&Mislabelled::B(1)).unwrap_err();
    assert!(e.reason.contains("JSON object"), "{e}");
}

proptest! {
    #[test]
    fn arbitrary_payloads_round_trip(cents in any::<i64>(), owner in ".{0,40}", n in any::<u32>()) {
        let codec = EventCodec::<Ev>::default();
        for ev in [Ev::Opened { owner: owner.clone() }, Ev::Deposited { cents, note: Some(owner.clone()) }, Ev::Wrapped(Inner { n })] {
            let stored = codec.encode(&ev).unwrap().into_event("a", 1);
            prop_assert_eq!(codec.decode(&stored).unwrap(), ev);
        }
    }

    #[test]
    fn arbitrary_stored_json_never_panics(key in "[a-z]{1,6}", value in any::<i64>(), t in prop::sample::select(vec!["Opened", "MoneyIn", "Closed", "Wrapped", "X"])) {
        let codec = EventCodec::<Ev>::default();
        let e = Event::new(t, "a", 1).with_field(key, value);
        let _ = codec.decode(&e);
    }
}
