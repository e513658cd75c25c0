//! Network partitions on a replicated event stream (`replicas: 3`), judged by the history
//! checker (`aether_testkit::history`).
//!
//! Six writers, each with its own NATS connection pinned to one server of a partitionable
//! three-server cluster (through that server's client proxy, never moving to a server it hears
//! of), save events one at a time and now and then in batches, read latest versions and replay
//! now and then, and record every operation with its outcome in one `History`. One writer per
//! server runs four tasks on its store, so that several of its saves are in flight on one
//! connection through the faults too. The faults, one test each:
//!
//! 1. a follower isolated from the other two servers while writers on both sides write;
//! 2. the stream leader isolated until a new leader is elected among the other two, and healed
//!    before the isolated one notices on its own that it lost its quorum; it then steps down;
//! 3. one server's clients cut off while their saves are in flight, and let back;
//! 4. a follower isolated and then the majority's leader killed with SIGKILL, so that no side
//!    has a quorum; the killed server restarted, then the partition healed.
//!
//! After the heal every replica is current; each actor's history is read through each server
//! alone (all three must agree) and the checker holds the history against it: nothing
//! acknowledged is lost, nothing is stored twice, a save with an unknown outcome is stored whole
//! or not at all, a failed one not at all. Each test also checks when acknowledgements came:
//! never to a save or transaction sent while its side had no quorum.
//!
//! Before 2.11 the store refuses replicated streams (see `faults_cluster`): each test then
//! checks the refusal and returns.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_core::{Event, EventStore, Transaction};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::history::{
    CheckOptions, CheckReport, FinalState, History, Recorder, Rule, Violation,
};
use aether_testkit::{NatsCluster, NatsServer};
use tokio::task::block_in_place;
use tokio_util::sync::CancellationToken;

use crate::faults_cluster::{index_of, wait_for_leader, wait_for_replicas_current_within};
use crate::faults_support::{actor_names, connect_pinned, open_store, read_all, XorShift};

const SERVERS: usize = 3;
const ALL: [usize; SERVERS] = [0, 1, 2];
/// Writers, each with its own connection; writer `w` is pinned to server `w % SERVERS`.
const WRITERS: usize = 6;
/// Tasks sharing the store of each of the first `SERVERS` writers, so that several saves are
/// under way at once on one connection.
const SHARED_TASKS: usize = 4;
const ACTORS: usize = 24;
/// Saves acknowledged between steps.
const STEADY: u64 = 30;
/// Longest a step may take to make progress: an election (a few seconds) on a loaded machine.
const PHASE: Duration = Duration::from_secs(60);
/// Longest a replica cut off may take to catch up after the heal: a former leader whose log
/// went on alone while it was isolated takes half a minute or more on 2.15.
const CATCH_UP: Duration = Duration::from_secs(90);
/// How long a store waits for an answer, so that a partition turns into errors quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A save or transaction that was acknowledged, with when it was sent and when its answer
/// came.
#[derive(Debug, Clone, Copy)]
struct AckedSave {
    /// The server its writer is pinned to.
    server: usize,
    /// A transaction (`commit`) rather than a save of one actor's events.
    transaction: bool,
    /// Taken before the store was called.
    invoked: Instant,
    /// Taken after the store answered.
    completed: Instant,
}

/// What the writer tasks report while they run, for waits and for the timing assertions.
#[derive(Debug, Default)]
struct Progress {
    /// Acknowledged saves and transactions, by the server the writer is pinned to.
    acks: [AtomicU64; SERVERS],
    /// Saves and reads that failed other than by a conflict, by server.
    faults: [AtomicU64; SERVERS],
    /// Every acknowledged save and transaction, for the checks of when acknowledgements came.
    acked: Mutex<Vec<AckedSave>>,
    /// Transactions committed.
    transactions: AtomicU64,
    /// Saves (and transactions) that failed other than by a conflict: their outcome is
    /// unknown. By server.
    unknown_saves: [AtomicU64; SERVERS],
    /// Errors not typed as retryable: each one a broken promise.
    hard_errors: Mutex<Vec<String>>,
}

