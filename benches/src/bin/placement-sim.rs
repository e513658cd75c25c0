//! An in-process simulation of actor placement for a large cluster, without NATS: 100 nodes and
//! 1 000 000 actors by default. It uses the library's own placement path, the one every
//! `ClusterNode` uses: `shard_for` (actor → shard), `rebalance` (the leader's table over the
//! live members, moving as little as it can) and `Assignment::owner_of` (actor → its shard's
//! primary), and prints, as markdown:
//!
//! - balance: actors and shards per node (max/mean, min/mean), next to the ideal of 1.00;
//! - a node joining (N → N+1) and one leaving (N → N−1): shards and actors whose owner
//!   changed, next to the ideal (1/(N+1) of them on a join, the leaver's own on a leave), and
//!   whether anything moved that did not have to;
//! - the leader's time to compute each table, and the size of the table as written to the
//!   cluster's bucket (the wire form every node receives on every change).
//!
//! The table at N nodes is grown the way a cluster starting node by node grows it: one
//! `rebalance` per join, from one node to N.
//!
//! Run with `cargo run --release -p aether-benches --bin placement-sim [-- --nodes 100
//! --actors 1000000 --shards 1024,4096,16384]` (the first shard count is the default of
//! `ShardConfig`, the one a cluster uses unless configured otherwise).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aether_cluster::{Assignment, AssignmentTable};
use aether_placement::{rebalance, DEFAULT_SHARD_COUNT};

struct Args {
    nodes: usize,
    actors: usize,
    shards: Vec<u32>,
}

