//! Steady-state durable appends on a three-server cluster (replicas 3): the log as one stream
//! (`n1`) next to the log over three partitions (`n3`), in interleaved rounds.
//!
//! The cluster: three nats-servers from aether-testkit (`AETHER_NATS_SERVER`), each with
//! `sync_interval: always`, routed to each other; every stream has 3 replicas. The sides:
//! - `n1`: `save_event` on a store whose log is one stream (one Raft group, one leader that
//!   orders and syncs every append);
//! - `n3`: `save_event` on a store whose log is spread over three streams
//!   (`JetStreamConfig::partitions(3)`); after creating it the probe calls `spread_leaders()`
//!   and waits until each server leads one partition (`partition_leaders()`), so that every
//!   server orders and syncs a third of the appends. Writer `w`'s actor is picked in
//!   partition `w mod 3`, as many writers over many actors spread on average.
//!
//! Each side has its own NATS connection to the cluster, shared by its writers; a writer is a
//! task appending to its own actor, one save at a time, each once the previous is
//! acknowledged, until the round's time is up. As in `peer-throughput`, each side runs for a
//! few seconds at a time (a round), the sides take turns with the first side rotating every
//! round, and each side's figures are the distribution over its rounds: saves per second per
//! round (median, min–max) and the latency of every save (p50, p99). The two sides of one
//! round make a pair; the pairs give the ratio `n3 / n1` with its spread. The load average
//! is read before and after the rounds.
//!
//! **What one machine can tell.** The three servers share this machine's cores and its one
//! disk. A partition's leader syncs its appends and sends them to its followers, which sync
//! them too: on one machine every Raft group's work lands on the same cores and the same disk,
//! so three groups mostly cost CPU instead of overlapping (`../shared/NATS.md` measured, on a
//! 2-core machine with 12 writers, one stream at 10 200–11 700 acks/s against three streams at
//! 7 500–7 800). The layout is meant for three machines: each leader syncs on its own disk
//! with its own CPU, and with N ≥ the number of servers every server leads some partitions,
//! so the three order and sync appends at once instead of one leading everything. A ratio
//! below 1 here says what three Raft groups cost on shared cores, not what three machines
//! would gain.
//!
//! Usage: `cluster-appends [--seconds S] [--rounds N] [--writers W] [--json FILE]`
//! (defaults: 3 s, 5 rounds, 12 writers). The JSON holds every round.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_benches::pg;
use aether_benches::setup::{fail, OrFail};
use aether_core::EventStore;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::{NatsCluster, NatsServer};
use serde_json::{json, Value};

/// Servers in the cluster, and partitions of the `n3` side's log.
const SERVERS: usize = 3;

/// How long the leaders may take to spread before the probe stops.
const SPREAD_DEADLINE: Duration = Duration::from_secs(60);

const LIMITS: &str = "three servers share this machine's cores and its one disk: each Raft \
group's leader and followers sync on the same disk with the same CPU, so more groups cost CPU \
rather than overlap (../shared/NATS.md: 1 stream 10 200-11 700 acks/s against 3 streams \
7 500-7 800 with 12 writers on a 2-core machine). On three machines each partition's leader \
syncs on its own disk with its own CPU, and N >= servers lets all three lead at once.";

struct Options {
    seconds: f64,
    rounds: usize,
    writers: usize,
    json: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 3.0,
        rounds: 5,
        writers: 12,
        json: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .or_fail(&format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--seconds" => o.seconds = value.parse().or_fail("--seconds: a number"),
            "--rounds" => o.rounds = value.parse().or_fail("--rounds: a count"),
            "--writers" => o.writers = value.parse().or_fail("--writers: a count"),
            "--json" => o.json = Some(value.clone()),
            other => fail(format!(
                "unknown option {other}; usage: cluster-appends [--seconds S] [--rounds N] \
                 [--writers W] [--json FILE]"
            )),
        }
        i += 2;
    }
    if o.rounds == 0 || o.seconds <= 0.0 || o.writers == 0 {
        fail("--rounds, --seconds and --writers must be positive");
    }
    o
}

/// One side: its store, and its writers, each on its own actor with its next version.
struct Side {
    id: &'static str,
    what: &'static str,
    store: JetStreamEventStore,
    actors: Vec<String>,
    next: Vec<AtomicU64>,
}

