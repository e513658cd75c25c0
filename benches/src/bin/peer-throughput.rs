//! Steady-state appends, Aether's JetStream store next to PostgreSQL, in interleaved rounds.
//!
//! The criterion groups of `benches/postgres.rs` run each function for a few seconds, one
//! after another: a drift of the disk's sync latency between them decides their ratio. Here
//! every side runs for a few seconds at a time (a round), the sides take turns (A, B, C, A, B,
//! C, … with the first side rotating every round), and each side's figures are the
//! distribution over its rounds: saves per second per round (median, min–max) and the
//! latency of every save (p50, p99). The same round of two sides (within one turn of all
//! sides) make a pair; the pairs give the ratios `bench-report` prints with their spread.
//!
//! Scenarios: *durable* (nats-server with `sync_interval: always`; PostgreSQL's defaults,
//! `synchronous_commit=on`) and *relaxed* (nats-server's default flush; PostgreSQL with
//! `synchronous_commit=off`), each with 8 writers and with one. A writer is a task appending
//! to its own actor, one save at a time, each once the previous is acknowledged, until the
//! round's time is up. Sides (`--sides`, by id):
//! - `aether`: `save_event` on one `JetStreamEventStore` (one NATS connection) shared by the
//!   writers, as an application holds it;
//! - `aether_connection_per_writer`: `save_event`, each writer with a store and a NATS
//!   connection of its own (the shape a PostgreSQL pool gives the other side);
//! - `aether_partitioned`: `save_event` on one store whose log is spread over
//!   [`PARTITIONS`] streams (`JetStreamConfig::partitions`), one NATS connection; each writer's
//!   actor is picked in a partition of its own (writer `w` in partition `w mod N`), as many
//!   writers over many actors spread on average;
//! - `nats_raw_partitioned`: the raw publishes of `nats_raw` to the same 8 partitions'
//!   streams (each writer's actor picked as for `aether_partitioned`): the floor under it;
//! - `nats_raw`: the raw JetStream publish + ack `save_event` makes (the store's header, the
//!   expected last subject sequence), one connection shared: the floor under the store;
//! - `postgres`: a prepared `INSERT` in its own transaction, each writer with a connection of
//!   its own (as a pool gives it);
//! - `postgres_one_connection`: the same `INSERT`s, all writers on one connection
//!   (tokio-postgres pipelines them).
//!
//! With one writer, the last two are the same as `aether` and `postgres` and are left out.
//! For PostgreSQL sides, the WAL syncs per insert are counted over their rounds
//! (`pg_stat_wal.wal_sync`).
//!
//! Usage: `peer-throughput [--seconds S] [--rounds N] [--modes durable,relaxed]
//! [--writers 8,1] [--sides aether,postgres,...] [--json FILE]`. The JSON (for `bench-report`)
//! holds every round. Servers: a nats-server from aether-testkit (`AETHER_NATS_SERVER`) and a
//! PostgreSQL of the probe's own (`AETHER_PG_BIN`), as in `benches/postgres.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_benches::pg::{self, PgConn, PgServer};
use aether_benches::setup::{fail, OrFail};
use aether_core::EventStore;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream;
use serde_json::{json, Value};

/// The sides a scenario runs when `--sides` is not given. With one writer, the two that
/// differ from another only in how writers share connections are left out.
const DEFAULT_SIDES: &[&str] = &[
    "aether",
    "postgres",
    "aether_partitioned",
    "nats_raw_partitioned",
    "nats_raw",
    "aether_connection_per_writer",
    "postgres_one_connection",
];

/// The partitions of the `aether_partitioned` side's log.
const PARTITIONS: u32 = 8;

