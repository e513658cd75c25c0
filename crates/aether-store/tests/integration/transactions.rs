//! Transactions (`EventStore::commit`): transfers between accounts appended all or nothing, on
//! the in-memory store and on JetStream (nats-server 2.12+ atomic batches; older servers get
//! `Unsupported` before anything is written).
//!
//! Every test event carries the id of its transaction in its metadata (`txn`), so that the
//! checks can tell, from the replays alone, that every acknowledged transaction is stored once
//! on each of its actors and none is stored on only some of them. The accounts of the transfer
//! runs are of two actor types (`checking`, `savings`), so most transfers span both.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_core::{ActorKey, Error, Event, EventStore, Transaction};
use aether_store::{
    InMemoryEventStore, JetStreamConfig, JetStreamEventStore, MAX_TRANSACTION_EVENTS,
};
use aether_testkit::NatsServer;
use tokio::task::JoinHandle;

const ACCOUNTS: usize = 10;
const WRITERS: usize = 8;

fn account(i: usize) -> String {
    format!("account-{i}")
}

/// The actor type of an account of the transfer runs: even accounts are `checking`, odd ones
/// `savings`, so that most transfers span two actor types.
fn typed(account: &str) -> ActorKey<'_> {
    let odd = account.bytes().last().is_some_and(|b| b % 2 == 1);
    ActorKey::new(if odd { "savings" } else { "checking" }, account)
}

/// A transfer between two accounts of the transfer runs, each of its actor type.
fn typed_transfer(from: &str, vf: u64, to: &str, vt: u64, amount: i64) -> Transaction {
    let txn = Transaction::new();
    let id = txn.id().to_string();
    let event = |account: &str, version: u64, amount: i64| {
        let key = typed(account);
        moved(account, version, amount, &id).with_actor_type(key.actor_type.unwrap_or_default())
    };
    let (on_from, on_to) = (event(from, vf + 1, -amount), event(to, vt + 1, amount));
    txn.append(from, vf, vec![on_from])
        .append(to, vt, vec![on_to])
}

fn moved(actor: &str, version: u64, amount: i64, txn: &str) -> Event {
    Event::new("Moved", actor, version)
        .with_field("amount", amount)
        .with_metadata("txn", txn)
}

/// A transfer of `amount` from `from` (at version `vf`) to `to` (at version `vt`).
fn transfer(from: &str, vf: u64, to: &str, vt: u64, amount: i64) -> Transaction {
    let txn = Transaction::new();
    let id = txn.id().to_string();
    txn.append(from, vf, vec![moved(from, vf + 1, -amount, &id)])
        .append(to, vt, vec![moved(to, vt + 1, amount, &id)])
}

/// Attempts at one transfer before a writer gives it up (counted in [`Ledger::abandoned`]).
const ATTEMPTS: usize = 50;
/// Transactions the reader must have checked on their other account while writers were
/// committing, for "never seen half done" to have been put to the test.
const MIN_CHECKED_IN_FLIGHT: u64 = 100;
/// How long a step of a transfer run may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// One call to `commit`: when it was made, when it returned, and whether it was acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitCall {
    pub(crate) invoked: Instant,
    pub(crate) returned: Instant,
    pub(crate) acked: bool,
}

/// What the writers saw: acknowledged transactions, and those whose outcome is unknown.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) acked: Vec<(String, [String; 2])>,
    pub(crate) unknown: HashSet<String>,
    pub(crate) conflicts: u64,
    /// Transfers the writers started (each ends acknowledged or abandoned).
    pub(crate) transfers: u64,
    /// Transfers given up after [`ATTEMPTS`] attempts without an acknowledgement.
    pub(crate) abandoned: u64,
    /// Every call to `commit`, in the order the calls returned.
    pub(crate) commits: Vec<CommitCall>,
    /// Transactions the reader checked on their other account in rounds that ran entirely
    /// while writers were committing.
    pub(crate) checked_in_flight: u64,
}

