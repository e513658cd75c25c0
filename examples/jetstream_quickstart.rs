//! The durable store on NATS JetStream, through its raw API: save events and batches, replay
//! them as typed events, lose a race to a second writer and recover, snapshot, and watch
//! `EventStored` notifications.
//!
//! The events are the bank actor's (`aether_examples::bank::BankEvent`), written and read
//! through its `EventCodec`: what is stored is plain JSON any tool can read, and what is read
//! back is typed. A payload that does not fit its type is reported as a decode error naming
//! the event, never folded in as a zero. (An application would normally let an `ActorHost`
//! do all of this; see the `quickstart` example.)
//!
//! Needs a NATS server with JetStream, for example `nats-server -js`. Run with
//! `NATS_URL=nats://127.0.0.1:4222 cargo run -p aether-examples --example jetstream_quickstart`
//! (`NATS_URL` defaults to `nats://127.0.0.1:4222`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aether_actor::{Actor, EventCodec};
use aether_bus::EventBus;
use aether_core::{Delivery, Event, EventBroadcaster, EventStore, Snapshot, SnapshotStore};
use aether_examples::bank::{Account, Bank, BankEvent};
use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let config = JetStreamConfig::default().namespace("quickstart");

    // Notifications of stored events go to a bus; anything can subscribe.
    let bus = Arc::new(EventBus::new());
    let mut stored = bus.subscribe("accounts").await?;

    // Wrapped so that every stored event is announced on the bus.
    let store = Notify::new(
        JetStreamEventStore::connect(&url, config.clone()).await?,
        bus.clone(),
        "accounts",
    );
    println!(
        "connected to {url}; stream {} (namespace {:?})",
        store.get_ref().stream_name(),
        store.get_ref().namespace()
    );

    // A fresh actor per run, so the example can be run again and again.
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let account = format!("account.{millis}");

    // Typed events in, stored events out: the variant name is the event type, its fields the
    // JSON payload, and the schema version goes into the metadata.
    let codec = EventCodec::<BankEvent>::new(Bank::upcasters());
    let at = |version: u64, event: BankEvent| -> Result<Event, BoxError> {
        Ok(codec.encode(&event)?.into_event(&account, version))
    };

    store
        .save_event(&at(
            1,
            BankEvent::AccountOpened {
                owner: "Ada".into(),
            },
        )?)
        .await?;
    // A batch is stored all or nothing.
    store
        .save_events(
            &account,
            &[
                at(2, BankEvent::Deposited { amount: 100 })?,
                at(3, BankEvent::Withdrawn { amount: 30 })?,
            ],
        )
        .await?;
    println!(
        "latest version of {account}: {}",
        store.get_latest_version(&account).await?
    );

    // A second process (here: a second store on its own connection) writes version 4...
    let other = JetStreamEventStore::connect(&url, config).await?;
    other
        .save_event(&at(4, BankEvent::Deposited { amount: 5 })?)
        .await?;

    // ...so our save of version 4 is rejected by the server, with the current version.
    let attempt = at(4, BankEvent::Deposited { amount: 50 })?;
    if let Err(e) = store.save_event(&attempt).await {
        let Some(conflict) = e.as_version_conflict() else {
            return Err(e.into());
        };
        let current = conflict.current_version;
        println!("conflict: someone else wrote version {current}; retrying above it");
        store
            .save_event(&at(current + 1, BankEvent::Deposited { amount: 50 })?)
            .await?;
    }

    // Replay rebuilds the state: each stored event is decoded as a `BankEvent` and folded in
    // by the actor's own `apply`.
    let events = store.get_events(&account, 0).await?;
    let mut state = Account::default();
    for event in &events {
        Bank::apply(&mut state, &codec.decode(event)?);
    }
    println!(
        "replayed {} events; owner {:?}, balance {}",
        events.len(),
        state.owner,
        state.balance
    );

    // An event written by hand without its amount: decoding says so, naming the event,
    // instead of counting it as zero.
    let broken = format!("{account}.broken");
    store
        .save_event(&Event::new("Deposited", &broken, 1))
        .await?;
    for event in store.get_events(&broken, 0).await? {
        match codec.decode(&event) {
            Ok(typed) => println!("unexpectedly decoded {typed:?}"),
            Err(e) => println!("not folded in: {e}"),
        }
    }

    // A snapshot lets the next load start from there.
    let version = events.last().map_or(0, |e| e.version);
    let Value::Object(snapshot_state) = serde_json::to_value(&state)? else {
        return Err("the account state must serialise to a JSON object".into());
    };
    store
        .save_snapshot(&Snapshot::new(&account, version, snapshot_state))
        .await?;
    if let Some(snap) = store.get_latest_snapshot(&account).await? {
        let newer = store.get_events(&account, snap.version + 1).await?;
        println!(
            "snapshot at version {} ({}), {} newer events",
            snap.version,
            json!(snap.state),
            newer.len()
        );
    }

    // Every successful save of this store was announced on the bus (not the conflict).
    while let Some(Delivery::Event(note)) = stored.try_recv() {
        println!(
            "{} for {} version {}",
            note.event_type, note.actor_id, note.version
        );
    }
    Ok(())
}
