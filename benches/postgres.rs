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
//! The PostgreSQL side uses the common events-table design (postgres-es's schema): one row per
//! event, `PRIMARY KEY (aggregate_type, aggregate_id, sequence)` as the optimistic-concurrency
//! check, the payload as `json`. Each append is one prepared `INSERT` in its own implicit
//! transaction (one round trip, one commit), through tokio-postgres; each of the 8 writers has
//! its own connection, as a pool would give it. The Aether side is one `JetStreamEventStore` on
//! one NATS connection, shared by all writers. The write groups also hold `nats_raw`, the floor
//! under Aether: the same JetStream publish + ack with the expected-last-subject-sequence check,
//! without the store, to tell the store's cost from the server's.
//!
//! The write groups of the durable pair also hold `aether_grouped`: the same saves through a
//! second store with group commit on (`GroupCommitMode::Always`; on a single server it is off
//! by default), so concurrent saves of different actors share atomic batches (nats-server
//! 2.12+; on older servers the store saves alone and the row measures that).
//!
//! Besides criterion's figures, the bench prints how many appends each side made per write
//! group and how many WAL syncs PostgreSQL did meanwhile (`pg_stat_wal.wal_sync`).
//!
//! Servers: a nats-server from aether-testkit (`AETHER_NATS_SERVER` names the binary) and a
//! PostgreSQL server the bench starts itself, never the machine's own: `initdb` into a temporary
//! directory, then `postgres` on a free loopback port with its socket in that directory. The
//! binaries come from `AETHER_PG_BIN` (a directory holding `initdb`, `postgres`, `pg_ctl` and
//! `pg_isready`), else the newest `/usr/lib/postgresql/<major>/bin` (Debian's `postgresql`
//! package; `scripts/bench` installs it). PostgreSQL refuses to run as root: when the bench runs
//! as root, the temporary directory is given to the `postgres` user and the server's programs
//! run through `setpriv --reuid=postgres --regid=postgres --init-groups`, which execs in place,
//! so the child the bench holds is the postmaster itself (`runuser`/`su` fork and would leave it
//! behind when killed). On drop the server is stopped with `pg_ctl stop -m fast` (killed if
//! that fails) and the directory removed.
//!
//! Run: `cargo bench -p aether-benches --bench postgres` (or `scripts/bench --bench postgres`).

