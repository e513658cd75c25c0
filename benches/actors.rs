//! Typed actors: rebuilding an actor from 10 000 events through the typed layer (decode into
//! the event enum, then apply) next to the untyped replay of the same stream (read fields out
//! of the JSON map), and the typed rebuild when every deposit needs an upcaster next to the
//! untyped replay of that same stream (the same events: deposits in schema version 1, read by
//! a fold that treats the missing field as the upcaster does).
//!
//! Each typed function and its untyped reference read the same store, so they decode the same
//! bytes: `typed` and `untyped_replay` read the current stream, `typed_upcast_every_deposit` and
//! `untyped_replay_v1` the stream whose deposits are in schema version 1.

use std::hint::black_box;

use aether_actor::{replay, Actor, DomainEvent, EventCodec, Upcasters};
use aether_benches::setup::OrFail;
use aether_core::{ActorKey, Event, EventStore, METADATA_SCHEMA_VERSION};
use aether_store::InMemoryEventStore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use serde_json::json;

const EVENTS: u64 = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u64,
    last_note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64, note: String },
    Withdrawn { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
    fn schema_version(&self) -> u32 {
        2
    }
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

struct Bank;

impl Actor for Bank {
    type State = Account;
    type Command = ();
    type Event = Moved;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "bank";

    async fn decide(&self, _: &str, _: &Account, _: &()) -> Result<Vec<Moved>, Never> {
        Ok(Vec::new())
    }

    fn apply(state: &mut Account, event: &Moved) {
        match event {
            Moved::Deposited { amount, note } => {
                state.balance += amount;
                state.deposits += 1;
                state.last_note.clone_from(note);
            }
            Moved::Withdrawn { amount } => state.balance -= amount,
        }
    }

    fn reply(_: &Account, _: &(), _: &[Moved]) {}

    fn upcasters() -> Upcasters {
        // Version 1 had no note.
        Upcasters::new().upcast("Deposited", 1, |mut data| {
            data.insert("note".into(), json!(""));
            Ok(data)
        })
    }
}

/// The untyped fold an application writes against the JSON map, refusing (not defaulting)
/// a field that is missing, except the note of a deposit in schema version 1, which had none
/// (the untyped counterpart of the upcaster).
fn untyped_apply(state: &mut Account, e: &Event) -> Result<(), String> {
    let amount = e
        .data
        .get("amount")
        .and_then(|v| v.as_i64())
        .ok_or("amount")?;
    match e.event_type.as_str() {
        "Deposited" => {
            let note = match e.data.get("note") {
                Some(v) => v.as_str().ok_or("note")?,
                None if e.metadata.get(METADATA_SCHEMA_VERSION).map(String::as_str)
                    == Some("1") =>
                {
                    ""
                }
                None => return Err("note".into()),
            };
            state.balance += amount;
            state.deposits += 1;
            state.last_note.clear();
            state.last_note.push_str(note);
        }
        "Withdrawn" => state.balance -= amount,
        other => return Err(format!("unknown event type {other}")),
    }
    Ok(())
}

/// A store holding one actor of 10 000 events, every fifth a withdrawal; deposits in schema
/// version `deposit_version` (1: without the note, needing the upcaster).
fn store_with_history(rt: &tokio::runtime::Runtime, deposit_version: u32) -> InMemoryEventStore {
    let codec = EventCodec::<Moved>::default();
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        for v in 1..=EVENTS {
            let event = if v % 5 == 0 {
                codec
                    .encode(&Moved::Withdrawn { amount: 1 })
                    .or_fail("encode a withdrawal")
                    .into_event_of(ActorKey::new(Bank::TYPE, "acc"), v)
            } else if deposit_version == 1 {
                Event::new("Deposited", "acc", v)
                    .with_actor_type(Bank::TYPE)
                    .with_field("amount", 3)
                    .with_metadata(METADATA_SCHEMA_VERSION, "1")
            } else {
                codec
                    .encode(&Moved::Deposited {
                        amount: 3,
                        note: "payday".into(),
                    })
                    .or_fail("encode a deposit")
                    .into_event_of(ActorKey::new(Bank::TYPE, "acc"), v)
            };
            store.save_event(&event).await.or_fail("save the history");
        }
    });
    store
}

fn rebuild(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .or_fail("runtime");
    let current = store_with_history(&rt, 2);
    let old = store_with_history(&rt, 1);
    let codec = EventCodec::<Moved>::new(Bank::upcasters());
    let mut g = c.benchmark_group("actor_rebuild_10k");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(30);
    let untyped = |store: &InMemoryEventStore| {
        rt.block_on(async {
            let mut state = Account::default();
            for e in store
                .events_of(ActorKey::new(Bank::TYPE, "acc"), 1)
                .await
                .or_fail("replay")
            {
                untyped_apply(&mut state, &e).or_fail("untyped apply");
            }
            black_box(state)
        })
    };
    let typed = |store: &InMemoryEventStore| {
        rt.block_on(async {
            black_box(
                replay::<Bank>(store, &codec, "acc")
                    .await
                    .or_fail("typed replay"),
            )
        })
    };
    // Each pair reads one stream: the current one, then the one with version-1 deposits.
    g.bench_function("untyped_replay", |b| b.iter(|| untyped(&current)));
    g.bench_function("typed", |b| b.iter(|| typed(&current)));
    g.bench_function("untyped_replay_v1", |b| b.iter(|| untyped(&old)));
    g.bench_function("typed_upcast_every_deposit", |b| b.iter(|| typed(&old)));
    g.finish();
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
