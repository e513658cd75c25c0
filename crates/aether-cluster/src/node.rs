//! A cluster node: membership, leadership, the assignment table, the local actors and routing,
//! tied together over NATS.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use aether_core::{Error, Result, ShardConfig, SnapshotStore};
use async_nats::client::RequestErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::{Client, Message, Request};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::assignment::{Assignment, AssignmentStore, AssignmentTable, CasOutcome, ASSIGNMENT_KEY};
use crate::config::ClusterConfig;
use crate::host::{ActorHost, Handled};
use crate::leader::LeaderElector;
use crate::membership::{Membership, MembershipChange};
use crate::registry::DistributedVMRegistry;
use crate::ring::ConsistentHashRing;
use crate::routing::{
    bucket_name, decode, encode, ActorRequest, ActorResponse, Heartbeat, Leave, RemoteError,
    Subjects,
};
use crate::shard::{rebalance, ShardManager};
use crate::vm::RuntimeModel;

/// A member of a cluster: hosts the actors of the shards it owns and routes messages for any
/// actor to its owner.
///
/// Start one per process (or several in one process, each on its own connection) with
/// [`ClusterNode::start`]. Its background tasks send heartbeats, track the other members,
/// take part in the leader election, follow the assignment table and serve actor requests.
/// [`shutdown`](Self::shutdown) leaves cleanly; dropping the node (or [`kill`](Self::kill))
/// stops it like a crash: the others notice after the failure timeout and move its shards.
///
/// See `docs/cluster.md` for the protocol.
pub struct ClusterNode<M: RuntimeModel> {
    inner: Arc<Inner<M>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner<M: RuntimeModel> {
    node_id: String,
    incarnation: String,
    config: ClusterConfig,
    shard_config: ShardConfig,
    subjects: Subjects,
    client: Client,
    assignments: AssignmentStore,
    membership: Mutex<Membership>,
    view: RwLock<Arc<Assignment>>,
    view_tx: watch::Sender<u64>,
    host: ActorHost<M>,
    registry: DistributedVMRegistry,
    shards: ShardManager,
    ring: ConsistentHashRing,
    leader_term: AtomicU64,
    leader: RwLock<Option<String>>,
}

impl<M: RuntimeModel> fmt::Debug for ClusterNode<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.inner.node_id)
            .field("cluster", &self.inner.config.cluster_name)
            .field("epoch", &self.inner.view().epoch)
            .field(
                "leader_term",
                &self.inner.leader_term.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<M: RuntimeModel> ClusterNode<M> {
    /// Joins the cluster `config.cluster_name` over `client`, hosting `model` actors whose
    /// events live in `store` (which every node of the cluster must share: the JetStream store
    /// in production).
    ///
    /// Creates the cluster's key-value bucket if needed, loads the current assignment table,
    /// subscribes to its request subject and starts its background tasks; the first heartbeat
    /// goes out at once.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name; [`Error::Unavailable`] if NATS or JetStream
    /// cannot be reached.
    pub async fn start(
        client: Client,
        config: ClusterConfig,
        model: M,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<Self> {
        config.validate()?;
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("node-{}", &id[..12])
        });
        let incarnation = uuid::Uuid::new_v4().to_string();
        let shard_config = ShardConfig {
            shard_count: config.shards.effective_shard_count(),
            replication_factor: config.shards.effective_replication_factor(),
        };
        let kv = open_bucket(&client, &config).await?;
        let assignments = AssignmentStore::new(kv.clone());
        let subjects = Subjects::new(&config.cluster_name);
        let failure_timeout = config.effective_failure_timeout();

        let host = ActorHost::new(model, store, config.actors.clone());
        let registry = DistributedVMRegistry::new(node_id.clone());
        registry.set_vm_provider(Arc::new(host.clone()));
        let ring = ConsistentHashRing::with_config(config.ring);
        ring.add_node(&node_id);
        let (view_tx, _) = watch::channel(0);

        let inner = Arc::new(Inner {
            node_id: node_id.clone(),
            incarnation: incarnation.clone(),
            subjects: subjects.clone(),
            shard_config,
            client: client.clone(),
            assignments,
            membership: Mutex::new(Membership::new(node_id.clone(), failure_timeout)),
            view: RwLock::new(Arc::new(Assignment::empty(
                shard_config.shard_count,
                shard_config.replication_factor,
            ))),
            view_tx,
            host,
            registry,
            shards: ShardManager::new(shard_config),
            ring,
            leader_term: AtomicU64::new(0),
            leader: RwLock::new(None),
            config,
        });

        // Fence: serve an actor only while the newest table we know gives us its shard.
        let weak = Arc::downgrade(&inner);
        inner.host.set_fence(Arc::new(move |actor_id: &str| {
            weak.upgrade()
                .is_some_and(|i| i.view().serves(&i.node_id, actor_id))
        }));

        // The registry forgets local actors when they passivate.
        let weak = Arc::downgrade(&inner);
        inner
            .host
            .set_passivation_hook(Arc::new(move |actor_id: &str| {
                if let Some(i) = weak.upgrade() {
                    i.registry.unregister_if_on(actor_id, &i.node_id);
                }
            }));

        inner.refresh_view().await?;
        {
            let view = inner.view();
            let now = Instant::now();
            inner
                .membership()
                .seed(view.table.members.iter().map(String::as_str), now);
            for m in &view.table.members {
                inner.ring.add_node(m);
            }
        }

        let requests = client
            .subscribe(subjects.node_requests(&node_id))
            .await
            .map_err(|e| Error::unavailable("subscribing to actor requests", e))?;
        let members = client
            .subscribe(subjects.members_all())
            .await
            .map_err(|e| Error::unavailable("subscribing to membership", e))?;
        // Make sure the server has our subscriptions before anyone can learn about us.
        client
            .flush()
            .await
            .map_err(|e| Error::unavailable("flushing subscriptions", e))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let elector = LeaderElector::new(kv, node_id.clone(), incarnation, failure_timeout);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(Arc::clone(&inner), shutdown_rx.clone())),
            tokio::spawn(membership_loop(
                Arc::clone(&inner),
                members,
                shutdown_rx.clone(),
            )),
            tokio::spawn(leader_loop(
                Arc::clone(&inner),
                elector,
                shutdown_rx.clone(),
            )),
            tokio::spawn(assignment_watch_loop(
                Arc::clone(&inner),
                shutdown_rx.clone(),
            )),
            tokio::spawn(request_loop(Arc::clone(&inner), requests, shutdown_rx)),
        ];
        tracing::info!(node = %node_id, cluster = %inner.config.cluster_name, "node started");
        Ok(Self {
            inner,
            shutdown,
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
        self.inner.leader_term.load(Ordering::Acquire) > 0
    }

    /// The leader as this node last saw it.
    pub fn leader(&self) -> Option<String> {
        self.inner
            .leader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The live members in this node's view (itself included), sorted.
    pub fn members(&self) -> Vec<String> {
        self.inner.membership().alive()
    }

    /// The newest assignment table this node knows, with its epoch.
    pub fn assignment(&self) -> Arc<Assignment> {
        self.inner.view()
    }

    /// The shard of `actor_id`.
    pub fn shard_of(&self, actor_id: &str) -> u32 {
        self.inner.shards.get_shard(actor_id)
    }

    /// The node that serves `actor_id` under the newest table this node knows.
    pub fn owner_of(&self, actor_id: &str) -> Option<String> {
        self.inner.view().owner_of(actor_id).map(str::to_string)
    }

    /// The local actor runtime.
    pub fn host(&self) -> &ActorHost<M> {
        &self.inner.host
    }

    /// Where actors are known to run.
    pub fn registry(&self) -> &DistributedVMRegistry {
        &self.inner.registry
    }

    /// The shard table as this node knows it.
    pub fn shard_manager(&self) -> &ShardManager {
        &self.inner.shards
    }

    /// A hash ring of the live members, for application-level placement of things that are
    /// not actors.
    pub fn ring(&self) -> &ConsistentHashRing {
        &self.inner.ring
    }

    /// Sends `message` to `actor_id` wherever it lives and returns its reply.
    ///
    /// Routes by the newest assignment table this node knows: handled here when this node owns
    /// the actor's shard, else sent to the owner over NATS request/reply. While the owner is
    /// unknown, unreachable (no responders, or no answer within
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
        let mut rx = self.inner.view_tx.subscribe();
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
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for mut t in tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        let leave = Leave {
            node_id: self.inner.node_id.clone(),
            incarnation: self.inner.incarnation.clone(),
        };
        let result = async {
            self.inner
                .client
                .publish(self.inner.subjects.leave(), Bytes::from(encode(&leave)?))
                .await
                .map_err(|e| Error::unavailable("publishing the leave notice", e))?;
            self.inner
                .client
                .flush()
                .await
                .map_err(|e| Error::unavailable("flushing the leave notice", e))
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
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled: the subscriptions the task held are dropped once this returns.
            let _ = t.await;
        }
        // Make sure the server has processed the unsubscriptions.
        let _ = self.inner.client.flush().await;
        tracing::info!(node = %self.inner.node_id, "node killed");
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<M: RuntimeModel> Drop for ClusterNode<M> {
    fn drop(&mut self) {
        for t in self.lock_tasks().drain(..) {
            t.abort();
        }
    }
}

pub(crate) async fn open_bucket(client: &Client, config: &ClusterConfig) -> Result<kv::Store> {
    use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};

    let js = async_nats::jetstream::new(client.clone());
    let bucket = bucket_name(&config.cluster_name);
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    // The stream a key-value bucket is made of, created directly: the client's own
    // `create_key_value` first reads account information in a form servers before 2.10 do not
    // send. One value per key is enough (compare-and-set needs only the latest revision).
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(format!("Aether cluster {}", config.cluster_name)),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: if config.memory_storage {
                StorageType::Memory
            } else {
                StorageType::File
            },
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    let created_err = created.err();
    // Whether we or another node created it, it is now there (or the error says why not).
    js.get_key_value(&bucket)
        .await
        .map_err(|get_err| match created_err {
            Some(e) => Error::unavailable(format!("creating the cluster bucket {bucket}"), e),
            None => Error::unavailable(format!("opening the cluster bucket {bucket}"), get_err),
        })
}

enum Attempt<R> {
    Done(Result<R>),
    Retry(String),
}

impl<M: RuntimeModel> Inner<M> {
    fn view(&self) -> Arc<Assignment> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_leader(&self, leader: Option<String>) {
        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    /// Applies `a` if it is newer than what we have: gives up the shards it takes away.
    fn apply_assignment(&self, a: Assignment) -> bool {
        if a.table.shard_count != self.shard_config.shard_count {
            tracing::error!(
                node = %self.node_id,
                table = a.table.shard_count,
                configured = self.shard_config.shard_count,
                "assignment table has another shard count; ignoring it (check the configuration)"
            );
            return false;
        }
        let a = Arc::new(a);
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            if a.epoch <= view.epoch {
                return false;
            }
            *view = Arc::clone(&a);
            // Under the view lock, so concurrent applies cannot leave an older table behind.
            if let Err(e) = self.shards.set_table(a.table.shards.clone()) {
                tracing::warn!(error = %e, "shard table not applied");
            }
        }
        let lost = self
            .host
            .passivate_where(|actor| !a.serves(&self.node_id, actor));
        // Forget locations the new table contradicts (the passivation hook takes care of
        // the local actors given up above once they have stopped).
        self.registry
            .retain(|actor, node| node == self.node_id || a.owner_of(actor) == Some(node));
        tracing::debug!(
            node = %self.node_id,
            epoch = a.epoch,
            term = a.table.term,
            leader = %a.table.leader,
            members = ?a.table.members,
            given_up = lost.len(),
            "assignment applied"
        );
        self.view_tx.send_replace(a.epoch);
        true
    }

    /// Reads the table from the bucket and applies it if newer.
    async fn refresh_view(&self) -> Result<()> {
        let (current, _) = self.assignments.load().await?;
        if let Some(a) = current {
            self.apply_assignment(a);
        }
        Ok(())
    }

    async fn send(&self, actor_id: &str, message: M::Message) -> Result<M::Reply> {
        if actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty"));
        }
        let send_timeout = self.config.effective_send_timeout();
        let deadline = Instant::now() + send_timeout;
        let max_backoff = self.config.effective_heartbeat_interval();
        let mut backoff = Duration::from_millis(10).min(max_backoff);
        let message_id = uuid::Uuid::new_v4().simple().to_string();
        let mut table_changed = self.view_tx.subscribe();
        loop {
            let view = self.view();
            let attempt = match view.owner_of(actor_id) {
                None => Attempt::Retry("no node owns the actor's shard yet".into()),
                Some(owner) if owner == self.node_id => {
                    match self
                        .host
                        .dispatch_with_id(actor_id, Some(&message_id), message.clone())
                        .await
                    {
                        Ok(Handled::Reply { reply, .. }) => {
                            self.registry.register(actor_id, &self.node_id);
                            Attempt::Done(Ok(reply))
                        }
                        Ok(Handled::NotOwner) => Attempt::Retry("ownership moved".into()),
                        Err(e) => Attempt::Done(Err(e)),
                    }
                }
                Some(owner) => {
                    self.send_remote(owner, actor_id, &view, &message_id, &message, deadline)
                        .await
                }
            };
            match attempt {
                Attempt::Done(r) => return r,
                Attempt::Retry(reason) => {
                    if Instant::now() >= deadline {
                        return Err(Error::unavailable(
                            format!("sending to actor {actor_id}"),
                            format!("no owner answered within {send_timeout:?}: {reason}"),
                        ));
                    }
                    tracing::debug!(actor_id, reason = %reason, "retrying send");
                    // Wait for the table to change (the failover we are waiting for), but
                    // no longer than the backoff: the owner may just have been slow.
                    table_changed.mark_unchanged();
                    let wake = (Instant::now() + backoff).min(deadline);
                    let _ = tokio::time::timeout_at(wake, table_changed.changed()).await;
                    backoff = (backoff * 2).min(max_backoff);
                    if let Err(e) = self.refresh_view().await {
                        tracing::debug!(error = %e, "assignment refresh failed");
                    }
                }
            }
        }
    }

    async fn send_remote(
        &self,
        owner: &str,
        actor_id: &str,
        view: &Assignment,
        message_id: &str,
        message: &M::Message,
        deadline: Instant,
    ) -> Attempt<M::Reply> {
        let request = ActorRequest {
            actor_id: actor_id.to_string(),
            shard: view.shard_of(actor_id),
            epoch: view.epoch,
            message_id: Some(message_id.to_string()),
            message,
        };
        let payload = match encode(&request) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Attempt::Done(Err(e)),
        };
        // Never wait past the send's own deadline; a request needs some time to be answered.
        let timeout = self
            .config
            .effective_request_timeout()
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(50));
        let response = self
            .client
            .send_request(
                self.subjects.node_requests(owner),
                Request::new().payload(payload).timeout(Some(timeout)),
            )
            .await;
        match response {
            Ok(msg) => match decode::<ActorResponse<M::Reply>>(&msg.payload) {
                Ok(ActorResponse::Reply { reply, .. }) => {
                    self.registry.register(actor_id, owner);
                    Attempt::Done(Ok(reply))
                }
                Ok(ActorResponse::NotOwner {
                    epoch,
                    owner: theirs,
                }) => Attempt::Retry(format!(
                    "{owner} does not own the actor at epoch {epoch} (owner there: {theirs:?})"
                )),
                Ok(ActorResponse::Error { error }) => Attempt::Done(Err(error.into_error(owner))),
                Err(e) => Attempt::Done(Err(e.into())),
            },
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                Attempt::Retry(format!("{owner} is not serving requests"))
            }
            // The owner may be dead (its failover not yet decided) or just slow. The message
            // may have been applied; the retry carries the same id, so it is not applied
            // twice.
            Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                Attempt::Retry(format!("{owner} did not answer within {timeout:?}"))
            }
            Err(e) => Attempt::Done(Err(Error::unavailable(
                format!("request to actor {actor_id} on node {owner}"),
                e,
            ))),
        }
    }

    async fn serve(&self, msg: Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let response: ActorResponse<M::Reply> =
            match decode::<ActorRequest<M::Message>>(&msg.payload) {
                Err(e) => ActorResponse::Error {
                    error: RemoteError::from_error(&e.into()),
                },
                Ok(req) => self.serve_request(req).await,
            };
        let bytes = match encode(&response) {
            Ok(b) => b,
            Err(e) => match encode(&ActorResponse::<()>::Error {
                error: RemoteError::from_error(&e),
            }) {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        if let Err(e) = self.client.publish(reply_to, Bytes::from(bytes)).await {
            tracing::warn!(error = %e, "could not send a reply");
        }
    }

    async fn serve_request(&self, req: ActorRequest<M::Message>) -> ActorResponse<M::Reply> {
        if self.view().epoch < req.epoch {
            // The sender knows a newer table: catch up before deciding ownership.
            if let Err(e) = self.refresh_view().await {
                tracing::debug!(error = %e, "assignment refresh failed");
            }
        }
        let view = self.view();
        if !view.serves(&self.node_id, &req.actor_id) {
            return ActorResponse::NotOwner {
                epoch: view.epoch,
                owner: view.owner_of(&req.actor_id).map(str::to_string),
            };
        }
        match self
            .host
            .dispatch_with_id(&req.actor_id, req.message_id.as_deref(), req.message)
            .await
        {
            Ok(Handled::Reply { reply, version }) => {
                self.registry.register(&req.actor_id, &self.node_id);
                ActorResponse::Reply { reply, version }
            }
            Ok(Handled::NotOwner) => {
                let view = self.view();
                ActorResponse::NotOwner {
                    epoch: view.epoch,
                    owner: view.owner_of(&req.actor_id).map(str::to_string),
                }
            }
            Err(e) => ActorResponse::Error {
                error: RemoteError::from_error(&e),
            },
        }
    }

    fn on_membership_change(&self, change: &MembershipChange) {
        match change {
            MembershipChange::Joined(n) => {
                tracing::info!(node = %self.node_id, member = %n, "member joined");
                self.ring.add_node(n);
            }
            MembershipChange::Left(n) => {
                tracing::info!(node = %self.node_id, member = %n, "member left");
                self.ring.remove_node(n);
                self.registry.remove_node(n);
            }
            MembershipChange::Failed(n) => {
                tracing::warn!(node = %self.node_id, member = %n, "member failed");
                self.ring.remove_node(n);
                self.registry.remove_node(n);
            }
        }
    }

    /// The leader's duty: keep the table balanced over the live members, with our term.
    async fn lead(&self, term: u64) -> Result<bool> {
        let (current, revision) = self.assignments.load().await?;
        if let Some(a) = current.clone() {
            self.apply_assignment(a);
        }
        let base = current.map(|a| a.table).unwrap_or_else(|| {
            AssignmentTable::empty(
                self.shard_config.shard_count,
                self.shard_config.replication_factor,
            )
        });
        if base.term > term {
            return Ok(false);
        }
        if base.shard_count != self.shard_config.shard_count {
            return Ok(true);
        }
        let live = self.membership().alive();
        let shards = rebalance(&base.shards, &live, self.shard_config.replication_factor);
        if revision != 0 && base.term == term && base.members == live && base.shards == shards {
            return Ok(true);
        }
        let table = AssignmentTable {
            term,
            leader: self.node_id.clone(),
            members: live,
            shard_count: self.shard_config.shard_count,
            replication_factor: self.shard_config.replication_factor,
            shards,
        };
        match self.assignments.write(&table, revision).await? {
            CasOutcome::Written(epoch) => {
                tracing::info!(
                    node = %self.node_id,
                    epoch,
                    term,
                    members = ?table.members,
                    "assignment table written"
                );
                self.apply_assignment(Assignment { epoch, table });
            }
            CasOutcome::Stale => {
                tracing::debug!(node = %self.node_id, "assignment changed concurrently");
            }
        }
        Ok(true)
    }
}

async fn heartbeat_loop<M: RuntimeModel>(
    inner: Arc<Inner<M>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(inner.config.effective_heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = inner.subjects.heartbeat();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                let hb = Heartbeat {
                    node_id: inner.node_id.clone(),
                    incarnation: inner.incarnation.clone(),
                    seq,
                };
                seq += 1;
                match encode(&hb) {
                    Ok(bytes) => {
                        if let Err(e) = inner.client.publish(subject.clone(), Bytes::from(bytes)).await {
                            tracing::warn!(error = %e, "heartbeat not sent");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat not encoded"),
                }
            }
        }
    }
}

async fn membership_loop<M: RuntimeModel>(
    inner: Arc<Inner<M>>,
    mut members: async_nats::Subscriber,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(inner.config.effective_heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = inner.subjects.heartbeat();
    let leave = inner.subjects.leave();
    loop {
        let changes: Vec<MembershipChange> = tokio::select! {
            _ = shutdown.changed() => break,
            msg = members.next() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                if msg.subject.as_str() == heartbeat {
                    match decode::<Heartbeat>(&msg.payload) {
                        Ok(hb) => inner.membership().observe_heartbeat(&hb, now).into_iter().collect(),
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a malformed heartbeat");
                            Vec::new()
                        }
                    }
                } else if msg.subject.as_str() == leave {
                    match decode::<Leave>(&msg.payload) {
                        Ok(l) => inner.membership().observe_leave(&l).into_iter().collect(),
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a malformed leave notice");
                            Vec::new()
                        }
                    }
                } else {
                    Vec::new()
                }
            }
            _ = tick.tick() => inner.membership().sweep(Instant::now()),
        };
        for c in &changes {
            inner.on_membership_change(c);
        }
    }
}

