//! Projection worker processes killed with SIGKILL mid-stream:
//! - one projection, started again: the SQLite read model ends equal to a rebuild from
//!   scratch, every event applied exactly once (each event and its position are written in one
//!   SQLite transaction);
//! - one worker of a partitioned projection (at least once, checkpoints and leases in a NATS
//!   bucket), replaced by another worker: it takes the dead worker's partitions over once their
//!   leases expire and resumes them from their checkpoints; the read model, which ignores
//!   redeliveries by version, ends equal to a rebuild from scratch.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aether_core::{EventLog, EventStore};
use aether_examples::read_model::SqlBalances;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;

const ACCOUNTS: u64 = 20;
const DEPOSITS: u64 = 60;
/// Accounts written after the kill: whatever the killed worker got through (a loaded machine
/// may let it finish the first accounts before the test sees it progress and kills it), the
/// stream then goes on past its position, so the worker started next resumes mid-stream.
const LATER: Range<u64> = ACCOUNTS..ACCOUNTS + 2;

/// The worker program, built by cargo for this test.
fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_projection-worker"))
}

/// A running worker, killed (SIGKILL) when dropped, so that a failing test leaves none behind.
struct Worker(Child);

impl Worker {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(url: &str, db: &std::path::Path) -> Worker {
    start_over(url, db, 1)
}

/// The exactly-once worker over a log of `log_partitions` streams.
fn start_over(url: &str, db: &std::path::Path, log_partitions: u32) -> Worker {
    Worker(
        Command::new(worker_binary())
            .args([url, "crash", db.to_str().expect("utf-8 path")])
            .args(["--log-partitions", &log_partitions.to_string()])
            .spawn()
            .expect("the worker starts"),
    )
}

/// A worker of the partitioned projection over a log of `log_partitions` streams.
fn start_partitioned_over(
    url: &str,
    db: &std::path::Path,
    id: &str,
    log_partitions: u32,
) -> Worker {
    Worker(
        Command::new(worker_binary())
            .args([
                url,
                "crash",
                db.to_str().expect("utf-8 path"),
                "partitioned",
                id,
            ])
            .args(["--log-partitions", &log_partitions.to_string()])
            .spawn()
            .expect("the worker starts"),
    )
}

/// Stores `accounts` with `DEPOSITS` deposits each, one message per deposit when `batched` is
/// false, else one batch (one message) of deposits per account; returns the balances a
/// rebuild gives.
async fn write_accounts(
    store: &JetStreamEventStore,
    accounts: Range<u64>,
    batched: bool,
) -> BTreeMap<String, i64> {
    use aether_examples::bank::BankEvent;
    let codec = aether_actor::EventCodec::<BankEvent>::default();
    let stored = |actor: &str, version: u64, event: BankEvent| {
        codec.encode(&event).unwrap().into_event(actor, version)
    };
    let mut expected = BTreeMap::new();
    for a in accounts {
        let actor = format!("acc-{a:02}");
        store
            .save_event(&stored(
                &actor,
                1,
                BankEvent::AccountOpened { owner: "x".into() },
            ))
            .await
            .unwrap();
        let deposits: Vec<_> = (0..DEPOSITS)
            .map(|v| {
                stored(
                    &actor,
                    v + 2,
                    BankEvent::Deposited {
                        amount: v as i64 + 1,
                    },
                )
            })
            .collect();
        if batched {
            store.save_events(&actor, &deposits).await.unwrap();
        } else {
            for d in &deposits {
                store.save_event(d).await.unwrap();
            }
        }
        expected.insert(actor, (DEPOSITS * (DEPOSITS + 1) / 2) as i64);
    }
    expected
}

fn balances(db: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    SqlBalances::open(db)
        .and_then(|s| s.balances())
        .map(|rows| rows.into_iter().map(|(a, _, b)| (a, b)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_resumes_and_applies_every_event_once() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("crash"))
        .await
        .unwrap();
    let mut expected = write_accounts(&store, 0..ACCOUNTS, true).await;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("balances.db");
    let mut worker = start(&url, &db);
    // Kill it once it is part of the way through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress = SqlBalances::open(&db)
            .ok()
            .and_then(|s| s.checkpoint("balances").ok().flatten());
        if progress.is_some_and(|p| p.sequence >= 5) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill(); // SIGKILL
    let at_kill = SqlBalances::open(&db)
        .unwrap()
        .checkpoint("balances")
        .unwrap();
    expected.extend(write_accounts(&store, LATER, true).await);
    let head = store.head().await.unwrap().unwrap();
    assert!(at_kill.is_some_and(|p| p.sequence >= 5 && p.sequence < head.sequence));

    let _worker = start(&url, &db);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Deposits only add: a balance equal to the sum means each was applied exactly once
    // (one applied twice would overshoot, and the worker would never apply it back).
    while balances(&db) != expected {
        assert!(
            Instant::now() < deadline,
            "the restarted worker did not catch up: {:?}",
            balances(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_end = SqlBalances::open(&db)
        .unwrap()
        .checkpoint("balances")
        .unwrap();
    assert_eq!(at_end.map(|p| p.sequence), Some(head.sequence));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_killed_mid_stream_is_replaced_and_nothing_is_lost() {
    kill_and_replace_a_worker(1).await;
}

/// Workers of a partitioned projection over a log of four streams: one is killed mid-stream
/// and another takes its units (log partition and shard) over; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_partitioned_log_a_killed_worker_is_replaced_and_nothing_is_lost() {
    kill_and_replace_a_worker(4).await;
}

/// A worker of the partitioned projection over a log of `log_partitions` streams is killed
/// mid-stream; a second worker takes its partitions over once their leases expire and
/// resumes them from their checkpoints; the read model ends equal to a rebuild.
async fn kill_and_replace_a_worker(log_partitions: u32) {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let config = JetStreamConfig::default()
        .namespace("crash")
        .partitions(log_partitions);
    let store = JetStreamEventStore::new(client, config).await.unwrap();
    // One message per deposit, so that the stream is long enough to stop halfway.
    let mut expected = write_accounts(&store, 0..ACCOUNTS, false).await;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("balances.db");
    let mut first = start_partitioned_over(&url, &db, "first", log_partitions);
    let deadline = Instant::now() + Duration::from_secs(60);
    while balances(&db).values().sum::<i64>() == 0 {
        assert!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill(); // SIGKILL: its leases stay until they expire
    expected.extend(write_accounts(&store, LATER, false).await);
    let at_kill: i64 = balances(&db).values().sum();
    assert!(at_kill > 0 && at_kill < expected.values().sum());

    let _second = start_partitioned_over(&url, &db, "second", log_partitions);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Deposits only add, and the read model ignores an event at or below an account's
    // version: a balance equal to the sum means each deposit was applied once.
    while balances(&db) != expected {
        assert!(
            Instant::now() < deadline,
            "the second worker did not take over: {:?}",
            balances(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The exactly-once projection over a log of four streams, killed mid-stream and started
/// again: each partition resumes from the position its sink stored (one per partition), and
/// the read model ends equal to a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_partitioned_log_a_killed_worker_resumes_every_partition_exactly_once() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let config = JetStreamConfig::default().namespace("crash").partitions(4);
    let store = JetStreamEventStore::new(client, config).await.unwrap();
    let mut expected = write_accounts(&store, 0..ACCOUNTS, false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("balances.db");
    let mut worker = start_over(&url, &db, 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    while balances(&db).values().sum::<i64>() == 0 {
        assert!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.kill(); // SIGKILL
    expected.extend(write_accounts(&store, LATER, false).await);
    let at_kill: i64 = balances(&db).values().sum();
    assert!(at_kill > 0 && at_kill < expected.values().sum());

    let _worker = start_over(&url, &db, 4);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Deposits only add and this sink applies each event once with its position: a balance
    // equal to the sum means no deposit was skipped or applied twice.
    while balances(&db) != expected {
        assert!(
            Instant::now() < deadline,
            "the restarted worker did not catch up: {:?}",
            balances(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One position per partition, each at its partition's head.
    let sink = SqlBalances::open(&db).unwrap();
    assert_eq!(sink.checkpoint("balances").unwrap(), None);
    let log: std::sync::Arc<dyn EventLog> = std::sync::Arc::new(store);
    for (k, part) in aether_core::log_partitions(&log).into_iter().enumerate() {
        let head = part.head().await.unwrap();
        let at = sink.checkpoint(&format!("balances.l{k}")).unwrap();
        assert_eq!(
            at.map(|p| p.sequence),
            head.map(|h| h.sequence),
            "partition {k}"
        );
    }
}
