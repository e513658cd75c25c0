//! A read model kept up to date from the event store, surviving restarts with a checkpoint.
//!
//! The JetStream store publishes an `EventStored` notification to a NATS bus for every event it
//! persists; the bus keeps those notifications in a JetStream stream. The projection follows the
//! stream durably: for each notification it reads the stored event from the store, folds it
//! into account balances, and saves balances and checkpoint together in one file. Stopped and
//! restarted, it resumes right after its checkpoint: it catches up on what it missed, then
//! follows new events live, with nothing missed and nothing applied twice.
//!
//! Run with `cargo run --example projection`. It uses the server at `NATS_URL` if set, otherwise
//! it starts a throwaway `nats-server` (found as the test suite finds it).

use std::sync::Arc;
use std::time::Duration;

use aether_bus::{BusStreamConfig, NatsBusConfig, NatsEventBus};
use aether_core::{Event, EventStore, SubscriptionFilter};
use aether_examples::read_model::{BalanceProjection, ReadModelFile};
use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NOTIFICATIONS: &str = "bank.stored";

async fn deposit(store: &impl EventStore, account: &str, amount: i64) -> Result<(), BoxError> {
    let next = store.get_latest_version(account).await? + 1;
    store
        .save_event(&Event::new("Deposited", account, next).with_field("amount", amount))
        .await?;
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
    let store = Notify::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default().namespace(format!("projection-demo-{run}")),
        )
        .await?,
        bus.clone(),
        NOTIFICATIONS,
    );

    let dir = std::env::temp_dir().join(format!("aether-projection-{run}"));
    std::fs::create_dir_all(&dir)?;
    let file = ReadModelFile::new(dir.join("balances.json"));
    let filter = SubscriptionFilter::new().event_type(aether_core::EVENT_TYPE_EVENT_STORED);

    // 1. Some history, then the projection starts and catches up on it.
    for (account, amount) in [("alice", 100), ("bob", 50), ("alice", 20)] {
        deposit(&store, account, amount).await?;
    }
    {
        let mut projection = BalanceProjection::load(&file)?;
        let mut sub = bus
            .subscribe_durable(NOTIFICATIONS, projection.resume_from(), filter.clone())
            .await?;
        projection
            .follow(
                &store,
                &mut sub,
                &file,
                |p| p.applied() == 3,
                Duration::from_secs(10),
            )
            .await?;
        println!(
            "projection caught up: {:?} (checkpoint {})",
            projection.balances(),
            projection.checkpoint()
        );
    } // the projection stops here, as if its process went away

    // 2. Events happen while the projection is down.
    for (account, amount) in [("bob", 25), ("carol", 70)] {
        deposit(&store, account, amount).await?;
    }

    // 3. Restarted, it resumes after its checkpoint: the two missed events, then live ones.
    let mut projection = BalanceProjection::load(&file)?;
    println!("restarted from checkpoint {}", projection.checkpoint());
    let mut sub = bus
        .subscribe_durable(NOTIFICATIONS, projection.resume_from(), filter)
        .await?;
    let writer = {
        let store = Arc::new(store);
        let s = store.clone();
        let handle =
            tokio::spawn(async move { deposit(&s, "alice", 5).await.map_err(|e| e.to_string()) });
        (store, handle)
    };
    projection
        .follow(
            &*writer.0,
            &mut sub,
            &file,
            |p| p.applied() == 3,
            Duration::from_secs(10),
        )
        .await?;
    writer.1.await??;
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
