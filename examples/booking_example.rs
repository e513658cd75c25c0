//! Booking seats across two actor types: shows (their seats) and customers (their wallets).
//!
//! A reservation reserves a show's seats and charges the customer in one transaction across
//! the two types (`aether_examples::booking::reserve_and_charge`, on `aether_actor::Transact`):
//! both are written or neither is. The run makes one reservation, then is refused twice, each
//! refusal typed and writing nothing: a show without enough free seats (sold out), and a
//! customer without enough money (insufficient funds). Then one projection over both types
//! (`aether_examples::booking_read_model`, each event decoded by the type that wrote it) fills a
//! SQLite read model exactly once, and the example prints its rows next to the actors' states.
//!
//! Run with `cargo run -p aether-examples --example booking`: on the embedded in-memory store.
//! Given a NATS URL, as `NATS_URL` or as the first argument
//! (`cargo run -p aether-examples --example booking -- nats://127.0.0.1:4222`), it runs on
//! the JetStream store there instead, in a namespace of its own; transactions across actors
//! need nats-server 2.12 or later.

use std::sync::Arc;

use aether_actor::{ActorClient, ActorHost, CommandMeta, RuntimeConfig};
use aether_core::{EventLog, SnapshotStore};
use aether_examples::booking::{
    reserve_and_charge, Customer, CustomerCommand, Reservation, Show, ShowCommand,
};
use aether_examples::booking_read_model::{booking_projection, SqlBookings};
use aether_projection::{InMemoryProjectionStore, ProjectionConfig};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the events go: the embedded store, or JetStream when a URL is given.
async fn store() -> Result<(Arc<dyn SnapshotStore>, Arc<dyn EventLog>), BoxError> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NATS_URL").ok());
    match url {
        None => {
            println!("store: embedded, in memory");
            let store = Arc::new(InMemoryEventStore::new());
            Ok((store.clone(), store))
        }
        Some(url) => {
            let namespace = format!("booking-{}", std::process::id());
            println!("store: JetStream at {url}, namespace {namespace}");
            let store = Arc::new(
                JetStreamEventStore::connect(&url, JetStreamConfig::default().namespace(namespace))
                    .await?,
            );
            Ok((store.clone(), store))
        }
    }
}

fn say(what: &str, outcome: &Reservation) {
    match outcome {
        Reservation::Reserved {
            seats,
            amount,
            free,
            balance,
        } => println!(
            "{what}: reserved {seats} seats for {amount}; free seats now {free}, balance {balance}"
        ),
        Reservation::SoldOut { free, asked } => {
            println!("{what}: refused by the show, sold out ({free} free, {asked} asked); nothing written")
        }
        Reservation::InsufficientFunds { balance, asked } => println!(
            "{what}: refused by the customer, insufficient funds (balance {balance}, asked {asked}); nothing written"
        ),
        Reservation::AlreadyApplied => println!("{what}: applied before, nothing done again"),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (store, log) = store().await?;
    let shows = ActorHost::new(Show, store.clone(), RuntimeConfig::default());
    let customers = ActorHost::new(Customer, store, RuntimeConfig::default());

    shows
        .send("hamlet", ShowCommand::Create { seats: 3 })
        .await?;
    customers
        .send("ada", CustomerCommand::Fund { amount: 100 })
        .await?;
    customers
        .send("bob", CustomerCommand::Fund { amount: 20 })
        .await?;
    println!("show hamlet: 3 seats; ada has 100, bob has 20");

    // 1. Ada takes two seats at 30 each: the show and her wallet change in one transaction.
    let order = CommandMeta::new().command_id("order-1");
    let outcome =
        reserve_and_charge(&shows, &customers, "hamlet", "ada", 2, 30, order.clone()).await?;
    say("ada, 2 seats at 30", &outcome);
    // Sent again with the same command id (say its answer was lost): applied once.
    let again = reserve_and_charge(&shows, &customers, "hamlet", "ada", 2, 30, order).await?;
    say("ada, the same order again", &again);

    // 2. Ada wants two more: one seat is left, the show refuses, her wallet is untouched.
    let outcome = reserve_and_charge(
        &shows,
        &customers,
        "hamlet",
        "ada",
        2,
        30,
        CommandMeta::new(),
    )
    .await?;
    say("ada, 2 more seats", &outcome);

    // 3. Bob wants the last seat but has 20: the customer refuses, the seat stays free.
    let outcome = reserve_and_charge(
        &shows,
        &customers,
        "hamlet",
        "bob",
        1,
        30,
        CommandMeta::new(),
    )
    .await?;
    say("bob, 1 seat at 30", &outcome);

    // 4. One projection over both types fills the SQLite read model.
    let sink = Arc::new(SqlBookings::in_memory()?);
    let projection = booking_projection(
        "bookings",
        log,
        Arc::new(InMemoryProjectionStore::new()),
        sink.clone(),
        ProjectionConfig::default(),
    )?;
    let report = projection.catch_up().await?;
    println!(
        "read model: {} events handled, {} parked, position {}",
        report.handled,
        report.parked,
        sink.checkpoint("bookings")?
            .map_or_else(|| "none".to_string(), |p| p.to_string())
    );
    for row in sink.shows()? {
        let actor = shows.send(&row.show, ShowCommand::Seating).await?;
        println!(
            "  show {:<8} seats {} free {}   (actor: free {})",
            row.show, row.seats, row.free, actor.free
        );
    }
    for row in sink.customers()? {
        let actor = customers
            .send(&row.customer, CustomerCommand::Balance)
            .await?;
        println!(
            "  customer {:<4} balance {:>4}   (actor: balance {})",
            row.customer, row.balance, actor.balance
        );
    }
    for row in sink.reservations()? {
        println!(
            "  reservation {}@{}: {} seats for {} paid {}",
            row.show, row.version, row.seats, row.customer, row.amount
        );
    }
    Ok(())
}
