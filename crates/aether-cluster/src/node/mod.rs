//! A cluster node: the public face, and the driver that runs the I/O-free core
//! ([`crate::core`]) over a [`Transport`] and routes messages to actors.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aether_core::{Error, Result, SnapshotStore};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::assignment::Assignment;
use crate::config::ClusterConfig;
use crate::core::{CoreSettings, NodeCore};
use crate::host::ActorHost;
use crate::routing::Leave;
use crate::transport::{LocalNetwork, MemberMessage, Transport};
use crate::vm::RuntimeModel;
use driver::{election_loop, heartbeat_loop, member_loop, request_loop, watch_loop};

/// A member of a cluster: hosts the actors of the shards it owns and routes messages for any
/// actor to its owner.
///
/// Start one per process (or several in one process) with [`ClusterNode::start`] over NATS,
/// or with [`ClusterNode::start_local`] over an in-process [`LocalNetwork`]. Its background
/// tasks send heartbeats, track the other members, take part in the leader election, follow
/// the assignment table and serve actor requests. [`shutdown`](Self::shutdown) leaves
/// cleanly; dropping the node (or [`kill`](Self::kill)) stops it like a crash: the others
/// notice after the failure timeout and move its shards.
///
/// See `docs/cluster.md` for the protocol.
pub struct ClusterNode<M: RuntimeModel> {
    inner: Arc<Inner<M>>,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

struct Inner<M: RuntimeModel> {
    node_id: String,
    config: ClusterConfig,
    transport: Arc<dyn Transport>,
    /// The one source of truth for membership, leadership and ownership.
    core: Mutex<NodeCore>,
    /// Bumped to the newest epoch whenever the core applies a table, for waiters.
    epoch_tx: watch::Sender<u64>,
    host: ActorHost<M>,
}

impl<M: RuntimeModel> fmt::Debug for ClusterNode<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.inner.core();
        f.debug_struct("ClusterNode")
            .field("node_id", &self.inner.node_id)
            .field("cluster", &self.inner.config.cluster_name)
            .field("epoch", &core.view().epoch)
            .field("term", &core.term())
            .finish_non_exhaustive()
    }
}