impl Progress {
    fn count(counters: &[AtomicU64; SERVERS], servers: &[usize]) -> u64 {
        servers
            .iter()
            .map(|s| counters[*s].load(Ordering::Relaxed))
            .sum()
    }

    fn fault(&self, server: usize, error: &aether_core::Error) {
        self.faults[server].fetch_add(1, Ordering::Relaxed);
        if !error.is_retryable() {
            let mut hard = self.hard_errors.lock().unwrap();
            hard.push(format!("{error} ({error:?})"));
        }
    }
}

/// "N saves and M transactions", for a failure message.
fn count_kinds(acked: &[AckedSave]) -> String {
    let transactions = acked.iter().filter(|a| a.transaction).count();
    format!(
        "{} saves and {transactions} transactions",
        acked.len() - transactions
    )
}

/// The writer tasks of one test, all recording into one history.
struct Writers {
    progress: Arc<Progress>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(
        stores: &[(usize, Arc<JetStreamEventStore>)],
        actors: &[String],
        history: &History,
    ) -> Self {
        let progress = Arc::new(Progress::default());
        let stop = CancellationToken::new();
        let actors: Arc<[String]> = actors.into();
        let mut tasks = Vec::new();
        for (w, (server, store)) in stores.iter().enumerate() {
            let count = if w < SERVERS { SHARED_TASKS } else { 1 };
            for _ in 0..count {
                let seed = tasks.len() as u64 + 1;
                tasks.push(tokio::spawn(write_loop(
                    *server,
                    Arc::clone(store),
                    history.recorder(),
                    Arc::clone(&actors),
                    Arc::clone(&progress),
                    stop.clone(),
                    seed,
                )));
            }
        }
        Self {
            progress,
            stop,
            tasks,
        }
    }

    /// Waits until writers pinned to `servers` have had `more` further saves or transactions
    /// acknowledged.
    ///
    /// # Panics
    /// After [`PHASE`].
    async fn wait_for_acks(&self, servers: &[usize], more: u64) {
        self.wait_for(
            &self.progress.acks,
            servers,
            more,
            "acknowledged saves and transactions",
        )
        .await;
    }

    /// Waits until writers pinned to `servers` have seen `more` further failures.
    ///
    /// # Panics
    /// After [`PHASE`].
    async fn wait_for_faults(&self, servers: &[usize], more: u64) {
        self.wait_for(&self.progress.faults, servers, more, "failed operations")
            .await;
    }

    /// Waits until writers pinned to `servers` have had `more` further saves fail without an
    /// answer.
    ///
    /// # Panics
    /// After [`PHASE`].
    async fn wait_for_unknown_saves(&self, servers: &[usize], more: u64) {
        self.wait_for(
            &self.progress.unknown_saves,
            servers,
            more,
            "unanswered saves",
        )
        .await;
    }

