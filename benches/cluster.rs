//! Placement lookups: the consistent hash ring next to the `hashring` crate, and shard lookup.

use std::hint::black_box;
use std::time::Duration;

use aether_benches::ring::{ConsistentHashRing, HashRingConfig};
use aether_placement::{ShardConfig, ShardManager};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const NODES: usize = 100;
const VNODES: usize = 150;
const KEYS: usize = 1024;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("actor-{i}")).collect()
}

fn ring(c: &mut Criterion) {
    let keys = keys();
    let nodes: Vec<String> = (0..NODES).map(|i| format!("node-{i}")).collect();
    let ours = ConsistentHashRing::with_nodes(
        HashRingConfig::default().virtual_nodes(VNODES),
        nodes.iter().map(String::as_str),
    );
    // The hashring crate has no virtual-node setting: the usual way is one ring entry per
    // (node, replica) pair, the same 100 × 150 points.
    let mut theirs: hashring::HashRing<(usize, usize)> = hashring::HashRing::new();
    for n in 0..NODES {
        for v in 0..VNODES {
            theirs.add((n, v));
        }
    }
    let mut g = c.benchmark_group("ring_get_node");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("aether", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(ours.get_node(black_box(k)));
            }
        })
    });
    g.bench_function("hashring_crate", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(theirs.get(black_box(k)));
            }
        })
    });
    g.finish();
}

fn shard(c: &mut Criterion) {
    let manager = ShardManager::new(ShardConfig::default());
    let mut g = c.benchmark_group("shard_get_shard");
    g.bench_function("aether", |b| {
        b.iter(|| black_box(manager.get_shard(black_box("account-1234567"))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = ring, shard
}
criterion_main!(benches);
