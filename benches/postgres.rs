//! Aether's JetStream store next to PostgreSQL, its peer as a durable event store: the same
//! operations, in the same criterion group (ids `aether` and `postgres`), in one run.
//!
//! What is measured (200-byte event payloads on both sides):
//! - `pg_{durable,relaxed}_1_writer`: one writer appending to one actor, one save at a time
//!   (latency of a durable append).
//! - `pg_{durable,relaxed}_8_writers`: 8 writers, each appending to its own actor, all at once
//!   (throughput of concurrent appends).
//! - `pg_latest_version_cold`: the latest version of an actor with 10 000 events, asked of the
//!   server each time (Aether's `get_latest_version` on a store without cached reads; PostgreSQL's
//!   `SELECT max(sequence)`, served by the primary key's index).
//! - `pg_replay_10k`: reading back and decoding the 10 000 events of one actor.
//!
//! Durability settings: *durable* is nats-server with `sync_interval: always` (every JetStream
//! write fsynced before its ack) next to PostgreSQL's defaults (`fsync=on`,
//! `synchronous_commit=on`: the WAL is flushed before a commit returns); *relaxed* is
//! nats-server's default flush (every 2 minutes) next to PostgreSQL with
//! `synchronous_commit=off`. Reads are measured once, on the durable pair.
//!
//! The PostgreSQL side (`aether_benches::pg`) uses the common events-table design
//! (postgres-es's schema): one row per event, `PRIMARY KEY (aggregate_type, aggregate_id,
//! sequence)` as the optimistic-concurrency check, the payload as `json`. Each append is one
//! prepared `INSERT` in its own implicit transaction (one round trip, one commit), through
//! tokio-postgres; each of the 8 writers has its own connection, as a pool would give it. The
//! Aether side is one `JetStreamEventStore` on one NATS connection, shared by all writers. The
//! write groups also hold `nats_raw`, the floor under Aether: the same JetStream publish + ack
//! with the expected-last-subject-sequence check, without the store, to tell the store's cost
//! from the server's.
//!
//! The write groups are reported, not judged: criterion runs a group's functions one after
//! another, a few seconds each, and a durable append's cost follows the disk's sync latency
//! and the machine's load of that moment, which drift by more than the margins being judged.
//! The verdicts on appends come from `peer-throughput` (a binary of this package), which runs
//! the same writers in interleaved rounds. The read groups are judged on nothing either.
//!
//! Besides criterion's figures, the bench prints how many appends each side made per write
//! group and how many WAL syncs PostgreSQL did meanwhile (`pg_stat_wal.wal_sync`).
//!
//! Servers: a nats-server from aether-testkit (`AETHER_NATS_SERVER` names the binary) and a
//! PostgreSQL server the bench starts itself (`aether_benches::pg::PgServer`: never the
//! machine's own; the binaries from `AETHER_PG_BIN`, else the newest
//! `/usr/lib/postgresql/<major>/bin`).
//!
//! Run: `cargo bench -p aether-benches --bench postgres` (or `scripts/bench --bench postgres`).

use aether_benches::pg::{event, wal_syncs, PgConn, PgServer};
use aether_benches::saves;
use aether_benches::setup::OrFail;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{Event, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::runtime::Runtime;

/// Concurrent writers, each on its own actor.
const WRITERS: usize = 8;
/// Appends per writer in one iteration of the 8-writer groups.
const PER_WRITER: u64 = 10;
/// Length of the history read back by the replay and latest-version groups.
const HISTORY: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// The pair of servers

struct Env {
    rt: Runtime,
    // Dropped after the clients that use them (fields drop in declaration order).
    store: Arc<JetStreamEventStore>,
    js: jetstream::Context,
    pg: Vec<Arc<PgConn>>,
    _nats: NatsServer,
    _pg_server: PgServer,
}

fn env(durable: bool) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let nats = NatsServer::builder()
        .sync_always(durable)
        .start()
        .or_fail("nats-server for benchmarks");
    let pg_server = PgServer::start(!durable);
    eprintln!(
        "{}: nats-server {} ({}{}), {} ({}{})",
        if durable { "durable" } else { "relaxed" },
        nats.version(),
        nats.binary().display(),
        if durable {
            ", sync_interval: always"
        } else {
            ""
        },
        pg_server.version(),
        pg_server.bin().display(),
        if durable {
            ""
        } else {
            ", synchronous_commit=off"
        },
    );
    let config = pg_server.config();
    let (store, js, pg) = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .or_fail("store");
        pg_server.create_schema().await;
        let mut pg = Vec::new();
        for _ in 0..WRITERS {
            pg.push(Arc::new(PgConn::open(&config).await));
        }
        (Arc::new(store), jetstream::new(client), pg)
    });
    Env {
        rt,
        store,
        js,
        pg,
        _nats: nats,
        _pg_server: pg_server,
    }
}

