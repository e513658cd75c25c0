//! A TCP proxy on loopback that a test can cut and heal, to make network partitions.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{io_err, Result};

/// How often the accept loop looks for a new connection or for the proxy being dropped.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How long a new connection waits for the target to accept it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Stack of the accept and forwarding threads: they only copy bytes through a heap buffer.
const THREAD_STACK: usize = 256 * 1024;
const BUFFER: usize = 32 * 1024;

/// A TCP proxy listening on a free `127.0.0.1` port and forwarding every connection to a
/// target port on `127.0.0.1`, that a test can [`cut`](Self::cut) and [`heal`](Self::heal).
///
/// **Cut.** Every open connection is shut down in both directions on both sides before `cut`
/// returns: no byte passes after it, and both peers read end-of-file at once (the client side
/// and the target side each see the connection closed, as after a crash of the other end that
/// the kernel reported). New connections are accepted and closed straight away, without a
/// byte, instead of being refused: the port stays the proxy's, so nobody else can take it
/// while the partition lasts, and a `nats-server` dialing a route or a NATS client dialing a
/// server sees its connection fail at once and retries on its usual schedule (about every
/// second for routes, with the client's reconnect backoff for clients). A black hole that
/// keeps connections open without passing bytes would only be noticed after ping timeouts
/// (minutes by default).
///
/// **Heal.** New connections pass again; connections closed by the cut stay closed (the
/// peers reconnect by themselves).
///
/// **Freeze.** [`freeze`](Self::freeze) keeps every connection open but holds back the bytes
/// that arrive (new connections are accepted and held the same way), like a stalled machine
/// or a black-holing network: the peers notice only through their own timeouts.
/// [`thaw`](Self::thaw) delivers what was held and forwards again; a cut while frozen closes
/// the connections as usual.
///
/// A connection is forwarded as a whole: when either side closes or fails, the proxy closes
/// both (no half-closed connections). The proxy runs on its own threads (one accept loop, two
/// per open connection), so it needs no async runtime from the caller. Dropping it closes the
/// listener and every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
    /// Signalled when the proxy thaws, is cut or stops, to wake the held forwarders.
    thawed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    frozen: bool,
    /// Number of cuts so far: a connection accepted before a cut must not start forwarding
    /// after it, even if the proxy was healed in between.
    cuts: u64,
    next_id: u64,
    /// Handles of the open connections (client side, target side), to shut them down.
    open: HashMap<u64, (TcpStream, TcpStream)>,
    forwarded: u64,
    dropped: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if it ever did, the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the proxy is frozen. False when the connection (accepted when `cuts` cuts
    /// had happened) must close instead: the proxy was cut or is stopping.
    fn wait_thawed(&self, cuts: u64) -> bool {
        let mut state = self.state();
        while state.frozen && state.cuts == cuts && !self.stop.load(Ordering::SeqCst) {
            state = self.thawed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.cuts == cuts && !self.stop.load(Ordering::SeqCst)
    }
}

impl TcpProxy {
    /// Starts a proxy on a free `127.0.0.1` port, forwarding to `127.0.0.1:target_port`. The
    /// target need not be listening yet: a connection that arrives before it is closed.
    ///
    /// # Errors
    /// [`TestkitError::Io`](crate::TestkitError::Io) if no port can be bound or the accept
    /// thread cannot be started.
    pub fn start(target_port: u16) -> Result<Self> {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
        // Port 0: the kernel picks a free port, and the listener holds it from then on.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_err("binding the proxy's port"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("reading the proxy's address"))?;
        // Polling lets the accept loop see `stop` without a connection to wake it.
        listener
            .set_nonblocking(true)
            .map_err(io_err("making the proxy's listener non-blocking"))?;
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .stack_size(THREAD_STACK)
                .spawn(move || accept_loop(&listener, target, &shared))
                .map_err(io_err("starting the proxy's accept thread"))?
        };
        Ok(Self {
            addr,
            target,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `nats://127.0.0.1:<port>`, for a NATS client that should go through the proxy.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Partitions: closes every open connection in both directions, and from now on closes
    /// new connections as soon as they are accepted. When it returns, no byte passes any more.
    pub fn cut(&self) {
        let mut state = self.shared.state();
        state.cut = true;
        state.cuts += 1;
        for (_, (client, upstream)) in state.open.drain() {
            // Errors mean the socket is already closed, which is what we want.
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
        drop(state);
        self.shared.thawed.notify_all();
    }

    /// Lets new connections pass again.
    pub fn heal(&self) {
        self.shared.state().cut = false;
    }

    /// Holds back every byte from now on, keeping the connections open (see the type's docs).
    pub fn freeze(&self) {
        self.shared.state().frozen = true;
    }

    /// Delivers what was held and forwards again.
    pub fn thaw(&self) {
        self.shared.state().frozen = false;
        self.shared.thawed.notify_all();
    }

    /// Whether the proxy is frozen.
    pub fn is_frozen(&self) -> bool {
        self.shared.state().frozen
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.state().cut
    }

    /// Connections being forwarded now.
    pub fn open_connections(&self) -> usize {
        self.shared.state().open.len()
    }

    /// Connections forwarded since the start (open or closed since).
    pub fn forwarded_connections(&self) -> u64 {
        self.shared.state().forwarded
    }

    /// Connections closed on arrival because the proxy was cut, or because the target could
    /// not be reached.
    pub fn dropped_connections(&self) -> u64 {
        self.shared.state().dropped
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            // The loop checks `stop` every ACCEPT_POLL; it never panics, and if it did there
            // is nothing left to clean up.
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let cuts = {
                    let mut state = shared.state();
                    if state.cut {
                        state.dropped += 1;
                        None
                    } else {
                        Some(state.cuts)
                    }
                };
                match cuts {
                    // Dropping the stream closes it.
                    None => drop(client),
                    Some(cuts) => {
                        let shared_conn = Arc::clone(shared);
                        let spawned = std::thread::Builder::new()
                            .name("proxy-conn".into())
                            .stack_size(THREAD_STACK)
                            .spawn(move || forward(client, target, cuts, &shared_conn));
                        if spawned.is_err() {
                            // Out of threads: the connection was moved into the failed
                            // closure and is closed with it.
                            shared.state().dropped += 1;
                        }
                    }
                }
            }
            // WouldBlock: nothing to accept. Other errors (too many open files, a connection
            // reset before it was accepted) are transient for a proxy: wait and go on.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Connects to the target and copies bytes both ways until either side closes or the proxy
/// is cut.
fn forward(client: TcpStream, target: SocketAddr, cuts_at_accept: u64, shared: &Arc<Shared>) {
    // On some systems an accepted socket inherits the listener's non-blocking mode.
    if client.set_nonblocking(false).is_err() {
        shared.state().dropped += 1;
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        shared.state().dropped += 1;
        return;
    };
    // Small protocol messages (PING/PONG, acks) should not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (|| {
        Ok::<_, std::io::Error>((
            client.try_clone()?,
            upstream.try_clone()?,
            client.try_clone()?,
            upstream.try_clone()?,
        ))
    })();
    let Ok((client_for_cut, upstream_for_cut, client_write, upstream_read)) = clones else {
        shared.state().dropped += 1;
        return;
    };
    let id = {
        let mut state = shared.state();
        if state.cut || state.cuts != cuts_at_accept || shared.stop.load(Ordering::SeqCst) {
            // Cut while we were connecting: this connection existed at the cut.
            state.dropped += 1;
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.forwarded += 1;
        state.open.insert(id, (client_for_cut, upstream_for_cut));
        id
    };
    let back = {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("proxy-back".into())
            .stack_size(THREAD_STACK)
            .spawn(move || pump(upstream_read, client_write, cuts_at_accept, &shared))
    };
    match back {
        Ok(back) => {
            pump(client, upstream, cuts_at_accept, shared);
            let _ = back.join();
        }
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
    shared.state().open.remove(&id);
}

/// Copies `from` to `to` until either fails or ends, then shuts both down, which ends the
/// copy in the other direction too. Holds what it read while the proxy is frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, cuts: u64, shared: &Shared) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !shared.wait_thawed(cuts) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::sync::mpsc;
    use std::time::Instant;

    const PROMPTLY: Duration = Duration::from_secs(5);

    /// An echo server on a free port; sends on the channel each time a connection ends.
    fn echo_server() -> (u16, mpsc::Receiver<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ended_tx, ended) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let ended_tx = ended_tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = ended_tx.send(());
                });
            }
        });
        (port, ended)
    }

    fn connect(proxy: &TcpProxy) -> TcpStream {
        let conn = TcpStream::connect(proxy.addr()).unwrap();
        conn.set_read_timeout(Some(PROMPTLY)).unwrap();
        conn
    }

    fn echo(conn: &mut TcpStream, text: &[u8]) {
        conn.write_all(text).unwrap();
        let mut buf = vec![0u8; text.len()];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(buf, text);
    }

    /// The connection was closed by the other end (end of file or reset), not left hanging
    /// until the read timeout.
    fn assert_closed(conn: &mut TcpStream) {
        let started = Instant::now();
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes through a cut proxy"),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "the connection stayed open for {:?}",
                started.elapsed()
            ),
        }
    }

    #[test]
    fn forwards_both_ways() {
        let (port, _) = echo_server();
        let proxy = TcpProxy::start(port).unwrap();
        assert_eq!(proxy.target().port(), port);
        assert_ne!(proxy.port(), port);
        assert_eq!(
            proxy.nats_url(),
            format!("nats://127.0.0.1:{}", proxy.port())
        );
        let mut conn = connect(&proxy);
        echo(&mut conn, b"hello");
        let big = vec![7u8; 200_000];
        echo(&mut conn, &big);
        assert_eq!(proxy.open_connections(), 1);
        assert_eq!(proxy.forwarded_connections(), 1);
    }

    #[test]
    fn cut_closes_both_sides_and_drops_new_connections_until_healed() {
        let (port, ended) = echo_server();
        let proxy = TcpProxy::start(port).unwrap();
        let mut conn = connect(&proxy);
        echo(&mut conn, b"before");

        proxy.cut();
        assert!(proxy.is_cut());
        assert_eq!(proxy.open_connections(), 0);
        // The client reads end-of-file, and the server's side of the connection ends too.
        assert_closed(&mut conn);
        ended
            .recv_timeout(PROMPTLY)
            .expect("the target saw its side closed");

        // A new connection is accepted and closed at once, and never reaches the target.
        let mut late = connect(&proxy);
        let _ = late.write_all(b"during");
        assert_closed(&mut late);
        assert!(proxy.dropped_connections() >= 1);
        assert_eq!(proxy.forwarded_connections(), 1);

        proxy.heal();
        assert!(!proxy.is_cut());
        let mut again = connect(&proxy);
        echo(&mut again, b"after");
        assert_eq!(proxy.forwarded_connections(), 2);
    }

    #[test]
    fn freeze_holds_bytes_on_open_connections_until_thawed_or_cut() {
        let (port, _) = echo_server();
        let proxy = TcpProxy::start(port).unwrap();
        let mut conn = connect(&proxy);
        echo(&mut conn, b"before");

        proxy.freeze();
        assert!(proxy.is_frozen());
        conn.write_all(b"held").unwrap();
        // Nothing comes back while frozen, and the connection stays open.
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 4];
        let err = conn.read(&mut buf).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err:?}"
        );
        assert_eq!(proxy.open_connections(), 1);

        // Thawing delivers what was held.
        proxy.thaw();
        conn.set_read_timeout(Some(PROMPTLY)).unwrap();
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"held");

        // A cut while frozen closes the connection.
        proxy.freeze();
        conn.write_all(b"lost").unwrap();
        proxy.cut();
        assert_closed(&mut conn);
        proxy.heal();
        proxy.thaw();
        let mut again = connect(&proxy);
        echo(&mut again, b"after");
    }

    #[test]
    fn a_target_that_is_not_listening_closes_the_connection() {
        // A port that was free a moment ago and that nothing listens on now.
        let port = crate::server::free_port().unwrap();
        let proxy = TcpProxy::start(port).unwrap();
        let mut conn = connect(&proxy);
        assert_closed(&mut conn);
        let deadline = Instant::now() + PROMPTLY;
        while proxy.dropped_connections() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(proxy.dropped_connections(), 1);
    }

    #[test]
    fn drop_closes_connections_and_the_port() {
        let (port, ended) = echo_server();
        let proxy = TcpProxy::start(port).unwrap();
        let addr = proxy.addr();
        let mut conn = connect(&proxy);
        echo(&mut conn, b"x");
        drop(proxy);
        assert_closed(&mut conn);
        ended
            .recv_timeout(PROMPTLY)
            .expect("the target saw its side closed");
        assert!(TcpStream::connect_timeout(&addr, PROMPTLY).is_err());
    }
}
