//! Failover: the time from a node's death until every one of its 10 000 active actors answers
//! from its new owner, against the configured failure timeout (the goal: at most the timeout
//! plus one second).
//!
//! Each iteration builds a fresh three-node cluster over one `nats-server` (file storage, the
//! server's default flush policy; a new cluster name and a new store namespace, so nothing
//! carries over), with the default heartbeat interval (1 s), failure timeout (5 s) and 1024
//! shards. Every node has its own connection and its own JetStream event store, as separate
//! processes would. 10 000 actors owned by one follower (not the leader) are activated with one
//! deposit each; then the follower is killed (no leave notice, like a crashed process) and,
//! from that instant, the two survivors send a read command to each of the 10 000 actors, 256
//! at a time, as clients that keep working through the failover would. The time measured ends
//! when the last actor has answered: failure detection, the leader's new table, and 10 000
//! activations on the new owners, rebuilt from the store.
//!
//! Variants (criterion ids):
//! - `jetstream_histories`: before the activating deposit, each actor is given a history of
//!   its own, 10 to 49 deposits saved one per message through the store (about 30 on
//!   average, 300 000 in all), and every third actor a snapshot at the last multiple of 10 of
//!   its history. Rebuilding such an actor reads its snapshot and streams its events through a
//!   consumer, as an actor with a real past needs.
//! - `jetstream_one_event`: each actor has only the activating deposit, so every rebuild takes
//!   the store's short-history path (a few direct gets, no consumer): the trivial case.
//! - `aether_in_memory_store`: one event per actor, one in-memory store shared by the nodes:
//!   the cluster's own part, without the store's reads.
//!
//! Bounded time: one iteration takes 10-60 s (the history variant writes its 300 000 events
//! in each, untimed), and each variant runs criterion's minimum of ten samples plus one.

use aether_benches::setup::OrFail;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::EventCodec;
use aether_benches::bank::{Account, Bank, Command, Moved};
use aether_cluster::{
    Actors, ClusterConfig, ClusterNode, DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
};
use aether_core::{Snapshot, SnapshotStore};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use futures::StreamExt;

/// Active actors on the node that dies.
const ACTORS: usize = 10_000;
/// Commands in flight at once, during activation and after the death.
const IN_FLIGHT: usize = 256;
/// The failure timeout the cluster is configured with (the library's default).
const FAILURE_TIMEOUT: Duration = DEFAULT_FAILURE_TIMEOUT;

#[derive(Debug, Clone, Copy)]
enum Backend {
    /// One JetStream store per node, as separate processes would have.
    JetStream,
    /// One in-memory store shared by the nodes (no store reads worth counting).
    Memory,
}

/// What each actor has in the store before its activating deposit.
#[derive(Debug, Clone, Copy)]
enum History {
    /// Nothing: the activating deposit is its only event.
    None,
    /// Tens of events each, and a snapshot for every third actor.
    Tens,
}

/// Seeded events of the `i`-th actor in [`History::Tens`]: 10 to 49, about 30 on average.
fn history_len(i: usize) -> u64 {
    10 + (i as u64 * 7919) % 40
}

/// The version of the `i`-th actor's snapshot in [`History::Tens`], if it has one.
fn snapshot_at(i: usize) -> Option<u64> {
    (i % 3 == 0).then(|| history_len(i) / 10 * 10)
}

/// Seeded histories saved at once (each actor's events in turn).
const SEED_IN_FLIGHT: usize = 512;

