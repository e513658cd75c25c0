//! The demo's three nodes, in process or over NATS, behind one type so that the steps run the
//! same either way.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{
    CommandError, CommandMeta, PassivationPolicy, RetryPolicy, RuntimeConfig, SnapshotPolicy,
};
use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_cluster::{Actors, ClusterConfig, ClusterNode, LocalNetwork, ObserverConfig};
use aether_core::{Error, EventStore, SnapshotStore};
use aether_placement::ShardConfig;
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore, Notify};

use super::model::{transfer_decision, Bank, BankCommand, BankError, Counters, CountingStore};
use super::{DEMO_NAMESPACE, DEMO_STORE_NAMESPACE, NODES, SHARDS};
use crate::connect::{connect, AuthArgs};
use crate::error::{CliError, CliResult};
use crate::output::{spinner, Painter};

/// Three cluster nodes, in process (over a [`LocalNetwork`]) or over NATS: the same
/// [`ClusterNode`]s, the same protocol.
pub(super) struct DemoCluster {
    nodes: Vec<ClusterNode>,
    /// One store per node, for writers that bypass the actors.
    stores: Vec<Arc<dyn EventStore>>,
    /// Over NATS: the connection and name of the cluster whose bucket is removed at the end.
    bucket: Option<(async_nats::Client, String)>,
}

/// The bank on one node, over `store`.
fn actors(store: Arc<dyn SnapshotStore>) -> Actors {
    // No snapshots and no idle passivation: every rebuild in the demo replays events.
    let runtime = RuntimeConfig::default()
        .snapshot(SnapshotPolicy::never())
        .passivation(PassivationPolicy::never())
        .retry(RetryPolicy::default().max_retries(20));
    Actors::new(store).with_config(Bank, runtime)
}

impl DemoCluster {
    /// Three nodes in this process sharing `store`.
    pub(super) async fn in_process(
        store: Arc<CountingStore<Notify<InMemoryEventStore>>>,
    ) -> CliResult<Self> {
        let network = LocalNetwork::new();
        let mut nodes = Vec::new();
        for id in NODES {
            // Quicker failure detection than over a network: nothing here is slow.
            let config = cluster_config("demo", id)
                .heartbeat_interval(Duration::from_millis(50))
                .failure_timeout(Duration::from_millis(400));
            let store = Arc::clone(&store) as Arc<dyn SnapshotStore>;
            nodes.push(ClusterNode::start_local(&network, config, actors(store)).await?);
        }
        for node in &nodes {
            node.wait_for_members(&NODES, Duration::from_secs(20))
                .await?;
        }
        Ok(Self {
            stores: nodes
                .iter()
                .map(|_| Arc::clone(&store) as Arc<dyn EventStore>)
                .collect(),
            nodes,
            bucket: None,
        })
    }

