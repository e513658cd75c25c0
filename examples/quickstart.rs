//! Aether in one minute, on the embedded default (no server needed): a typed bank account
//! actor (`aether_examples::bank::Bank`) on an `ActorHost` over the in-memory store.
//!
//! Commands go in and typed replies come out; a refusal is a typed error and writes nothing;
//! a command sent twice with the same id is applied once; two hosts writing the same account
//! resolve their race by optimistic concurrency; a new host rebuilds the account from its
//! events; and a bus subscriber decodes every stored event as a typed `BankEvent`.
//!
//! Run with `cargo run -p aether-examples --example quickstart`.

use std::sync::Arc;

use aether_actor::{
    replay, Actor, ActorClient, ActorHost, CommandError, Envelope, EventCodec, RuntimeConfig,
};
use aether_bus::EventBus;
use aether_core::{
    Delivery, EventBroadcaster, EventStore, SubscriptionFilter, EVENT_TYPE_EVENT_STORED,
};
use aether_examples::bank::{Bank, BankCommand, BankError, BankEvent};
use aether_store::{InMemoryEventStore, Notify};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The bus, with one subscriber following every "EventStored" notification.
    let bus = Arc::new(EventBus::new());
    let mut stored = bus
        .subscribe_with_filter(
            "bank",
            SubscriptionFilter::new().event_type(EVENT_TYPE_EVENT_STORED),
        )
        .await?;

    // The store, wrapped so that it tells the bus about every event it persists, and the
    // runtime hosting bank accounts over it.
    let store = Arc::new(Notify::new(InMemoryEventStore::new(), bus.clone(), "bank"));
    let bank = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());

    // 1. Commands in, typed replies out: each reply is the account as the command left it.
    let id = "account-42";
    bank.send(
        id,
        BankCommand::Open {
            owner: "Ada".into(),
        },
    )
    .await?;
    bank.send(id, BankCommand::Deposit { amount: 100 }).await?;
    let account = bank.send(id, BankCommand::Withdraw { amount: 30 }).await?;
    println!(
        "{id}: owner {:?}, balance {}",
        account.owner, account.balance
    );

    // 2. A refusal is a typed value the caller can match on, and nothing is written.
    match bank.send(id, BankCommand::Withdraw { amount: 500 }).await {
        Err(CommandError::Rejected(BankError::InsufficientFunds { balance, asked })) => {
            println!("withdrawing {asked} refused: the balance is only {balance}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // 3. A command with an id is applied once: sending it again (a retry after a timeout,
    //    say) gets the first outcome instead of depositing twice. Only the id is stored with
    //    the events, never the reply.
    let deposit = Envelope::new(BankCommand::Deposit { amount: 25 }).with_id("deposit-0001");
    let first = bank.send_envelope(id, deposit.clone()).await?;
    let retried = bank.send_envelope(id, deposit).await?;
    let versions = store.get_latest_version(id).await?;
    println!(
        "deposit-0001 sent twice: balance {} then {}; {versions} events stored, the deposit once",
        first.balance, retried.balance
    );

    // 4. A second host over the same store (another process, in real life) deposits. The
    //    first host still holds the account at the older version, so its next write
    //    conflicts: it catches up from the store and decides again, on the current balance.
    let other = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());
    other.send(id, BankCommand::Deposit { amount: 5 }).await?;
    let account = bank.send(id, BankCommand::Withdraw { amount: 50 }).await?;
    println!(
        "after a concurrent deposit elsewhere: balance {} ({} version conflict(s) resolved)",
        account.balance,
        bank.stats().conflicts
    );

    // 5. A new host (as after a restart) rebuilds the account from the store; replaying
    //    every event from version 1, ignoring snapshots, gives the same state.
    drop((bank, other));
    let restarted = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());
    let (rebuilt, version) = restarted.load_state(id).await?;
    let (replayed, _) = replay::<Bank>(&*store, restarted.codec(), id).await?;
    if rebuilt != replayed {
        return Err(format!("rebuilt {rebuilt:?}, replayed {replayed:?}").into());
    }
    let account = restarted.send(id, BankCommand::Balance).await?;
    println!(
        "new host: rebuilt {id} at version {version}: owner {:?}, balance {}",
        account.owner, account.balance
    );

    // 6. The subscriber saw one notification per stored event (none for the refusal or the
    //    deduplicated retry). It reads each event from the store and decodes it with the
    //    actor's codec: a payload that does not fit `BankEvent` would be an error, not a zero.
    let codec = EventCodec::<BankEvent>::new(Bank::upcasters());
    while let Some(Delivery::Event(note)) = stored.try_recv() {
        let event = store
            .get_events(&note.actor_id, note.version)
            .await?
            .into_iter()
            .find(|e| e.version == note.version)
            .ok_or_else(|| format!("{} v{} is not in the store", note.actor_id, note.version))?;
        let typed = codec.decode(&event)?;
        println!("bus: {} v{}: {typed:?}", note.actor_id, note.version);
    }
    let m = bus.metrics();
    println!(
        "bus metrics: published={} delivered={} dropped={}",
        m.total.published, m.total.delivered, m.total.dropped
    );
    Ok(())
}