/// Stops the program with `message` and the usage line (exit status 2).
fn usage_error(message: &str) -> ! {
    eprintln!("{message}; usage: placement-sim [--nodes N] [--actors N] [--shards a,b,c]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        nodes: 100,
        actors: 1_000_000,
        shards: vec![DEFAULT_SHARD_COUNT, 4096, 16384],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--nodes" => {
                args.nodes = value
                    .parse()
                    .unwrap_or_else(|_| usage_error("--nodes takes a number"))
            }
            "--actors" => {
                args.actors = value
                    .parse()
                    .unwrap_or_else(|_| usage_error("--actors takes a number"))
            }
            "--shards" => {
                args.shards = value
                    .split(',')
                    .map(|s| {
                        s.parse().unwrap_or_else(|_| {
                            usage_error("--shards takes numbers separated by commas")
                        })
                    })
                    .collect()
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    if args.nodes < 2 {
        usage_error("--nodes must be at least 2");
    }
    args
}

fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

/// A table the cluster would hold after the leader balanced `shards` over `members`.
fn assignment(shards: Vec<Vec<String>>, members: &[String], shard_count: u32) -> Assignment {
    let mut sorted = members.to_vec();
    sorted.sort();
    Assignment {
        epoch: 1,
        table: AssignmentTable {
            members: sorted,
            shards,
            ..AssignmentTable::empty(shard_count, 1)
        },
    }
}

/// Min, max and mean of `counts` over `members` (a member with none counts as 0).
fn spread(counts: &HashMap<&str, usize>, members: &[String]) -> (usize, usize, f64) {
    let values: Vec<usize> = members
        .iter()
        .map(|m| counts.get(m.as_str()).copied().unwrap_or(0))
        .collect();
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let mean = values.iter().sum::<usize>() as f64 / values.len().max(1) as f64;
    (min, max, mean)
}

struct Movement {
    shards: usize,
    actors: usize,
    /// Actors that moved although neither their old nor their new owner is the node that
    /// joined or left: movement that was not needed.
    needless: usize,
}

fn movement(before: &Assignment, after: &Assignment, ids: &[String], node: &str) -> Movement {
    let shards = (0..before.table.shard_count)
        .filter(|&s| before.primary(s) != after.primary(s))
        .count();
    let mut actors = 0;
    let mut needless = 0;
    for id in ids {
        let (old, new) = (before.owner_of(id), after.owner_of(id));
        if old != new {
            actors += 1;
            if old != Some(node) && new != Some(node) {
                needless += 1;
            }
        }
    }
    Movement {
        shards,
        actors,
        needless,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args = parse_args();
    let n = args.nodes;
    let ids: Vec<String> = (0..args.actors).map(|i| format!("actor-{i}")).collect();
    let members: Vec<String> = (0..n).map(node_name).collect();

    println!(
        "Placement of {} actors over {n} nodes (replication factor 1: each shard's primary serves it), \
         with the library's `shard_for`, `rebalance` and `Assignment::owner_of`.\n",
        args.actors
    );
    println!(
        "| shards | shards/node max/mean | actors/node min/mean | actors/node max/mean | \
         join {n}→{}: shards moved (ideal) | join: actors moved (ideal) | join: needless moves | \
         leave {n}→{}: shards moved (ideal) | leave: actors moved (ideal) | leave: needless moves | \
         leader's rebalance time (join / leave) | table size |",
        n + 1,
        n - 1
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &shard_count in &args.shards {
        // Grow the table one join at a time, as the leader does.
        let mut shards = vec![Vec::new(); shard_count as usize];
        for k in 1..=n {
            shards = rebalance(&shards, &members[..k], 1);
        }
        let at_n = assignment(shards.clone(), &members, shard_count);

        let mut actor_counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            if let Some(owner) = at_n.owner_of(id) {
                *actor_counts.entry(owner).or_default() += 1;
            }
        }
        let mut shard_counts: HashMap<&str, usize> = HashMap::new();
        for s in 0..shard_count {
            if let Some(p) = at_n.primary(s) {
                *shard_counts.entry(p).or_default() += 1;
            }
        }
        let (amin, amax, amean) = spread(&actor_counts, &members);
        let (_, smax, smean) = spread(&shard_counts, &members);
        assert_eq!(
            actor_counts.values().sum::<usize>(),
            args.actors,
            "every actor has an owner"
        );

        // A node joins.
        let joiner = node_name(n);
        let mut joined_members = members.clone();
        joined_members.push(joiner.clone());
        let t = Instant::now();
        let joined = rebalance(&shards, &joined_members, 1);
        let join_time = t.elapsed();
        let after_join = assignment(joined, &joined_members, shard_count);
        let join = movement(&at_n, &after_join, &ids, &joiner);

        // A node leaves (one in the middle of the list).
        let leaver = node_name(n / 2);
        let left_members: Vec<String> = members.iter().filter(|m| **m != leaver).cloned().collect();
        let t = Instant::now();
        let left = rebalance(&shards, &left_members, 1);
        let leave_time = t.elapsed();
        let after_leave = assignment(left, &left_members, shard_count);
        let leave = movement(&at_n, &after_leave, &ids, &leaver);
        let leaver_actors = actor_counts.get(leaver.as_str()).copied().unwrap_or(0);
        let leaver_shards = shard_counts.get(leaver.as_str()).copied().unwrap_or(0);

        let table_bytes = match aether_cluster::routing::encode(&at_n.table) {
            Ok(bytes) => bytes.len(),
            Err(e) => {
                eprintln!("encoding the assignment table: {e}");
                std::process::exit(1);
            }
        };
        let pct = |x: usize, of: usize| 100.0 * x as f64 / of as f64;
        println!(
            "| {shard_count}{} | {:.3} ({smax} / {smean:.2}) | {:.3} ({amin} / {amean:.0}) | {:.3} ({amax} / {amean:.0}) | \
             {} = {:.2}% ({:.1} = {:.2}%) | {} = {:.2}% ({:.0} = {:.2}%) | {} | \
             {} = {:.2}% ({leaver_shards} = {:.2}%) | {} = {:.2}% ({leaver_actors} = {:.2}%) | {} | {} / {} | {:.0} KiB |",
            if shard_count == DEFAULT_SHARD_COUNT { " (default)" } else { "" },
            smax as f64 / smean,
            amin as f64 / amean,
            amax as f64 / amean,
            join.shards,
            pct(join.shards, shard_count as usize),
            shard_count as f64 / (n + 1) as f64,
            100.0 / (n + 1) as f64,
            join.actors,
            pct(join.actors, args.actors),
            args.actors as f64 / (n + 1) as f64,
            100.0 / (n + 1) as f64,
            join.needless,
            leave.shards,
            pct(leave.shards, shard_count as usize),
            pct(leaver_shards, shard_count as usize),
            leave.actors,
            pct(leave.actors, args.actors),
            pct(leaver_actors, args.actors),
            leave.needless,
            ms(join_time),
            ms(leave_time),
            table_bytes as f64 / 1024.0,
        );
    }
}