fn mode(durable: bool) -> &'static str {
    if durable {
        "durable"
    } else {
        "relaxed"
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

fn writes(c: &mut Criterion, durable: bool) {
    let env = env(durable);

    let mut g = c.benchmark_group(format!("pg_{}_1_writer", mode(durable)));
    g.throughput(Throughput::Elements(1));
    let next = AtomicU64::new(1);
    // Events are built before the clock starts, on both sides.
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let first = next.fetch_add(iters, Ordering::Relaxed);
            let events: Vec<Event> = (first..first + iters).map(|v| event("one", v)).collect();
            let store = env.store.clone();
            async move { saves::in_turn(&*store, &events).await }
        })
    });
    eprintln!("aether: {} appends", next.load(Ordering::Relaxed) - 1);
    // The floor under Aether: the raw JetStream publish + ack the store makes, with the same
    // expected-last-subject-sequence check, without the store around it.
    let next = AtomicU64::new(1);
    let raw = RawWriter::new(&env, "raw-one");
    g.bench_function("nats_raw", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let first = next.fetch_add(iters, Ordering::Relaxed);
            let payloads = raw_payloads("raw-one", first, iters);
            let raw = raw.clone();
            async move {
                let start = Instant::now();
                raw.publish_all(payloads).await;
                start.elapsed()
            }
        })
    });
    let next = AtomicU64::new(1);
    let syncs_before = env.rt.block_on(wal_syncs(&env.pg));
    g.bench_function("postgres", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let first = next.fetch_add(iters, Ordering::Relaxed);
            let events: Vec<Event> = (first..first + iters).map(|v| event("one", v)).collect();
            let pg = env.pg[0].clone();
            async move {
                let start = Instant::now();
                for e in &events {
                    pg.append(e).await;
                }
                start.elapsed()
            }
        })
    });
    g.finish();
    report_syncs(&env, syncs_before, next.load(Ordering::Relaxed) - 1);

    let mut g = c.benchmark_group(format!("pg_{}_8_writers", mode(durable)));
    g.throughput(Throughput::Elements(WRITERS as u64 * PER_WRITER));
    g.sample_size(20);
    // Each writer appends `iters * PER_WRITER` events to its own actor, one at a time; the
    // writers run as separate tasks, all at once, and the clock stops when the last is done.
    let rounds = AtomicU64::new(0);
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let chains = chains(&rounds, iters);
            let store = env.store.clone();
            saves::chains(store, chains)
        })
    });
    eprintln!(
        "aether: {} appends",
        rounds.load(Ordering::Relaxed) * PER_WRITER * WRITERS as u64
    );
    let rounds = AtomicU64::new(0);
    let raws: Vec<RawWriter> = (0..WRITERS)
        .map(|w| RawWriter::new(&env, &format!("raw-writer-{w}")))
        .collect();
    g.bench_function("nats_raw", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let first = rounds.fetch_add(iters, Ordering::Relaxed) * PER_WRITER + 1;
            let work: Vec<_> = raws
                .iter()
                .map(|r| {
                    let payloads = raw_payloads(&r.actor, first, iters * PER_WRITER);
                    (r.clone(), payloads)
                })
                .collect();
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = work
                    .into_iter()
                    .map(|(raw, payloads)| {
                        tokio::spawn(async move { raw.publish_all(payloads).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.or_fail("writer task");
                }
                start.elapsed()
            }
        })
    });
    let rounds = AtomicU64::new(0);
    let syncs_before = env.rt.block_on(wal_syncs(&env.pg));
    g.bench_function("postgres", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let chains = chains(&rounds, iters);
            let pg = env.pg.clone();
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = chains
                    .into_iter()
                    .zip(pg)
                    .map(|(chain, conn)| {
                        tokio::spawn(async move {
                            for e in &chain {
                                conn.append(e).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.or_fail("writer task");
                }
                start.elapsed()
            }
        })
    });
    g.finish();
    report_syncs(
        &env,
        syncs_before,
        rounds.load(Ordering::Relaxed) * PER_WRITER * WRITERS as u64,
    );

    if durable {
        reads(c, &env);
    }
}

/// One actor's raw JetStream appends: publish + ack with the expected last subject sequence,
/// the call `save_event` makes, remembering the last sequence as the store's tip cache does.
#[derive(Clone)]
struct RawWriter {
    js: jetstream::Context,
    actor: String,
    subject: String,
    last_seq: Arc<AtomicU64>,
}

