//! Aether in one minute, on the embedded default (no server needed):
//! save events, rebuild state by replaying them, hit a version conflict and retry,
//! and watch the bus.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::Arc;

use aether_bus::EventBus;
use aether_core::{Delivery, Event, EventBroadcaster, EventStore, SubscriptionFilter};
use aether_store::{InMemoryEventStore, Notify};

/// The state of a bank account, derived from its events and nothing else.
#[derive(Debug, Default)]
struct Account {
    owner: String,
    balance: i64,
    version: u64,
}

impl Account {
    fn apply(&mut self, event: &Event) {
        match event.event_type.as_str() {
            "AccountOpened" => {
                self.owner = event.data["owner"].as_str().unwrap_or_default().to_string();
            }
            "Deposited" => self.balance += event.data["amount"].as_i64().unwrap_or(0),
            "Withdrawn" => self.balance -= event.data["amount"].as_i64().unwrap_or(0),
            _ => {}
        }
        self.version = event.version;
    }

    fn replay(events: &[Event]) -> Self {
        let mut account = Self::default();
        for e in events {
            account.apply(e);
        }
        account
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The bus, with one subscriber following every "EventStored" notification.
    let bus = Arc::new(EventBus::new());
    let mut stored = bus
        .subscribe_with_filter("bank", SubscriptionFilter::new().event_type("EventStored"))
        .await?;

    // The store, wrapped so that it tells the bus about every event it persists.
    let store = Notify::new(InMemoryEventStore::new(), bus.clone(), "bank");

    // 1. Save some events.
    let id = "account-42";
    store
        .save_event(&Event::new("AccountOpened", id, 1).with_field("owner", "Ada"))
        .await?;
    store
        .save_event(&Event::new("Deposited", id, 2).with_field("amount", 100))
        .await?;
    store
        .save_event(&Event::new("Withdrawn", id, 3).with_field("amount", 30))
        .await?;
    println!("saved 3 events for {id}");

    // 2. Rebuild the state by replaying them.
    let account = Account::replay(&store.get_events(id, 0).await?);
    println!(
        "replayed: owner={} balance={} version={}",
        account.owner, account.balance, account.version
    );

    // 3. A writer with a stale view (it still thinks the version is 2) is rejected...
    let stale = Event::new("Deposited", id, 3).with_field("amount", 5);
    let err = store.save_event(&stale).await.unwrap_err();
    println!("stale write rejected: {err}");

    // ...and retries above the current version it was told about.
    if let Some(conflict) = err.as_version_conflict() {
        let retry =
            Event::new("Deposited", id, conflict.current_version + 1).with_field("amount", 5);
        store.save_event(&retry).await?;
        println!("retried at version {}", retry.version);
    }
    let account = Account::replay(&store.get_events(id, 0).await?);
    println!(
        "balance now {} at version {}",
        account.balance, account.version
    );

    // 4. The subscriber saw one notification per stored event (none for the conflict).
    let mut seen = 0;
    while let Some(Delivery::Event(note)) = stored.try_recv() {
        seen += 1;
        println!(
            "bus: {} for {} v{}",
            note.event_type, note.actor_id, note.version
        );
    }
    let m = bus.metrics();
    println!(
        "bus metrics: published={} delivered={} dropped={} ({} notifications seen)",
        m.total.published, m.total.delivered, m.total.dropped, seen
    );
    Ok(())
}
