//! `#[derive(DomainEvent)]` against serde itself: for every variant shape and every
//! `rename_all` rule, `event_type()` is the name serde writes, and events round-trip through
//! [`EventCodec`].

use aether_actor::{DomainEvent, EventCodec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Limit {
    cents: i64,
}

/// The same variants under one `rename_all` rule (or none).
macro_rules! events {
    ($name:ident $(, $rule:literal)?) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
        $(#[serde(rename_all = $rule)])?
        enum $name {
            AccountOpened { owner: String },
            Closed,
            LimitChanged(Limit),
            Pair(u8, u8),
            #[serde(rename = "money_in")]
            Deposited { amount: i64 },
            #[serde(rename(serialize = "OUT", deserialize = "out"))]
            Withdrawn { amount: i64 },
            HTTPCall,
            V2Event {},
            r#Type,
        }

        impl $name {
            /// One value of every variant, in declaration order.
            fn samples() -> Vec<Self> {
                vec![
                    Self::AccountOpened { owner: "ann".into() },
                    Self::Closed,
                    Self::LimitChanged(Limit { cents: 5 }),
                    Self::Pair(1, 2),
                    Self::Deposited { amount: 3 },
                    Self::Withdrawn { amount: 4 },
                    Self::HTTPCall,
                    Self::V2Event {},
                    Self::r#Type,
                ]
            }
        }
    };
}

events!(Plain);
events!(Lower, "lowercase");
events!(Upper, "UPPERCASE");
events!(Pascal, "PascalCase");
events!(Camel, "camelCase");
events!(Snake, "snake_case");
events!(ScreamingSnake, "SCREAMING_SNAKE_CASE");
events!(Kebab, "kebab-case");
events!(ScreamingKebab, "SCREAMING-KEBAB-CASE");

/// The name serde writes for `event`: the key of an externally tagged variant with fields, or
/// the string of a unit variant.
fn serde_name<E: Serialize>(event: &E) -> String {
    match serde_json::to_value(event) {
        Ok(Value::String(name)) => name,
        Ok(Value::Object(outer)) if outer.len() == 1 => outer.keys().cloned().collect(),
        other => panic!("not an externally tagged variant: {other:?}"),
    }
}

/// `event_type()` of each sample, after checking it against the name serde writes.
fn checked_names<E: DomainEvent>(samples: Vec<E>) -> Vec<&'static str> {
    samples
        .iter()
        .map(|event| {
            let name = event.event_type();
            assert_eq!(name, serde_name(event), "{}", std::any::type_name::<E>());
            name
        })
        .collect()
}

#[test]
fn event_type_is_the_serde_name_under_every_rename_all_rule() {
    let table: [(&str, Vec<&'static str>, [&str; 9]); 9] = [
        (
            "none",
            checked_names(Plain::samples()),
            [
                "AccountOpened",
                "Closed",
                "LimitChanged",
                "Pair",
                "money_in",
                "OUT",
                "HTTPCall",
                "V2Event",
                "Type",
            ],
        ),
        (
            "lowercase",
            checked_names(Lower::samples()),
            [
                "accountopened",
                "closed",
                "limitchanged",
                "pair",
                "money_in",
                "OUT",
                "httpcall",
                "v2event",
                "type",
            ],
        ),
        (
            "UPPERCASE",
            checked_names(Upper::samples()),
            [
                "ACCOUNTOPENED",
                "CLOSED",
                "LIMITCHANGED",
                "PAIR",
                "money_in",
                "OUT",
                "HTTPCALL",
                "V2EVENT",
                "TYPE",
            ],
        ),
        (
            "PascalCase",
            checked_names(Pascal::samples()),
            [
                "AccountOpened",
                "Closed",
                "LimitChanged",
                "Pair",
                "money_in",
                "OUT",
                "HTTPCall",
                "V2Event",
                "Type",
            ],
        ),
        (
            "camelCase",
            checked_names(Camel::samples()),
            [
                "accountOpened",
                "closed",
                "limitChanged",
                "pair",
                "money_in",
                "OUT",
                "hTTPCall",
                "v2Event",
                "type",
            ],
        ),
        (
            "snake_case",
            checked_names(Snake::samples()),
            [
                "account_opened",
                "closed",
                "limit_changed",
                "pair",
                "money_in",
                "OUT",
                "h_t_t_p_call",
                "v2_event",
                "type",
            ],
        ),
        (
            "SCREAMING_SNAKE_CASE",
            checked_names(ScreamingSnake::samples()),
            [
                "ACCOUNT_OPENED",
                "CLOSED",
                "LIMIT_CHANGED",
                "PAIR",
                "money_in",
                "OUT",
                "H_T_T_P_CALL",
                "V2_EVENT",
                "TYPE",
            ],
        ),
        (
            "kebab-case",
            checked_names(Kebab::samples()),
            [
                "account-opened",
                "closed",
                "limit-changed",
                "pair",
                "money_in",
                "OUT",
                "h-t-t-p-call",
                "v2-event",
                "type",
            ],
        ),
        (
            "SCREAMING-KEBAB-CASE",
            checked_names(ScreamingKebab::samples()),
            [
                "ACCOUNT-OPENED",
                "CLOSED",
                "LIMIT-CHANGED",
                "PAIR",
                "money_in",
                "OUT",
                "H-T-T-P-CALL",
                "V2-EVENT",
                "TYPE",
            ],
        ),
    ];
    for (rule, names, expected) in table {
        assert_eq!(names, expected, "rename_all = {rule:?}");
    }
}

#[test]
fn derived_events_round_trip_through_the_codec() {
    fn round_trip<E: DomainEvent + PartialEq + std::fmt::Debug>(samples: Vec<E>) {
        let codec = EventCodec::<E>::default();
        for event in samples {
            let name = event.event_type();
            // The codec stores object payloads only; a tuple variant is not an event, and a
            // variant whose deserialising name differs does not read back under its own.
            if name.eq_ignore_ascii_case("pair") || name == "OUT" {
                continue;
            }
            let encoded = match codec.encode(&event) {
                Ok(encoded) => encoded,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(encoded.event_type, name);
            assert_eq!(encoded.schema_version, 1);
            let stored = encoded.into_event("acc-1", 1);
            match codec.decode(&stored) {
                Ok(decoded) => assert_eq!(decoded, event),
                Err(e) => panic!("{e}"),
            }
        }
    }
    round_trip(Plain::samples());
    round_trip(Snake::samples());
    round_trip(ScreamingKebab::samples());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[domain_event(schema_version = 3)]
enum Versioned {
    Deposited { cents: i64 },
}

#[test]
fn schema_version_comes_from_the_attribute() {
    let event = Versioned::Deposited { cents: 1 };
    assert_eq!(event.schema_version(), 3);
    assert_eq!(Plain::Closed.schema_version(), 1);
    let encoded = match EventCodec::<Versioned>::default().encode(&event) {
        Ok(encoded) => encoded,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (encoded.event_type, encoded.schema_version),
        ("Deposited", 3)
    );
}

/// Generic enums derive too; the enum's own bounds must make it serde (the trait requires
/// it), which the derive does not add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[serde(bound = "T: Serialize + DeserializeOwned")]
enum Wrapped<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> {
    Happened { what: T },
}

#[test]
fn generic_enums_derive() {
    assert_eq!(Wrapped::Happened { what: 1u8 }.event_type(), "Happened");
}
