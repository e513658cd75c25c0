//! A projection worker process: keeps the SQLite read model of the bank's events up to date
//! (`aether_examples::read_model::SqlBalances`, exactly once) until it is stopped or killed.
//! Started again, it resumes from the position stored in the database.
//!
//! Usage: `projection-worker <NATS URL> <store namespace> <database file>`. The test
//! `examples/tests/worker_crash.rs` kills it with SIGKILL mid-stream and starts it again.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{Actor, EventCodec};
use aether_examples::bank::{Bank, BankEvent};
use aether_examples::read_model::SqlBalances;
use aether_projection::{InMemoryProjectionStore, Projection, ProjectionConfig};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, namespace, db] = args.as_slice() else {
        return Err("usage: projection-worker <NATS URL> <store namespace> <database file>".into());
    };
    let client = aether_store::async_nats::connect(url.as_str()).await?;
    let store = Arc::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default().namespace(namespace.clone()),
        )
        .await?,
    );
    let sink = Arc::new(SqlBalances::open(std::path::Path::new(db))?);
    let projection = Projection::new(
        "balances",
        store,
        // The sink keeps the position; parked events (none expected) stay in this process.
        Arc::new(InMemoryProjectionStore::new()),
        sink,
        EventCodec::<BankEvent>::new(Bank::upcasters()),
        ProjectionConfig {
            page_size: 50,
            poll_interval: Duration::from_millis(20),
            ..ProjectionConfig::default()
        },
    )?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    projection.run(stop).await?;
    Ok(())
}
