//! A cluster node: the public face, the driver (one loop that owns the I/O-free core,
//! [`crate::core`], and runs it over a [`Transport`]) and routing of messages to actors,
//! which reads the view the loop publishes.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aether_actor::{
    Actor, ActorClient, ActorHost, CommandError, CommandMeta, Decision, Envelope, Handled,
    HostStats,
};
use aether_core::{ActorKey, Error, Result};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actors::{Actors, Hosts};
use crate::assignment::Assignment;
use crate::config::ClusterConfig;
use crate::core::{CoreSettings, NodeCore};
use crate::routing::Leave;
use crate::transport::{LocalNetwork, MemberMessage, Transport};
use driver::{Driver, Request, REQUESTS_QUEUED};
use view::NodeView;

/// A member of a cluster: hosts the actors of the shards it owns (of every actor type it was
/// started with) and routes commands for any actor to its owner.
///
/// Start one per process (or several in one process) with [`ClusterNode::start`] over NATS,
/// or with [`ClusterNode::start_local`] over an in-process [`LocalNetwork`]. Its background
/// tasks send heartbeats, track the other members, take part in the leader election, follow
/// the assignment table and serve actor requests. [`shutdown`](Self::shutdown) leaves
/// cleanly; dropping the node (or [`kill`](Self::kill)) stops it like a crash: the others
/// notice after the failure timeout and move its shards.
///
/// See `docs/cluster.md` for the protocol.
pub struct ClusterNode {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

struct Inner {
    node_id: String,
    incarnation: String,
    config: ClusterConfig,
    transport: Arc<dyn Transport>,
    /// The core's view as its loop last published it: what routing, fencing and the
    /// accessors read, without waiting for the loop. Changes of the assignment wake
    /// receivers.
    view: watch::Receiver<NodeView>,
    /// Requests for the loop (which alone steps the core).
    to_loop: mpsc::Sender<Request>,
    hosts: Hosts,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.inner.view.borrow();
        f.debug_struct("ClusterNode")
            .field("node_id", &self.inner.node_id)
            .field("cluster", &self.inner.config.cluster_name)
            .field("epoch", &view.assignment.epoch)
            .field("term", &view.term)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Joins the cluster `config.cluster_name` over NATS, hosting `actors` (whose store every
    /// node of the cluster must share: the JetStream store in production). Every node of a
    /// cluster must host the same actor types: an actor's owner is picked by its shard alone.
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
    /// [`Error::InvalidInput`] for bad settings or actor types; [`Error::PermissionDenied`] as
    /// above; [`Error::Unavailable`] if NATS or JetStream cannot be reached.
    #[cfg(feature = "nats")]
    pub async fn start(
        connection: impl Into<aether_nats::Connection>,
        config: ClusterConfig,
        actors: Actors,
    ) -> Result<Self> {
        config.validate()?;
        let hosts = actors.into_hosts()?;
        let connection = connection.into();
        let transport = crate::transport::nats::NatsTransport::open(&connection, &config).await?;
        Self::start_on(Arc::new(transport), config, hosts).await
    }

    /// Joins the cluster of the nodes on `network`, in this process, without a server: the
    /// embedded mode. Everything else is as with [`start`](Self::start).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name or actor types.
    pub async fn start_local(
        network: &LocalNetwork,
        config: ClusterConfig,
        actors: Actors,
    ) -> Result<Self> {
        let hosts = actors.into_hosts()?;
        Self::start_on(Arc::new(network.clone()), config, hosts).await
    }

    async fn start_on(
        transport: Arc<dyn Transport>,
        config: ClusterConfig,
        hosts: Hosts,
    ) -> Result<Self> {
        config.validate()?;
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("node-{}", &id[..12])
        });
        let span = tracing::info_span!("node", id = %node_id, cluster = %config.cluster_name);
        let incarnation = uuid::Uuid::new_v4().to_string();
        let mut core = NodeCore::new(CoreSettings {
            node_id: node_id.clone(),
            incarnation: incarnation.clone(),
            failure_timeout: config.failure_timeout,
            heartbeat_interval: config.heartbeat_interval,
            shard_count: config.shards.shard_count,
            replication_factor: config.shards.replication_factor,
            admission: crate::membership::Admission::of(&config),
            wire_max: config.wire_max(),
        });
        let (revision, table) = transport.read_table().await?;
        let started = core.start(revision, table, Instant::now());
        let (view_tx, view) = watch::channel(Driver::view_of(&core));
        let (to_loop, requests) = mpsc::channel(REQUESTS_QUEUED);
        let inner = Arc::new(Inner {
            node_id,
            incarnation,
            hosts,
            config,
            transport,
            view,
            to_loop,
        });

