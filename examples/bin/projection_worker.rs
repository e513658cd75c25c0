//! A projection worker process: keeps the SQLite read model of the bank's events up to date
//! (`aether_examples::read_model::SqlBalances`) until it is stopped or killed.
//!
//! Usage:
//! - `projection-worker <NATS URL> <store namespace> <database file>`: one projection, exactly
//!   once; started again, it resumes from the position stored in the database.
//! - `projection-worker <NATS URL> <store namespace> <database file> partitioned <worker id>`:
//!   one worker of a projection split into 4 partitions, at least once (checkpoints and
//!   leases in the NATS bucket `AETHER_PROJECTIONS`; the read model ignores redeliveries by
//!   version). A killed worker's partitions are taken over by the others once its leases
//!   expire (2 s here).
//!
//! - `--log-partitions N` (last): the store's log is spread over N streams
//!   (`JetStreamConfig::partitions`); the projection reads them in parallel, one position per
//!   partition.
//!
//! The test `examples/tests/worker_crash.rs` kills it with SIGKILL mid-stream and starts it
//! (or another worker) again.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{Actor, EventCodec};
use aether_core::StorageKind;
use aether_examples::bank::{Bank, BankEvent};
use aether_examples::read_model::SqlBalances;
use aether_projection::{
    InMemoryProjectionStore, NatsProjectionStore, Projection, ProjectionConfig, ProjectionWorker,
    WorkerConfig, DEFAULT_PROJECTION_BUCKET,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: projection-worker <NATS URL> <store namespace> <database file> \
                     [partitioned <worker id>] [--log-partitions N]";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().collect();
    let mut log_partitions = 1;
    if let [.., flag, n] = args.as_slice() {
        if flag == "--log-partitions" {
            log_partitions = n.parse::<u32>().map_err(|_| USAGE)?;
            args.truncate(args.len() - 2);
        }
    }
    let (url, namespace, db, worker) = match args.as_slice() {
        [_, url, namespace, db] => (url, namespace, db, None),
        [_, url, namespace, db, mode, worker] if mode == "partitioned" => {
            (url, namespace, db, Some(worker.clone()))
        }
        _ => return Err(USAGE.into()),
    };
    let client = aether_nats::async_nats::connect(url.as_str()).await?;
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default()
                .namespace(namespace.clone())
                .partitions(log_partitions),
        )
        .await?,
    );
    let config = ProjectionConfig {
        page_size: 50,
        poll_interval: Duration::from_millis(20),
        ..ProjectionConfig::default()
    };
    let codec = EventCodec::<BankEvent>::new(Bank::upcasters());
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    let path = std::path::Path::new(db);
    match worker {
        None => {
            let projection = Projection::new(
                "balances",
                store,
                // The sink keeps the position; parked events (none expected) stay here.
                Arc::new(InMemoryProjectionStore::new()),
                Arc::new(SqlBalances::open(path)?),
                codec,
                config,
            )?;
            projection.run(stop).await?;
        }
        Some(worker) => {
            let state =
                NatsProjectionStore::open(client, DEFAULT_PROJECTION_BUCKET, StorageKind::File)
                    .await?;
            let worker = ProjectionWorker::new(
                "balances",
                worker,
                store,
                Arc::new(state),
                Arc::new(SqlBalances::open(path)?.at_least_once()),
                codec,
                config,
                WorkerConfig {
                    partitions: 4,
                    heartbeat: Duration::from_millis(100),
                    lease_timeout: Duration::from_secs(2),
                },
            )?;
            worker.run(stop).await?;
        }
    }
    Ok(())
}