/// Gives each actor its [`History::Tens`] history through `store`: deposits of 1 saved one at
/// a time (one message each, as commands write them), and the snapshots.
async fn seed_histories<S: SnapshotStore + ?Sized>(store: &S, actors: &[String]) {
    let codec = EventCodec::<Moved>::default();
    let codec = &codec;
    futures::stream::iter(actors.iter().enumerate())
        .map(|(i, actor)| async move {
            for v in 1..=history_len(i) {
                let event = codec
                    .encode(&Moved::Deposited { amount: 1 })
                    .or_fail("encode a deposit")
                    .into_event_of(
                        aether_core::ActorKey::new(<Bank as aether_actor::Actor>::TYPE, actor),
                        v,
                    );
                store
                    .save_event(&event)
                    .await
                    .or_fail("save a seeded event");
            }
            if let Some(at) = snapshot_at(i) {
                let state =
                    serde_json::to_value(Account { balance: at as i64 }).or_fail("encode a state");
                let state = state.as_object().cloned().or_fail("a state object");
                let snapshot = Snapshot::new(actor.as_str(), at, state)
                    .with_actor_type(<Bank as aether_actor::Actor>::TYPE)
                    .with_schema_version(<Bank as aether_actor::Actor>::STATE_VERSION);
                store
                    .save_snapshot(&snapshot)
                    .await
                    .or_fail("save a seeded snapshot");
            }
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .for_each(|()| async {})
        .await;
}

static RUN: AtomicUsize = AtomicUsize::new(0);

fn config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(DEFAULT_HEARTBEAT_INTERVAL)
        .failure_timeout(FAILURE_TIMEOUT)
}

/// One failover: builds the cluster, activates the actors, kills their node and returns the
/// time from the kill to the last answer.
async fn one_failover(url: &str, backend: Backend, history: History) -> Duration {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let name = format!("failover{}x{run}", std::process::id());
    let shared = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let client = async_nats::connect(url)
            .await
            .or_fail("connect to nats-server");
        let store: Arc<dyn SnapshotStore> = match backend {
            Backend::Memory => shared.clone(),
            Backend::JetStream => Arc::new(
                JetStreamEventStore::new(
                    client.clone(),
                    JetStreamConfig::default().namespace(name.clone()),
                )
                .await
                .or_fail("JetStream store"),
            ),
        };
        let actors = Actors::new(store).with(Bank);
        nodes.push(
            ClusterNode::start(client, config(&name, id), actors)
                .await
                .or_fail("start a node"),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b", "c"], Duration::from_secs(60))
            .await
            .or_fail("three members agree on a table");
    }
    // A follower dies: the leader notices it after the failure timeout.
    let victim = nodes
        .iter()
        .rposition(|n| !n.is_leader())
        .or_fail("a follower");
    let victim = nodes.remove(victim);
    let theirs: Vec<String> = (0..)
        .map(|i| format!("acct-{i}"))
        .filter(|a| victim.owner_of(a).as_deref() == Some(victim.node_id()))
        .take(ACTORS)
        .collect();
    // Each actor's balance once activated: its seeded deposits plus the activating one.
    let expected: Vec<i64> = match history {
        History::None => vec![1; ACTORS],
        History::Tens => {
            let seeded_at = Instant::now();
            let seeder: Arc<dyn SnapshotStore> = match backend {
                Backend::Memory => shared.clone(),
                // A store of its own, so that no node has cached anything about the actors.
                Backend::JetStream => Arc::new(
                    JetStreamEventStore::new(
                        async_nats::connect(url)
                            .await
                            .or_fail("connect to nats-server"),
                        JetStreamConfig::default().namespace(name.clone()),
                    )
                    .await
                    .or_fail("JetStream store"),
                ),
            };
            seed_histories(&*seeder, &theirs).await;
            eprintln!(
                "seeded {} events and {} snapshots in {:.2?}",
                (0..ACTORS).map(history_len).sum::<u64>(),
                (0..ACTORS).filter_map(snapshot_at).count(),
                seeded_at.elapsed()
            );
            (0..ACTORS).map(|i| history_len(i) as i64 + 1).collect()
        }
    };
    let activated_at = Instant::now();
    futures::stream::iter(&theirs)
        .map(|a| victim.send::<Bank>(a, Command::Deposit { amount: 1 }))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| {
            r.or_fail("activating deposit");
            async {}
        })
        .await;
    eprintln!(
        "activated {ACTORS} actors in {:.2?}",
        activated_at.elapsed()
    );
    let host = victim.host::<Bank>().or_fail("hosts the bank");
    assert_eq!(
        host.active_count(),
        ACTORS,
        "every actor active on the victim"
    );

    let victim_id = victim.node_id().to_string();
    let killed_at = Instant::now();
    victim.kill().await;
    let survivors = &nodes;
    // When both survivors hold a table without the victim (for the report on stderr only).
    let new_table = async {
        loop {
            if survivors
                .iter()
                .all(|n| !n.assignment().table.members.contains(&victim_id))
            {
                return killed_at.elapsed();
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                return Duration::MAX;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let answers = futures::stream::iter(theirs.iter().enumerate())
        .map(|(i, a)| async move {
            let via = &survivors[i % survivors.len()];
            let r = via.send::<Bank>(a, Command::Balance).await;
            (i, r, killed_at.elapsed())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>();
    let (table_after, answers) = futures::join!(new_table, answers);
    let elapsed = killed_at.elapsed();
    let mut first = Duration::MAX;
    for (i, r, at) in &answers {
        assert_eq!(
            *r.as_ref().or_fail("an answer from the new owner"),
            expected[*i],
            "the balance rebuilt from the actor's history"
        );
        first = first.min(*at);
    }
    let active: usize = nodes
        .iter()
        .map(|n| n.host::<Bank>().map_or(0, |h| h.active_count()))
        .sum();
    assert!(active >= ACTORS, "the actors are active on the survivors");
    eprintln!(
        "failover ({backend:?}, history {history:?}): new table on both survivors {table_after:.2?}, first answer {first:.2?}, \
         all {ACTORS} answered {elapsed:.2?} after the kill \
         (failure timeout {FAILURE_TIMEOUT:?}, heartbeat {DEFAULT_HEARTBEAT_INTERVAL:?})"
    );
    for n in nodes {
        let _ = n.shutdown().await;
    }
    elapsed
}

fn failover(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    let url = server.url();
    let mut g = c.benchmark_group("failover_10k");
    // One iteration takes seconds: ten samples of one iteration each (plus one for warm-up).
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for (id, backend, history) in [
        ("jetstream_histories", Backend::JetStream, History::Tens),
        ("jetstream_one_event", Backend::JetStream, History::None),
        ("aether_in_memory_store", Backend::Memory, History::None),
    ] {
        let url = url.as_str();
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one_failover(url, backend, history).await;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, failover);
criterion_main!(benches);