/// What one round of one side did.
struct Round {
    saves: u64,
    seconds: f64,
    latencies_ns: Vec<u64>,
}

/// Every writer of `side` saving in turn until `length` has passed; the round ends when the
/// last writer's last save is acknowledged.
async fn round(side: &Arc<Side>, length: Duration) -> Round {
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = (0..side.actors.len())
        .map(|w| {
            let side = Arc::clone(side);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let v = side.next[w].fetch_add(1, Ordering::Relaxed);
                    let event = pg::event(&side.actors[w], v);
                    let t = Instant::now();
                    side.store.save_event(&event).await.or_fail("save");
                    latencies.push(t.elapsed().as_nanos() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies_ns = Vec::new();
    for t in tasks {
        latencies_ns.extend(t.await.or_fail("writer task"));
    }
    Round {
        saves: latencies_ns.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
        latencies_ns,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1_000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Leaders per server of `store`'s partitions (`"none"`: partitions without a leader).
async fn leaders_per_server(store: &JetStreamEventStore) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for p in store.partition_leaders().await.or_fail("partition leaders") {
        *count
            .entry(p.leader.unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    count
}

/// Spreads the leaders of `store`'s partitions and waits until each server leads one.
async fn spread_one_leader_per_server(store: &JetStreamEventStore) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + SPREAD_DEADLINE;
    let mut asked = Instant::now() - Duration::from_secs(60);
    loop {
        let count = leaders_per_server(store).await;
        if count.len() == SERVERS && !count.contains_key("none") && count.values().all(|&n| n == 1)
        {
            return count;
        }
        if Instant::now() > deadline {
            fail(format!(
                "the partitions' leaders did not spread one per server: {count:?}"
            ));
        }
        // The server elects the new leaders in the next moments: ask again only if a while
        // has passed without the spread showing.
        if asked.elapsed() >= Duration::from_secs(5) && !count.contains_key("none") {
            let moves = store.spread_leaders().await.or_fail("spread leaders");
            eprintln!("leaders {count:?}: asked for {} move(s)", moves.len());
            asked = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sides(urls: Vec<String>, writers: usize) -> Vec<Arc<Side>> {
    let mut out = Vec::new();
    for (id, partitions, what) in [
        (
            "n1",
            1,
            "`save_event`, the log as one stream (replicas 3), one NATS connection shared by \
             the writers",
        ),
        (
            "n3",
            SERVERS as u32,
            "`save_event`, the log over 3 streams (replicas 3), each server leading one, one \
             NATS connection shared by the writers, each writer's actor in partition `w mod 3`",
        ),
    ] {
        let client = async_nats::ConnectOptions::new()
            .connect(urls.clone())
            .await
            .or_fail("connect");
        let config = JetStreamConfig::default()
            .namespace(format!("r3{id}"))
            .replicas(SERVERS)
            .partitions(partitions);
        let store = JetStreamEventStore::new(client, config)
            .await
            .or_fail("store");
        let leaders = if partitions > 1 {
            spread_one_leader_per_server(&store).await
        } else {
            leaders_per_server(&store).await
        };
        eprintln!("{id}: leaders per server {leaders:?}");
        // Writer `w`'s actor in partition `w mod N`: the first id `<side>-<w>-<n>` there.
        let actors = (0..writers)
            .map(|w| {
                let wanted = w as u32 % partitions;
                (0..)
                    .map(|n| format!("{id}-{w}-{n}"))
                    .find(|a| store.partition_of(a.as_str()) == wanted)
                    .or_fail("an actor id in the partition")
            })
            .collect();
        out.push(Arc::new(Side {
            id,
            what,
            store,
            actors,
            next: (0..writers).map(|_| AtomicU64::new(1)).collect(),
        }));
    }
    out
}

async fn run(o: &Options, urls: Vec<String>) -> Value {
    let sides = sides(urls, o.writers).await;
    let length = Duration::from_secs_f64(o.seconds);
    let load_before = load_average();
    eprintln!(
        "== durable, R3 on {SERVERS} servers, {} writers: load average {load_before}",
        o.writers
    );
    for s in &sides {
        round(s, length.min(Duration::from_secs(1))).await;
    }
    let mut rounds: Vec<Vec<Value>> = vec![Vec::new(); sides.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); sides.len()];
    let started = Instant::now();
    for r in 0..o.rounds {
        for k in 0..sides.len() {
            let i = (r + k) % sides.len();
            let side = &sides[i];
            let at = started.elapsed().as_secs_f64();
            let mut result = round(side, length).await;
            result.latencies_ns.sort_unstable();
            let rate = result.saves as f64 / result.seconds;
            let (p50, p99) = (
                percentile(&result.latencies_ns, 0.50),
                percentile(&result.latencies_ns, 0.99),
            );
            eprintln!(
                "round {r} {:<3} {:>9.0} saves/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
                side.id, rate, p50, p99
            );
            rounds[i].push(json!({
                "round": r,
                "position": k,
                "started_at_s": at,
                "saves": result.saves,
                "seconds": result.seconds,
                "saves_per_s": rate,
                "p50_us": p50,
                "p99_us": p99,
            }));
            rates[i].push(rate);
            latencies[i].extend_from_slice(&result.latencies_ns);
        }
    }
    let load_after = load_average();
    // Where the leaders ended: a leader that moved during the rounds changes what was measured.
    let mut leaders_after = Vec::new();
    for s in &sides {
        leaders_after.push(json!({ s.id: leaders_per_server(&s.store).await }));
    }
    let ratios: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(b, a)| b / a).collect();
    let (lo, hi) = min_max(&ratios);
    eprintln!(
        "   load average after: {load_after}; leaders per server after: {}",
        Value::from(leaders_after.clone())
    );
    for (i, s) in sides.iter().enumerate() {
        latencies[i].sort_unstable();
        let (rlo, rhi) = min_max(&rates[i]);
        eprintln!(
            "{:<3} median {:>7.0} saves/s ({rlo:.0}–{rhi:.0})  p50 {:.1} µs  p99 {:.1} µs",
            s.id,
            median(&rates[i]),
            percentile(&latencies[i], 0.50),
            percentile(&latencies[i], 0.99)
        );
    }
    eprintln!(
        "n3 / n1: {:.2}× saves/s (rounds {lo:.2}–{hi:.2}), load average {load_before} before, \
         {load_after} after",
        median(&ratios)
    );
    eprintln!("limits of one machine: {LIMITS}");
    let out_sides: Vec<Value> = sides
        .iter()
        .zip(rounds)
        .zip(&latencies)
        .map(|((s, rounds), lat)| {
            json!({
                "id": s.id,
                "what": s.what,
                "rounds": rounds,
                "p50_us": percentile(lat, 0.50),
                "p99_us": percentile(lat, 0.99),
            })
        })
        .collect();
    json!({
        "mode": "durable",
        "replicas": SERVERS,
        "servers": SERVERS,
        "writers": o.writers,
        "load_before": load_before,
        "load_after": load_after,
        "leaders_after": leaders_after,
        "ratio_n3_over_n1": { "median": median(&ratios), "min": lo, "max": hi, "per_round": ratios },
        "sides": out_sides,
        "limits": LIMITS,
    })
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let cluster = NatsCluster::start_with(SERVERS, NatsServer::builder().sync_always(true))
        .or_fail("a 3-server nats cluster");
    let version = cluster.servers()[0].version();
    if !version.at_least(2, 11) {
        // Replicated event streams are refused before 2.11 (see docs/jetstream.md).
        fail(format!(
            "nats-server {version} refuses replicated event streams; 2.11 or later is needed"
        ));
    }
    eprintln!(
        "nats-server {version} ({}), {SERVERS} servers, sync_interval: always",
        cluster.servers()[0].binary().display()
    );
    let scenario = rt.block_on(run(&o, cluster.url_list()));
    drop(cluster);
    let out = json!({
        "nats_server": version.to_string(),
        "machine": std::env::var("AETHER_BENCH_MACHINE").unwrap_or_else(|_| "unknown".into()),
        "round_seconds": o.seconds,
        "rounds": o.rounds,
        "payload_bytes": pg::PAYLOAD_BYTES,
        "scenario": scenario,
    });
    let text = serde_json::to_string_pretty(&out).or_fail("encode the results");
    match &o.json {
        Some(path) => {
            std::fs::write(path, text + "\n").or_fail(&format!("write {path}"));
            eprintln!("wrote {path}");
        }
        None => println!("{text}"),
    }
}
