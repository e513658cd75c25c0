//! Transactions (`EventStore::commit`): transfers between accounts appended all or nothing, on
//! the in-memory store and on JetStream (nats-server 2.12+ atomic batches; older servers get
//! `Unsupported` before anything is written).
//!
//! Every test event carries the id of its transaction in its metadata (`txn`), so that the
//! checks can tell, from the replays alone, that every acknowledged transaction is stored once
//! on each of its actors and none is stored on only some of them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::{Error, Event, EventStore, Transaction};
use aether_store::{
    InMemoryEventStore, JetStreamConfig, JetStreamEventStore, MAX_TRANSACTION_EVENTS,
};
use aether_testkit::NatsServer;

const ACCOUNTS: usize = 10;
const WRITERS: usize = 8;

fn account(i: usize) -> String {
    format!("account-{i}")
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

/// What the writers saw: acknowledged transactions, and those whose outcome is unknown.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) acked: Vec<(String, [String; 2])>,
    pub(crate) unknown: HashSet<String>,
    pub(crate) conflicts: u64,
}

/// One task per store, each doing `per_writer` random transfers (retrying conflicts with
/// fresh versions), while a reader (when `check_reads`) checks that no replay shows half a
/// transaction.
///
/// The reader reads one account, then the others: a transaction seen on the first must be on
/// its other account, read later. That holds when every read is served by one server; on a
/// replicated stream, reads may be served by replicas at different points, so there the
/// histories are checked through each server once the replicas are current.
pub(crate) async fn run_transfers<S: EventStore + 'static>(
    stores: Vec<Arc<S>>,
    per_writer: usize,
    check_reads: bool,
) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let (store, ledger) = (Arc::clone(store), Arc::clone(&ledger));
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(w as u64 + 1);
            for _ in 0..per_writer {
                let a = rng.usize(0..ACCOUNTS);
                let b = (a + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
                let (from, to) = (account(a), account(b));
                let amount = rng.i64(1..100);
                for _attempt in 0..50 {
                    // Reads fail while a replicated stream elects a leader: try again.
                    let (Ok(vf), Ok(vt)) = (
                        store.get_latest_version(&from).await,
                        store.get_latest_version(&to).await,
                    ) else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let txn = transfer(&from, vf, &to, vt, amount);
                    match store.commit(&txn).await {
                        Ok(()) => {
                            ledger
                                .lock()
                                .unwrap()
                                .acked
                                .push((txn.id().to_string(), [from.clone(), to.clone()]));
                            break;
                        }
                        Err(Error::TransactionConflict(c)) => {
                            assert!(!c.conflicts.is_empty());
                            for conflict in &c.conflicts {
                                assert!(conflict.actor_id == from || conflict.actor_id == to);
                            }
                            ledger.lock().unwrap().conflicts += 1;
                            tokio::time::sleep(Duration::from_millis(rng.u64(0..5))).await;
                        }
                        Err(e) if e.is_retryable() => {
                            ledger.lock().unwrap().unknown.insert(txn.id().to_string());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("transfer failed: {e:?}"),
                    }
                }
            }
        }));
    }
    // A reader: a transaction seen on one account must be on the other, read after it.
    let reader = {
        let store = Arc::clone(&stores[0]);
        tokio::spawn(async move {
            let mut checks = 0u64;
            let rounds = if check_reads { 40 } else { 0 };
            for round in 0..rounds {
                let a = account(round % ACCOUNTS);
                // A read may fail while a replicated stream elects a leader; skip the round.
                let Ok(first) = store.get_events(&a, 1).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut by_other: BTreeMap<String, HashSet<String>> = BTreeMap::new();
                let mut complete = true;
                for b in (0..ACCOUNTS).map(account).filter(|b| *b != a) {
                    let Ok(events) = store.get_events(&b, 1).await else {
                        complete = false;
                        break;
                    };
                    let ids = events
                        .iter()
                        .filter_map(|e| e.metadata_value("txn").map(str::to_string))
                        .collect();
                    by_other.insert(b, ids);
                }
                if !complete {
                    continue;
                }
                for e in &first {
                    let txn = e.metadata_value("txn").unwrap();
                    let elsewhere = by_other.values().filter(|ids| ids.contains(txn)).count();
                    assert_eq!(
                        elsewhere, 1,
                        "transaction {txn} is on {a} but not on its other account"
                    );
                    checks += 1;
                }
                tokio::task::yield_now().await;
            }
            checks
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    Arc::try_unwrap(ledger)
        .ok()
        .expect("writers are done")
        .into_inner()
        .unwrap()
}

/// Checks the final histories against the ledger: the total is conserved, every acknowledged
/// transaction is stored exactly once on each of its two accounts, none is stored on only
/// one, versions are 1, 2, 3, ... on every account.
pub(crate) async fn check_histories<S: EventStore>(store: &S, ledger: &Ledger) {
    let mut total = 0i64;
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..ACCOUNTS {
        let a = account(i);
        let events = store.get_events(&a, 1).await.unwrap();
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
    assert_eq!(ledger.acked.len(), WRITERS * 100);
    check_histories(store.as_ref(), &ledger).await;
}

/// Conflicts name every actor whose expectation failed; bad transactions are refused; nothing
/// of a refused transaction is written.
async fn conflicts_and_bad_input<S: EventStore>(store: &S) {
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
    // Beyond the server's batch limit: refused by JetStream; the in-memory store has no limit.
    let big = Transaction::new().append("big", 0, too_many);
    if let Err(err) = store.commit(&big).await {
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(store.get_latest_version("big").await.unwrap(), 0);
    }
    assert_eq!(store.get_latest_version("x").await.unwrap(), 1);
    assert_eq!(store.get_latest_version("y").await.unwrap(), 1);
}

#[tokio::test]
async fn memory_conflicts_and_bad_input() {
    conflicts_and_bad_input(&InMemoryEventStore::new()).await;
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
    assert_eq!(ledger.acked.len(), WRITERS * 25);
    eprintln!(
        "{} transfers, {} conflicts",
        ledger.acked.len(),
        ledger.conflicts
    );
    let reader = open(&server.url(), "txn").await;
    check_histories(&reader, &ledger).await;
    // Each event is its own message, with the transaction named in a header.
    let info = reader.stream_info().await.unwrap();
    assert!(info.config.allow_atomic_publish);
    assert_eq!(info.state.messages, (WRITERS * 25 * 2) as u64);
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
    conflicts_and_bad_input(&store).await;
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
    let context = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(300))
        .build(client);
    let store = Arc::new(
        JetStreamEventStore::from_context(context, JetStreamConfig::default().namespace("lost"))
            .await
            .unwrap(),
    );
    store.commit(&transfer("a", 0, "b", 0, 1)).await.unwrap();
    // The server stalls while the commit is in flight: its acknowledgement is lost, the
    // store retries, and the transaction must be stored once.
    server.pause().unwrap();
    let txn = transfer("a", 1, "b", 1, 7);
    let task = {
        let (store, txn) = (store.clone(), txn.clone());
        tokio::spawn(async move { store.commit(&txn).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.resume().unwrap();
    let outcome = task.await.unwrap();
    eprintln!("commit across the stall: {outcome:?}");
    let copies = |events: &[Event]| {
        events
            .iter()
            .filter(|e| e.metadata_value("txn") == Some(txn.id()))
            .count()
    };
    let on_a = copies(&store.get_events("a", 1).await.unwrap());
    let on_b = copies(&store.get_events("b", 1).await.unwrap());
    assert_eq!(on_a, on_b, "never half a transaction");
    match &outcome {
        Ok(()) => assert_eq!(on_a, 1),
        Err(e) => {
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
            assert!(on_a <= 1);
        }
    }
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