impl RawWriter {
    fn new(env: &Env, actor: &str) -> Self {
        RawWriter {
            js: env.js.clone(),
            actor: actor.to_string(),
            subject: env.store.event_subject(actor),
            last_seq: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn publish_all(&self, payloads: Vec<bytes::Bytes>) {
        let mut last = self.last_seq.load(Ordering::Relaxed);
        for payload in payloads {
            let msg = jetstream::message::PublishMessage::build()
                .payload(payload)
                .expected_last_subject_sequence(last);
            last = self
                .js
                .send_publish(self.subject.clone(), msg)
                .await
                .or_fail("publish")
                .await
                .or_fail("ack")
                .sequence;
        }
        self.last_seq.store(last, Ordering::Relaxed);
    }
}

/// The encoded events `first..first + n` of `actor`, for the raw floor.
fn raw_payloads(actor: &str, first: u64, n: u64) -> Vec<bytes::Bytes> {
    (first..first + n)
        .map(|v| bytes::Bytes::from(event(actor, v).to_json_bytes().or_fail("encode")))
        .collect()
}

/// Prints how many WAL syncs PostgreSQL did per append in the group just measured (warm-up
/// included), for the notes on what each side does per operation.
fn report_syncs(env: &Env, before: i64, appends: u64) {
    let syncs = env.rt.block_on(wal_syncs(&env.pg)) - before;
    eprintln!(
        "postgres: {appends} appends, {syncs} WAL syncs ({:.2} per append)",
        syncs as f64 / appends.max(1) as f64
    );
}

/// The next `iters` rounds of events for each of the [`WRITERS`] actors.
fn chains(rounds: &AtomicU64, iters: u64) -> Vec<Vec<Event>> {
    let first = rounds.fetch_add(iters, Ordering::Relaxed);
    (0..WRITERS)
        .map(|w| {
            let actor = format!("writer-{w}");
            (first * PER_WRITER + 1..=(first + iters) * PER_WRITER)
                .map(|v| event(&actor, v))
                .collect()
        })
        .collect()
}

fn durable_writes(c: &mut Criterion) {
    writes(c, true);
}

fn relaxed_writes(c: &mut Criterion) {
    writes(c, false);
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Writes `HISTORY` events of `actor` into both stores quickly: pipelined JetStream publishes in
/// the store's own message format (one event per message, as `save_event` writes them), and
/// pipelined inserts in one PostgreSQL transaction.
async fn seed(env: &Env, actor: &str) {
    let subject = env.store.event_subject(actor);
    let mut v = 1;
    while v <= HISTORY {
        let mut acks = Vec::new();
        while v <= HISTORY && acks.len() < 1000 {
            // The headers aether-store's codec puts on a one-event save.
            let e = event(actor, v);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Aether-Version", v.to_string().as_str());
            headers.insert("Aether-First-Version", v.to_string().as_str());
            headers.insert("Aether-Count", "1");
            headers.insert("Aether-Last-Event-Id", e.id.as_str());
            let payload = e.to_json_bytes().or_fail("encode");
            acks.push(
                env.js
                    .publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                    .or_fail("publish"),
            );
            v += 1;
        }
        for a in acks {
            a.await.or_fail("ack");
        }
    }

    let pg = &env.pg[0];
    pg.client.batch_execute("BEGIN").await.or_fail("begin");
    let events: Vec<Event> = (1..=HISTORY).map(|v| event(actor, v)).collect();
    for chunk in events.chunks(1000) {
        futures::future::join_all(chunk.iter().map(|e| pg.append(e))).await;
    }
    pg.client.batch_execute("COMMIT").await.or_fail("commit");
    // As autovacuum would soon: statistics for the planner, visibility map for index-only scans.
    pg.client
        .batch_execute("VACUUM ANALYZE events")
        .await
        .or_fail("vacuum analyze");
}

fn reads(c: &mut Criterion, env: &Env) {
    let actor = "history";
    env.rt.block_on(seed(env, actor));
    let pg = env.pg[0].clone();

    let mut g = c.benchmark_group("pg_latest_version_cold");
    // The store was opened without cached reads: every call asks the server.
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter(|| async {
            let v = env.store.get_latest_version(actor).await.or_fail("latest");
            assert_eq!(v, HISTORY);
            black_box(v)
        })
    });
    g.bench_function("postgres", |b| {
        b.to_async(&env.rt).iter(|| async {
            let v = pg.latest_version(actor).await;
            assert_eq!(v, HISTORY as i64);
            black_box(v)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pg_replay_10k");
    g.throughput(Throughput::Elements(HISTORY));
    g.sample_size(10);
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter(|| async {
            let evs = env.store.get_events(actor, 0).await.or_fail("replay");
            assert_eq!(evs.len() as u64, HISTORY);
            black_box(evs)
        })
    });
    g.bench_function("postgres", |b| {
        b.to_async(&env.rt).iter(|| async {
            let evs = pg.replay(actor).await;
            assert_eq!(evs.len() as u64, HISTORY);
            black_box(evs)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = durable_writes, relaxed_writes
}
criterion_main!(benches);
