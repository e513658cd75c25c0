//! One `nats-server` process with JetStream.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary::{find_nats_server, ServerVersion};
use crate::{io_err, Result, TestkitError};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for a test server. Start with [`NatsServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct NatsServerBuilder {
    user: Option<(String, String)>,
    token: Option<String>,
    sync_always: bool,
    extra_config: String,
    binary: Option<PathBuf>,
    max_payload: Option<usize>,
    max_file_store: Option<u64>,
    monitoring: bool,
    jetstream_domain: Option<String>,
    leafnode_port: Option<u16>,
    leafnode_remotes: Vec<u16>,
    pub(crate) cluster: Option<ClusterSettings>,
}

#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) name: String,
    pub(crate) server_name: String,
    pub(crate) port: u16,
    pub(crate) routes: Vec<u16>,
    pub(crate) client_port: u16,
    /// The cluster address told to other servers (`advertise`), when not the listen address.
    pub(crate) advertise: Option<String>,
    /// Do not tell clients about the other servers' client URLs (`no_advertise`).
    pub(crate) no_advertise: bool,
}

impl NatsServerBuilder {
    /// Require this user and password from clients.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Require this token from clients.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Ask JetStream to fsync every write before acknowledging it (`sync_interval: always`), the
    /// setting recommended for event stores. Ignored, with the server's default kept, on servers
    /// older than 2.10, which do not have it.
    pub fn sync_always(mut self, on: bool) -> Self {
        self.sync_always = on;
        self
    }

    /// Sets the server's `max_payload` in bytes.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Limits JetStream's file storage to `bytes` (`max_file_store`), to fill the server up:
    /// writes past it are refused with "insufficient resources".
    pub fn max_file_store(mut self, bytes: u64) -> Self {
        self.max_file_store = Some(bytes);
        self
    }

    /// Serves the HTTP monitoring endpoints (`/varz`, `/routez`, `/jsz`, ...) on another free
    /// loopback port; read them with [`NatsServer::monitor`].
    pub fn monitoring(mut self, on: bool) -> Self {
        self.monitoring = on;
        self
    }

    /// Puts the server's JetStream in the domain `domain`: clients of other domains reach it
    /// under `$JS.<domain>.API` (across a leafnode connection, say).
    pub fn jetstream_domain(mut self, domain: impl Into<String>) -> Self {
        self.jetstream_domain = Some(domain.into());
        self
    }

    /// Accepts leafnode connections on loopback `port` (take one from [`free_port`]).
    pub fn leafnode_listen(mut self, port: u16) -> Self {
        self.leafnode_port = Some(port);
        self
    }

    /// Connects as a leafnode to the server accepting leafnodes on loopback `port` (and keeps
    /// trying, every second, while it is gone).
    pub fn leafnode_remote(mut self, port: u16) -> Self {
        self.leafnode_remotes.push(port);
        self
    }

    /// Appends raw server configuration (for example an `accounts` or `authorization` block
    /// with permissions). Do not also use [`user_password`](Self::user_password) or
    /// [`token`](Self::token) then. Never a `jetstream` block: a second one replaces the
    /// server's own, with its temporary store directory, and the server would keep its data in
    /// the shared default directory; use [`sync_always`](Self::sync_always) and
    /// [`max_file_store`](Self::max_file_store).
    pub fn extra_config(mut self, config: impl Into<String>) -> Self {
        self.extra_config.push_str(&config.into());
        self.extra_config.push('\n');
        self
    }

    /// Use this binary instead of searching for one.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Errors
    /// [`TestkitError::BinaryNotFound`] (with install instructions), spawn errors, or
    /// [`TestkitError::NotReady`] with the server's log.
    pub fn start(self) -> Result<NatsServer> {
        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => find_nats_server()?,
        };
        let version = ServerVersion::of(&binary)?;
        let mut last_err = None;
        // A free port found by binding can be taken by someone else before the server binds
        // it; try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("aether-nats-")
                .tempdir()
                .map_err(io_err("creating the server's temporary directory"))?;
            let port = match self.cluster.as_ref() {
                Some(c) => c.client_port,
                None => free_port()?,
            };
            let monitor_port = if self.monitoring {
                Some(free_port()?)
            } else {
                None
            };
            let mut server = NatsServer {
                child: None,
                port,
                monitor_port,
                dir,
                binary: binary.clone(),
                version,
                options: self.clone(),
                starts: 0,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_err = Some(e);
                    if self.cluster.is_some() {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or(TestkitError::NotReady {
            reason: "no attempt made".into(),
            log: String::new(),
        }))
    }
}

/// A running `nats-server` with JetStream, on 127.0.0.1 and a free port, storing in a temporary
/// directory. Killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: Option<u16>,
    dir: TempDir,
    binary: PathBuf,
    version: ServerVersion,
    options: NatsServerBuilder,
    starts: u32,
}

impl NatsServer {
    /// Starts a plain JetStream server (no authentication).
    ///
    /// # Errors
    /// See [`NatsServerBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for servers with options.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring port, when started with [`NatsServerBuilder::monitoring`].
    pub fn monitor_port(&self) -> Option<u16> {
        self.monitor_port
    }

    /// Reads a monitoring endpoint (`"varz"`, `"routez"`, `"jsz?accounts=true"`, ...) and
    /// returns its JSON. Gives up after a few seconds, so a paused server makes it fail
    /// rather than hang.
    ///
    /// # Errors
    /// [`TestkitError::Monitoring`] if monitoring is off, the server does not answer or the
    /// answer is not JSON; [`TestkitError::Io`] on connection errors.
    pub fn monitor(&self, endpoint: &str) -> Result<serde_json::Value> {
        let endpoint = endpoint.trim_start_matches('/');
        let fail = |reason: String| TestkitError::Monitoring {
            endpoint: endpoint.to_string(),
            reason,
        };
        let port = self
            .monitor_port
            .ok_or_else(|| fail("monitoring is off (NatsServerBuilder::monitoring)".into()))?;
        let body = http_get(port, endpoint)?;
        serde_json::from_str(&body).map_err(|e| fail(format!("not JSON ({e}): {body:.200}")))
    }

    /// The server's id (`server_id` in `/varz`), which changes at every start; routes name
    /// their remote by it. Needs [`NatsServerBuilder::monitoring`].
    ///
    /// # Errors
    /// As [`monitor`](Self::monitor).
    pub fn server_id(&self) -> Result<String> {
        let varz = self.monitor("varz")?;
        varz.get("server_id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| TestkitError::Monitoring {
                endpoint: "varz".into(),
                reason: "no server_id".into(),
            })
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's version.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The binary running.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (possibly paused).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's log so far (of the current or last run).
    pub fn log(&self) -> String {
        read_tail(&self.log_path(self.starts), 64 * 1024)
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after 10 s).
    ///
    /// # Errors
    /// I/O errors signalling or waiting for the process.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = signal(child.id(), "CONT");
            let _ = signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child
                    .try_wait()
                    .map_err(io_err("waiting for nats-server"))?
                {
                    Some(_) => break,
                    None if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        Ok(())
    }

    /// Kills the server with SIGKILL, as a crash would, without waiting for it to flush.
    ///
    /// # Errors
    /// I/O errors killing or reaping the process.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(io_err("killing nats-server"))?;
            child.wait().map_err(io_err("reaping nats-server"))?;
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop) or [`kill`](Self::kill), on the same
    /// port with the same store directory, and waits until it is ready.
    ///
    /// # Errors
    /// As [`NatsServerBuilder::start`].
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn_and_wait()
    }

    /// Stops the server gracefully and starts it again on the same port with the same store
    /// directory: data acknowledged before the restart is still there.
    ///
    /// # Errors
    /// As [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing, like a machine
    /// that stalls. Returns once every thread of the process is stopped.
    ///
    /// The signal is delivered asynchronously (a thread on another core, or a sandboxed
    /// kernel, may run on for a moment): without the wait, a request sent right after this
    /// call could still be answered, and a test of what a stalled server does would pass or
    /// fail by chance.
    ///
    /// # Errors
    /// I/O errors running `kill`; the process not stopped within 20 s.
    pub fn pause(&mut self) -> Result<()> {
        match self.child.as_ref() {
            Some(c) => {
                signal(c.id(), "STOP")?;
                wait_for_state(c.id(), true)
            }
            None => Ok(()),
        }
    }

    /// Resumes a paused process (SIGCONT), and returns once no thread of it is stopped.
    ///
    /// # Errors
    /// I/O errors running `kill`; the process still stopped after 20 s.
    pub fn resume(&mut self) -> Result<()> {
        match self.child.as_ref() {
            Some(c) => {
                signal(c.id(), "CONT")?;
                wait_for_state(c.id(), false)
            }
            None => Ok(()),
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("server-{start}.log"))
    }

    fn config_text(&self) -> String {
        let o = &self.options;
        let mut c = String::new();
        let _ = writeln!(c, "listen: \"127.0.0.1:{}\"", self.port);
        if let Some(cl) = &o.cluster {
            let _ = writeln!(c, "server_name: \"{}\"", cl.server_name);
        }
        let _ = writeln!(c, "jetstream {{");
        let _ = writeln!(
            c,
            "  store_dir: {:?}",
            self.store_dir().display().to_string()
        );
        if o.sync_always && self.version.at_least(2, 10) {
            let _ = writeln!(c, "  sync_interval: always");
        }
        if let Some(bytes) = o.max_file_store {
            let _ = writeln!(c, "  max_file_store: {bytes}");
        }
        if let Some(domain) = &o.jetstream_domain {
            let _ = writeln!(c, "  domain: {domain:?}");
        }
        let _ = writeln!(c, "}}");
        if o.leafnode_port.is_some() || !o.leafnode_remotes.is_empty() {
            let _ = writeln!(c, "leafnodes {{");
            if let Some(port) = o.leafnode_port {
                let _ = writeln!(c, "  listen: \"127.0.0.1:{port}\"");
            }
            if !o.leafnode_remotes.is_empty() {
                let remotes: Vec<String> = o
                    .leafnode_remotes
                    .iter()
                    .map(|p| format!("{{ url: \"nats-leaf://127.0.0.1:{p}\" }}"))
                    .collect();
                let _ = writeln!(c, "  remotes: [{}]", remotes.join(", "));
            }
            let _ = writeln!(c, "}}");
        }
        if let Some(port) = self.monitor_port {
            let _ = writeln!(c, "http: \"127.0.0.1:{port}\"");
        }
        if let Some(mp) = o.max_payload {
            let _ = writeln!(c, "max_payload: {mp}");
        }
        if let Some((u, p)) = &o.user {
            let _ = writeln!(c, "authorization {{ user: {u:?}, password: {p:?} }}");
        }
        if let Some(t) = &o.token {
            let _ = writeln!(c, "authorization {{ token: {t:?} }}");
        }
        if let Some(cl) = &o.cluster {
            let _ = writeln!(c, "cluster {{");
            let _ = writeln!(c, "  name: {:?}", cl.name);
            let _ = writeln!(c, "  listen: \"127.0.0.1:{}\"", cl.port);
            let routes: Vec<String> = cl
                .routes
                .iter()
                .map(|p| format!("\"nats://127.0.0.1:{p}\""))
                .collect();
            let _ = writeln!(c, "  routes: [{}]", routes.join(", "));
            if let Some(advertise) = &cl.advertise {
                let _ = writeln!(c, "  advertise: {advertise:?}");
            }
            if cl.no_advertise {
                let _ = writeln!(c, "  no_advertise: true");
            }
            let _ = writeln!(c, "}}");
        }
        c.push_str(&o.extra_config);
        c
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let conf = self.dir.path().join("server.conf");
        std::fs::write(&conf, self.config_text()).map_err(io_err("writing server.conf"))?;
        let log_path = self.log_path(self.starts);
        let log = File::create(&log_path).map_err(io_err("creating the server log"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io_err(format!("spawning {}", self.binary.display())))?;
        self.child = Some(child);
        let clustered = self.options.cluster.is_some();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(TestkitError::NotReady {
                        reason: format!("the server exited with {status}"),
                        log: read_tail(&log_path, 8 * 1024),
                    });
                }
            }
            let log_text = read_tail(&log_path, 256 * 1024);
            // A clustered server accepts clients before it has found its peers; the cluster
            // waits for the JetStream meta leader separately. That this server (not another
            // one) took the port shows in its own log.
            let listening = format!(
                "Listening for client connections on 127.0.0.1:{}",
                self.port
            );
            let ready = log_text.contains("Server is ready")
                || (clustered && log_text.contains(&listening));
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.kill();
                return Err(TestkitError::NotReady {
                    reason: format!("not ready after {READY_TIMEOUT:?}"),
                    log: read_tail(&log_path, 8 * 1024),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A TCP port on 127.0.0.1 that is free now and that no other caller in this process has been
/// given.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on Linux), so the ports the
/// kernel hands out by itself (to every client connection's local end, to `bind(0)`) can never
/// take one between this check and the server binding it; tests run many connections at once,
/// and a clustered server that lost its port to one of them would leave its cluster a peer
/// short. The process-wide record keeps two concurrent tests from getting the same port.
///
/// # Errors
/// [`TestkitError::Io`](crate::TestkitError::Io) when no port in 20000-31999 is free.
pub fn free_port() -> Result<u16> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000; // up to 31 999, below the ephemeral range
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    // Start at a place that differs between processes running at the same time.
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let start = (seed % SPAN as u64) as u16;
    let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..SPAN {
        let port = FIRST + (start + i) % SPAN;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(io_err("finding a free port")(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port between 20000 and 31999",
    )))
}

/// A plain HTTP/1.0 GET on the loopback monitoring port (the server closes the connection
/// after the answer, so the body is everything after the headers).
fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::Write as _;
    const TIMEOUT: Duration = Duration::from_secs(5);
    let context = format!("GET http://127.0.0.1:{port}/{path}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io_err(context.clone()))?;
    conn.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
        .map_err(io_err(context.clone()))?;
    write!(conn, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(io_err(context.clone()))?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).map_err(io_err(context))?;
    let answer = String::from_utf8_lossy(&answer);
    let fail = |reason: String| TestkitError::Monitoring {
        endpoint: path.to_string(),
        reason,
    };
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(format!("no HTTP answer: {answer:.200}")))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(fail(format!("answered {status:?}")));
    }
    Ok(body.to_string())
}