struct Options {
    seconds: f64,
    rounds: usize,
    modes: Vec<String>,
    writers: Vec<usize>,
    sides: Vec<String>,
    json: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 3.0,
        rounds: 5,
        modes: vec!["durable".into(), "relaxed".into()],
        writers: vec![8, 1],
        sides: DEFAULT_SIDES.iter().map(|s| s.to_string()).collect(),
        json: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let list = |v: &str| -> Vec<String> { v.split(',').map(|s| s.trim().to_string()).collect() };
    while i < args.len() {
        let value = args
            .get(i + 1)
            .or_fail(&format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--seconds" => o.seconds = value.parse().or_fail("--seconds: a number"),
            "--rounds" => o.rounds = value.parse().or_fail("--rounds: a count"),
            "--modes" => o.modes = list(value),
            "--writers" => {
                o.writers = list(value)
                    .iter()
                    .map(|w| w.parse().or_fail("--writers: counts"))
                    .collect()
            }
            "--sides" => o.sides = list(value),
            "--json" => o.json = Some(value.clone()),
            other => fail(format!(
                "unknown option {other}; usage: peer-throughput [--seconds S] [--rounds N] \
                 [--modes durable,relaxed] [--writers 8,1] [--sides a,b] [--json FILE]"
            )),
        }
        i += 2;
    }
    for m in &o.modes {
        if m != "durable" && m != "relaxed" {
            fail(format!("--modes: durable or relaxed, not {m}"));
        }
    }
    if o.rounds == 0 || o.seconds <= 0.0 || o.writers.contains(&0) {
        fail("--rounds, --seconds and --writers must be positive");
    }
    o
}

/// One actor's raw JetStream appends: what `save_event` sends (the event's JSON, the store's
/// version header, the expected last subject sequence remembered from the previous
/// acknowledgement, as the store's tip cache does).
struct RawWriter {
    js: jetstream::Context,
    subject: String,
    last_seq: AtomicU64,
}

impl RawWriter {
    async fn save(&self, event: &aether_core::Event) {
        let payload = bytes::Bytes::from(event.to_json_bytes().or_fail("encode"));
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload)
            .header("Aether-Version", event.version.to_string().as_str())
            .expected_last_subject_sequence(self.last_seq.load(Ordering::Relaxed));
        let ack = self
            .js
            .send_publish(self.subject.clone(), msg)
            .await
            .or_fail("publish")
            .await
            .or_fail("ack");
        self.last_seq.store(ack.sequence, Ordering::Relaxed);
    }
}

enum Kind {
    /// One store per writer (several writers may share one).
    Store(Vec<Arc<JetStreamEventStore>>),
    Raw(Vec<RawWriter>),
    /// One connection per writer (several writers may share one).
    Postgres(Vec<Arc<PgConn>>),
}

/// One side of a scenario: its writers, each on its own actor with its next version.
struct Side {
    id: String,
    what: &'static str,
    kind: Kind,
    actors: Vec<String>,
    next: Vec<AtomicU64>,
}

