//! Group commit on a replicated stream: three nats-servers on this machine, each with
//! `sync_interval: always`, an R3 event stream, and writers each appending to their own actor
//! through one shared store.
//!
//! - `group_commit_r3_8_writers`: 8 concurrent writers, `grouped`
//!   (`GroupCommitMode::Replicated`: concurrent saves share atomic batches) next to `alone`
//!   (`GroupCommitMode::Never`, the default: every save its own publish).
//! - `group_commit_r3_1_writer`: one writer's latency with group commit on and off (a lone
//!   writer must not wait for a group).
//!
//! Needs nats-server 2.12+ (atomic batch publish); on an older server it says so and measures
//! nothing. The single-server comparison, with PostgreSQL next to it, is in `postgres.rs`.

use aether_benches::saves;
use aether_benches::setup::OrFail;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::Event;
use aether_store::{GroupCommitMode, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsCluster;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const WRITERS: usize = 8;
const PER_WRITER: u64 = 25;

fn event(actor: &str, v: u64) -> Event {
    Event::new("Deposited", actor, v).with_field("amount", 100)
}

async fn store(
    urls: &[async_nats::ServerAddr],
    namespace: &str,
    mode: GroupCommitMode,
) -> Arc<JetStreamEventStore> {
    let client = async_nats::connect(urls).await.or_fail("connect");
    let config = JetStreamConfig::default()
        .namespace(namespace)
        .replicas(3)
        .group_commit(mode);
    let store = JetStreamEventStore::new(client, config)
        .await
        .or_fail("replicated store");
    Arc::new(store)
}

/// `iters` rounds of `PER_WRITER` saves by each of `writers` tasks, each on its own actor.
async fn run(
    store: &Arc<JetStreamEventStore>,
    rounds: &AtomicU64,
    iters: u64,
    writers: usize,
) -> Duration {
    let first = rounds.fetch_add(iters, Ordering::Relaxed) * PER_WRITER + 1;
    let last = first + iters * PER_WRITER;
    let chains: Vec<Vec<Event>> = (0..writers)
        .map(|w| {
            (first..last)
                .map(|v| event(&format!("writer-{w}"), v))
                .collect()
        })
        .collect();
    saves::chains(Arc::clone(store), chains).await
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let mut cluster = NatsCluster::start(3).or_fail("three nats-servers for benchmarks");
    let server_version = cluster.server(0).version();
    if !server_version.at_least(2, 12) {
        eprintln!(
            "group commit needs nats-server 2.12+; {server_version} is older, nothing measured"
        );
        return;
    }
    let urls: Vec<async_nats::ServerAddr> = cluster
        .url_list()
        .iter()
        .map(|u| u.parse().or_fail("server URL"))
        .collect();
    let (grouped, alone) = rt.block_on(async {
        (
            store(&urls, "grouped", GroupCommitMode::Replicated).await,
            store(&urls, "alone", GroupCommitMode::Never).await,
        )
    });
    assert!(
        grouped.group_commit_active(),
        "group commit must be active on R3"
    );

    let mut g = c.benchmark_group("group_commit_r3_8_writers");
    g.throughput(Throughput::Elements(WRITERS as u64 * PER_WRITER));
    g.sample_size(10);
    for (id, store) in [("grouped", &grouped), ("alone", &alone)] {
        let rounds = AtomicU64::new(0);
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, rounds) = (Arc::clone(store), &rounds);
                async move { run(&store, rounds, iters, WRITERS).await }
            })
        });
    }
    g.finish();
    eprintln!("grouped: {:?}", grouped.group_commit_stats());

    let mut g = c.benchmark_group("group_commit_r3_1_writer");
    g.throughput(Throughput::Elements(1));
    for (id, store) in [("grouped", &grouped), ("alone", &alone)] {
        let next = AtomicU64::new(1);
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let first = next.fetch_add(iters, Ordering::Relaxed);
                let events: Vec<Event> = (first..first + iters)
                    .map(|v| event("lone-writer", v))
                    .collect();
                let store = Arc::clone(store);
                async move { saves::in_turn(&*store, &events).await }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