/// Waits until every thread of process `pid` is stopped (`stopped`) or none is, as
/// `/proc/<pid>/task/*/stat` tells. Where `/proc` cannot be read, returns at once: the signal
/// was sent, and nothing better can be known.
fn wait_for_state(pid: u32, stopped: bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let Some(states) = thread_states(pid) else {
            return Ok(());
        };
        // 'T': stopped by a signal; 't': stopped under a tracer.
        let is_stopped = |s: &char| matches!(s, 'T' | 't');
        let done = if stopped {
            states.iter().all(is_stopped)
        } else {
            !states.iter().any(is_stopped)
        };
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::Io {
                context: format!(
                    "waiting for process {pid} to be {}",
                    if stopped { "stopped" } else { "running" }
                ),
                source: std::io::Error::other(format!(
                    "thread states after {READY_TIMEOUT:?}: {states:?}"
                )),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state letter of each thread of process `pid`; `None` when `/proc` cannot tell.
fn thread_states(pid: u32) -> Option<Vec<char>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut states = Vec::new();
    for task in tasks.flatten() {
        // A thread that exited between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: the state follows the
        // last closing one.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())?;
        states.push(state);
    }
    (!states.is_empty()).then_some(states)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(io_err(format!("sending SIG{sig}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(TestkitError::Io {
            context: format!("sending SIG{sig} to {pid}"),
            source: std::io::Error::other(format!("kill exited with {status}")),
        })
    }
}

pub(crate) fn read_tail(path: &Path, max: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    let start = buf.len().saturating_sub(max);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}