    async fn wait_for(
        &self,
        counters: &[AtomicU64; SERVERS],
        servers: &[usize],
        more: u64,
        what: &str,
    ) {
        let target = Progress::count(counters, servers) + more;
        let deadline = Instant::now() + PHASE;
        while Progress::count(counters, servers) < target {
            assert!(
                Instant::now() < deadline,
                "writers on servers {servers:?}: {} of {target} {what} after {PHASE:?}",
                Progress::count(counters, servers)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Acknowledged saves and transactions of writers pinned to `servers` that were sent
    /// after `sent_after` and answered before `answered_before`.
    fn acked_within(
        &self,
        servers: &[usize],
        sent_after: Instant,
        answered_before: Instant,
    ) -> Vec<AckedSave> {
        let acked = self.progress.acked.lock().unwrap();
        acked
            .iter()
            .filter(|a| servers.contains(&a.server))
            .filter(|a| a.invoked > sent_after && a.completed < answered_before)
            .copied()
            .collect()
    }

    /// Acknowledged saves and transactions of writers pinned to `servers` answered between
    /// `from` and `to`.
    fn answered_within(&self, servers: &[usize], from: Instant, to: Instant) -> Vec<AckedSave> {
        let acked = self.progress.acked.lock().unwrap();
        acked
            .iter()
            .filter(|a| servers.contains(&a.server))
            .filter(|a| a.completed > from && a.completed < to)
            .copied()
            .collect()
    }

    /// Stops the writers, waits for the operations under way to end, and asserts that every
    /// failure was typed as retryable.
    async fn finish(&mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            t.await.expect("writer task panicked");
        }
        let hard = self.progress.hard_errors.lock().unwrap();
        assert!(
            hard.is_empty(),
            "{} failures were not retryable: {:#?}",
            hard.len(),
            &hard[..hard.len().min(5)]
        );
    }
}

/// One writer task: picks an actor, reads its latest version unless it knows it (and now and
/// then anyway), saves the next event (one in eight times a batch of two or three), and one in
/// sixteen times replays the actor first. Every call is recorded before it is made and
/// completed with what the store answered.
async fn write_loop(
    server: usize,
    store: Arc<JetStreamEventStore>,
    recorder: Recorder,
    actors: Arc<[String]>,
    progress: Arc<Progress>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut known: HashMap<usize, u64> = HashMap::new();
    let mut failed = false;
    while !stop.is_cancelled() {
        if failed {
            failed = false;
            // Back off while the side has no quorum rather than spinning.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let a = rng.below(actors.len());
        let actor = actors[a].as_str();
        if rng.below(16) == 0 {
            let from = 1 + rng.below(4) as u64;
            let pending = recorder.replay(actor, from);
            let result = store.get_events(actor, from).await;
            pending.finish(&result);
            if let Err(e) = result {
                progress.fault(server, &e);
                failed = true;
                continue;
            }
        }
        let latest = match known.get(&a) {
            Some(v) if rng.below(3) != 0 => *v,
            _ => {
                let pending = recorder.read_version(actor);
                let result = store.get_latest_version(actor).await;
                pending.finish(&result);
                match result {
                    Ok(v) => v,
                    Err(e) => {
                        progress.fault(server, &e);
                        failed = true;
                        continue;
                    }
                }
            }
        };
        if rng.below(12) == 0 {
            // Now and then a transaction: this actor and another, all or nothing.
            let b = (a + 1 + rng.below(actors.len() - 1)) % actors.len();
            let other = actors[b].as_str();
            let pending = recorder.read_version(other);
            let result = store.get_latest_version(other).await;
            pending.finish(&result);
            let other_latest = match result {
                Ok(v) => v,
                Err(e) => {
                    progress.fault(server, &e);
                    failed = true;
                    continue;
                }
            };
            let txn = Transaction::new();
            let txn = txn
                .append(
                    actor,
                    latest,
                    vec![Event::new("Moved", actor, latest + 1).with_field("server", server as u64)],
                )
                .append(
                    other,
                    other_latest,
                    vec![Event::new("Moved", other, other_latest + 1)
                        .with_field("server", server as u64)],
                );
            let invoked = Instant::now();
            let pending = recorder.commit(&txn);
            let result = store.commit(&txn).await;
            pending.finish(&result);
            let completed = Instant::now();
            match result {
                Ok(()) => {
                    known.insert(a, latest + 1);
                    known.insert(b, other_latest + 1);
                    progress.transactions.fetch_add(1, Ordering::Relaxed);
                    // A transaction is an acknowledged write like a save: the checks of when
                    // acknowledgements may come hold for it too.
                    progress.acks[server].fetch_add(1, Ordering::Relaxed);
                    progress.acked.lock().unwrap().push(AckedSave {
                        server,
                        transaction: true,
                        invoked,
                        completed,
                    });
                }
                Err(e) if e.as_transaction_conflict().is_some() => {
                    known.remove(&a);
                    known.remove(&b);
                }
                Err(e) => {
                    known.remove(&a);
                    known.remove(&b);
                    progress.unknown_saves[server].fetch_add(1, Ordering::Relaxed);
                    progress.fault(server, &e);
                    failed = true;
                }
            }
            continue;
        }
        let count = if rng.below(8) == 0 {
            2 + rng.below(2) as u64
        } else {
            1
        };
        let events: Vec<Event> = (latest + 1..=latest + count)
            .map(|v| Event::new("Ticked", actor, v).with_field("server", server as u64))
            .collect();
        let invoked = Instant::now();
        let pending = recorder.append_events(&events);
        let result = if count == 1 {
            store.save_event(&events[0]).await
        } else {
            store.save_events(actor, &events).await
        };
        pending.finish(&result);
        let completed = Instant::now();
        match result {
            Ok(()) => {
                known.insert(a, latest + count);
                progress.acks[server].fetch_add(1, Ordering::Relaxed);
                progress.acked.lock().unwrap().push(AckedSave {
                    server,
                    transaction: false,
                    invoked,
                    completed,
                });
            }
            Err(e) => match e.as_version_conflict() {
                Some(c) => {
                    known.insert(a, c.current_version);
                }
                None => {
                    // It may or may not have gone in: ask the store next time.
                    known.remove(&a);
                    progress.unknown_saves[server].fetch_add(1, Ordering::Relaxed);
                    progress.fault(server, &e);
                    failed = true;
                }
            },
        }
    }
}

/// A partitionable cluster with an R3 event stream and the writers running on it.
struct Setup {
    cluster: NatsCluster,
    config: JetStreamConfig,
    stream: String,
    /// Direct client URLs (not through the client proxies), to watch the stream's leader.
    urls: Vec<String>,
    stores: Vec<Arc<JetStreamEventStore>>,
    actors: Vec<String>,
    history: History,
    writers: Writers,
    clock: Instant,
}

/// Starts the cluster, opens one store per writer and starts the writers; `None` on a server
/// that refuses replicated streams (after checking the refusal).
async fn start(namespace: &str) -> Option<Setup> {
    let cluster =
        NatsCluster::start_partitionable(SERVERS, NatsServer::builder().sync_always(true)).unwrap();
    let config = JetStreamConfig::default().namespace(namespace).replicas(3);
    let version = cluster.servers()[0].version();
    if !version.at_least(2, 11) {
        // Replicated streams are refused before 2.11: a new leader could accept a stale save
        // and replicas could diverge (see `faults_cluster`).
        let client = connect_pinned(&cluster.client_url(0)).await;
        let err = JetStreamEventStore::new(client, config).await.unwrap_err();
        assert!(
            matches!(err, aether_core::Error::InvalidInput(_)),
            "nats-server {version} must be refused for replicated streams: {err:?}"
        );
        return None;
    }
    block_in_place(|| cluster.wait_for_full_mesh()).unwrap();
    let stream = JetStreamEventStore::stream_name_for(&config);
    let mut stores = Vec::new();
    let mut pinned = Vec::new();
    for w in 0..WRITERS {
        let server = w % SERVERS;
        let client = connect_pinned(&cluster.client_url(server)).await;
        let store = Arc::new(open_store(client, config.clone(), REQUEST_TIMEOUT).await);
        pinned.push((server, Arc::clone(&store)));
        stores.push(store);
    }
    let actors = actor_names("part", ACTORS);
    // The history's clock starts here too (within microseconds), so that the times of the
    // steps printed by `Setup::step` can be matched with the operations' times in a violation.
    let clock = Instant::now();
    let history = History::new();
    let writers = Writers::start(&pinned, &actors, &history);
    let urls = cluster.url_list();
    Some(Setup {
        cluster,
        config,
        stream,
        urls,
        stores,
        actors,
        history,
        writers,
        clock,
    })
}

impl Setup {
    /// Prints a step of the test at the history's time, and returns the instant.
    fn step(&self, what: &str) -> Instant {
        let now = Instant::now();
        eprintln!("{}: {what} at {:?}", self.stream, now - self.clock);
        now
    }

    async fn leader(&self, among: &[usize]) -> usize {
        index_of(&wait_for_leader(&self.urls, among, &self.stream).await)
    }

    /// Heals every cut and waits until the routes are back.
    fn heal(&self) {
        self.cluster.heal();
        block_in_place(|| self.cluster.wait_for_full_mesh()).unwrap();
    }

    /// Stops the writers, waits for the replicas to catch up, reads every actor's history
    /// through each server alone, checks that they agree, and runs the checker. Prints and
    /// returns its figures.
    ///
    /// # Panics
    /// On violations: how many of each rule, and the first two of each.
    async fn finish(mut self, name: &str) -> CheckReport {
        self.writers.finish().await;
        self.step("writers stopped");
        // Only now: a replica that was cut off catches up slowly while the writers go on.
        wait_for_replicas_current_within(&self.urls, &self.stream, CATCH_UP).await;
        self.step("replicas current");
        drop(self.stores);
        let final_state = agreed_final_state(&self.urls, &self.config, &self.actors).await;
        // Reads are not linearizable on a replicated stream, by design: `get_latest_version` is
        // a direct get, which any replica may answer, and a replica may lag its leader
        // (docs/jetstream.md, "Reading"), so a read may miss a version acknowledged before it
        // began. One client's reads never going backwards is what the issue asks for, and it is
        // checked. The store does not give it yet: a replay is served by the leader and the
        // read after it by any replica, a version behind for a moment; and a replica that was
        // cut off keeps answering direct gets from what it had at the cut until it has caught
        // up, which takes half a minute for a former leader, so after a heal every client may
        // read versions from before the partition.
        let options = CheckOptions {
            linearizable_reads: false,
            monotonic_reads: true,
        };
        let (report, violations) = self.history.check_all(&final_state, &options);
        eprintln!(
            "{name}: {report}; {} transactions committed",
            self.writers.progress.transactions.load(Ordering::Relaxed),
        );
        let mut by_rule: BTreeMap<Rule, Vec<&Violation>> = BTreeMap::new();
        for v in &violations {
            by_rule.entry(v.rule).or_default().push(v);
        }
        let counts: Vec<String> = by_rule
            .iter()
            .map(|(rule, vs)| format!("{} {rule}", vs.len()))
            .collect();
        let examples: Vec<String> = by_rule
            .values()
            .flat_map(|vs| vs.iter().take(2))
            .map(ToString::to_string)
            .collect();
        assert!(
            violations.is_empty(),
            "{name}: {}; the first two of each:\n{}",
            counts.join(", "),
            examples.join("\n")
        );
        report
    }
}

/// Every actor's history read through each server alone, once all servers give the same one.
///
/// # Panics
/// If they still differ after [`PHASE`], naming an actor on which they do.
async fn agreed_final_state(
    urls: &[String],
    config: &JetStreamConfig,
    actors: &[String],
) -> FinalState {
    let mut stores = Vec::new();
    for url in urls {
        let client = connect_pinned(url).await;
        stores.push(open_store(client, config.clone(), Duration::from_secs(5)).await);
    }
    let deadline = Instant::now() + PHASE;
    loop {
        let mut states = Vec::new();
        for store in &stores {
            let mut state = FinalState::new();
            for actor in actors {
                let events = read_all(store, actor).await;
                state.insert(actor, events.iter().map(|e| (e.version, e.id.clone())));
            }
            states.push(state);
        }
        if states.iter().all(|s| *s == states[0]) {
            return states.swap_remove(0);
        }
        if Instant::now() > deadline {
            let actor = actors
                .iter()
                .find(|a| states.iter().any(|s| s.actor(a) != states[0].actor(a)));
            let actor = actor.map(String::as_str).unwrap_or_default();
            let seen: Vec<_> = states.iter().map(|s| s.actor(actor)).collect();
            panic!("the servers disagree on {actor}'s history: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream's leader as server `i` itself sees it (its `/jsz`), `None` if it does not answer
/// or has no stream.
fn local_view_of_leader(cluster: &NatsCluster, i: usize, stream: &str) -> Option<String> {
    let jsz =
        block_in_place(|| cluster.servers()[i].monitor("jsz?accounts=true&streams=true")).ok()?;
    let accounts = jsz.get("account_details")?.as_array()?;
    let detail = accounts
        .iter()
        .filter_map(|a| a.get("stream_detail")?.as_array())
        .flatten()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(stream))?;
    Some(
        detail
            .pointer("/cluster/leader")
            .and_then(|l| l.as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits until server `i` no longer takes itself for the stream's leader.
async fn wait_for_step_down(cluster: &NatsCluster, i: usize, stream: &str) {
    let deadline = Instant::now() + PHASE;
    let me = format!("n{i}");
    loop {
        match local_view_of_leader(cluster, i, stream) {
            Some(leader) if leader != me => return,
            seen => assert!(
                Instant::now() < deadline,
                "n{i} still sees {seen:?} as the leader of {stream}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the history shows work and faults: enough acknowledged saves, and operations
/// that failed or stayed unanswered.
fn assert_eventful(name: &str, report: &CheckReport) {
    assert!(
        report.acknowledged >= 2 * STEADY as usize,
        "{name}: too few acknowledged saves: {report}"
    );
    assert!(
        report.unknown + report.errors + report.unanswered_reads > 0,
        "{name}: nothing failed: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_acknowledges_nothing_and_loses_nothing() {
    let started = Instant::now();
    let Some(s) = start("part-follower").await else {
        return;
    };
    s.writers.wait_for_acks(&ALL, STEADY).await;
    let leader = s.leader(&ALL).await;
    s.step(&format!("n{leader} leads"));
    let isolated = (leader + 1) % SERVERS;
    let majority: Vec<usize> = ALL.iter().copied().filter(|i| *i != isolated).collect();

    s.cluster.isolate(isolated);
    let cut = s.step(&format!("n{isolated} isolated"));
    s.writers.wait_for_acks(&majority, STEADY).await;
    s.writers.wait_for_faults(&[isolated], 3).await;
    let healed = s.step("healing");
    s.heal();
    // A save sent through the isolated server cannot reach the leader: no acknowledgement.
    let wrong = s.writers.acked_within(&[isolated], cut, healed);
    assert!(
        wrong.is_empty(),
        "{} acknowledged through isolated n{isolated}: {wrong:?}",
        count_kinds(&wrong)
    );
    s.writers.wait_for_acks(&[isolated], STEADY / 3).await;

    let report = s.finish("isolated follower").await;
    assert_eventful("isolated follower", &report);
    eprintln!("isolated follower: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_steps_down_and_acknowledges_nothing() {
    let started = Instant::now();
    let Some(s) = start("part-leader").await else {
        return;
    };
    s.writers.wait_for_acks(&ALL, STEADY).await;
    let leader = s.leader(&ALL).await;
    s.step(&format!("n{leader} leads"));
    let majority: Vec<usize> = ALL.iter().copied().filter(|i| *i != leader).collect();

    s.cluster.isolate(leader);
    let cut = s.step(&format!("leader n{leader} isolated"));
    let new_leader = s.leader(&majority).await;
    let elected = s.step(&format!("n{new_leader} elected"));
    s.writers.wait_for_acks(&majority, STEADY).await;
    s.writers.wait_for_faults(&[leader], 3).await;
    // Healed well before the isolated leader notices on its own that it lost its quorum (about
    // 20 s on 2.15): for a moment after the heal two servers take themselves for the leader.
    let healed = s.step("healing");
    s.heal();
    // The isolated leader cannot commit: neither a save sent after the cut nor any answer after
    // another server was elected may be an acknowledgement.
    let sent = s.writers.acked_within(&[leader], cut, healed);
    let answered = s.writers.answered_within(&[leader], elected, healed);
    assert!(
        sent.is_empty() && answered.is_empty(),
        "{} sent and {} answered after the cut acknowledged through isolated n{leader}: \
         {sent:?} {answered:?}",
        count_kinds(&sent),
        count_kinds(&answered)
    );
    // Back in touch with the new leader, it steps down.
    wait_for_step_down(&s.cluster, leader, &s.stream).await;
    s.step(&format!("n{leader} stepped down"));
    s.writers.wait_for_acks(&[leader], STEADY / 3).await;

    let report = s.finish("isolated leader").await;
    assert_eventful("isolated leader", &report);
    eprintln!("isolated leader: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_mid_save_stores_it_at_most_once_and_resumes() {
    let started = Instant::now();
    let Some(s) = start("part-client").await else {
        return;
    };
    s.writers.wait_for_acks(&ALL, STEADY).await;
    // The leader's clients: their saves are cut between the leader storing them and the
    // acknowledgement reaching them as often as anywhere.
    let cut_off = s.leader(&ALL).await;
    s.step(&format!("n{cut_off} leads"));
    let others: Vec<usize> = ALL.iter().copied().filter(|i| *i != cut_off).collect();

    s.cluster.cut_client(cut_off);
    let cut = s.step(&format!("clients of n{cut_off} cut off"));
    s.writers.wait_for_faults(&[cut_off], 3).await;
    // At least one save sent into the cut, so that the test has an unknown outcome to check.
    s.writers.wait_for_unknown_saves(&[cut_off], 1).await;
    s.writers.wait_for_acks(&others, STEADY).await;
    let healed = s.step("letting the clients back");
    s.cluster.heal_client(cut_off);
    let wrong = s.writers.acked_within(&[cut_off], cut, healed);
    assert!(
        wrong.is_empty(),
        "{} acknowledged to clients cut off from n{cut_off}: {wrong:?}",
        count_kinds(&wrong)
    );
    // The cut-off writers reconnect and carry on.
    s.writers.wait_for_acks(&[cut_off], STEADY).await;

    let report = s.finish("client cut").await;
    assert_eventful("client cut", &report);
    assert!(
        report.unknown > 0,
        "no save had an unknown outcome: {report}"
    );
    eprintln!("client cut: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_and_a_killed_majority_server_lose_nothing() {
    let started = Instant::now();
    let Some(mut s) = start("part-kill").await else {
        return;
    };
    s.writers.wait_for_acks(&ALL, STEADY).await;
    let leader = s.leader(&ALL).await;
    s.step(&format!("n{leader} leads"));
    let isolated = (leader + 1) % SERVERS;
    let majority: Vec<usize> = ALL.iter().copied().filter(|i| *i != isolated).collect();

    s.cluster.isolate(isolated);
    let cut = s.step(&format!("n{isolated} isolated"));
    s.writers.wait_for_acks(&majority, STEADY).await;
    // Kill the majority's leader: one server left on each side, a quorum on neither.
    let killed = s.leader(&majority).await;
    let survivor = majority.iter().copied().find(|i| *i != killed).unwrap();
    s.cluster.server(killed).kill().unwrap();
    let kill = s.step(&format!("n{killed} killed"));
    s.writers.wait_for_faults(&[survivor], 3).await;
    s.writers.wait_for_faults(&[isolated], 3).await;
    let restart = s.step(&format!("n{killed} restarting"));
    block_in_place(|| s.cluster.server(killed).start_again()).unwrap();
    let new_leader = s.leader(&majority).await;
    s.step(&format!("n{new_leader} elected"));
    s.writers.wait_for_acks(&majority, STEADY).await;
    let healed = s.step("healing");
    s.heal();
    let no_quorum = s.writers.acked_within(&ALL, kill, restart);
    assert!(
        no_quorum.is_empty(),
        "{} acknowledged while no side had a quorum: {no_quorum:?}",
        count_kinds(&no_quorum)
    );
    let wrong = s.writers.acked_within(&[isolated], cut, healed);
    assert!(
        wrong.is_empty(),
        "{} acknowledged through isolated n{isolated}: {wrong:?}",
        count_kinds(&wrong)
    );
    s.writers.wait_for_acks(&[isolated], STEADY / 3).await;

    let report = s.finish("partition and kill").await;
    assert_eventful("partition and kill", &report);
    eprintln!("partition and kill: {:?}", started.elapsed());
}