impl Side {
    async fn save(&self, w: usize) {
        let v = self.next[w].fetch_add(1, Ordering::Relaxed);
        let event = pg::event(&self.actors[w], v);
        match &self.kind {
            Kind::Store(stores) => {
                stores[w].save_event(&event).await.or_fail("save");
            }
            Kind::Raw(writers) => writers[w].save(&event).await,
            Kind::Postgres(conns) => conns[w].append(&event).await,
        }
    }
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
                    let t = Instant::now();
                    side.save(w).await;
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A store over [`PARTITIONS`] streams in a namespace of side `id`'s own, and each writer's
/// actor moved into a partition of its own (writer `w` in partition `w mod N`: the first id
/// `<tag>-<side>-<w>-<n>` that lands there).
async fn partitioned_store(
    client: &async_nats::Client,
    tag: &str,
    actors: &mut [String],
    id: &str,
) -> Arc<JetStreamEventStore> {
    let config = JetStreamConfig::default()
        .namespace(format!("{tag}_{id}"))
        .partitions(PARTITIONS);
    let store = Arc::new(
        JetStreamEventStore::new(client.clone(), config)
            .await
            .or_fail("partitioned store"),
    );
    for (w, actor) in actors.iter_mut().enumerate() {
        let wanted = w as u32 % PARTITIONS;
        *actor = (0..)
            .map(|n| format!("{tag}-{id}-{w}-{n}"))
            .find(|a| store.partition_of(a.as_str()) == wanted)
            .or_fail("an actor id in the partition");
    }
    store
}

/// The sides of one scenario, their servers already running.
async fn sides(
    wanted: &[String],
    writers: usize,
    nats_url: &str,
    pg_config: &str,
    tag: &str,
) -> Vec<Arc<Side>> {
    let client = async_nats::connect(nats_url).await.or_fail("connect");
    let store = Arc::new(
        JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .or_fail("store"),
    );
    let mut out = Vec::new();
    for id in wanted {
        let mut actors: Vec<String> = (0..writers).map(|w| format!("{tag}-{id}-{w}")).collect();
        let (what, kind) = match id.as_str() {
            "aether" => (
                "`save_event`, one store (one NATS connection) shared by the writers",
                Kind::Store(vec![store.clone(); writers]),
            ),
            "aether_connection_per_writer" | "postgres_one_connection" | "aether_partitioned"
                if writers == 1 =>
            {
                continue
            }
            "aether_partitioned" => {
                let store = partitioned_store(&client, tag, &mut actors, id).await;
                (
                    "`save_event`, one store over 8 partitions (streams), one NATS connection \
                     shared by the writers, each writer's actor in its own partition",
                    Kind::Store(vec![store; writers]),
                )
            }
            "nats_raw_partitioned" if writers == 1 => continue,
            "nats_raw_partitioned" => {
                let store = partitioned_store(&client, tag, &mut actors, id).await;
                let js = jetstream::new(client.clone());
                (
                    "raw JetStream publish + ack with the store's header and expected-sequence \
                     check, to the 8 partitions' streams, one connection shared",
                    Kind::Raw(
                        actors
                            .iter()
                            .map(|a| RawWriter {
                                js: js.clone(),
                                subject: store.event_subject(a.as_str()),
                                last_seq: AtomicU64::new(0),
                            })
                            .collect(),
                    ),
                )
            }
            "aether_connection_per_writer" => {
                let mut stores = Vec::new();
                for _ in 0..writers {
                    let c = async_nats::connect(nats_url).await.or_fail("connect");
                    stores.push(Arc::new(
                        JetStreamEventStore::new(c, JetStreamConfig::default())
                            .await
                            .or_fail("store"),
                    ));
                }
                (
                    "`save_event`, each writer its own store and NATS connection",
                    Kind::Store(stores),
                )
            }
            "nats_raw" => {
                let js = jetstream::new(client.clone());
                (
                    "raw JetStream publish + ack with the store's header and expected-sequence \
                     check, one connection shared",
                    Kind::Raw(
                        actors
                            .iter()
                            .map(|a| RawWriter {
                                js: js.clone(),
                                subject: store.event_subject(a),
                                last_seq: AtomicU64::new(0),
                            })
                            .collect(),
                    ),
                )
            }
            "postgres" => {
                let mut conns = Vec::new();
                for _ in 0..writers {
                    conns.push(Arc::new(PgConn::open(pg_config).await));
                }
                (
                    "prepared `INSERT`, its own transaction; each writer its own connection",
                    Kind::Postgres(conns),
                )
            }
            "postgres_one_connection" => {
                let conn = Arc::new(PgConn::open(pg_config).await);
                (
                    "prepared `INSERT`, its own transaction; all writers on one connection",
                    Kind::Postgres(vec![conn; writers]),
                )
            }
            other => fail(format!("unknown side {other}")),
        };
        out.push(Arc::new(Side {
            id: id.clone(),
            what,
            kind,
            next: (0..writers).map(|_| AtomicU64::new(1)).collect(),
            actors,
        }));
    }
    out
}

/// Runs one scenario: a short warm-up round per side, then `rounds` rounds of every side, the
/// first side rotating.
async fn scenario(
    o: &Options,
    durable: bool,
    writers: usize,
    nats_url: &str,
    pg_config: &str,
) -> Value {
    let mode = if durable { "durable" } else { "relaxed" };
    let tag = format!("{mode}{writers}");
    let sides = sides(&o.sides, writers, nats_url, pg_config, &tag).await;
    let length = Duration::from_secs_f64(o.seconds);
    let load_before = load_average();
    eprintln!("== {mode}, {writers} writer(s): load average {load_before}");
    for s in &sides {
        round(s, length.min(Duration::from_secs(1))).await;
    }
    let mut rounds: Vec<Vec<Value>> = vec![Vec::new(); sides.len()];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); sides.len()];
    // WAL syncs and inserts of each PostgreSQL side over its rounds.
    let mut wal: Vec<(i64, u64)> = vec![(0, 0); sides.len()];
    let started = Instant::now();
    for r in 0..o.rounds {
        for k in 0..sides.len() {
            let i = (r + k) % sides.len();
            let side = &sides[i];
            let at = started.elapsed().as_secs_f64();
            // The side's connections flush their statistics before each reading.
            let pg_conns = match &side.kind {
                Kind::Postgres(conns) => Some(conns),
                _ => None,
            };
            let syncs_before = match pg_conns {
                Some(conns) => pg::wal_syncs(conns).await,
                None => 0,
            };
            let mut result = round(side, length).await;
            if let Some(conns) = pg_conns {
                wal[i].0 += pg::wal_syncs(conns).await - syncs_before;
                wal[i].1 += result.saves;
            }
            result.latencies_ns.sort_unstable();
            let rate = result.saves as f64 / result.seconds;
            let (p50, p99) = (
                percentile(&result.latencies_ns, 0.50),
                percentile(&result.latencies_ns, 0.99),
            );
            eprintln!(
                "round {r} {:<30} {:>9.0} saves/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
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
            latencies[i].extend_from_slice(&result.latencies_ns);
        }
    }
    let load_after = load_average();
    eprintln!("   load average after: {load_after}");
    let sides: Vec<Value> = sides
        .iter()
        .zip(rounds)
        .zip(latencies.iter_mut())
        .zip(&wal)
        .map(|(((s, rounds), lat), (syncs, inserts))| {
            lat.sort_unstable();
            let wal = if *inserts > 0 {
                json!(*syncs as f64 / *inserts as f64)
            } else {
                Value::Null
            };
            json!({
                "id": s.id,
                "what": s.what,
                "rounds": rounds,
                "p50_us": percentile(lat, 0.50),
                "p99_us": percentile(lat, 0.99),
                "wal_syncs_per_insert": wal,
            })
        })
        .collect();
    json!({
        "mode": mode,
        "writers": writers,
        "load_before": load_before,
        "load_after": load_after,
        "sides": sides,
    })
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let mut scenarios = Vec::new();
    let mut versions = (String::new(), String::new());
    for mode in &o.modes {
        let durable = mode == "durable";
        let nats = NatsServer::builder()
            .sync_always(durable)
            .start()
            .or_fail("nats-server");
        let pg_server = PgServer::start(!durable);
        versions = (nats.version().to_string(), pg_server.version().to_string());
        eprintln!(
            "{mode}: nats-server {} ({}), {}",
            nats.version(),
            nats.binary().display(),
            pg_server.version()
        );
        let config = pg_server.config();
        rt.block_on(async {
            pg_server.create_schema().await;
            for &writers in &o.writers {
                scenarios.push(scenario(&o, durable, writers, &nats.url(), &config).await);
            }
        });
        drop(pg_server);
        drop(nats);
    }
    let out = json!({
        "nats_server": versions.0,
        "postgres": versions.1,
        "machine": std::env::var("AETHER_BENCH_MACHINE").unwrap_or_else(|_| "unknown".into()),
        "round_seconds": o.seconds,
        "rounds": o.rounds,
        "payload_bytes": pg::PAYLOAD_BYTES,
        "scenarios": scenarios,
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
