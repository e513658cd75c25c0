//! A read model kept up to date from the event store, surviving restarts with a checkpoint.
//!
//! The typed bank account actor (`aether_examples::bank::Bank`) runs on an `ActorHost` over
//! the JetStream store, which publishes an `EventStored` notification to a NATS bus for every
//! event it persists; the bus keeps those notifications in a JetStream stream. The projection
//! (`aether_examples::read_model`) follows the stream durably: for each notification it reads
//! the stored event from the store, decodes it as a typed `BankEvent` through the actor's
//! `EventCodec`, folds it into account balances, and saves balances and checkpoint together in
//! one file. Stopped and restarted, it resumes right after its checkpoint: it catches up on
//! what it missed, then follows new events live, with nothing missed and nothing applied
//! twice.
//!
//! Run with `cargo run -p aether-examples --example projection`. It uses the server at
//! `NATS_URL` if set, otherwise it starts a throwaway `nats-server` (found as the test suite
//! finds it: `AETHER_NATS_SERVER`, the project's `.tools/`, or `PATH`).

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{ActorClient, ActorHost, RuntimeConfig};
use aether_bus::{BusStreamConfig, NatsBusConfig, NatsEventBus};
use aether_core::SubscriptionFilter;
use aether_examples::bank::{Bank, BankCommand};
use aether_examples::read_model::{BalanceProjection, ReadModelFile};
use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NOTIFICATIONS: &str = "bank.stored";

fn open(owner: &str) -> BankCommand {
    BankCommand::Open {
        owner: owner.into(),
    }
}

fn deposit(amount: i64) -> BankCommand {
    BankCommand::Deposit { amount }
}

/// Sends each command to its account; every accepted one stores one event.
async fn send_all(
    bank: &ActorHost<Bank>,
    commands: Vec<(&str, BankCommand)>,
) -> Result<(), BoxError> {
    for (account, command) in commands {
        bank.send(account, command).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = aether_testkit::NatsServer::start()?;
            let url = server.url();
            (Some(server), url)
        }
    };
    println!("NATS at {url}");
    let run = format!("{}", std::process::id());
    let bus_config = NatsBusConfig::default()
        .subject_prefix(format!("projection-demo-{run}"))
        .jetstream(BusStreamConfig::default().stream_name(format!("PROJECTION_DEMO_{run}")));
    let bus = Arc::new(NatsEventBus::connect(&url, bus_config).await?);
    let client = async_nats::connect(&url).await?;
    let store = Arc::new(Notify::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default().namespace(format!("projection-demo-{run}")),
        )
        .await?,
        bus.clone(),
        NOTIFICATIONS,
    ));
    let bank = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());

    let dir = std::env::temp_dir().join(format!("aether-projection-{run}"));
    std::fs::create_dir_all(&dir)?;
    let file = ReadModelFile::new(dir.join("balances.json"));
    let filter = SubscriptionFilter::new().event_type(aether_core::EVENT_TYPE_EVENT_STORED);

    // 1. Some history (five events), then the projection starts and catches up on it.
    send_all(
        &bank,
        vec![
            ("alice", open("Alice")),
            ("alice", deposit(100)),
            ("bob", open("Bob")),
            ("bob", deposit(50)),
            ("alice", deposit(20)),
        ],
    )
    .await?;
    {
        let mut projection = BalanceProjection::load(&file)?;
        let mut sub = bus
            .subscribe_durable(NOTIFICATIONS, projection.resume_from(), filter.clone())
            .await?;
        projection
            .follow(
                &*store,
                &mut sub,
                &file,
                |p| p.applied() == 5,
                Duration::from_secs(10),
            )
            .await?;
        println!(
            "projection caught up: {:?} (checkpoint {})",
            projection.balances(),
            projection.checkpoint()
        );
    } // the projection stops here, as if its process went away

    // 2. Events happen while the projection is down (three of them).
    send_all(
        &bank,
        vec![
            ("bob", deposit(25)),
            ("carol", open("Carol")),
            ("carol", deposit(70)),
        ],
    )
    .await?;

    // 3. Restarted, it resumes after its checkpoint: the three missed events, then a live one.
    let mut projection = BalanceProjection::load(&file)?;
    println!("restarted from checkpoint {}", projection.checkpoint());
    let mut sub = bus
        .subscribe_durable(NOTIFICATIONS, projection.resume_from(), filter)
        .await?;
    let writer = {
        let bank = bank.clone();
        tokio::spawn(async move {
            bank.send("alice", deposit(5))
                .await
                .map_err(|e| e.to_string())
        })
    };
    projection
        .follow(
            &*store,
            &mut sub,
            &file,
            |p| p.applied() == 4,
            Duration::from_secs(10),
        )
        .await?;
    writer.await??;
    println!(
        "after catch-up and one live event: {:?} (checkpoint {})",
        projection.balances(),
        projection.checkpoint()
    );
    let expected = [("alice", 125), ("bob", 75), ("carol", 70)];
    for (account, balance) in expected {
        assert_eq!(projection.balances().get(account).copied(), Some(balance));
    }
    println!("balances match the event history");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
