//! The durable store on NATS JetStream: save events and batches, replay, lose a race to a second
//! writer and recover, snapshot, and watch `EventStored` notifications.
//!
//! Needs a NATS server with JetStream, for example `nats-server -js`. Run with
//! `NATS_URL=nats://127.0.0.1:4222 cargo run --example jetstream_quickstart`
//! (`NATS_URL` defaults to `nats://127.0.0.1:4222`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aether_bus::EventBus;
use aether_core::{Delivery, Event, EventBroadcaster, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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

    store
        .save_event(&Event::new("AccountOpened", &account, 1).with_field("owner", "Ada"))
        .await?;
    // A batch is stored all or nothing.
    store
        .save_events(
            &account,
            &[
                Event::new("Deposited", &account, 2).with_field("amount", 100),
                Event::new("Withdrawn", &account, 3).with_field("amount", 30),
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
        .save_event(&Event::new("Deposited", &account, 4).with_field("amount", 5))
        .await?;

    // ...so our save of version 4 is rejected by the server, with the current version.
    let attempt = Event::new("Deposited", &account, 4).with_field("amount", 50);
    match store.save_event(&attempt).await {
        Err(e) if e.is_version_conflict() => {
            let current = e.as_version_conflict().map_or(0, |c| c.current_version);
            println!("conflict: someone else wrote version {current}; retrying above it");
            let retry = Event::new("Deposited", &account, current + 1).with_field("amount", 50);
            store.save_event(&retry).await?;
        }
        other => other?,
    }

    // Replay rebuilds the state.
    let events = store.get_events(&account, 0).await?;
    let balance: i64 = events
        .iter()
        .map(|e| match e.event_type.as_str() {
            "Deposited" => e.data["amount"].as_i64().unwrap_or(0),
            "Withdrawn" => -e.data["amount"].as_i64().unwrap_or(0),
            _ => 0,
        })
        .sum();
    println!("replayed {} events; balance {balance}", events.len());

    // A snapshot lets the next load start from there.
    let version = events.last().map_or(0, |e| e.version);
    let state = json!({ "balance": balance })
        .as_object()
        .cloned()
        .unwrap_or_default();
    store
        .save_snapshot(&Snapshot::new(&account, version, state))
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
        println!("{} for version {}", note.event_type, note.version);
    }
    Ok(())
}