        // Fence: serve an actor only while the newest table we know gives us its shard, and
        // while our own heartbeats still reach the others (see `NodeCore::serving_until`).
        for host in inner.hosts.all() {
            let weak = Arc::downgrade(&inner);
            host.set_fence(Arc::new(move |actor_id: &str| {
                weak.upgrade().is_some_and(|i| {
                    i.view
                        .borrow()
                        .may_serve(&i.node_id, actor_id, Instant::now())
                })
            }));
        }
        let driver = span.in_scope(|| Driver::new(Arc::clone(&inner), core, view_tx, started));

        // Listen before anyone can learn about us (our first heartbeat).
        let requests_in = inner.transport.serve(&inner.node_id).await?;
        let members = inner.transport.members().await?;
        inner.transport.settle().await?;

        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(
            driver
                .run(members, requests, cancel.clone())
                .instrument(span.clone()),
        );
        tasks.spawn(
            route::serve_loop(Arc::clone(&inner), requests_in, cancel.clone())
                .instrument(span.clone()),
        );
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
        self.inner.view.borrow().term.is_some()
    }

    /// The leader as this node last saw it.
    pub fn leader(&self) -> Option<String> {
        self.inner.view.borrow().leader.clone()
    }

    /// The live members in this node's view (itself included), sorted.
    pub fn members(&self) -> Vec<String> {
        self.inner.view.borrow().members.to_vec()
    }

    /// The newest assignment table this node knows, with its epoch.
    pub fn assignment(&self) -> Arc<Assignment> {
        self.inner.assignment()
    }

    /// The shard of `actor_id`.
    pub fn shard_of(&self, actor_id: &str) -> u32 {
        self.inner.assignment().shard_of(actor_id)
    }

    /// The node that serves `actor_id` under the newest table this node knows.
    pub fn owner_of(&self, actor_id: &str) -> Option<String> {
        self.inner
            .assignment()
            .owner_of(actor_id)
            .map(str::to_string)
    }

    /// The local runtime of actor type `A`, if this node hosts it.
    pub fn host<A: Actor>(&self) -> Option<&ActorHost<A>> {
        self.inner.hosts.typed::<A>()
    }

