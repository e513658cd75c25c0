//! The bounded scale run (`scripts/scale`; not part of the test suite): 12 Aether nodes in this
//! one process, each with its own NATS connection and its own JetStream event store, on a
//! three-server NATS cluster started for the run (streams with 3 replicas, every server with
//! `sync_interval: always`), and 100 000 actors. It measures, and prints as markdown:
//!
//! - placement balance: the 100 000 actors' owners (max/mean and min/mean actors per node);
//! - a 12th node joining and one node leaving cleanly: shards whose owner changed next to the
//!   ideal 1/N, and the time from the join (the call to `ClusterNode::start`) or the leave
//!   (the call to `shutdown`) until every node holds the same new table;
//! - memory per active actor: the growth of this process's resident memory (`VmRSS`) and of
//!   its live heap bytes (a counting allocator) while actors are activated, divided by the
//!   actors activated;
//! - commands per second across the cluster, with p50 and p99 latency, for read commands
//!   (no event) and for writes (one event each, acknowledged by the R3 stream), each sent
//!   through a random node to a random active actor: 256 in flight (saturating: the latency
//!   is mostly queueing), then 8 in flight (a cluster that is not busy).
//!
//! Actors are activated by a read command each, sent through node `i % 12` (so most go to
//! another node); if activating them all would take longer than the activation budget, the
//! run activates as many as fit and says so.
//!
//! Environment: `AETHER_NATS_SERVER` (the server binary), `AETHER_SCALE_ACTORS` (placement
//! actors, default 100 000), `AETHER_SCALE_ACTIVE` (actors to activate, default all of them),
//! `AETHER_SCALE_ACTIVATION_SECS` (activation budget, default 120),
//! `AETHER_SCALE_LOAD_SECS` (each throughput phase, default 10).

use aether_benches::alloc::{live_bytes, CountingAllocator};
use aether_benches::setup::fail;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_benches::bank::{Bank, Command};
use aether_cluster::{
    Actors, Assignment, ClusterConfig, ClusterNode, DEFAULT_FAILURE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
};
use aether_placement::{diff, DEFAULT_SHARD_COUNT};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsCluster;
use futures::StreamExt;

/// Aether nodes in the run.
const NODES: usize = 12;
/// Commands in flight at once while activating and under load.
const IN_FLIGHT: usize = 256;
/// Commands in flight under the light load.
const LIGHT: usize = 8;
/// Actors activated before the memory baseline is taken (connection buffers, task pools and
/// caches grow during the first commands; they are not per-actor costs).
const WARM_UP: usize = 2_000;
const CLUSTER: &str = "scale";
const AGREE_TIMEOUT: Duration = Duration::from_secs(120);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| fail(format!("{name} must be a whole number, not {v:?}"))),
        Err(_) => default,
    }
}

/// This process's resident memory in bytes (`VmRSS` in /proc/self/status).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn node_id(i: usize) -> String {
    format!("n{i:02}")
}

fn config(i: usize) -> ClusterConfig {
    // The library's defaults for timing and shards: heartbeat 1 s, failure timeout 5 s,
    // 1024 shards, replication factor 1, the cluster bucket on file storage.
    ClusterConfig::default()
        .cluster_name(CLUSTER)
        .node_id(node_id(i))
}

async fn start_node(url: &str, i: usize) -> ClusterNode {
    // A JetStream cluster that has just elected its meta leader (on a busy machine) may still
    // time out its first API requests: retry for a while before giving up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_start_node(url, i).await {
            Ok(node) => return node,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                eprintln!("starting node {i}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => fail(format!("starting node {i}: {e}")),
        }
    }
}

async fn try_start_node(url: &str, i: usize) -> aether_core::Result<ClusterNode> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| aether_core::Error::unavailable("connecting to the NATS cluster", e))?;
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace(CLUSTER).replicas(3),
    )
    .await?;
    let actors = Actors::new(Arc::new(store)).with(Bank);
    ClusterNode::start(client, config(i), actors).await
}

