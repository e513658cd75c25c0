//! A JetStream cluster of several `nats-server` processes routed together on loopback.

use std::time::{Duration, Instant};

use crate::server::{free_port, ClusterSettings, NatsServer, NatsServerBuilder};
use crate::{Result, TestkitError};

const META_LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Several JetStream servers forming one cluster on 127.0.0.1, each with its own ports and
/// store directory. Every server can be killed, restarted, paused and resumed on its own.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
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
            });
            servers.push(b.start()?);
        }
        let cluster = Self { servers };
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

    /// The server named `name` (`n0`, `n1`, ...), as stream leaders are reported.
    pub fn server_by_name(&mut self, name: &str) -> Option<&mut NatsServer> {
        let idx: usize = name.strip_prefix('n')?.parse().ok()?;
        self.servers.get_mut(idx)
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
                    log: self
                        .servers
                        .iter()
                        .map(|s| s.log())
                        .collect::<Vec<_>>()
                        .join("\n---\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
