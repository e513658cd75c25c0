//! PostgreSQL as the peer of Aether's JetStream store: a server of the benchmark's own, a
//! connection with its prepared statements, and the event both sides write.
//!
//! The server is never the machine's own: `initdb` into a temporary directory, then `postgres`
//! on a free loopback port with its socket in that directory. The binaries come from
//! `AETHER_PG_BIN` (a directory holding `initdb`, `postgres`, `pg_ctl` and `pg_isready`), else
//! the newest `/usr/lib/postgresql/<major>/bin` (Debian's `postgresql` package; `scripts/bench`
//! installs it). PostgreSQL refuses to run as root: when the benchmark runs as root, the
//! temporary directory is given to the `postgres` user and the server's programs run through
//! `setpriv --reuid=postgres --regid=postgres --init-groups`, which execs in place, so the child
//! held is the postmaster itself (`runuser`/`su` fork and would leave it behind when killed). On
//! drop the server is stopped with `pg_ctl stop -m fast` (killed if that fails) and the
//! directory removed.
//!
//! The table is postgres-es's events table: one row per event,
//! `PRIMARY KEY (aggregate_type, aggregate_id, sequence)` as the optimistic-concurrency check,
//! the payload as `json`. An append is one prepared `INSERT` in its own implicit transaction
//! (one round trip, one commit).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aether_core::Event;
use tempfile::TempDir;
use tokio_postgres::{NoTls, Statement};

use crate::setup::{fail, OrFail};

/// Size of each event's payload (its `data` as JSON), on both sides.
pub const PAYLOAD_BYTES: usize = 200;
/// The aggregate type every PostgreSQL row carries (postgres-es's first key column).
pub const AGGREGATE_TYPE: &str = "account";

/// The events table.
pub const SCHEMA: &str = "CREATE TABLE events (
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
pub fn event(actor: &str, v: u64) -> Event {
    let e = Event::new("Deposited", actor, v)
        .with_field("amount", v)
        .with_field("note", "");
    let len = serde_json::to_vec(&e.data).or_fail("encode payload").len();
    e.with_field("note", "x".repeat(PAYLOAD_BYTES.saturating_sub(len)))
}

/// A PostgreSQL server of the bench's own: fresh cluster in a temporary directory, free port.
pub struct PgServer {
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
    pub fn start(relaxed: bool) -> Self {
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
            if !ok {
                fail(format!(
                    "chown of {} to the postgres user failed (is there one?)",
                    dir.path().display()
                ));
            }
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
        if !init.status.success() {
            fail(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        // A free port can be taken before the server binds it: try a few.
        for _ in 0..5 {
            if server.spawn_and_wait(relaxed) {
                return server;
            }
        }
        fail(format!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(server.log_path()).unwrap_or_default()
        ));
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

    /// The connection string of the server.
    pub fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl PgServer {
    /// `postgres --version` of the server's binaries.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The directory the server's binaries come from.
    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// Creates the events table.
    pub async fn create_schema(&self) {
        let (admin, connection) = tokio_postgres::connect(&self.config(), NoTls)
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
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("version", &self.version)
            .finish()
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
pub struct PgConn {
    /// The connection.
    pub client: tokio_postgres::Client,
    insert: Statement,
    latest: Statement,
    replay: Statement,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").finish_non_exhaustive()
    }
}

impl PgConn {
    /// Connects and prepares the statements.
    pub async fn open(config: &str) -> Self {
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
    pub async fn append(&self, e: &Event) {
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

    /// The actor's latest sequence (`SELECT max(sequence)`), 0 for none.
    pub async fn latest_version(&self, actor: &str) -> i64 {
        let row = self
            .client
            .query_one(&self.latest, &[&AGGREGATE_TYPE, &actor])
            .await
            .or_fail("select max(sequence)");
        row.get::<_, Option<i64>>(0).unwrap_or(0)
    }

    /// Reads an actor's events in order and decodes each row's JSON.
    pub async fn replay(
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

/// WAL syncs (`fsync`/`fdatasync` of the WAL) PostgreSQL has done so far, by every process.
/// Each connection first flushes its pending statistics (they are otherwise flushed at most
/// once a second).
pub async fn wal_syncs(pg: &[std::sync::Arc<PgConn>]) -> i64 {
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