/// Writers doing random transfers between [`ACCOUNTS`] accounts, one task per store, and,
/// when asked, a reader checking that no replay shows half a transaction.
///
/// Each writer does at least `per_writer` transfers (retrying conflicts with fresh versions)
/// and then goes on until [`release`](Self::release)d, so that a test can keep transfers in
/// flight until its fault has certainly met them.
///
/// The reader reads one account, then the others: a transaction seen on the first must be on
/// its other account, read later. That holds when every read is served by one server; on a
/// replicated stream, reads may be served by replicas at different points, so there the
/// histories are checked through each server once the replicas are current.
pub(crate) struct Transfers {
    ledger: Arc<Mutex<Ledger>>,
    release: Arc<AtomicBool>,
    /// Calls to `commit` under way.
    in_flight: Arc<AtomicUsize>,
    /// The reader's checks made while writers were committing.
    checked: Arc<AtomicU64>,
    writers: Vec<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

impl Transfers {
    pub(crate) fn start<S: EventStore + 'static>(
        stores: Vec<Arc<S>>,
        per_writer: usize,
        check_reads: bool,
    ) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let release = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(stores.len()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let checked = Arc::new(AtomicU64::new(0));
        let writers = stores
            .iter()
            .enumerate()
            .map(|(w, store)| {
                tokio::spawn(write_transfers(
                    w as u64 + 1,
                    Arc::clone(store),
                    per_writer,
                    Writer {
                        ledger: Arc::clone(&ledger),
                        release: Arc::clone(&release),
                        running: Arc::clone(&running),
                        in_flight: Arc::clone(&in_flight),
                    },
                ))
            })
            .collect();
        let reader = check_reads.then(|| {
            tokio::spawn(check_reads_while_writing(
                Arc::clone(&stores[0]),
                Arc::clone(&running),
                Arc::clone(&checked),
            ))
        });
        Self {
            ledger,
            release,
            in_flight,
            checked,
            writers,
            reader,
        }
    }

    /// Calls to `commit` under way now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Transactions acknowledged to calls made after `since`.
    pub(crate) fn acked_since(&self, since: Instant) -> usize {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .commits
            .iter()
            .filter(|c| c.acked && c.invoked > since)
            .count()
    }

