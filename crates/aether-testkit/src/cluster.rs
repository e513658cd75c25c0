//! A JetStream cluster of several `nats-server` processes routed together on loopback, and
//! the partitionable variant whose every connection goes through a [`TcpProxy`].

use std::time::{Duration, Instant};

use crate::proxy::TcpProxy;
use crate::server::{free_port, ClusterSettings, NatsServer, NatsServerBuilder};
use crate::{Result, TestkitError};

const META_LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`NatsCluster::wait_for_route_peers`] waits. Routes come back about a second after
/// a heal; the rest is room for a loaded machine.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(30);
/// An address where nothing listens, told to other servers as every server's cluster address
/// in a partitionable cluster (see [`NatsCluster::start_partitionable`]). Not 127.0.0.1: the
/// testkit's servers and proxies listen on 127.0.0.1 only, so no port on this address can be
/// one of theirs.
const UNREACHABLE_HOST: &str = "127.0.0.254";

/// Several JetStream servers forming one cluster on 127.0.0.1, each with its own ports and
/// store directory. Every server can be killed, restarted, paused and resumed on its own.
///
/// A cluster started with [`start_partitionable`](Self::start_partitionable) can also be
/// partitioned: [`isolate`](Self::isolate), [`split`](Self::split), [`heal`](Self::heal), and
/// clients cut off from one server with [`cut_client`](Self::cut_client).
#[derive(Debug)]
pub struct NatsCluster {
    // Declared first so that it is dropped first: servers are killed before their proxies go.
    servers: Vec<NatsServer>,
    proxies: Option<Proxies>,
}

/// The proxies of a partitionable cluster.
#[derive(Debug)]
struct Proxies {
    /// `routes[i][j]`: server `i` dials server `j`'s cluster port through it (`None` on the
    /// diagonal).
    routes: Vec<Vec<Option<TcpProxy>>>,
    /// `clients[i]`: forwards to server `i`'s client port.
    clients: Vec<TcpProxy>,
}

impl NatsCluster {
    /// Starts `size` servers with routes to each other and waits until the cluster has elected
    /// a JetStream meta leader.
    ///
    /// # Errors
    /// As [`NatsServer::start`], or [`TestkitError::NotReady`] if no meta leader appears.
    pub fn start(size: usize) -> Result<Self> {
        Self::start_with(size, NatsServer::builder().sync_always(true))
    }