    /// The counters of every actor type this node hosts, by type.
    pub fn stats(&self) -> BTreeMap<&'static str, HostStats> {
        self.inner
            .hosts
            .all()
            .map(|h| (h.actor_type(), h.stats()))
            .collect()
    }

    /// Sends `command` to the actor `actor_id` of type `A` wherever it lives, and returns its
    /// reply; the same as [`send_envelope`](Self::send_envelope) with no metadata.
    ///
    /// # Errors
    /// As [`send_envelope`](Self::send_envelope).
    pub async fn send<A: Actor>(
        &self,
        actor_id: &str,
        command: A::Command,
    ) -> std::result::Result<A::Reply, CommandError<A::Error>> {
        self.inner
            .send::<A>(actor_id, Envelope::new(command))
            .await
            .and_then(reply_of::<A>)
    }

    /// Sends a command with its metadata to the actor `actor_id` of type `A` wherever it
    /// lives, and returns its reply.
    ///
    /// Routes by the newest assignment table this node knows: handled here when this node owns
    /// the actor's shard, else sent to the owner (a NATS request on [`start`](Self::start)).
    /// While the owner is unknown, unreachable (no responders, or no answer within
    /// [`ClusterConfig::request_timeout`], as when it died during a failover) or says it is
    /// not the owner any more, `send` waits for the assignment table to change (at most a
    /// short backoff), refreshes it and routes again, to whichever node owns the actor then,
    /// until [`ClusterConfig::send_timeout`] runs out.
    ///
    /// Every attempt carries the same command id (the envelope's, or a new one when it has
    /// none), and the owner records it on the events the command causes. A retry of a command
    /// whose request timed out after it was applied (the reply was lost, or the owner died
    /// right after saving) is therefore not applied again, on the old owner or on the new
    /// one: the old owner answers with the first reply, a new owner with the reply on the
    /// current state ([`dispatch`](Self::dispatch) tells the two apart). What a retry can
    /// still do twice is decide a command that caused no events (harmless: it changed
    /// nothing).
    ///
    /// The whole send, a write on this node included, ends within
    /// [`ClusterConfig::send_timeout`] (plus the scheduling delay of the caller's task).
    ///
    /// # Errors
    /// - [`CommandError::Rejected`]: the actor's typed rejection, from whichever node owns it;
    /// - [`CommandError::Conflict`], [`CommandError::Decode`]: from the owner;
    /// - [`CommandError::Infrastructure`] with [`Error::Unavailable`] when no owner answered
    ///   within the send timeout (the command may or may not have been applied: send it
    ///   again with the same command id to find out safely), [`Error::NotFound`] when this
    ///   node or the owner does not host `A`, or a store error from the owner.
    pub async fn send_envelope<A: Actor>(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> std::result::Result<A::Reply, CommandError<A::Error>> {
        self.inner
            .send::<A>(actor_id, envelope)
            .await
            .and_then(reply_of::<A>)
    }

    /// As [`send_envelope`](Self::send_envelope), but says how the reply came about:
    /// [`Handled::Reply`] when the command was decided now, or was a retry answered with its
    /// first reply; [`Handled::AlreadyApplied`] when its id had been applied by an activation
    /// that does not keep the first reply (before a failover, say), with the reply on the
    /// current state. Never [`Handled::NotOwner`]: the send follows the actor to its owner.
    ///
    /// # Errors
    /// As [`send_envelope`](Self::send_envelope).
    pub async fn dispatch<A: Actor>(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> std::result::Result<Handled<A::Reply>, CommandError<A::Error>> {
        self.inner.send::<A>(actor_id, envelope).await
    }

    /// Decides a change to several actors of type `A` at once and commits it atomically, on
    /// this node, wherever the actors are owned: see [`ActorHost::transact`]. The store checks
    /// every actor's version, so no owner's write can interleave; afterwards the owners are
    /// told to reload the actors (as [`refresh`](Self::refresh); best effort: an owner that
    /// misses it reloads at its next write, and until then its read-only commands answer from
    /// the state before). For actors of several types, see [`transaction`](Self::transaction).
    ///
    /// # Errors
    /// As [`ActorHost::transact`]; [`Error::NotFound`] when this node does not host `A`.
    pub async fn transact<A, R, F>(
        &self,
        actor_ids: &[&str],
        meta: CommandMeta,
        decide: F,
    ) -> std::result::Result<R, CommandError<A::Error>>
    where
        A: Actor,
        F: FnMut(&[A::State]) -> Decision<A, R> + Send,
        R: Send,
    {
        let Some(host) = self.inner.hosts.typed::<A>() else {
            return Err(Error::NotFound(format!(
                "node {} hosts no actor type {:?}",
                self.inner.node_id,
                A::TYPE
            ))
            .into());
        };
        let reply = host.transact(actor_ids, meta, decide).await?;
        // `transact` passivated this node's activations already.
        let keys: Vec<ActorKey<'_>> = actor_ids
            .iter()
            .map(|id| ActorKey::new(A::TYPE, id))
            .collect();
        if let Err(e) = self.inner.refresh_actors(&keys, false).await {
            tracing::warn!(error = %e, "owners not all told to reload after a transaction");
        }
        Ok(reply)
    }

    /// Retires the actor `actor_id` of type `A` for good, on this node, wherever it is owned:
    /// see [`ActorHost::retire`]. Its final event is appended with `meta`; then its owner is
    /// told to drop its activation (as after a transaction), so that from then on every
    /// command to it, through any node and after any failover, fails with
    /// [`CommandError::Retired`]: each owner loads the actor from the store, and loading stops
    /// at the final event. Returns the final event's version.
    ///
    /// # Errors
    /// As [`ActorHost::retire`]; [`Error::NotFound`] when this node does not host `A`.
    pub async fn retire<A: Actor>(
        &self,
        actor_id: &str,
        meta: CommandMeta,
    ) -> std::result::Result<u64, CommandError<A::Error>> {
        let Some(host) = self.inner.hosts.typed::<A>() else {
            return Err(Error::NotFound(format!(
                "node {} hosts no actor type {:?}",
                self.inner.node_id,
                A::TYPE
            ))
            .into());
        };
        let version = host.retire(actor_id, meta).await?;
        // Best effort: an owner that misses it refuses at its next write (a version conflict,
        // then a reload that stops at the final event); until then its read-only commands
        // answer from the state before.
        if let Err(e) = self
            .inner
            .refresh_actors(&[ActorKey::new(A::TYPE, actor_id)], false)
            .await
        {
            tracing::warn!(error = %e, "the owner was not told to reload after a retirement");
        }
        Ok(version)
    }

    /// A client for actors of type `A` through this node, for code written against
    /// [`ActorClient`] (which the embedded [`ActorHost`] implements too).
    pub fn client<A: Actor>(&self) -> ClusterClient<A> {
        ClusterClient {
            inner: Arc::clone(&self.inner),
            _actor: PhantomData,
        }
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
        let mut rx = self.inner.view.clone();
        let deadline = Instant::now() + timeout;
        loop {
            rx.mark_unchanged();
            let view = self.inner.assignment();
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
        let leave = Leave {
            node_id: self.inner.node_id.clone(),
            incarnation: self.inner.incarnation.clone(),
        };
        let result = async {
            self.inner
                .transport
                .publish(MemberMessage::Leave(leave))
                .await?;
            self.inner.transport.settle().await
        }
        .await;
        for host in self.inner.hosts.all() {
            host.passivate_where(&|_| true);
        }
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

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.lock_tasks().abort_all();
    }
}

impl Inner {
    /// The newest assignment table this node knows.
    fn assignment(&self) -> Arc<Assignment> {
        Arc::clone(&self.view.borrow().assignment)
    }

    /// Has the loop read the table and applied it if newer; returns once it has (or at once
    /// when the loop has stopped).
    async fn refresh_table(&self) {
        let (done, wait) = oneshot::channel();
        if self.to_loop.send(Request::RefreshTable(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Sends commands to actors of type `A` through a [`ClusterNode`]; see
/// [`ClusterNode::send_envelope`]. Cheap to clone.
pub struct ClusterClient<A> {
    inner: Arc<Inner>,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for ClusterClient<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _actor: PhantomData,
        }
    }
}

impl<A> fmt::Debug for ClusterClient<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterClient")
            .field("node_id", &self.inner.node_id)
            .field("actor", &std::any::type_name::<A>())
            .finish()
    }
}

#[async_trait]
impl<A: Actor> ActorClient<A> for ClusterClient<A> {
    async fn send_envelope(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> std::result::Result<A::Reply, CommandError<A::Error>> {
        self.inner
            .send::<A>(actor_id, envelope)
            .await
            .and_then(reply_of::<A>)
    }
}

/// The reply of a routed command; routing never ends in `NotOwner` (it follows the owner).
fn reply_of<A: Actor>(
    handled: Handled<A::Reply>,
) -> std::result::Result<A::Reply, CommandError<A::Error>> {
    handled
        .into_reply()
        .ok_or_else(|| Error::unavailable("sending a command", "no owner took the command").into())
}

mod driver;
mod refresh;
mod route;
#[cfg(test)]
mod tests;
mod transact;
mod view;

pub use transact::ClusterTransact;
