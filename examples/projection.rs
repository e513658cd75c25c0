//! A read model in SQLite kept up to date from the event store by a projection, exactly once.
//!
//! The typed bank account actor (`aether_examples::bank::Bank`) runs on an `ActorHost` over the
//! JetStream store. A projection (`aether_projection::Projection`) reads the store's global
//! order of events, decodes each as a typed `BankEvent` through the actor's codec, and hands it
//! to `aether_examples::read_model::SqlBalances`, which applies it and records its position in
//! one SQLite transaction. Stopped and restarted, the projection resumes after that position:
//! it catches up on what it missed, then follows new events live; nothing is missed and
//! nothing applied twice. Its parked events (none here) live in a NATS key-value bucket.
//!
//! Run with `cargo run -p aether-examples --example projection`. It uses the server at
//! `NATS_URL` if set, otherwise it starts a throwaway `nats-server` (found as the test suite
//! finds it: `AETHER_NATS_SERVER`, the project's `.tools/`, or `PATH`).

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{Actor, ActorClient, ActorHost, EventCodec, RuntimeConfig};
use aether_examples::bank::{Bank, BankCommand, BankEvent};
use aether_examples::read_model::SqlBalances;
use aether_projection::{NatsProjectionStore, Projection, ProjectionConfig};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

fn show(position: Option<aether_core::LogPosition>) -> String {
    position.map_or_else(|| "none".to_string(), |p| p.to_string())
}

fn print_balances(sink: &SqlBalances) -> Result<(), BoxError> {
    for (account, owner, balance) in sink.balances()? {
        println!("  {account:<6} {owner:<6} {balance:>5}");
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
    let client = async_nats::connect(&url).await?;
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace(format!("projection-demo-{run}")),
        )
        .await?,
    );
    let bank = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());
    let state = Arc::new(
        NatsProjectionStore::open(
            client,
            &format!("PROJECTION_DEMO_{run}"),
            aether_core::StorageKind::Memory,
        )
        .await?,
    );
    let dir = std::env::temp_dir().join(format!("aether-projection-{run}"));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("balances.db");
    let projection = |sink: Arc<SqlBalances>| {
        Projection::new(
            "balances",
            store.clone(),
            state.clone(),
            sink,
            EventCodec::<BankEvent>::new(Bank::upcasters()),
            ProjectionConfig {
                poll_interval: Duration::from_millis(20),
                ..ProjectionConfig::default()
            },
        )
    };

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
        let sink = Arc::new(SqlBalances::open(&db)?);
        let handled = projection(sink.clone())?.catch_up().await?.handled;
        println!(
            "projection caught up on {handled} events, position {}:",
            show(sink.checkpoint("balances")?)
        );
        print_balances(&sink)?;
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

    // 3. Restarted, it resumes after the position in the database: the three missed events,
    //    then a live one while it runs.
    let sink = Arc::new(SqlBalances::open(&db)?);
    println!(
        "restarted from position {}",
        show(sink.checkpoint("balances")?)
    );
    let p = Arc::new(projection(sink.clone())?);
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    bank.send("alice", deposit(5)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while p.status().handled < 4 || p.status().lag != Some(0) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the projection did not catch up: {:?}", p.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await??;
    let status = p.status();
    println!(
        "caught up again: {} events handled, lag {}, {} parked; balances:",
        status.handled,
        status.lag.unwrap_or_default(),
        status.parked
    );
    print_balances(&sink)?;
    let balances = sink.balances()?;
    let expected = [
        ("alice".to_string(), "Alice".to_string(), 125),
        ("bob".to_string(), "Bob".to_string(), 75),
        ("carol".to_string(), "Carol".to_string(), 70),
    ];
    if balances != expected {
        return Err(format!("unexpected balances {balances:?}").into());
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