use aether_benches::saves;
use aether_benches::setup::OrFail;
use std::fs::File;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{Event, EventStore};
use aether_store::{GroupCommitMode, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio_postgres::{NoTls, Statement};

/// Size of each event's payload (its `data` as JSON), on both sides.
const PAYLOAD_BYTES: usize = 200;
/// Concurrent writers, each on its own actor.
const WRITERS: usize = 8;
/// Appends per writer in one iteration of the 8-writer groups.
const PER_WRITER: u64 = 10;
/// Length of the history read back by the replay and latest-version groups.
const HISTORY: u64 = 10_000;
/// The aggregate type every PostgreSQL row carries (postgres-es's first key column).
const AGGREGATE_TYPE: &str = "account";

const SCHEMA: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";
const INSERT: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    VALUES ($1, $2, $3, $4, $5, $6::text::json, $7::text::json)";
const LATEST: &str =
    "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2";
const REPLAY: &str = "SELECT event_type, event_version, sequence, payload::text, metadata::text \
    FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence";

/// An event whose payload encodes to [`PAYLOAD_BYTES`] bytes of JSON.
fn event(actor: &str, v: u64) -> Event {
    let e = Event::new("Deposited", actor, v)
        .with_field("amount", v)
        .with_field("note", "");
    let len = serde_json::to_vec(&e.data).or_fail("encode payload").len();
    e.with_field("note", "x".repeat(PAYLOAD_BYTES.saturating_sub(len)))
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL server

/// A PostgreSQL server of the bench's own: fresh cluster in a temporary directory, free port.
struct PgServer {
    child: Option<Child>,
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    version: String,
}

/// The directory of PostgreSQL's server programs.
fn pg_bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AETHER_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let Some(major) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("postgres").is_file() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, b)| b).or_fail(
        "no PostgreSQL server binaries: install Debian's `postgresql` package \
         (scripts/bench does) or set AETHER_PG_BIN to the directory holding initdb and postgres",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Creates a cluster and starts it; `relaxed` sets `synchronous_commit=off`.
    fn start(relaxed: bool) -> Self {
        let bin = pg_bin_dir();
        let as_root = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("aether-pg-")
            .tempdir()
            .or_fail("temporary directory for PostgreSQL");
        if as_root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .or_fail("run chown")
                .success();
            assert!(
                ok,
                "chown of {} to the postgres user failed (is there one?)",
                dir.path().display()
            );
        }
        let version = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .or_fail("postgres --version");
        let mut server = PgServer {
            child: None,
            dir,
            bin,
            port: 0,
            as_root,
            version,
        };
        let init = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .or_fail("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // A free port can be taken before the server binds it: try a few.
        for _ in 0..5 {
            if server.spawn_and_wait(relaxed) {
                return server;
            }
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(server.log_path()).unwrap_or_default()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A command running `program` from the server's binaries as the `postgres` user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if self.as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(path);
            c
        } else {
            Command::new(path)
        };
        // The bench's own working directory may not be readable by the postgres user.
        c.current_dir(self.dir.path());
        c
    }

    fn spawn_and_wait(&mut self, relaxed: bool) -> bool {
        self.port = aether_testkit::free_port().or_fail("a free port for PostgreSQL");
        let log = File::create(self.log_path()).or_fail("PostgreSQL log file");
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if relaxed {
            cmd.args(["-c", "synchronous_commit=off"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().or_fail("log file"))
            .stderr(log)
            .spawn()
            .or_fail("spawn postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().or_fail("postgres status").is_some() {
                return false;
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// One PostgreSQL connection with its prepared statements (as sqlx's statement cache keeps
/// them for postgres-es).
struct PgConn {
    client: tokio_postgres::Client,
    insert: Statement,
    latest: Statement,
    replay: Statement,
}

impl PgConn {
    async fn open(config: &str) -> Self {
        let (client, connection) = tokio_postgres::connect(config, NoTls)
            .await
            .or_fail("connect to the bench's PostgreSQL");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("PostgreSQL connection ended: {e}");
            }
        });
        let insert = client.prepare(INSERT).await.or_fail("prepare insert");
        let latest = client.prepare(LATEST).await.or_fail("prepare latest");
        let replay = client.prepare(REPLAY).await.or_fail("prepare replay");
        PgConn {
            client,
            insert,
            latest,
            replay,
        }
    }

    /// Appends one event: one `INSERT`, its own transaction. The payload and metadata are
    /// encoded here, as Aether's store encodes the event inside `save_event`.
    async fn append(&self, e: &Event) {
        let payload = serde_json::to_string(&e.data).or_fail("encode payload");
        let metadata =
            serde_json::to_string(&serde_json::json!({ "id": e.id, "timestamp": e.timestamp }))
                .or_fail("encode metadata");
        let sequence = i64::try_from(e.version).or_fail("version fits in bigint");
        self.client
            .execute(
                &self.insert,
                &[
                    &AGGREGATE_TYPE,
                    &e.actor_id,
                    &sequence,
                    &e.event_type,
                    &"1",
                    &payload,
                    &metadata,
                ],
            )
            .await
            .or_fail("insert event");
    }

    async fn latest_version(&self, actor: &str) -> i64 {
        let row = self
            .client
            .query_one(&self.latest, &[&AGGREGATE_TYPE, &actor])
            .await
            .or_fail("select max(sequence)");
        row.get::<_, Option<i64>>(0).unwrap_or(0)
    }

    /// Reads an actor's events in order and decodes each row's JSON.
    async fn replay(
        &self,
        actor: &str,
    ) -> Vec<(String, i64, serde_json::Value, serde_json::Value)> {
        let rows = self
            .client
            .query(&self.replay, &[&AGGREGATE_TYPE, &actor])
            .await
            .or_fail("select events");
        rows.iter()
            .map(|r| {
                let payload: &str = r.get(3);
                let metadata: &str = r.get(4);
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(2),
                    serde_json::from_str(payload).or_fail("decode payload"),
                    serde_json::from_str(metadata).or_fail("decode metadata"),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The pair of servers

struct Env {
    rt: Runtime,
    // Dropped after the clients that use them (fields drop in declaration order).
    store: Arc<JetStreamEventStore>,
    /// A store with group commit on, on its own stream.
    grouped: Arc<JetStreamEventStore>,
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
        pg_server.version,
        pg_server.bin.display(),
        if durable {
            ""
        } else {
            ", synchronous_commit=off"
        },
    );
    let config = pg_server.config();
    let (store, grouped, js, pg) = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .or_fail("store");
        let grouped = JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default()
                .namespace("grouped")
                .group_commit(GroupCommitMode::Always),
        )
        .await
        .or_fail("grouped store");
        let (admin, connection) = tokio_postgres::connect(&config, NoTls)
            .await
            .or_fail("connect to the bench's PostgreSQL");
        let admin_task = tokio::spawn(connection);
        admin
            .batch_execute(SCHEMA)
            .await
            .or_fail("create the events table");
        drop(admin);
        admin_task
            .await
            .or_fail("admin connection task")
            .or_fail("admin connection");
        let mut pg = Vec::new();
        for _ in 0..WRITERS {
            pg.push(Arc::new(PgConn::open(&config).await));
        }
        (
            Arc::new(store),
            Arc::new(grouped),
            jetstream::new(client),
            pg,
        )
    });
    Env {
        rt,
        store,
        grouped,
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
    if durable {
        // A lone writer with group commit on: it must not wait for a group.
        let next = AtomicU64::new(1);
        g.bench_function("aether_grouped", |b| {
            b.to_async(&env.rt).iter_custom(|iters| {
                let first = next.fetch_add(iters, Ordering::Relaxed);
                let events: Vec<Event> = (first..first + iters).map(|v| event("one", v)).collect();
                let store = env.grouped.clone();
                async move { saves::in_turn(&*store, &events).await }
            })
        });
    }
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
    if durable {
        let rounds = AtomicU64::new(0);
        g.bench_function("aether_grouped", |b| {
            b.to_async(&env.rt).iter_custom(|iters| {
                let chains = chains(&rounds, iters);
                let store = env.grouped.clone();
                saves::chains(store, chains)
            })
        });
        eprintln!("aether_grouped: {:?}", env.grouped.group_commit_stats());
    }
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

/// WAL syncs (`fsync`/`fdatasync` of the WAL) PostgreSQL has done so far, by every process.
/// Each connection first flushes its pending statistics (they are otherwise flushed at most
/// once a second).
async fn wal_syncs(pg: &[Arc<PgConn>]) -> i64 {
    for conn in pg {
        conn.client
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .or_fail("flush statistics");
    }
    pg[0]
        .client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await
        .or_fail("read pg_stat_wal")
        .get(0)
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