    /// Like [`start`](Self::start), with options applied to every server.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(size: usize, options: NatsServerBuilder) -> Result<Self> {
        let size = size.max(1);
        let name = format!("aether-test-{}", free_port()?);
        let cluster_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let client_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let mut servers = Vec::with_capacity(size);
        for i in 0..size {
            let mut b = options.clone();
            b.cluster = Some(ClusterSettings {
                name: name.clone(),
                server_name: format!("n{i}"),
                port: cluster_ports[i],
                routes: cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect(),
                client_port: client_ports[i],
                advertise: None,
                no_advertise: false,
            });
            servers.push(b.start()?);
        }
        let cluster = Self {
            servers,
            proxies: None,
        };
        cluster.wait_for_meta_leader()?;
        Ok(cluster)
    }

    /// Starts `size` servers whose every route goes through a [`TcpProxy`] the test controls,
    /// with `options` applied to every server, and waits for a JetStream meta leader.
    ///
    /// Server `i` dials server `j` through its own proxy `P(i, j)` ([`route_proxy`]), one per
    /// ordered pair; [`isolate`], [`split`] and [`heal`] cut and heal them. Each server also
    /// has a client proxy ([`client_proxy`], [`client_url`]) for clients that should be
    /// partitionable too; [`url`](NatsServer::url) and [`urls`](Self::urls) still reach the
    /// servers directly. Monitoring is on, so [`route_peers`](Self::route_peers) can read who
    /// is routed to whom.
    ///
    /// **No route around the proxies.** Servers gossip: when one learns of a new route it tells
    /// its other routes the newcomer's cluster address, and a server that has no route to the
    /// newcomer and does not recognise the address among its configured routes dials it
    /// directly (an "implicit route"). A server on both sides of a partial partition would
    /// then heal it behind the test's back. So every server advertises a cluster address on
    /// which nothing listens (`cluster { advertise: "127.0.0.254:<port>" }`): a gossiped
    /// address leads nowhere, an implicit dial is refused and, being implicit, not retried,
    /// and routes exist only where the configured routes, the proxies, lead. Servers also stop
    /// telling clients each other's direct client URLs (`no_advertise: true`), so a client
    /// given proxied URLs keeps using them when it reconnects.
    ///
    /// [`route_proxy`]: Self::route_proxy
    /// [`isolate`]: Self::isolate
    /// [`split`]: Self::split
    /// [`heal`]: Self::heal
    /// [`client_proxy`]: Self::client_proxy
    /// [`client_url`]: Self::client_url
    ///
    /// # Errors
    /// As [`start`](Self::start); [`TestkitError::Io`] if a proxy cannot be started.
    pub fn start_partitionable(size: usize, options: NatsServerBuilder) -> Result<Self> {
        let size = size.max(1);
        let name = format!("aether-test-{}", free_port()?);
        let cluster_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let client_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        // Taken from the testkit's port pool so that no other server of this process is given
        // it; nothing ever listens on it.
        let unreachable_ports = (0..size).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let routes = (0..size)
            .map(|i| {
                (0..size)
                    .map(|j| {
                        (i != j)
                            .then(|| TcpProxy::start(cluster_ports[j]))
                            .transpose()
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let clients = client_ports
            .iter()
            .map(|p| TcpProxy::start(*p))
            .collect::<Result<Vec<_>>>()?;
        let mut servers = Vec::with_capacity(size);
        for i in 0..size {
            let mut b = options.clone().monitoring(true);
            b.cluster = Some(ClusterSettings {
                name: name.clone(),
                server_name: format!("n{i}"),
                port: cluster_ports[i],
                routes: routes[i].iter().flatten().map(TcpProxy::port).collect(),
                client_port: client_ports[i],
                advertise: Some(format!("{UNREACHABLE_HOST}:{}", unreachable_ports[i])),
                no_advertise: true,
            });
            servers.push(b.start()?);
        }
        let cluster = Self {
            servers,
            proxies: Some(Proxies { routes, clients }),
        };
        cluster.wait_for_meta_leader()?;
        Ok(cluster)
    }

    /// Client URLs of every server, comma-separated, for a client that should fail over.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URLs of every server.
    pub fn url_list(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cluster has no servers (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Server `i`, to kill, restart, pause or resume it.
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn server(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// Every server, to read their URLs, logs or monitoring endpoints.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// The server named `name` (`n0`, `n1`, ...), as stream leaders are reported.
    pub fn server_by_name(&mut self, name: &str) -> Option<&mut NatsServer> {
        let idx: usize = name.strip_prefix('n')?.parse().ok()?;
        self.servers.get_mut(idx)
    }

    /// Whether the cluster was started with [`start_partitionable`](Self::start_partitionable).
    pub fn is_partitionable(&self) -> bool {
        self.proxies.is_some()
    }

    fn proxies(&self) -> &Proxies {
        match &self.proxies {
            Some(p) => p,
            None => panic!("the cluster was not started with NatsCluster::start_partitionable"),
        }
    }

    /// The proxy through which server `from` dials server `to`'s cluster port.
    ///
    /// A route is one TCP connection used both ways, dialed by either end, so cutting only
    /// `P(from, to)` leaves a route that `to` dialed through `P(to, from)` working. To separate
    /// two servers cut both directions, as [`isolate`](Self::isolate) and
    /// [`split`](Self::split) do.
    ///
    /// # Panics
    /// If the cluster is not partitionable, an index is out of range, or `from == to` (bugs in
    /// the test).
    pub fn route_proxy(&self, from: usize, to: usize) -> &TcpProxy {
        match self.proxies().routes[from][to].as_ref() {
            Some(p) => p,
            None => panic!("no route proxy from server {from} to itself"),
        }
    }

    /// The proxy in front of server `i`'s client port.
    ///
    /// # Panics
    /// If the cluster is not partitionable or `i` is out of range (bugs in the test).
    pub fn client_proxy(&self, i: usize) -> &TcpProxy {
        &self.proxies().clients[i]
    }

    /// The client URL of server `i` through its client proxy, for a client that
    /// [`cut_client`](Self::cut_client) should cut off.
    ///
    /// # Panics
    /// As [`client_proxy`](Self::client_proxy).
    pub fn client_url(&self, i: usize) -> String {
        self.client_proxy(i).nats_url()
    }

    /// The client URLs of every server through their client proxies.
    ///
    /// # Panics
    /// If the cluster is not partitionable.
    pub fn client_url_list(&self) -> Vec<String> {
        self.proxies()
            .clients
            .iter()
            .map(TcpProxy::nats_url)
            .collect()
    }

    /// Cuts server `i` off from every other server: cuts every route proxy to or from it. Its
    /// routes close at once; clients connected to it (directly or through its client proxy)
    /// stay connected, to a server that is now alone.
    ///
    /// # Panics
    /// If the cluster is not partitionable or `i` is out of range.
    pub fn isolate(&self, i: usize) {
        assert!(
            i < self.len(),
            "no server {i} in a cluster of {}",
            self.len()
        );
        let others: Vec<usize> = (0..self.len()).filter(|j| *j != i).collect();
        self.split(&[i], &others);
    }

    /// Cuts every route between a server of `a` and a server of `b`, both ways. Servers in
    /// neither group keep their routes to both: `split(&[0], &[1])` in a cluster of three is
    /// a partial partition that server 2 bridges.
    ///
    /// # Panics
    /// If the cluster is not partitionable, an index is out of range, or a server is in both
    /// groups.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                assert!(x != y, "server {x} is on both sides of the split");
                self.route_proxy(x, y).cut();
                self.route_proxy(y, x).cut();
            }
        }
    }

    /// Lets every route and client proxy pass again. Servers re-establish their routes by
    /// themselves within a couple of seconds; [`wait_for_full_mesh`](Self::wait_for_full_mesh)
    /// waits for it.
    ///
    /// # Panics
    /// If the cluster is not partitionable.
    pub fn heal(&self) {
        let proxies = self.proxies();
        for p in proxies.routes.iter().flatten().flatten() {
            p.heal();
        }
        for p in &proxies.clients {
            p.heal();
        }
    }

    /// Cuts server `i`'s client proxy: clients that reach it through
    /// [`client_url`](Self::client_url) lose their connection and cannot reconnect through it.
    ///
    /// # Panics
    /// As [`client_proxy`](Self::client_proxy).
    pub fn cut_client(&self, i: usize) {
        self.client_proxy(i).cut();
    }

    /// Lets clients reach server `i` through its client proxy again.
    ///
    /// # Panics
    /// As [`client_proxy`](Self::client_proxy).
    pub fn heal_client(&self, i: usize) {
        self.client_proxy(i).heal();
    }

    /// The servers server `i` has a route to now, by index, sorted, as its `/routez`
    /// monitoring endpoint reports them. Needs monitoring (always on in a partitionable
    /// cluster, otherwise [`NatsServerBuilder::monitoring`]).
    ///
    /// Routes name their remote by server id, which changes at every start; ids are matched
    /// against the other servers' `/varz`. A server that does not answer (stopped, paused)
    /// cannot be matched and is left out.
    ///
    /// # Errors
    /// [`TestkitError::Monitoring`] or [`TestkitError::Io`] if server `i` does not answer.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn route_peers(&self, i: usize) -> Result<Vec<usize>> {
        let routez = self.servers[i].monitor("routez")?;
        let remote_ids: Vec<&str> = routez
            .get("routes")
            .and_then(|r| r.as_array())
            .map(|routes| {
                routes
                    .iter()
                    .filter_map(|r| r.get("remote_id").and_then(|id| id.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut peers = Vec::new();
        for (j, server) in self.servers.iter().enumerate() {
            if j == i {
                continue;
            }
            if let Ok(id) = server.server_id() {
                if remote_ids.contains(&id.as_str()) {
                    peers.push(j);
                }
            }
        }
        Ok(peers)
    }

    /// Waits until server `i` has routes to exactly the servers `expected` (in any order), as
    /// [`route_peers`](Self::route_peers) reports.
    ///
    /// # Errors
    /// [`TestkitError::NotReady`] after 30 s, with the last answer and the servers' logs.
    pub fn wait_for_route_peers(&self, i: usize, expected: &[usize]) -> Result<()> {
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        expected.dedup();
        let deadline = Instant::now() + ROUTES_TIMEOUT;
        loop {
            let last = self.route_peers(i);
            if matches!(&last, Ok(peers) if *peers == expected) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::NotReady {
                    reason: format!(
                        "server {i} has routes to {last:?} after {ROUTES_TIMEOUT:?}, \
                         expected {expected:?}"
                    ),
                    log: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every server has a route to every other one, after a
    /// [`heal`](Self::heal) for example.
    ///
    /// # Errors
    /// As [`wait_for_route_peers`](Self::wait_for_route_peers).
    pub fn wait_for_full_mesh(&self) -> Result<()> {
        for i in 0..self.len() {
            let others: Vec<usize> = (0..self.len()).filter(|j| *j != i).collect();
            self.wait_for_route_peers(i, &others)?;
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- n{i} ---\n{}", s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until some running server's log reports a JetStream meta leader.
    ///
    /// # Errors
    /// [`TestkitError::NotReady`] after 30 s.
    pub fn wait_for_meta_leader(&self) -> Result<()> {
        let deadline = Instant::now() + META_LEADER_TIMEOUT;
        loop {
            if self
                .servers
                .iter()
                .any(|s| s.log().contains("metadata leader"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::NotReady {
                    reason: "no JetStream meta leader was elected".into(),
                    log: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