impl<M: RuntimeModel> ClusterNode<M> {
    /// Joins the cluster `config.cluster_name` over NATS, hosting `model` actors whose events
    /// live in `store` (which every node of the cluster must share: the JetStream store in
    /// production).
    ///
    /// `connection` is an [`aether_nats::Connection`] or a plain [`async_nats::Client`]. With a
    /// `Connection` (its monitor sees the server's permission reports), an operation the server
    /// refuses fails at once with [`Error::PermissionDenied`] naming the subject, where on a
    /// plain client it would wait for its timeout: a cluster whose user may not use its bucket
    /// or subjects fails to start with that error, and a `send` refused by the server returns
    /// it instead of retrying.
    ///
    /// Creates the cluster's key-value bucket if needed, loads the current assignment table,
    /// subscribes to its request subject and starts its background tasks; the first heartbeat
    /// goes out at once.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad settings; [`Error::PermissionDenied`] as above;
    /// [`Error::Unavailable`] if NATS or JetStream cannot be reached.
    #[cfg(feature = "nats")]
    pub async fn start(
        connection: impl Into<aether_nats::Connection>,
        config: ClusterConfig,
        model: M,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<Self> {
        config.validate()?;
        let connection = connection.into();
        let transport = crate::transport::nats::NatsTransport::open(&connection, &config).await?;
        Self::start_on(Arc::new(transport), config, model, store).await
    }

    /// Joins the cluster of the nodes on `network`, in this process, without a server: the
    /// embedded mode. Everything else is as with [`start`](Self::start).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name.
    pub async fn start_local(
        network: &LocalNetwork,
        config: ClusterConfig,
        model: M,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<Self> {
        Self::start_on(Arc::new(network.clone()), config, model, store).await
    }

    async fn start_on(
        transport: Arc<dyn Transport>,
        config: ClusterConfig,
        model: M,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<Self> {
        config.validate()?;
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("node-{}", &id[..12])
        });
        let span = tracing::info_span!("node", id = %node_id, cluster = %config.cluster_name);
        let core = NodeCore::new(CoreSettings {
            node_id: node_id.clone(),
            incarnation: uuid::Uuid::new_v4().to_string(),
            failure_timeout: config.failure_timeout,
            shard_count: config.shards.shard_count,
            replication_factor: config.shards.replication_factor,
        });
        let inner = Arc::new(Inner {
            node_id,
            host: ActorHost::new(model, store, config.actors.clone()),
            config,
            transport,
            core: Mutex::new(core),
            epoch_tx: watch::channel(0).0,
        });

        // Fence: serve an actor only while the newest table we know gives us its shard.
        let weak = Arc::downgrade(&inner);
        inner.host.set_fence(Arc::new(move |actor_id: &str| {
            weak.upgrade()
                .is_some_and(|i| i.view().serves(&i.node_id, actor_id))
        }));

        let (revision, table) = inner.transport.read_table().await?;
        let actions = inner.core().start(revision, table, Instant::now());
        inner.carry_out(actions).await;

        // Listen before anyone can learn about us (our first heartbeat).
        let requests = inner.transport.serve(&inner.node_id).await?;
        let members = inner.transport.members().await?;
        inner.transport.settle().await?;

        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let i = &inner;
        tasks.spawn(heartbeat_loop(Arc::clone(i), cancel.clone()).instrument(span.clone()));
        tasks.spawn(member_loop(Arc::clone(i), members, cancel.clone()).instrument(span.clone()));
        tasks.spawn(election_loop(Arc::clone(i), cancel.clone()).instrument(span.clone()));
        tasks.spawn(watch_loop(Arc::clone(i), cancel.clone()).instrument(span.clone()));
        tasks.spawn(request_loop(Arc::clone(i), requests, cancel.clone()).instrument(span.clone()));
        span.in_scope(|| tracing::info!("node started"));
        Ok(Self {
            inner,
            cancel,
            tasks: Mutex::new(tasks),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.inner.config.cluster_name
    }

    /// Whether this node currently holds the leader lease.
    pub fn is_leader(&self) -> bool {
        self.inner.core().term().is_some()
    }

    /// The leader as this node last saw it.
    pub fn leader(&self) -> Option<String> {
        self.inner.core().leader()
    }

    /// The live members in this node's view (itself included), sorted.
    pub fn members(&self) -> Vec<String> {
        self.inner.core().alive()
    }

    /// The newest assignment table this node knows, with its epoch.
    pub fn assignment(&self) -> Arc<Assignment> {
        self.inner.view()
    }

    /// The shard of `actor_id`.
    pub fn shard_of(&self, actor_id: &str) -> u32 {
        self.inner.view().shard_of(actor_id)
    }

    /// The node that serves `actor_id` under the newest table this node knows.
    pub fn owner_of(&self, actor_id: &str) -> Option<String> {
        self.inner.view().owner_of(actor_id).map(str::to_string)
    }

    /// The local actor runtime.
    pub fn host(&self) -> &ActorHost<M> {
        &self.inner.host
    }

    /// Sends `message` to `actor_id` wherever it lives and returns its reply.
    ///
    /// Routes by the newest assignment table this node knows: handled here when this node owns
    /// the actor's shard, else sent to the owner (a NATS request on [`start`](Self::start)).
    /// While the owner is unknown, unreachable (no responders, or no answer within
    /// [`ClusterConfig::request_timeout`], as when it died during a failover) or says it is
    /// not the owner any more, `send` waits for the assignment table to change (at most a
    /// short backoff), refreshes it and routes again, to whichever node owns the actor then,
    /// until [`ClusterConfig::send_timeout`] runs out.
    ///
    /// Every attempt carries the same message id, and the owner records it in the metadata of
    /// the events the message causes ([`aether_core::METADATA_MESSAGE_ID`]). A retry of a
    /// message whose request timed out after it was applied (the reply was lost, or the owner
    /// died right after saving) is therefore not applied again, on the old owner or on the new
    /// one: it is answered from the actor's current state (see
    /// [`ActorHost::dispatch_with_id`]). What a retry can still do twice is
    /// handle a message that caused no events (harmless: it changed nothing).
    ///
    /// # Errors
    /// - the actor's rejection ([`Error::InvalidInput`]) or a store error, from the owner;
    /// - [`Error::Unavailable`] when no owner answered within the send timeout. The message
    ///   may or may not have been applied then; sending it again through `send` is a new
    ///   message with a new id.
    pub async fn send(&self, actor_id: &str, message: M::Message) -> Result<M::Reply> {
        self.inner.send(actor_id, message).await
    }

    /// Waits until the assignment table satisfies `pred`, up to `timeout`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] on timeout.
    pub async fn wait_for_assignment(
        &self,
        timeout: Duration,
        pred: impl Fn(&Assignment) -> bool,
    ) -> Result<Arc<Assignment>> {
        let mut rx = self.inner.epoch_tx.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.inner.view();
            if pred(&view) {
                return Ok(view);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(Error::unavailable(
                        format!("waiting for the assignment on node {}", self.inner.node_id),
                        format!(
                            "condition not met within {timeout:?} (epoch {}, members {:?})",
                            view.epoch, view.table.members
                        ),
                    ))
                }
            }
        }
    }

    /// Waits until the table assigns every shard over exactly `members`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] on timeout.
    pub async fn wait_for_members(
        &self,
        members: &[&str],
        timeout: Duration,
    ) -> Result<Arc<Assignment>> {
        let mut want: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        want.sort();
        self.wait_for_assignment(timeout, |a| a.is_complete() && a.table.members == want)
            .await
    }

    /// Leaves the cluster cleanly: stops the loops (releasing the leader lease if held),
    /// tells the others, and passivates the local actors.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the leave notice could not be sent (the others then detect
    /// the departure after the failure timeout).
    pub async fn shutdown(self) -> Result<()> {
        self.cancel.cancel();
        let mut tasks = std::mem::take(&mut *self.lock_tasks());
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
        }
        let leave = {
            let core = self.inner.core();
            Leave {
                node_id: core.node_id().to_string(),
                incarnation: core.incarnation().to_string(),
            }
        };
        let result = async {
            self.inner
                .transport
                .publish(MemberMessage::Leave(leave))
                .await?;
            self.inner.transport.settle().await
        }
        .await;
        self.inner.host.passivate_all();
        tracing::info!(node = %self.inner.node_id, "node left the cluster");
        result
    }

    /// Stops the node abruptly, as a crashed process would: no leave notice, the lease is not
    /// released, actors are not passivated, and it stops listening (as the server would notice
    /// when a dead process's connection closes). The others detect the failure after the
    /// failure timeout and move its shards.
    ///
    /// Dropping the node without [`shutdown`](Self::shutdown) also stops its loops without a
    /// leave notice, but a request already on its way may then go unanswered until it times
    /// out.
    pub async fn kill(self) {
        let mut tasks = std::mem::take(&mut *self.lock_tasks());
        tasks.abort_all();
        // Cancelled: the subscriptions the tasks held are dropped once this returns.
        while tasks.join_next().await.is_some() {}
        // Make sure the server has processed the unsubscriptions.
        let _ = self.inner.transport.settle().await;
        tracing::info!(node = %self.inner.node_id, "node killed");
    }

    fn lock_tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<M: RuntimeModel> Drop for ClusterNode<M> {
    fn drop(&mut self) {
        self.lock_tasks().abort_all();
    }
}

impl<M: RuntimeModel> Inner<M> {
    fn core(&self) -> MutexGuard<'_, NodeCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> Arc<Assignment> {
        self.core().view()
    }
}

mod driver;
mod route;
#[cfg(test)]
mod tests;