    /// The live nodes.
    pub(super) fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.node_id().to_string()).collect()
    }

    /// The owner of `actor` under the current table.
    pub(super) fn owner_of(&self, actor: &str) -> Option<String> {
        self.nodes.first().and_then(|n| n.owner_of(actor))
    }

    /// Sends a command from one of the nodes: the cluster routes it to the owner.
    pub(super) async fn send(
        &self,
        actor: &str,
        command: BankCommand,
    ) -> std::result::Result<i64, CommandError<BankError>> {
        let via = (aether_placement::stable_hash64(actor.as_bytes())
            % self.nodes.len().max(1) as u64) as usize;
        match self.nodes.get(via) {
            Some(node) => node.send::<Bank>(actor, command).await,
            None => Err(Error::Closed("no node is running".into()).into()),
        }
    }

    /// Moves `amount` from one account to another in one transaction, decided and committed on
    /// one of the nodes (whichever owns the accounts); returns the source's balance after.
    pub(super) async fn transfer(
        &self,
        from: &str,
        to: &str,
        amount: i64,
    ) -> std::result::Result<i64, CommandError<BankError>> {
        let via = (aether_placement::stable_hash64(to.as_bytes()) % self.nodes.len().max(1) as u64)
            as usize;
        let Some(node) = self.nodes.get(via) else {
            return Err(Error::Closed("no node is running".into()).into());
        };
        node.transact::<Bank, _, _>(&[from, to], CommandMeta::new(), move |accounts| {
            transfer_decision(accounts, amount)
        })
        .await
    }

    /// The actors active on `node`.
    pub(super) fn active_on(&self, node: &str) -> Vec<String> {
        self.nodes
            .iter()
            .find(|n| n.node_id() == node)
            .and_then(|n| n.host::<Bank>())
            .map(|h| h.active_actors())
            .unwrap_or_default()
    }

    /// One store per live node.
    pub(super) fn stores(&self) -> Vec<Arc<dyn EventStore>> {
        self.stores.clone()
    }

    /// Kills `node` without a goodbye and returns once the survivors own all shards.
    pub(super) async fn kill(&mut self, node: &str) -> CliResult<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.node_id() == node)
            .ok_or_else(|| CliError::new(format!("no node {node}")))?;
        self.nodes.remove(i).kill().await;
        self.stores.remove(i);
        for survivor in &self.nodes {
            survivor
                .wait_for_assignment(Duration::from_secs(30), |a| {
                    a.is_complete() && !a.table.members.iter().any(|m| m == node)
                })
                .await?;
        }
        Ok(())
    }

    /// Stops what is left.
    pub(super) async fn shutdown(&mut self) {
        for node in self.nodes.drain(..) {
            if let Err(e) = node.shutdown().await {
                tracing::warn!(error = %e, "node shutdown");
            }
        }
        // The cluster's bucket was only for this run.
        if let Some((admin, cluster_name)) = self.bucket.take() {
            let js = async_nats::jetstream::new(admin);
            let bucket = ObserverConfig::default()
                .cluster_name(cluster_name)
                .bucket_name();
            if let Err(e) = js.delete_key_value(bucket).await {
                tracing::debug!(error = %e, "removing the demo cluster bucket");
            }
        }
    }
}

fn cluster_config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_millis(1500))
        .shards(ShardConfig::default().shard_count(SHARDS))
        .storage(aether_core::StorageKind::Memory)
}

pub(super) async fn start_over_nats(
    url: &str,
    auth: &AuthArgs,
    counters: &Arc<Counters>,
    cluster_name: &str,
    painter: Painter,
) -> CliResult<(DemoCluster, NatsEventBus)> {
    let admin = connect(url, auth).await?;
    let bus = NatsEventBus::new(admin.clone(), NatsBusConfig::default()).await?;
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    let wait = spinner("starting three cluster nodes");
    for id in NODES {
        let client = connect(url, auth).await?;
        let js_store = Notify::new(
            JetStreamEventStore::new(
                client.clone(),
                JetStreamConfig::default().namespace(DEMO_STORE_NAMESPACE),
            )
            .await?,
            Arc::new(bus.clone()),
            DEMO_NAMESPACE,
        );
        let store: Arc<dyn SnapshotStore> =
            Arc::new(CountingStore::new(js_store, Arc::clone(counters)));
        let node = ClusterNode::start(
            client,
            cluster_config(cluster_name, id),
            actors(Arc::clone(&store)),
        )
        .await?;
        nodes.push(node);
        stores.push(store as Arc<dyn EventStore>);
    }
    for node in &nodes {
        node.wait_for_members(&NODES, Duration::from_secs(20))
            .await?;
    }
    wait.finish_and_clear();
    let a = nodes[0].assignment();
    println!(
        "cluster {} formed: leader {}, assignment epoch {}, {} shards",
        painter.cyan(cluster_name),
        a.table.leader,
        a.epoch,
        a.table.shard_count
    );
    Ok((
        DemoCluster {
            nodes,
            stores,
            bucket: Some((admin, cluster_name.to_string())),
        },
        bus,
    ))
}
