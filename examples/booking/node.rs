//! One node of the booking service on NATS: a cluster node hosting shows, customers and
//! orders over the JetStream store, with its reactor (timers and effects) and the orders'
//! process router. The `booking-node` program runs one; `tests/orders.rs` runs several and
//! kills one with SIGKILL.

use std::sync::Arc;
use std::time::Duration;

use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{Result, StorageKind};
use aether_projection::{NatsProjectionStore, WorkerConfig, DEFAULT_PROJECTION_BUCKET};
use aether_reactions::{ProcessRouter, Reactor, ReactorConfig, Targets, TimersConfig};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::order::Order;
use super::{Customer, Show};

/// Timings of a node: the defaults suit a test (a dead node is noticed within seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimings {
    /// How often the node sends its heartbeat.
    pub heartbeat: Duration,
    /// How long before a silent node is taken for dead and its shards move.
    pub failure_timeout: Duration,
    /// How long before a dead node's reactor partitions are taken over.
    pub lease_timeout: Duration,
    /// How long before a fired timer a dead node was delivering goes to another.
    pub ack_wait: Duration,
}

impl Default for NodeTimings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            failure_timeout: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(2),
            ack_wait: Duration::from_secs(3),
        }
    }
}

/// A running booking node.
pub struct BookingNode {
    /// The cluster node: send commands through it.
    pub node: Arc<ClusterNode>,
    /// The event store, for reading histories.
    pub store: Arc<JetStreamEventStore>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for BookingNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookingNode")
            .field("node", &self.node.node_id())
            .finish_non_exhaustive()
    }
}

impl BookingNode {
    /// Starts node `node_id` of the booking service in `namespace` (the store's namespace and
    /// the cluster's name) on `client`.
    ///
    /// # Errors
    /// The store's, the cluster's or the reactor's failure to start.
    pub async fn start(
        client: async_nats::Client,
        namespace: &str,
        node_id: &str,
        timings: NodeTimings,
    ) -> Result<Self> {
        let store = Arc::new(
            JetStreamEventStore::new(
                client.clone(),
                JetStreamConfig::default().namespace(namespace),
            )
            .await?,
        );
        let actors = Actors::new(store.clone())
            .with(Show)
            .with(Customer)
            .with(Order);
        let config = ClusterConfig::default()
            .cluster_name(namespace)
            .node_id(node_id)
            .heartbeat_interval(timings.heartbeat)
            .failure_timeout(timings.failure_timeout)
            .storage(StorageKind::File);
        let node = Arc::new(ClusterNode::start(client.clone(), config, actors).await?);
        let checkpoints = Arc::new(
            NatsProjectionStore::open(client.clone(), DEFAULT_PROJECTION_BUCKET, StorageKind::File)
                .await?,
        );
        let js = async_nats::jetstream::new(client);
        let targets = Targets::new()
            .cluster::<Show>(node.clone())
            .cluster::<Customer>(node.clone())
            .cluster::<Order>(node.clone());
        let timers = TimersConfig {
            ack_wait: timings.ack_wait,
            ..TimersConfig::default()
        };
        let reactor = Arc::new(
            Reactor::new(targets.clone())
                .with_timers_on(js.clone(), timers)
                .await?
                .with_publisher(js),
        );
        reactor.attach();
        let mut config = ReactorConfig::new(node_id);
        config.worker_config = WorkerConfig {
            partitions: 8,
            heartbeat: timings.heartbeat,
            lease_timeout: timings.lease_timeout,
        };
        let router = Arc::new(ProcessRouter::<Order>::new(&targets)?);
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(reactor.run(
                store.clone(),
                checkpoints.clone(),
                config.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(router.run(store.clone(), checkpoints, config, shutdown.clone())),
        ];
        Ok(Self {
            node,
            store,
            shutdown,
            tasks,
        })
    }

    /// Stops the reactor and the router, then leaves the cluster.
    ///
    /// # Errors
    /// The cluster's failure to leave cleanly.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.shutdown().await,
            Err(_) => Ok(()),
        }
    }
}
