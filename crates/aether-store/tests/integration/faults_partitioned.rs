//! The partitioned log (`JetStreamConfig::partitions(4)`) under real faults, judged by the
//! history checker (`aether_testkit::history`).
//!
//! The actors are accounts `bank-<g>/acc-<i>` kept together by `PartitionKey::IdPrefix('/')`:
//! every bank `g` lives in one partition, and the banks are chosen so that each partition holds
//! some. Writer tasks save events one at a time and now and then in batches, read latest
//! versions, replay now and then, transfer between two accounts of one bank (a transaction,
//! nats-server 2.12+) and now and then try a transfer between banks of different partitions,
//! which must be refused before anything is sent. Every operation is recorded in one
//! `History`; at the end each account's history is read (through each server alone on a
//! cluster) and the checker holds the history against it: nothing acknowledged lost, nothing
//! stored twice, no version twice, every transaction and batch whole or absent, every refused
//! write absent. Transfers conserve each bank's total, and every failure is typed as retryable.
//!
//! 1. An R3 cluster: the leader of some partitions' streams is frozen until a transfer waits on
//!    it, killed with SIGKILL, and restarted. While the killed partitions have no leader, the
//!    other partitions go on acknowledging writes; the killed ones acknowledge nothing until a
//!    new leader is elected.
//! 2. One server: frozen while saves are in flight, resumed, killed with SIGKILL and restarted.
//!    Reads there must be linearizable too.
//!
//! Before 2.11 the store refuses replicated streams (see `faults_cluster`), and does so before
//! creating any partition's stream; before 2.12 transactions are `Unsupported`, so the runs
//! have no transfers.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::jetstream::retrying;
use aether_core::{Error, Event, EventStore, Transaction};
use aether_store::{JetStreamConfig, JetStreamEventStore, PartitionKey};
use aether_testkit::history::{CheckOptions, CheckReport, FinalState, History, Recorder, Rule};
use aether_testkit::{NatsCluster, NatsServer};
use tokio::task::{block_in_place, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::faults_cluster::{index_of, wait_for_leader, wait_for_replicas_current};
use crate::faults_support::{connect_pinned, connect_with, open_store, read_all, XorShift};

const PARTITIONS: u32 = 4;
/// Banks per partition, and accounts per bank.
const BANKS_PER_PARTITION: usize = 3;
const ACCOUNTS_PER_BANK: usize = 4;
/// Writes acknowledged between steps.
const STEADY: u64 = 40;
/// Longest a step may take: an election on a loaded machine.
const PHASE: Duration = Duration::from_secs(60);
/// How long a store waits for an answer, so that a fault turns into errors quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

fn config(namespace: &str) -> JetStreamConfig {
    JetStreamConfig::default()
        .namespace(namespace)
        .partitions(PARTITIONS)
        .partition_key(PartitionKey::IdPrefix('/'))
}

/// The accounts of a run, bank by bank.
#[derive(Debug)]
struct Bank {
    /// Every account's id and partition.
    accounts: Vec<(String, u32)>,
    /// The accounts (indices into `accounts`) of each bank.
    banks: Vec<Vec<usize>>,
}

impl Bank {
    /// [`BANKS_PER_PARTITION`] banks in every partition of `store`, the first ids that fall
    /// there.
    fn new(store: &JetStreamEventStore) -> Self {
        let mut per_partition = [0usize; PARTITIONS as usize];
        let mut bank = Self {
            accounts: Vec::new(),
            banks: Vec::new(),
        };
        for g in 0.. {
            if per_partition.iter().all(|n| *n == BANKS_PER_PARTITION) {
                break;
            }
            let p = store.partition_of(format!("bank-{g}").as_str());
            if per_partition[p as usize] == BANKS_PER_PARTITION {
                continue;
            }
            per_partition[p as usize] += 1;
            let mut members = Vec::new();
            for i in 0..ACCOUNTS_PER_BANK {
                let id = format!("bank-{g}/acc-{i}");
                assert_eq!(store.partition_of(id.as_str()), p, "{id} left its bank");
                members.push(bank.accounts.len());
                bank.accounts.push((id, p));
            }
            bank.banks.push(members);
        }
        bank
    }

    fn bank_of(&self, account: usize) -> &[usize] {
        self.banks
            .iter()
            .find(|b| b.contains(&account))
            .expect("every account is in a bank")
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        self.accounts.iter().map(|(id, _)| id.as_str())
    }
}

/// A write (save, batch or transfer) and how it ended.
#[derive(Debug, Clone, Copy)]
struct Write {
    partition: u32,
    transaction: bool,
    /// Taken before the store was called.
    invoked: Instant,
    /// Taken after it answered.
    answered: Instant,
    acked: bool,
}

/// What the writer tasks report while they run.
#[derive(Debug)]
struct Progress {
    /// Acknowledged writes, by partition.
    acks: Vec<AtomicU64>,
    /// Writes whose outcome is unknown (a timeout, a lost connection).
    unknown: AtomicU64,
    /// Transfers under way, by partition.
    commits_in_flight: Vec<AtomicUsize>,
    /// Transfers between banks of different partitions, refused as they must be.
    refused_across: AtomicU64,
    /// Every write, in the order they were answered.
    writes: Mutex<Vec<Write>>,
    /// Errors not typed as retryable, and answers that were wrong outright.
    hard_errors: Mutex<Vec<String>>,
}

impl Progress {
    fn new() -> Self {
        Self {
            acks: (0..PARTITIONS).map(|_| AtomicU64::new(0)).collect(),
            unknown: AtomicU64::new(0),
            commits_in_flight: (0..PARTITIONS).map(|_| AtomicUsize::new(0)).collect(),
            refused_across: AtomicU64::new(0),
            writes: Mutex::new(Vec::new()),
            hard_errors: Mutex::new(Vec::new()),
        }
    }

    fn acks_on(&self, partitions: &[u32]) -> u64 {
        partitions
            .iter()
            .map(|p| self.acks[*p as usize].load(Ordering::Relaxed))
            .sum()
    }

    fn commits_in_flight_on(&self, partitions: &[u32]) -> usize {
        partitions
            .iter()
            .map(|p| self.commits_in_flight[*p as usize].load(Ordering::SeqCst))
            .sum()
    }

    /// Writes on `partitions` matching `pick`.
    fn writes_on(&self, partitions: &[u32], pick: impl Fn(&Write) -> bool) -> Vec<Write> {
        let writes = self.writes.lock().unwrap();
        writes
            .iter()
            .filter(|w| partitions.contains(&w.partition) && pick(w))
            .copied()
            .collect()
    }

    fn hard(&self, what: String) {
        self.hard_errors.lock().unwrap().push(what);
    }

    /// Notes a failed operation as a hard error unless it is typed as retryable.
    fn failed(&self, what: &str, error: &Error) {
        if !error.is_retryable() {
            self.hard(format!("{what}: {error} ({error:?})"));
        }
    }
}

/// The writer tasks of one test, all recording into one history.
struct Writers {
    progress: Arc<Progress>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts writer tasks on each store: one writing every partition, or with `spread` one
    /// per partition, each writing only that partition's banks (so that a partition without a
    /// leader holds up only its own tasks). Transfers only with `transfers`.
    fn start(
        stores: &[(Arc<JetStreamEventStore>, bool)],
        bank: &Arc<Bank>,
        history: &History,
        transfers: bool,
    ) -> Self {
        let progress = Arc::new(Progress::new());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (store, spread) in stores {
            let tasks_on: Vec<Option<u32>> = if *spread {
                (0..PARTITIONS).map(Some).collect()
            } else {
                vec![None]
            };
            for only in tasks_on {
                let seed = tasks.len() as u64 + 1;
                tasks.push(tokio::spawn(write_loop(
                    Arc::clone(store),
                    history.recorder(),
                    Arc::clone(bank),
                    Arc::clone(&progress),
                    Task {
                        stop: stop.clone(),
                        seed,
                        only,
                        transfers,
                    },
                )));
            }
        }
        Self {
            progress,
            stop,
            tasks,
        }
    }

    /// Waits until `cond` holds of the progress.
    ///
    /// # Panics
    /// After [`PHASE`], saying `what` was awaited; at once if a writer task panicked.
    async fn wait_for(&mut self, what: &str, cond: impl Fn(&Progress) -> bool) {
        let deadline = Instant::now() + PHASE;
        while !cond(&self.progress) {
            if let Some(i) = self.tasks.iter().position(JoinHandle::is_finished) {
                self.tasks.remove(i).await.expect("a writer task panicked");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {PHASE:?} (acknowledged by partition {:?}, {} unknown)",
                self.progress.acks,
                self.progress.unknown.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `more` further writes on `partitions` were acknowledged.
    async fn wait_for_acks(&mut self, partitions: &[u32], more: u64) {
        let target = self.progress.acks_on(partitions) + more;
        let what = format!("{more} more writes acknowledged on partitions {partitions:?}");
        self.wait_for(&what, |p| p.acks_on(partitions) >= target)
            .await;
    }

    /// Waits until `more` further writes ended with an unknown outcome.
    async fn wait_for_unknown(&mut self, more: u64) {
        let target = self.progress.unknown.load(Ordering::Relaxed) + more;
        let what = format!("{more} more writes without an answer");
        self.wait_for(&what, |p| p.unknown.load(Ordering::Relaxed) >= target)
            .await;
    }

    /// Stops the writers, waits for the operations under way to end, and asserts that every
    /// failure was typed as retryable and every answer plausible.
    async fn finish(&mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            t.await.expect("a writer task panicked");
        }
        let hard = self.progress.hard_errors.lock().unwrap();
        assert!(
            hard.is_empty(),
            "{} failures were not retryable or answers wrong: {:#?}",
            hard.len(),
            &hard[..hard.len().min(5)]
        );
    }
}

/// A transfer's event on one account: the amount, and the transaction's id.
fn moved(actor: &str, version: u64, amount: i64, txn: &str) -> Event {
    Event::new("Moved", actor, version)
        .with_field("amount", amount)
        .with_metadata("txn", txn)
}

/// What a writer task is to do.
struct Task {
    stop: CancellationToken,
    seed: u64,
    /// The partition whose accounts it writes, or `None` for all.
    only: Option<u32>,
    transfers: bool,
}

/// One writer task. Picks an account (of its partition, if it has one); one in sixteen times replays it first; reads its latest
/// version unless it knows it (and one in three times anyway); then one in twenty-four times
/// tries a transfer to another partition's bank (which must be refused before anything is
/// sent), four in twenty-four times (with `transfers`) transfers to another account of its
/// bank, and otherwise saves the next event (one in eight times a batch of two or three).
/// Every call is recorded before it is made and completed with what the store answered.
async fn write_loop(
    store: Arc<JetStreamEventStore>,
    recorder: Recorder,
    bank: Arc<Bank>,
    progress: Arc<Progress>,
    task: Task,
) {
    let Task {
        stop,
        seed,
        only,
        transfers,
    } = task;
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut known: HashMap<usize, u64> = HashMap::new();
    let mut failed = false;
    let accounts = &bank.accounts;
    let mine: Vec<usize> = (0..accounts.len())
        .filter(|a| only.is_none_or(|p| accounts[*a].1 == p))
        .collect();
    while !stop.is_cancelled() {
        if failed {
            failed = false;
            // Back off while a partition has no leader rather than spinning.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let a = mine[rng.below(mine.len())];
        let (actor, partition) = (accounts[a].0.as_str(), accounts[a].1);
        if rng.below(16) == 0 {
            let from = 1 + rng.below(4) as u64;
            let pending = recorder.replay(actor, from);
            let result = store.get_events(actor, from).await;
            pending.finish(&result);
            if let Err(e) = result {
                progress.failed("replaying", &e);
                failed = true;
                continue;
            }
        }
        let latest_a = match known.get(&a) {
            Some(v) if rng.below(3) != 0 => *v,
            _ => match latest(&store, &recorder, &progress, actor).await {
                Some(v) => v,
                None => {
                    failed = true;
                    continue;
                }
            },
        };
        let roll = rng.below(24);
        if roll == 0 {
            // A transfer to a bank of another partition: refused, whatever the versions.
            let b = loop {
                let b = rng.below(accounts.len());
                if accounts[b].1 != partition {
                    break b;
                }
            };
            let other = accounts[b].0.as_str();
            let txn = Transaction::new();
            let id = txn.id().to_string();
            let txn = txn
                .append(actor, latest_a, vec![moved(actor, latest_a + 1, -1, &id)])
                .append(other, 0, vec![moved(other, 1, 1, &id)]);
            let pending = recorder.commit(&txn);
            match store.commit(&txn).await {
                Err(Error::CrossPartition(c)) => {
                    // Refused before anything was sent: a definite failure.
                    pending.error(c.to_string());
                    progress.refused_across.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    pending.finish(&other);
                    progress.hard(format!(
                        "a transfer from partition {partition} to {} was not refused: {other:?}",
                        accounts[b].1
                    ));
                }
            }
            continue;
        }
        if transfers && roll <= 4 {
            let members = bank.bank_of(a);
            let b = members[(members.iter().position(|m| *m == a).unwrap()
                + 1
                + rng.below(members.len() - 1))
                % members.len()];
            let other = accounts[b].0.as_str();
            let Some(latest_b) = latest(&store, &recorder, &progress, other).await else {
                failed = true;
                continue;
            };
            let amount = 1 + rng.below(100) as i64;
            let from = (actor, latest_a);
            let to = (other, latest_b);
            let result = transfer(&store, &recorder, &progress, partition, from, to, amount).await;
            match result {
                Ok(()) => {
                    known.insert(a, latest_a + 1);
                    known.insert(b, latest_b + 1);
                }
                Err(e) => {
                    known.remove(&a);
                    known.remove(&b);
                    if e.as_transaction_conflict().is_none() {
                        progress.failed("transferring", &e);
                        failed = true;
                    }
                }
            }
            continue;
        }
        let count = if rng.below(8) == 0 {
            2 + rng.below(2) as u64
        } else {
            1
        };
        let events: Vec<Event> = (latest_a + 1..=latest_a + count)
            .map(|v| Event::new("Ticked", actor, v).with_field("seed", seed))
            .collect();
        let pending = recorder.append_events(&events);
        let invoked = Instant::now();
        let result = if count == 1 {
            store.save_event(&events[0]).await
        } else {
            store.save_events(actor, &events).await
        };
        let answered = Instant::now();
        pending.finish(&result);
        record(&progress, partition, false, invoked, answered, &result);
        match result {
            Ok(()) => {
                known.insert(a, latest_a + count);
            }
            Err(e) => match e.as_version_conflict() {
                Some(c) => {
                    known.insert(a, c.current_version);
                }
                None => {
                    // It may or may not have gone in: ask the store next time.
                    known.remove(&a);
                    progress.failed("saving", &e);
                    failed = true;
                }
            },
        }
    }
}

/// The latest version of `actor`, read and recorded; `None` after a recorded failure.
async fn latest(
    store: &JetStreamEventStore,
    recorder: &Recorder,
    progress: &Progress,
    actor: &str,
) -> Option<u64> {
    let pending = recorder.read_version(actor);
    let result = store.get_latest_version(actor).await;
    pending.finish(&result);
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            progress.failed("reading a latest version", &e);
            None
        }
    }
}

/// Transfers `amount` from `from` to `to` (accounts of one bank in `partition`, each with the
/// version expected), recorded in the history and in the progress.
async fn transfer(
    store: &JetStreamEventStore,
    recorder: &Recorder,
    progress: &Progress,
    partition: u32,
    (from, from_version): (&str, u64),
    (to, to_version): (&str, u64),
    amount: i64,
) -> aether_core::Result<()> {
    let txn = Transaction::new();
    let id = txn.id().to_string();
    let txn = txn
        .append(
            from,
            from_version,
            vec![moved(from, from_version + 1, -amount, &id)],
        )
        .append(to, to_version, vec![moved(to, to_version + 1, amount, &id)]);
    let in_flight = &progress.commits_in_flight[partition as usize];
    let pending = recorder.commit(&txn);
    in_flight.fetch_add(1, Ordering::SeqCst);
    let invoked = Instant::now();
    let result = store.commit(&txn).await;
    let answered = Instant::now();
    in_flight.fetch_sub(1, Ordering::SeqCst);
    pending.finish(&result);
    record(progress, partition, true, invoked, answered, &result);
    result
}

/// Counts a write's outcome.
fn record(
    progress: &Progress,
    partition: u32,
    transaction: bool,
    invoked: Instant,
    answered: Instant,
    result: &aether_core::Result<()>,
) {
    let acked = result.is_ok();
    if acked {
        progress.acks[partition as usize].fetch_add(1, Ordering::Relaxed);
    } else if result
        .as_ref()
        .is_err_and(|e| !e.is_version_conflict() && e.as_transaction_conflict().is_none())
    {
        progress.unknown.fetch_add(1, Ordering::Relaxed);
    }
    progress.writes.lock().unwrap().push(Write {
        partition,
        transaction,
        invoked,
        answered,
        acked,
    });
}

/// Every account's history through `store`, and the check that transfers conserved each
/// bank's total.
async fn final_state(store: &JetStreamEventStore, bank: &Bank) -> FinalState {
    let mut state = FinalState::new();
    let mut totals = vec![0i64; bank.banks.len()];
    for (a, (id, _)) in bank.accounts.iter().enumerate() {
        let events = read_all(store, id).await;
        let b = bank.banks.iter().position(|m| m.contains(&a)).unwrap();
        totals[b] += events
            .iter()
            .filter_map(|e| e.data.get("amount").and_then(serde_json::Value::as_i64))
            .sum::<i64>();
        state.insert(id, events.iter().map(|e| (e.version, e.id.clone())));
    }
    assert!(
        totals.iter().all(|t| *t == 0),
        "transfers did not conserve the banks' totals: {totals:?}"
    );
    state
}

/// Runs the checker and asserts that it found nothing; returns its figures.
fn check(name: &str, history: &History, state: &FinalState, options: &CheckOptions) -> CheckReport {
    let (report, violations) = history.check_all(state, options);
    eprintln!("{name}: {report}");
    let mut by_rule: BTreeMap<Rule, Vec<String>> = BTreeMap::new();
    for v in &violations {
        by_rule.entry(v.rule).or_default().push(v.to_string());
    }
    let summary: Vec<String> = by_rule
        .iter()
        .map(|(rule, vs)| format!("{} {rule}:\n{}", vs.len(), vs[..vs.len().min(2)].join("\n")))
        .collect();
    assert!(violations.is_empty(), "{name}: {}", summary.join("\n"));
    report
}

/// The partitions' streams server `i` itself (its `/jsz`) takes itself for the leader of,
/// among `streams`; `None` when it does not answer.
fn led_by(cluster: &NatsCluster, i: usize, streams: &[String]) -> Option<Vec<String>> {
    let jsz =
        block_in_place(|| cluster.servers()[i].monitor("jsz?accounts=true&streams=true")).ok()?;
    let me = format!("n{i}");
    let accounts = jsz.get("account_details")?.as_array()?;
    Some(
        accounts
            .iter()
            .filter_map(|a| a.get("stream_detail")?.as_array())
            .flatten()
            .filter(|s| s.pointer("/cluster/leader").and_then(|l| l.as_str()) == Some(me.as_str()))
            .filter_map(|s| s.get("name")?.as_str())
            .filter(|n| streams.iter().any(|s| s == n))
            .map(str::to_string)
            .collect(),
    )
}

/// The leader of every partition's stream (server indices), after making sure that no server
/// leads them all: one leader's death must leave some partition untouched to be watched.
async fn spread_leaders(urls: &[String], streams: &[String]) -> Vec<usize> {
    let all: Vec<usize> = (0..urls.len()).collect();
    let deadline = Instant::now() + PHASE;
    loop {
        let mut leaders = Vec::new();
        for s in streams {
            leaders.push(index_of(&wait_for_leader(urls, &all, s).await));
        }
        if leaders.iter().any(|l| *l != leaders[0]) {
            return leaders;
        }
        assert!(
            Instant::now() < deadline,
            "n{} keeps leading every partition",
            leaders[0]
        );
        // Ask partition 0's leader to step down, and wait until another one is elected.
        let client = connect_with(urls, false).await;
        let _ = client
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", streams[0]),
                "".into(),
            )
            .await;
        let others: Vec<usize> = all.iter().copied().filter(|i| *i != leaders[0]).collect();
        wait_for_leader(urls, &others, &streams[0]).await;
    }
}

/// The R3 cluster through the death of one server leading some partitions: those stop until a
/// new leader is elected, the others go on, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_kill_stops_only_its_partitions_and_loses_nothing() {
    let started = Instant::now();
    let mut cluster =
        NatsCluster::start_with(3, NatsServer::builder().sync_always(true).monitoring(true))
            .unwrap();
    let urls = cluster.url_list();
    let config = config("pkill").replicas(3);
    let streams = JetStreamEventStore::stream_names_for(&config);
    let version = cluster.server(0).version();
    if !version.at_least(2, 11) {
        // Replicated streams are refused before 2.11 (see `faults_cluster`), before any
        // partition's stream is created: no partition is left replicated and the others not.
        let client = connect_with(&urls, true).await;
        let err = JetStreamEventStore::new(client.clone(), config)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(_)),
            "nats-server {version} must be refused for replicated streams: {err:?}"
        );
        let context = async_nats::jetstream::new(client);
        for s in &streams {
            assert!(
                context.get_stream(s).await.is_err(),
                "{s} was created although the store was refused"
            );
        }
        return;
    }
    let transfers = version.at_least(2, 12);

    // Stores spread over the servers (each prefers a different one), all given every URL;
    // every other one is shared by a writer task per partition, whose operations share its
    // connection. Two of them prefer different servers, so one of them is not on the server
    // killed: its tasks on the other partitions go on without waiting for the killed ones.
    let mut stores = Vec::new();
    for w in 0..4 {
        let mut ordered = urls.clone();
        ordered.rotate_left(w % urls.len());
        let client = connect_with(&ordered, true).await;
        let store = Arc::new(open_store(client, config.clone(), REQUEST_TIMEOUT).await);
        stores.push((store, w % 2 == 1));
    }
    let infos = retrying("the partitions' info", || stores[0].0.stream_infos()).await;
    assert!(
        infos.iter().all(|i| i.config.num_replicas == 3),
        "{infos:?}"
    );
    let bank = Arc::new(Bank::new(&stores[0].0));
    if !transfers {
        // Before 2.12 a transfer within a bank is unsupported, refused before it is sent.
        let (a, b) = (&bank.accounts[0].0, &bank.accounts[1].0);
        let txn = Transaction::new()
            .append(a.as_str(), 0, vec![moved(a, 1, -1, "t")])
            .append(b.as_str(), 0, vec![moved(b, 1, 1, "t")]);
        let err = stores[0].0.commit(&txn).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    }
    let history = History::new();
    let mut writers = Writers::start(&stores, &bank, &history, transfers);
    let all: Vec<u32> = (0..PARTITIONS).collect();
    writers.wait_for_acks(&all, STEADY).await;
    for p in &all {
        writers.wait_for_acks(&[*p], 1).await;
    }

    // The server to kill leads some partitions, as few as any server does, and not all.
    let leaders = spread_leaders(&urls, &streams).await;
    let victim = (0..urls.len())
        .filter(|s| leaders.contains(s))
        .min_by_key(|s| leaders.iter().filter(|l| *l == s).count())
        .unwrap();
    let hit: Vec<u32> = all
        .iter()
        .copied()
        .filter(|p| leaders[*p as usize] == victim)
        .collect();
    let spared: Vec<u32> = all.iter().copied().filter(|p| !hit.contains(p)).collect();
    let hit_streams: Vec<String> = hit.iter().map(|p| streams[*p as usize].clone()).collect();
    let live: Vec<usize> = (0..urls.len()).filter(|s| *s != victim).collect();
    eprintln!("leaders {leaders:?}: killing n{victim}, which leads partitions {hit:?}");

    // A transfer in one of its partitions, sent once it is frozen through a store on another
    // server, so that a commit certainly waits on it when it is killed. Frozen, it answers
    // nothing more: to the others it died then.
    let probe = if transfers {
        let w = (0..stores.len())
            .find(|w| w % urls.len() != victim)
            .unwrap();
        let store = Arc::clone(&stores[w].0);
        let members = bank
            .banks
            .iter()
            .find(|m| hit.contains(&bank.accounts[m[0]].1))
            .unwrap();
        let (from, to) = (&bank.accounts[members[0]], &bank.accounts[members[1]]);
        let recorder = history.recorder();
        let (mut from_version, mut to_version) = (None, None);
        while from_version.is_none() || to_version.is_none() {
            from_version = latest(&store, &recorder, &writers.progress, &from.0).await;
            to_version = latest(&store, &recorder, &writers.progress, &to.0).await;
        }
        let (from, to) = (
            (from.0.clone(), from_version.unwrap()),
            (to.0.clone(), to_version.unwrap()),
        );
        let (progress, partition) = (Arc::clone(&writers.progress), bank.accounts[members[0]].1);
        cluster.server(victim).pause().unwrap();
        Some(tokio::spawn(async move {
            let from = (from.0.as_str(), from.1);
            let to = (to.0.as_str(), to.1);
            transfer(&store, &recorder, &progress, partition, from, to, 1).await
        }))
    } else {
        cluster.server(victim).pause().unwrap();
        None
    };
    let frozen = Instant::now();
    if transfers {
        writers
            .wait_for("the transfer sent to the frozen leader", |p| {
                p.commits_in_flight_on(&hit) > 0
            })
            .await;
    }
    let killed = Instant::now();
    cluster.server(victim).kill().unwrap();
    // Until a server that is up takes itself for the leader of a partition it led, those
    // partitions have none: the last moment every live server said it leads none of them
    // bounds that time from below.
    let mut not_leader_at: Vec<Option<Instant>> = vec![None; live.len()];
    let deadline = Instant::now() + PHASE;
    'elected: loop {
        for (k, i) in live.iter().enumerate() {
            let asked = Instant::now();
            match led_by(&cluster, *i, &hit_streams) {
                Some(led) if led.is_empty() => not_leader_at[k] = Some(asked),
                Some(_) => break 'elected,
                None => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader for partitions {hit:?} after {PHASE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leaderless_until = not_leader_at
        .iter()
        .map(|t| t.unwrap_or(frozen))
        .min()
        .unwrap();
    if let Some(probe) = probe {
        let outcome = probe.await.unwrap();
        eprintln!("the transfer sent to the frozen leader: {outcome:?}");
    }
    for s in &hit_streams {
        wait_for_leader(&urls, &live, s).await;
    }
    let elected = Instant::now();
    eprintln!(
        "partitions {hit:?} had no leader for at least {:?}, new leaders within {:?}",
        leaderless_until - frozen,
        elected - frozen
    );
    block_in_place(|| cluster.server(victim).start_again()).unwrap();
    // The killed partitions take writes (and transfers) again, and so does the restarted
    // server's share.
    writers.wait_for_acks(&hit, STEADY).await;
    if transfers {
        writers
            .wait_for("transfers acknowledged on the killed partitions", |p| {
                p.writes_on(&hit, |w| w.transaction && w.acked && w.invoked > killed)
                    .len()
                    >= 3
            })
            .await;
    }
    writers.wait_for_acks(&all, STEADY).await;
    writers.finish().await;
    for s in &streams {
        wait_for_replicas_current(&urls, s).await;
    }

    let progress = &writers.progress;
    // While the killed partitions had no leader, the others went on acknowledging...
    let went_on = progress.writes_on(&spared, |w| {
        w.acked && w.answered > frozen && w.answered < leaderless_until
    });
    // ...and they acknowledged nothing sent in that time.
    let stopped = progress.writes_on(&hit, |w| {
        w.acked && w.invoked > frozen && w.answered < leaderless_until
    });
    eprintln!(
        "while partitions {hit:?} had no leader: {} writes acknowledged on partitions {spared:?}",
        went_on.len()
    );
    assert!(
        went_on.len() >= 5,
        "partitions {spared:?} acknowledged {} writes while {hit:?} had no leader",
        went_on.len()
    );
    assert!(
        stopped.is_empty(),
        "partitions {hit:?} acknowledged writes without a leader: {stopped:?}"
    );
    if transfers {
        let across = progress.writes_on(&hit, |w| {
            w.transaction && w.invoked < killed && w.answered > killed
        });
        assert!(
            !across.is_empty(),
            "no transfer was in flight when the leader was killed"
        );
    }

    // Every server alone holds the same histories, and the checker finds nothing wrong in
    // them. Reads on a replicated stream may be served by a lagging replica (see
    // `partitions`): only one client's reads never going backwards is checked.
    let mut states = Vec::new();
    for url in &urls {
        let store = open_store(
            connect_pinned(url).await,
            config.clone(),
            Duration::from_secs(5),
        )
        .await;
        states.push(final_state(&store, &bank).await);
    }
    for (i, s) in states.iter().enumerate() {
        for id in bank.ids() {
            assert_eq!(s.actor(id), states[0].actor(id), "n{i} disagrees on {id}");
        }
    }
    let options = CheckOptions {
        linearizable_reads: false,
        monotonic_reads: true,
    };
    let report = check("partition leader kill", &history, &states[0], &options);
    assert!(
        report.unknown + report.unanswered_reads > 0,
        "nothing failed: {report}"
    );
    assert!(progress.refused_across.load(Ordering::Relaxed) > 0);
    eprintln!("partition leader kill: {:?}", started.elapsed());
}

/// One server holding four partitions, frozen while saves and transfers are in flight, resumed,
/// then killed with SIGKILL and restarted: the checker finds every acknowledged write stored
/// once, everything else whole or absent, and every read linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_history_through_a_freeze_and_a_kill_is_linearizable() {
    let started = Instant::now();
    let mut server = NatsServer::builder().sync_always(true).start().unwrap();
    let urls = vec![server.url()];
    let config = config("phist");
    let transfers = server.version().at_least(2, 12);
    // Four stores on their own connections; two of them shared by a writer task per
    // partition.
    let mut stores = Vec::new();
    for w in 0..4 {
        let client = connect_with(&urls, false).await;
        let store = Arc::new(open_store(client, config.clone(), REQUEST_TIMEOUT).await);
        stores.push((store, w < 2));
    }
    let bank = Arc::new(Bank::new(&stores[0].0));
    let history = History::new();
    let mut writers = Writers::start(&stores, &bank, &history, transfers);
    let all: Vec<u32> = (0..PARTITIONS).collect();
    writers.wait_for_acks(&all, STEADY).await;

    // Frozen: writes sent now go unanswered, and the server takes them in when it resumes.
    server.pause().unwrap();
    writers.wait_for_unknown(3).await;
    server.resume().unwrap();
    writers.wait_for_acks(&all, STEADY).await;
    // Killed: writes in flight are lost or stored, unanswered either way.
    server.kill().unwrap();
    writers.wait_for_unknown(3).await;
    block_in_place(|| server.start_again()).unwrap();
    writers.wait_for_acks(&all, STEADY).await;
    for p in &all {
        writers.wait_for_acks(&[*p], 1).await;
    }
    writers.finish().await;

    let store = open_store(
        connect_with(&urls, false).await,
        config.clone(),
        Duration::from_secs(5),
    )
    .await;
    let state = final_state(&store, &bank).await;
    let report = check(
        "partitioned history",
        &history,
        &state,
        &CheckOptions::default(),
    );
    let progress = &writers.progress;
    assert!(report.unknown > 0, "nothing was left unanswered: {report}");
    assert!(progress.refused_across.load(Ordering::Relaxed) > 0);
    let transactions = progress.writes_on(&all, |w| w.transaction && w.acked).len();
    assert_eq!(transactions > 0, transfers, "{transactions} transfers");
    // Every partition's stream holds events.
    let infos = retrying("the partitions' info", || store.stream_infos()).await;
    assert!(
        infos.iter().all(|i| i.state.messages > 0),
        "{:?}",
        infos.iter().map(|i| i.state.messages).collect::<Vec<_>>()
    );
    eprintln!(
        "partitioned history: {transactions} transfers; {:?}",
        started.elapsed()
    );
}