    /// Waits until `cond` holds of the transfers.
    ///
    /// # Panics
    /// After [`PATIENCE`], saying `what` was awaited; at once, with its panic, if the reader or
    /// a writer stopped (before their release, only a panic stops them).
    pub(crate) async fn wait_for(&mut self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond(self) {
            if self.reader.as_ref().is_some_and(JoinHandle::is_finished) {
                let reader = self.reader.take().unwrap();
                reader.await.expect("the reader panicked");
            }
            if let Some(i) = self.writers.iter().position(JoinHandle::is_finished) {
                self.writers.remove(i).await.expect("a writer panicked");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {PATIENCE:?} ({})",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Where the run stands, for a failure message.
    fn summary(&self) -> String {
        let ledger = self.ledger.lock().unwrap();
        format!(
            "{} transfers acknowledged, {} unanswered, {} conflicts, {} commits in flight, {} \
             transactions checked by the reader mid-flight",
            ledger.acked.len(),
            ledger.unknown.len(),
            ledger.conflicts,
            self.in_flight(),
            self.checked.load(Ordering::SeqCst)
        )
    }

    /// Lets the writers stop once each has done its `per_writer` transfers.
    pub(crate) fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    /// Releases the writers, waits for them and the reader, and returns what they saw.
    ///
    /// # Panics
    /// If a transfer was given up: a transfer must not vanish from the run unreported.
    pub(crate) async fn finish(self) -> Ledger {
        self.release();
        for w in self.writers {
            w.await.expect("a writer panicked");
        }
        if let Some(reader) = self.reader {
            reader.await.expect("the reader panicked");
        }
        let mut ledger = Arc::try_unwrap(self.ledger)
            .ok()
            .expect("writers are done")
            .into_inner()
            .unwrap();
        ledger.checked_in_flight = self.checked.load(Ordering::SeqCst);
        assert_eq!(
            ledger.abandoned, 0,
            "{} of {} transfers were given up after {ATTEMPTS} attempts each",
            ledger.abandoned, ledger.transfers
        );
        ledger
    }
}

/// What a writer task shares with the others and with the test.
struct Writer {
    ledger: Arc<Mutex<Ledger>>,
    release: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

async fn write_transfers<S: EventStore>(seed: u64, store: Arc<S>, per_writer: usize, w: Writer) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut done = 0;
    while done < per_writer || !w.release.load(Ordering::SeqCst) {
        done += 1;
        let a = rng.usize(0..ACCOUNTS);
        let b = (a + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
        let (from, to) = (account(a), account(b));
        let amount = rng.i64(1..100);
        let mut settled = false;
        for _attempt in 0..ATTEMPTS {
            // Reads fail while a replicated stream elects a leader: try again.
            let (Ok(vf), Ok(vt)) = (
                store.latest_version_of(typed(&from)).await,
                store.latest_version_of(typed(&to)).await,
            ) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let txn = typed_transfer(&from, vf, &to, vt, amount);
            w.in_flight.fetch_add(1, Ordering::SeqCst);
            let invoked = Instant::now();
            let result = store.commit(&txn).await;
            let returned = Instant::now();
            w.in_flight.fetch_sub(1, Ordering::SeqCst);
            let pause = {
                let mut ledger = w.ledger.lock().unwrap();
                ledger.commits.push(CommitCall {
                    invoked,
                    returned,
                    acked: result.is_ok(),
                });
                match result {
                    Ok(()) => {
                        ledger
                            .acked
                            .push((txn.id().to_string(), [from.clone(), to.clone()]));
                        settled = true;
                        break;
                    }
                    Err(Error::TransactionConflict(c)) => {
                        assert!(!c.conflicts.is_empty());
                        for conflict in &c.conflicts {
                            assert!(conflict.actor_id == from || conflict.actor_id == to);
                        }
                        ledger.conflicts += 1;
                        Duration::from_millis(rng.u64(0..5))
                    }
                    Err(e) if e.is_retryable() => {
                        ledger.unknown.insert(txn.id().to_string());
                        Duration::from_millis(50)
                    }
                    Err(e) => panic!("transfer failed: {e:?}"),
                }
            };
            tokio::time::sleep(pause).await;
        }
        {
            let mut ledger = w.ledger.lock().unwrap();
            ledger.transfers += 1;
            if !settled {
                ledger.abandoned += 1;
            }
        }
        // The in-memory store never waits: let the reader and the other writers run.
        tokio::task::yield_now().await;
    }
    w.running.fetch_sub(1, Ordering::SeqCst);
}

/// The reader: while writers run, reads one account and then every other one, and checks that
/// each transaction on the first is on exactly one of the others. Only rounds that ended with
/// writers still at work count towards `checked`: they saw the accounts mid-flight.
async fn check_reads_while_writing<S: EventStore>(
    store: Arc<S>,
    running: Arc<AtomicUsize>,
    checked: Arc<AtomicU64>,
) {
    let mut round = 0;
    while running.load(Ordering::SeqCst) > 0 {
        let a = account(round % ACCOUNTS);
        round += 1;
        // The reader runs on a single server (or in memory), where every read is answered.
        let read = |actor: String| {
            let store = Arc::clone(&store);
            async move {
                store
                    .events_of(typed(&actor), 1)
                    .await
                    .unwrap_or_else(|e| panic!("the reader could not read {actor}: {e:?}"))
            }
        };
        let first = read(a.clone()).await;
        let mut by_other: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        for b in (0..ACCOUNTS).map(account).filter(|b| *b != a) {
            let ids = read(b.clone())
                .await
                .iter()
                .filter_map(|e| e.metadata_value("txn").map(str::to_string))
                .collect();
            by_other.insert(b, ids);
        }
        for e in &first {
            let txn = e.metadata_value("txn").unwrap();
            let elsewhere = by_other.values().filter(|ids| ids.contains(txn)).count();
            assert_eq!(
                elsewhere, 1,
                "transaction {txn} is on {a} but not on its other account"
            );
        }
        if running.load(Ordering::SeqCst) > 0 {
            checked.fetch_add(first.len() as u64, Ordering::SeqCst);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs [`Transfers`] to the end: at least `per_writer` transfers per store and, when
/// `check_reads`, until the reader has checked [`MIN_CHECKED_IN_FLIGHT`] transactions seen
/// while writers were committing.
pub(crate) async fn run_transfers<S: EventStore + 'static>(
    stores: Vec<Arc<S>>,
    per_writer: usize,
    check_reads: bool,
) -> Ledger {
    let mut transfers = Transfers::start(stores, per_writer, check_reads);
    if check_reads {
        transfers
            .wait_for(
                "the reader checking transactions while transfers are in flight",
                |t| t.checked.load(Ordering::SeqCst) >= MIN_CHECKED_IN_FLIGHT,
            )
            .await;
    }
    let ledger = transfers.finish().await;
    assert!(!check_reads || ledger.checked_in_flight >= MIN_CHECKED_IN_FLIGHT);
    ledger
}

/// Checks the final histories against the ledger: the total is conserved, every acknowledged
/// transaction is stored exactly once on each of its two accounts, none is stored on only
/// one, versions are 1, 2, 3, ... on every account.
pub(crate) async fn check_histories<S: EventStore>(store: &S, ledger: &Ledger) {
    let mut total = 0i64;
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..ACCOUNTS {
        let a = account(i);
        let events = store.events_of(typed(&a), 1).await.unwrap();
        assert!(
            events.iter().all(|e| e.actor_key() == typed(&a)),
            "{a} holds another actor's events"
        );
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        let want: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(versions, want, "versions of {a}");
        for e in &events {
            total += e.data["amount"].as_i64().unwrap();
            seen.entry(e.metadata_value("txn").unwrap().to_string())
                .or_default()
                .push(a.clone());
        }
    }
    assert_eq!(total, 0, "the total must be conserved");
    for (txn, accounts) in &seen {
        assert_eq!(
            accounts.len(),
            2,
            "transaction {txn} stored on {accounts:?}"
        );
        assert_ne!(accounts[0], accounts[1]);
    }
    for (txn, accounts) in &ledger.acked {
        let mut stored = seen.get(txn).cloned().unwrap_or_default();
        stored.sort();
        let mut want = accounts.to_vec();
        want.sort();
        assert_eq!(stored, want, "acknowledged transaction {txn}");
    }
    let acked: HashSet<&str> = ledger.acked.iter().map(|(t, _)| t.as_str()).collect();
    for txn in seen.keys() {
        assert!(
            acked.contains(txn.as_str()) || ledger.unknown.contains(txn),
            "transaction {txn} is stored but was neither acknowledged nor left unanswered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_transfers_conserve_the_total_and_are_never_seen_half_done() {
    let store = Arc::new(InMemoryEventStore::new());
    let stores = vec![Arc::clone(&store); WRITERS];
    let ledger = run_transfers(stores, 100, true).await;
    // Every transfer acknowledged (writers go on past their 100 until the reader is done).
    assert!(ledger.transfers >= (WRITERS * 100) as u64);
    assert_eq!(ledger.acked.len() as u64, ledger.transfers);
    check_histories(store.as_ref(), &ledger).await;
}

/// Conflicts name every actor whose expectation failed; bad transactions are refused; nothing
/// of a refused transaction is written. `batch_limit`: whether the store refuses transactions
/// of more than [`MAX_TRANSACTION_EVENTS`] events (JetStream does; memory has no limit).
async fn conflicts_and_bad_input<S: EventStore>(store: &S, batch_limit: bool) {
    store
        .commit(&transfer("x", 0, "y", 0, 5))
        .await
        .expect("first transfer");
    assert_eq!(store.get_latest_version("x").await.unwrap(), 1);
    assert_eq!(store.get_latest_version("y").await.unwrap(), 1);
    // Both stale: both named, with their current versions.
    let err = store
        .commit(&transfer("x", 0, "y", 0, 5))
        .await
        .unwrap_err();
    let c = err
        .as_transaction_conflict()
        .expect("a transaction conflict");
    let mut named: Vec<(&str, u64)> = c
        .conflicts
        .iter()
        .map(|v| (v.actor_id.as_str(), v.current_version))
        .collect();
    named.sort();
    assert_eq!(named, [("x", 1), ("y", 1)]);
    assert!(err.is_retryable());
    // One stale: only it is named, and the other actor is not written either.
    let err = store
        .commit(&transfer("x", 1, "z", 3, 5))
        .await
        .unwrap_err();
    let c = err.as_transaction_conflict().unwrap();
    assert_eq!(c.conflicts.len(), 1);
    assert_eq!(
        (
            c.conflicts[0].actor_id.as_str(),
            c.conflicts[0].current_version
        ),
        ("z", 0)
    );
    assert_eq!(store.get_latest_version("x").await.unwrap(), 1);

    let e = |a: &str, v: u64| moved(a, v, 1, "t");
    let too_many: Vec<Event> = (1..=MAX_TRANSACTION_EVENTS as u64 + 1)
        .map(|v| e("big", v))
        .collect();
    let bad = [
        Transaction::new(),
        Transaction::new()
            .append("x", 1, vec![e("x", 2)])
            .append("x", 2, vec![e("x", 3)]),
        Transaction::new().append("x", 1, vec![]),
        Transaction::new().append("x", 1, vec![e("y", 2)]),
        Transaction::new().append("x", 1, vec![e("x", 3)]),
        Transaction::with_id("not an id").append("x", 1, vec![e("x", 2)]),
    ];
    for txn in bad {
        let err = store.commit(&txn).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{txn:?}: {err:?}");
    }
    // Beyond the server's batch limit: refused by JetStream, before anything is written; the
    // in-memory store has no limit.
    let big = Transaction::new().append("big", 0, too_many);
    let result = store.commit(&big).await;
    if batch_limit {
        let err = result.expect_err("a transaction over the batch limit was accepted");
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(store.get_latest_version("big").await.unwrap(), 0);
    } else {
        result.expect("the in-memory store has no batch limit");
        assert_eq!(
            store.get_latest_version("big").await.unwrap(),
            MAX_TRANSACTION_EVENTS as u64 + 1
        );
    }
    assert_eq!(store.get_latest_version("x").await.unwrap(), 1);
    assert_eq!(store.get_latest_version("y").await.unwrap(), 1);
}

#[tokio::test]
async fn memory_conflicts_and_bad_input() {
    conflicts_and_bad_input(&InMemoryEventStore::new(), false).await;
}

/// On servers before 2.12 a transaction is refused with `Unsupported` before anything is
/// written: there is no atomic batch to put it in.
pub(crate) async fn assert_unsupported(store: &JetStreamEventStore) {
    let err = store
        .commit(&transfer("a", 0, "b", 0, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("2.12"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.get_latest_version("a").await.unwrap(), 0);
    assert_eq!(store.get_latest_version("b").await.unwrap(), 0);
}

async fn open(url: &str, namespace: &str) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    JetStreamEventStore::new(client, JetStreamConfig::default().namespace(namespace))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_transfers_conserve_the_total_and_are_never_seen_half_done() {
    let server = NatsServer::start().unwrap();
    if !server.version().at_least(2, 12) {
        assert_unsupported(&open(&server.url(), "txn").await).await;
        return;
    }
    // Writers on separate connections.
    let mut stores = Vec::new();
    for _ in 0..WRITERS {
        stores.push(Arc::new(open(&server.url(), "txn").await));
    }
    let ledger = run_transfers(stores, 25, true).await;
    assert!(ledger.transfers >= (WRITERS * 25) as u64);
    assert_eq!(ledger.acked.len() as u64, ledger.transfers);
    eprintln!(
        "{} transfers, {} conflicts, {} transactions checked by the reader mid-flight",
        ledger.acked.len(),
        ledger.conflicts,
        ledger.checked_in_flight
    );
    let reader = open(&server.url(), "txn").await;
    check_histories(&reader, &ledger).await;
    // Each event is its own message, with the transaction named in a header.
    let info = reader.stream_info().await.unwrap();
    assert!(info.config.allow_atomic_publish);
    assert_eq!(info.state.messages, 2 * ledger.acked.len() as u64);
}

/// On a partitioned log a transaction is whole within its partition: the accounts share one
/// through their partition key (the id up to the first `-`), next to partitions left idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_transfers_conserve_the_total_and_are_never_seen_half_done() {
    let server = NatsServer::start().unwrap();
    let open = || async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let config = JetStreamConfig::default()
            .namespace("ptxn")
            .partitions(4)
            .partition_key(aether_store::PartitionKey::IdPrefix('-'));
        JetStreamEventStore::new(client, config).await.unwrap()
    };
    if !server.version().at_least(2, 12) {
        // Within one partition: unsupported, as on an unpartitioned store.
        let store = open().await;
        let err = store
            .commit(&transfer(&account(1), 0, &account(2), 0, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        return;
    }
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(open().await));
    }
    let ledger = run_transfers(stores, 15, true).await;
    assert_eq!(ledger.acked.len() as u64, ledger.transfers);
    let reader = open().await;
    check_histories(&reader, &ledger).await;
    let part = reader.partition_of(account(0).as_str()) as usize;
    let messages: Vec<u64> = reader
        .stream_infos()
        .await
        .unwrap()
        .iter()
        .map(|i| i.state.messages)
        .collect();
    for (k, m) in messages.iter().enumerate() {
        let want = if k == part {
            2 * ledger.acked.len() as u64
        } else {
            0
        };
        assert_eq!(*m, want, "partition {k} of {messages:?}");
    }
}

#[tokio::test]
async fn jetstream_conflicts_and_bad_input() {
    let server = NatsServer::start().unwrap();
    let store = open(&server.url(), "txn-bad").await;
    if !server.version().at_least(2, 12) {
        // Bad input is refused as such on every server; a valid transaction is unsupported.
        let bad = Transaction::new().append("x", 0, vec![moved("y", 1, 1, "t")]);
        assert!(matches!(
            store.commit(&bad).await,
            Err(Error::InvalidInput(_))
        ));
        assert_unsupported(&store).await;
        return;
    }
    conflicts_and_bad_input(&store, true).await;
    // Transactions and single-actor saves mix on one actor, and every read sees both.
    store
        .save_events("x", &[moved("x", 2, 1, "s"), moved("x", 3, 1, "s")])
        .await
        .unwrap();
    store.commit(&transfer("x", 3, "y", 1, 2)).await.unwrap();
    store.save_event(&moved("x", 5, 1, "s")).await.unwrap();
    let versions: Vec<u64> = store
        .get_events("x", 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(store.get_latest_version("x").await.unwrap(), 5);
    let committed = &store.get_events("x", 4).await.unwrap()[0];
    assert!(committed.metadata_value("txn").is_some());
    // A payload over the server's limit is refused before anything is sent.
    let huge = Event::new("Moved", "x", 6).with_field("blob", "x".repeat(2 * 1024 * 1024));
    let err = store
        .commit(&Transaction::new().append("x", 5, vec![huge]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err:?}");
    assert_eq!(store.get_latest_version("x").await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_commit_is_stored_at_most_once() {
    let mut server = NatsServer::start().unwrap();
    if !server.version().at_least(2, 12) {
        assert_unsupported(&open(&server.url(), "lost").await).await;
        return;
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default()
                .namespace("lost")
                .request_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    store.commit(&transfer("a", 0, "b", 0, 1)).await.unwrap();
    // The server stalls while the commit is in flight, and stays stalled until the commit has
    // returned: every attempt and every check the store makes goes unanswered, so the store
    // cannot know whether the transaction is stored and must say so. (Resumed any earlier,
    // the store's own retry may find the transaction and return `Ok`, and this path would
    // not run.)
    server.pause().unwrap();
    let txn = transfer("a", 1, "b", 1, 7);
    let task = {
        let (store, txn) = (store.clone(), txn.clone());
        tokio::spawn(async move { store.commit(&txn).await })
    };
    let outcome = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the commit never returned while the server was stalled")
        .unwrap();
    server.resume().unwrap();
    eprintln!("commit across the stall: {outcome:?}");
    let err = outcome.expect_err("a commit was acknowledged by a stalled server");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Resumed, the server works through what it received during the stall. An atomic batch is
    // applied when its last message is processed, which a read may overtake; a save on the
    // same connection, once acknowledged, is behind it in the stream.
    store
        .save_event(&moved("after-the-stall", 1, 0, "none"))
        .await
        .unwrap();
    let copies = |events: &[Event]| {
        events
            .iter()
            .filter(|e| e.metadata_value("txn") == Some(txn.id()))
            .count()
    };
    let on_a = copies(&store.get_events("a", 1).await.unwrap());
    let on_b = copies(&store.get_events("b", 1).await.unwrap());
    eprintln!("stored {on_a} time(s) after the resume");
    assert_eq!(on_a, on_b, "never half a transaction");
    assert!(on_a <= 1, "an unanswered commit stored {on_a} times");
    // Committing it again either stores it now or finds the actors moved on.
    match store.commit(&txn).await {
        Ok(()) => assert_eq!(on_a, 0),
        Err(e) => {
            assert!(e.as_transaction_conflict().is_some(), "{e:?}");
            assert_eq!(on_a, 1);
        }
    }
    assert_eq!(copies(&store.get_events("a", 1).await.unwrap()), 1);
    assert_eq!(copies(&store.get_events("b", 1).await.unwrap()), 1);
}