/// Waits until every node holds the same complete table over exactly `members`; returns that
/// table.
async fn agreed(nodes: &[ClusterNode], members: &[String]) -> Arc<Assignment> {
    let deadline = Instant::now() + AGREE_TIMEOUT;
    loop {
        let first = nodes[0].assignment();
        let same = first.is_complete()
            && first.table.members == members
            && nodes.iter().all(|n| n.assignment().epoch == first.epoch);
        if same {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not agree on a table of {members:?} within {AGREE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn members_of(nodes: &[ClusterNode]) -> Vec<String> {
    let mut m: Vec<String> = nodes.iter().map(|n| n.node_id().to_string()).collect();
    m.sort();
    m
}

/// Shards whose primary changed between two tables.
fn primaries_moved(before: &Assignment, after: &Assignment) -> usize {
    (0..before.table.shard_count)
        .filter(|&s| before.primary(s) != after.primary(s))
        .count()
}

fn actors_moved(before: &Assignment, after: &Assignment, ids: &[String]) -> usize {
    ids.iter()
        .filter(|a| before.owner_of(a) != after.owner_of(a))
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Load {
    commands: usize,
    errors: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

/// `senders` senders for `secs`, each sending one command at a time through a random node to a
/// random one of `active`: a read (`Balance`) or a write (`Deposit`).
async fn load(
    nodes: &[ClusterNode],
    active: &[String],
    secs: u64,
    write: bool,
    senders: usize,
) -> Load {
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let errors = AtomicUsize::new(0);
    let per_sender = futures::future::join_all((0..senders).map(|w| {
        let errors = &errors;
        async move {
            let mut rng = fastrand::Rng::with_seed(w as u64);
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let via = &nodes[rng.usize(..nodes.len())];
                let actor = &active[rng.usize(..active.len())];
                let command = if write {
                    Command::Deposit { amount: 1 }
                } else {
                    Command::Balance
                };
                let t = Instant::now();
                match via.send::<Bank>(actor, command).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("command to {actor} failed: {e}");
                        }
                    }
                }
            }
            latencies
        }
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let mut all: Vec<Duration> = per_sender.into_iter().flatten().collect();
    all.sort();
    Load {
        commands: all.len(),
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("starting the tokio runtime: {e}")));
    rt.block_on(run());
}

async fn run() {
    let total = env_or("AETHER_SCALE_ACTORS", 100_000) as usize;
    let want_active = (env_or("AETHER_SCALE_ACTIVE", total as u64) as usize).min(total);
    let activation_budget = Duration::from_secs(env_or("AETHER_SCALE_ACTIVATION_SECS", 120));
    let load_secs = env_or("AETHER_SCALE_LOAD_SECS", 10);
    let run_started = Instant::now();

    eprintln!("starting a 3-server NATS cluster (sync_interval: always)");
    let mut servers = NatsCluster::start(3)
        .unwrap_or_else(|e| fail(format!("starting a 3-server NATS cluster: {e}")));
    let urls = servers.url_list();
    let version = servers.server(0).version();

    // Eleven nodes first, spread over the three servers; the twelfth joins later.
    eprintln!("starting {} nodes", NODES - 1);
    let mut nodes = Vec::new();
    for i in 0..NODES - 1 {
        nodes.push(start_node(&urls[i % urls.len()], i).await);
    }
    let before_join = agreed(&nodes, &members_of(&nodes)).await;
    let ids: Vec<String> = (0..total).map(|i| format!("account-{i}")).collect();

    eprintln!("node {} joins", node_id(NODES - 1));
    let join_started = Instant::now();
    nodes.push(start_node(&urls[(NODES - 1) % urls.len()], NODES - 1).await);
    let after_join = agreed(&nodes, &members_of(&nodes)).await;
    let join_agreed = join_started.elapsed();
    let join_shards = primaries_moved(&before_join, &after_join);
    let join_replicas = diff(&before_join.table.shards, &after_join.table.shards).len();
    let join_actors = actors_moved(&before_join, &after_join, &ids);

    // Placement at 12 nodes.
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for a in &ids {
        if let Some(owner) = after_join.owner_of(a) {
            *per_node.entry(owner).or_default() += 1;
        }
    }
    let counts: Vec<usize> = nodes
        .iter()
        .map(|n| per_node.get(n.node_id()).copied().unwrap_or(0))
        .collect();
    let mean = total as f64 / NODES as f64;
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let shards_per_node: Vec<usize> = nodes
        .iter()
        .map(|n| after_join.primaries_of(n.node_id()).len())
        .collect();
    let shard_mean = f64::from(after_join.table.shard_count) / NODES as f64;
    let shard_max = shards_per_node.iter().copied().max().unwrap_or(0);

    // Activation, with the memory baseline taken after a warm-up.
    eprintln!("activating up to {want_active} actors (budget {activation_budget:?})");
    let nodes_ref = &nodes;
    let activate = |range: std::ops::Range<usize>, deadline: Option<Instant>| {
        let ids = &ids;
        async move {
            let done = AtomicUsize::new(0);
            let failed = AtomicUsize::new(0);
            futures::stream::iter(range)
                .take_while(|_| {
                    let go = deadline.is_none_or(|d| Instant::now() < d);
                    async move { go }
                })
                .map(|i| {
                    let (done, failed) = (&done, &failed);
                    async move {
                        match nodes_ref[i % NODES]
                            .send::<Bank>(&ids[i], Command::Balance)
                            .await
                        {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                    eprintln!("activating {} failed: {e}", ids[i]);
                                }
                                0
                            }
                        };
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|()| async {})
                .await;
            (done.into_inner(), failed.into_inner())
        }
    };
    let warm = WARM_UP.min(want_active);
    let (warm_done, warm_failed) = activate(0..warm, None).await;
    let active_count = || -> usize {
        nodes
            .iter()
            .map(|n| n.host::<Bank>().map_or(0, |h| h.active_count()))
            .sum()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, heap0, active0) = (rss_bytes(), live_bytes(), active_count());
    let activation_started = Instant::now();
    let (done, failed) = activate(
        warm..want_active,
        Some(activation_started + activation_budget),
    )
    .await;
    let activation_time = activation_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss1, heap1, active1) = (rss_bytes(), live_bytes(), active_count());
    let activated = active1.saturating_sub(active0);
    let per_actor = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / activated.max(1) as f64;
    eprintln!(
        "activated {activated} (ok {}, failed {}) in {activation_time:.1?}",
        warm_done + done,
        warm_failed + failed
    );

    // The active actors, as the hosts report them.
    let active: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.host::<Bank>()
                .map(|h| h.active_actors())
                .unwrap_or_default()
        })
        .collect();

    // Saturating load (IN_FLIGHT commands in flight: the latency is mostly queueing), then a
    // light load (LIGHT in flight: the latency of a command on a cluster that is not busy).
    let mut loads = Vec::new();
    for (senders, write) in [
        (IN_FLIGHT, false),
        (IN_FLIGHT, true),
        (LIGHT, false),
        (LIGHT, true),
    ] {
        eprintln!(
            "{} load, {senders} in flight, for {load_secs} s",
            if write { "write" } else { "read" }
        );
        loads.push((
            senders,
            write,
            load(&nodes, &active, load_secs, write, senders).await,
        ));
    }

    // A follower leaves cleanly.
    let leaver = nodes
        .iter()
        .position(|n| !n.is_leader())
        .unwrap_or_else(|| fail("no follower to make leave"));
    let leaver = nodes.remove(leaver);
    let leaver_id = leaver.node_id().to_string();
    let leaver_shards = after_join.primaries_of(&leaver_id).len();
    let before_leave = nodes[0].assignment();
    eprintln!("node {leaver_id} leaves");
    let leave_started = Instant::now();
    let left_ok = leaver.shutdown().await;
    let after_leave = agreed(&nodes, &members_of(&nodes)).await;
    let leave_agreed = leave_started.elapsed();
    let leave_shards = primaries_moved(&before_leave, &after_leave);
    let leave_actors = actors_moved(&before_leave, &after_leave, &ids);
    let leaver_actors = per_node.get(leaver_id.as_str()).copied().unwrap_or(0);

    for n in nodes {
        let _ = n.shutdown().await;
    }
    drop(servers);

    let shard_count = after_join.table.shard_count;
    println!("### Scale run figures\n");
    println!(
        "- nats-server {version}: 3 servers routed on loopback, JetStream with `sync_interval: always`; \
         event stream with 3 replicas (file storage); the cluster's key-value bucket as the library \
         creates it (1 replica, file storage)"
    );
    println!(
        "- {NODES} Aether nodes in one process (2 tokio worker threads), each with its own NATS \
         connection (node i on server i mod 3) and its own JetStream store; heartbeat \
         {DEFAULT_HEARTBEAT_INTERVAL:?}, failure timeout {DEFAULT_FAILURE_TIMEOUT:?}, {shard_count} \
         shards (default {DEFAULT_SHARD_COUNT}), replication factor 1"
    );
    println!(
        "- {total} actors for placement; {active1} activated by a read command each \
         ({IN_FLIGHT} in flight, through node i mod 12); the memory figures are over the \
         {activated} activated after a warm-up of {active0}{}",
        if want_active > warm + done + failed {
            format!(" (the {activation_budget:?} activation budget ran out before {want_active})")
        } else {
            String::new()
        }
    );
    println!(
        "- whole run: {:.0} s\n",
        run_started.elapsed().as_secs_f64()
    );
    println!("| measure | value | ideal or goal |");
    println!("|---|---|---|");
    println!(
        "| actors per node at 12 nodes, max/mean | {:.3} ({max} / {mean:.0}) | 1.000 |",
        max as f64 / mean
    );
    println!(
        "| actors per node at 12 nodes, min/mean | {:.3} ({min} / {mean:.0}) | 1.000 |",
        min as f64 / mean
    );
    println!(
        "| shards per node at 12 nodes, max/mean | {:.3} ({shard_max} / {shard_mean:.1}) | 1.000 |",
        shard_max as f64 / shard_mean
    );
    println!(
        "| 12th node joins: shards whose owner changed | {join_shards} of {shard_count} ({:.2}%; {join_replicas} replica moves) | 1/12 = {:.1} ({:.2}%) |",
        100.0 * join_shards as f64 / f64::from(shard_count),
        f64::from(shard_count) / NODES as f64,
        100.0 / NODES as f64
    );
    println!(
        "| 12th node joins: actors whose owner changed | {join_actors} of {total} ({:.2}%) | 1/12 = {:.0} ({:.2}%) |",
        100.0 * join_actors as f64 / total as f64,
        total as f64 / NODES as f64,
        100.0 / NODES as f64
    );
    println!(
        "| 12th node joins: time until all 12 nodes hold the new table | {} | — |",
        fmt_ms(join_agreed)
    );
    println!(
        "| a node leaves (clean shutdown): shards whose owner changed | {leave_shards} of {shard_count} ({:.2}%) | its own {leaver_shards} ({:.2}%; 1/12 = {:.2}%) |",
        100.0 * leave_shards as f64 / f64::from(shard_count),
        100.0 * leaver_shards as f64 / f64::from(shard_count),
        100.0 / NODES as f64
    );
    println!(
        "| a node leaves: actors whose owner changed | {leave_actors} of {total} ({:.2}%) | its own {leaver_actors} ({:.2}%) |",
        100.0 * leave_actors as f64 / total as f64,
        100.0 * leaver_actors as f64 / total as f64
    );
    println!(
        "| a node leaves: time until the other 11 hold the new table | {}{} | — |",
        fmt_ms(leave_agreed),
        if left_ok.is_ok() {
            ""
        } else {
            " (leave notice failed)"
        }
    );
    println!(
        "| memory per active actor, resident (VmRSS) | {:.0} B ({} actors; {:.1} → {:.1} MiB) | — |",
        per_actor(rss0, rss1),
        activated,
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    );
    println!(
        "| memory per active actor, live heap | {:.0} B | — |",
        per_actor(heap0 as u64, heap1 as u64)
    );
    println!(
        "| activations per second (read command, JetStream lookups) | {:.0} ({activated} in {:.1} s) | — |",
        activated as f64 / activation_time.as_secs_f64(),
        activation_time.as_secs_f64()
    );
    for (senders, write, l) in &loads {
        let what = format!(
            "{}, {senders} in flight",
            if *write {
                "writes (one event each, R3 stream)"
            } else {
                "reads (no event)"
            }
        );
        println!(
            "| commands/s across the cluster, {what} | {:.0} ({} in {:.1} s, {} failed) | — |",
            l.commands as f64 / l.secs,
            l.commands,
            l.secs,
            l.errors
        );
        println!(
            "| latency, {what}, p50 / p99 | {} / {} | — |",
            fmt_ms(l.p50),
            fmt_ms(l.p99)
        );
    }
}