async fn leader_loop<M: RuntimeModel>(
    inner: Arc<Inner<M>>,
    mut elector: LeaderElector,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(inner.config.effective_heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                inner.leader_term.store(0, Ordering::Release);
                elector.resign().await;
                break;
            }
            _ = tick.tick() => {
                let min_term = inner.view().table.term;
                let term = match elector.tick(min_term).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(node = %inner.node_id, error = %e, "leader election step failed");
                        None
                    }
                };
                inner.leader_term.store(term.unwrap_or(0), Ordering::Release);
                inner.set_leader(elector.current.clone());
                if let Some(term) = term {
                    match inner.lead(term).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(node = %inner.node_id, term, "a newer term wrote the table; stepping down");
                            elector.step_down();
                            inner.leader_term.store(0, Ordering::Release);
                        }
                        Err(e) => tracing::warn!(node = %inner.node_id, error = %e, "leader duty failed"),
                    }
                }
            }
        }
    }
}

async fn assignment_watch_loop<M: RuntimeModel>(
    inner: Arc<Inner<M>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let retry = inner.config.effective_heartbeat_interval();
    loop {
        let watch = tokio::select! {
            _ = shutdown.changed() => return,
            w = inner.assignments.kv().watch_with_history(ASSIGNMENT_KEY) => w,
        };
        match watch {
            Ok(mut watch) => loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    item = watch.next() => match item {
                        Some(Ok(entry)) if entry.operation == Operation::Put => {
                            match decode::<AssignmentTable>(&entry.value) {
                                Ok(table) => {
                                    inner.apply_assignment(Assignment { epoch: entry.revision, table });
                                }
                                Err(e) => tracing::warn!(error = %e, "undecodable assignment table"),
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "assignment watch failed; restarting it");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "could not watch the assignment table"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        // Catch up on whatever happened while the watch was down.
        if let Err(e) = inner.refresh_view().await {
            tracing::debug!(error = %e, "assignment refresh failed");
        }
    }
}

async fn request_loop<M: RuntimeModel>(
    inner: Arc<Inner<M>>,
    mut requests: async_nats::Subscriber,
    mut shutdown: watch::Receiver<bool>,
) {
    // In-flight requests live in this set, so stopping the loop (or killing the node) stops
    // them too.
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            msg = requests.next() => {
                let Some(msg) = msg else { break };
                let inner = Arc::clone(&inner);
                in_flight.spawn(async move { inner.serve(msg).await });
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    // Unsubscribe first so senders see "no responders" and go elsewhere, then let the
    // requests already taken finish.
    drop(requests);
    while in_flight.join_next().await.is_some() {}
}
