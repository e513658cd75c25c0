//! Failover: the time from a node's death until every one of its 10 000 active actors answers
//! from its new owner, against the configured failure timeout (the goal: at most the timeout
//! plus one second).
//!
//! Each iteration builds a fresh three-node cluster over one `nats-server` (file storage, the
//! server's default flush policy; a new cluster name and a new store namespace, so nothing
//! carries over), with the default heartbeat interval (1 s), failure timeout (5 s) and 1024
//! shards. Every node has its own
//! connection and its own JetStream event store, as separate processes would. 10 000 actors
//! owned by one follower (not the leader) are activated with one deposit each; then the
//! follower is killed (no leave notice, like a crashed process) and, from that instant, the
//! two survivors send a read command to each of the 10 000 actors, 256 at a time, as clients
//! that keep working through the failover would. The time measured ends when the last actor
//! has answered: failure detection, the leader's new table, and 10 000 activations on the new
//! owners, rebuilt from the store.
//!
//! A second variant does the same with one in-memory store shared by the nodes: the cluster's
//! own part, without the store's reads.

use aether_benches::setup::OrFail;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_benches::bank::{Bank, Command};
use aether_cluster::{
    Actors, ClusterConfig, ClusterNode, DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
};
use aether_core::SnapshotStore;
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
async fn one_failover(url: &str, backend: Backend) -> Duration {
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
    futures::stream::iter(&theirs)
        .map(|a| victim.send::<Bank>(a, Command::Deposit { amount: 1 }))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| {
            r.or_fail("activating deposit");
            async {}
        })
        .await;
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
            (r, killed_at.elapsed())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>();
    let (table_after, answers) = futures::join!(new_table, answers);
    let elapsed = killed_at.elapsed();
    let mut first = Duration::MAX;
    for (r, at) in &answers {
        assert_eq!(*r.as_ref().or_fail("an answer from the new owner"), 1);
        first = first.min(*at);
    }
    let active: usize = nodes
        .iter()
        .map(|n| n.host::<Bank>().map_or(0, |h| h.active_count()))
        .sum();
    assert!(active >= ACTORS, "the actors are active on the survivors");
    eprintln!(
        "failover ({backend:?}): new table on both survivors {table_after:.2?}, first answer {first:.2?}, \
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
    for (id, backend) in [
        ("aether", Backend::JetStream),
        ("aether_in_memory_store", Backend::Memory),
    ] {
        let url = url.as_str();
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one_failover(url, backend).await;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, failover);
criterion_main!(benches);
