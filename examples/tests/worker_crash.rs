//! Projection worker processes killed with SIGKILL mid-stream:
//! - one projection, started again: the SQLite read model ends equal to a rebuild from
//!   scratch, every event applied exactly once (each event and its position are written in one
//!   SQLite transaction);
//! - one worker of a partitioned projection (at least once, checkpoints and leases in a NATS
//!   bucket), replaced by another worker: it takes the dead worker's partitions over once their
//!   leases expire and resumes them from their checkpoints; the read model, which ignores
//!   redeliveries by version, ends equal to a rebuild from scratch.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aether_core::{EventLog, EventStore};
use aether_examples::read_model::SqlBalances;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;

const ACCOUNTS: u64 = 20;
const DEPOSITS: u64 = 60;

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
    Worker(
        Command::new(worker_binary())
            .args([url, "crash", db.to_str().expect("utf-8 path")])
            .spawn()
            .expect("the worker starts"),
    )
}

fn start_partitioned(url: &str, db: &std::path::Path, id: &str) -> Worker {
    Worker(
        Command::new(worker_binary())
            .args([
                url,
                "crash",
                db.to_str().expect("utf-8 path"),
                "partitioned",
                id,
            ])
            .spawn()
            .expect("the worker starts"),
    )
}

/// Stores `ACCOUNTS` accounts with `DEPOSITS` deposits each (a batch per account); returns the
/// balances a rebuild gives.
async fn write_accounts(store: &JetStreamEventStore) -> std::collections::BTreeMap<String, i64> {
    use aether_examples::bank::BankEvent;
    let codec = aether_actor::EventCodec::<BankEvent>::default();
    let stored = |actor: &str, version: u64, event: BankEvent| {
        codec.encode(&event).unwrap().into_event(actor, version)
    };
    let mut expected = std::collections::BTreeMap::new();
    for a in 0..ACCOUNTS {
        let actor = format!("acc-{a:02}");
        store
            .save_event(&stored(
                &actor,
                1,
                BankEvent::AccountOpened { owner: "x".into() },
            ))
            .await
            .unwrap();
        // One message per deposit, so that the stream is long enough to stop halfway.
        for v in 0..DEPOSITS {
            store
                .save_event(&stored(
                    &actor,
                    v + 2,
                    BankEvent::Deposited {
                        amount: v as i64 + 1,
                    },
                ))
                .await
                .unwrap();
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
    let codec = aether_actor::EventCodec::<aether_examples::bank::BankEvent>::default();
    let stored = |actor: &str, version: u64, event: aether_examples::bank::BankEvent| {
        codec.encode(&event).unwrap().into_event(actor, version)
    };
    let mut expected = std::collections::BTreeMap::new();
    for a in 0..ACCOUNTS {
        let actor = format!("acc-{a:02}");
        store
            .save_event(&stored(
                &actor,
                1,
                aether_examples::bank::BankEvent::AccountOpened { owner: "x".into() },
            ))
            .await
            .unwrap();
        let mut batch = Vec::new();
        for v in 0..DEPOSITS {
            batch.push(stored(
                &actor,
                v + 2,
                aether_examples::bank::BankEvent::Deposited {
                    amount: v as i64 + 1,
                },
            ));
        }
        store.save_events(&actor, &batch).await.unwrap();
        expected.insert(actor, (DEPOSITS * (DEPOSITS + 1) / 2) as i64);
    }
    let head = store.head().await.unwrap().unwrap();

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
    assert!(
        at_kill.map(|p| p.sequence) < Some(head.sequence),
        "killed after it finished: make the stream longer"
    );

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
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("crash"))
        .await
        .unwrap();
    let expected = write_accounts(&store).await;
    let total: i64 = expected.values().sum();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("balances.db");
    let mut first = start_partitioned(&url, &db, "first");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if balances(&db).values().sum::<i64>() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill(); // SIGKILL: its leases stay until they expire
    let at_kill: i64 = balances(&db).values().sum();
    assert!(
        at_kill < total,
        "finished before the kill: make the stream longer"
    );

    let _second = start_partitioned(&url, &db, "second");
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
