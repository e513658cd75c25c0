//! Partitioned projections: a projection split by actor shard into partitions, each handled
//! by exactly one of a group of workers at a time.
//!
//! Workers coordinate through the [`ProjectionStore`] alone (no leader): each one sends a
//! heartbeat every [`WorkerConfig::heartbeat`], reads the others' heartbeats and the partition
//! leases, and computes the same assignment of partitions to the live workers
//! ([`aether_placement::rebalance`], a function of the live set only). A worker takes a
//! partition assigned to it by compare-and-set on the partition's lease once the lease is free
//! (its holder released it, having seen the new assignment) or expired (its revision has not
//! changed for [`WorkerConfig::lease_timeout`], measured on the local monotonic clock with
//! [`aether_placement::LeaseTracker`], the rule of the cluster's leader lease too). It renews
//! the leases it holds every heartbeat, and stops a partition as soon as a renewal is refused
//! or none has succeeded for half the timeout, so it has stopped before anyone else can take
//! the partition over.
//!
//! On a partitioned log ([`EventLog::partitions`]) the unit of work is a (log partition,
//! partition) pair, numbered `l × partitions + k`; everything above applies to units. Module
//! `layout` numbers them and says what the workers store as the count.
//!
//! The decisions are [`Coordinator::plan`]'s (module `coordinator`), which does no I/O;
//! [`ProjectionWorker::run`] (this module) carries them out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{Error, EventLog, Result};
use aether_placement::validate_name;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::by_type::ActorEvents;
use crate::store::ProjectionStore;
use crate::{CheckpointName, Handler, Projection, ProjectionConfig, ProjectionStatus};

mod coordinator;
mod layout;

use coordinator::{Action, Coordinator};
use layout::UnitLayout;

/// Settings of a worker of a partitioned projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Partitions of the projection: every worker of it must use the same number (the first
    /// one to start stores it, and a worker configured otherwise refuses to start). More
    /// partitions than workers lets the load spread. Each partition asks the store for its own
    /// shard's actors (the JetStream store selects them on the server from 2.10) and checks
    /// what it gets. On a partitioned log each log partition is split into this many: the
    /// workers share log partitions × `partitions` units.
    pub partitions: u32,
    /// How often a worker sends its heartbeat, renews its leases and looks at the assignment.
    pub heartbeat: Duration,
    /// How long a worker's heartbeat or a partition's lease may stay unchanged before the
    /// worker is taken for dead and the partition taken over. Handling one event must take
    /// less than half of it (a worker that cannot renew stops its partitions after half).
    pub lease_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            partitions: 16,
            heartbeat: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(10),
        }
    }
}

/// A partition changing hands at this worker, as reported to an observer
/// ([`ProjectionWorker::with_observer`]). On a partitioned log the number is the unit's
/// (`l × partitions + k`: partition `k` of log partition `l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipChange {
    /// The worker holds the partition's lease and has started handling it.
    Acquired(u32),
    /// The worker has stopped handling the partition (given up cleanly, or its lease lost);
    /// reported before the lease is released, so no other worker can have it yet.
    Released(u32),
}

/// Something told of every [`OwnershipChange`], synchronously.
pub type OwnershipObserver = Arc<dyn Fn(OwnershipChange) + Send + Sync>;

/// A partition this worker handles.
struct Held {
    /// Its task, aborted if dropped (the worker's future dropped: a crash).
    task: AbortOnDropHandle<Result<()>>,
    stop: CancellationToken,
    /// The lease's revision as this worker last wrote it.
    revision: u64,
    /// When the last successful renewal was sent.
    renewed: Instant,
}

/// One worker of a partitioned projection: it handles the partitions assigned to it, each as
/// a [`Projection`] of the actors in that shard, checkpointed as `<name>.p<partition>`. On a
/// partitioned log ([`EventLog::partitions`]) its units are (log partition `l`, partition
/// `k`) pairs instead, each a [`Projection`] of that shard's actors in that log partition,
/// checkpointed as `<name>.l<l>.p<k>` ([`owned_units`](Self::owned_units)).
///
/// Run several (in one process or many, sharing the [`ProjectionStore`]) with distinct worker
/// ids: each partition is handled by one worker at a time, each actor's events in order;
/// workers joining or leaving move partitions, which resume from their checkpoints. A worker
/// that dies loses nothing: once its lease expires, its partitions resume elsewhere from
/// their checkpoints (the events since then are handed over again: at least once).
///
/// The same type runs a **persistent subscription** (competing consumers for work such as
/// e-mails and webhooks): many partitions, a [`ProjectionConfig::concurrency`] above 1 and
/// [`Order::Any`](crate::Order::Any) or [`Order::PerActor`](crate::Order::PerActor); a failing
/// event is retried under the policy, then parked.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use aether_actor::{DomainEvent, EventCodec};
/// use aether_core::{BoxError, Event, EventStore};
/// use aether_projection::{
///     Handler, InMemoryProjectionStore, Projected, ProjectionConfig, ProjectionWorker,
///     WorkerConfig,
/// };
/// use aether_store::InMemoryEventStore;
/// use tokio_util::sync::CancellationToken;
///
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// enum Signed { Up {} }
/// impl DomainEvent for Signed {
///     fn event_type(&self) -> &'static str { "Up" }
/// }
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// #[async_trait::async_trait]
/// impl Handler<Signed> for Count {
///     async fn handle(&self, _: &Projected<Signed>) -> Result<(), BoxError> {
///         self.0.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> aether_core::Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// for user in 0..10 {
///     store.save_event(&Event::new("Up", format!("user-{user}"), 1)).await?;
/// }
/// let state = Arc::new(InMemoryProjectionStore::new());
/// let count = Arc::new(Count::default());
/// let worker = Arc::new(ProjectionWorker::new(
///     "signups",
///     "worker-1",
///     store,
///     state,
///     count.clone(),
///     EventCodec::<Signed>::default(),
///     ProjectionConfig::default(),
///     WorkerConfig { partitions: 4, heartbeat: Duration::from_millis(50), ..WorkerConfig::default() },
/// )?);
/// let shutdown = CancellationToken::new();
/// let running = tokio::spawn({
///     let (worker, shutdown) = (worker.clone(), shutdown.clone());
///     async move { worker.run(shutdown).await }
/// });
/// while count.0.load(Ordering::SeqCst) < 10 {
///     tokio::time::sleep(Duration::from_millis(10)).await;
/// }
/// assert_eq!(worker.owned(), vec![0, 1, 2, 3]); // alone, it holds every partition
/// shutdown.cancel();
/// running.await.expect("worker task")?;
/// assert!(worker.owned().is_empty()); // given up cleanly
/// # Ok(())
/// # }
/// ```
pub struct ProjectionWorker<E> {
    name: String,
    worker: String,
    /// The independent logs it reads ([`aether_core::log_partitions`]): one for a log that is
    /// one order.
    logs: Vec<Arc<dyn EventLog>>,
    store: Arc<dyn ProjectionStore>,
    handler: Arc<dyn Handler<E>>,
    codec: EventCodec<E>,
    config: ProjectionConfig,
    worker_config: WorkerConfig,
    observer: Option<OwnershipObserver>,
    /// The actor types every partition reads (all when empty).
    actor_types: Vec<String>,
    /// Decoding by actor type, handed to every partition.
    by_type: Option<ActorEvents<E>>,
    owned: Mutex<BTreeMap<u32, Arc<Projection<E>>>>,
}

impl<E> std::fmt::Debug for ProjectionWorker<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionWorker")
            .field("name", &self.name)
            .field("worker", &self.worker)
            .field("log_partitions", &self.logs.len())
            .field("config", &self.config)
            .field("worker_config", &self.worker_config)
            .finish_non_exhaustive()
    }
}

impl<E: DomainEvent> ProjectionWorker<E> {
    /// Worker `worker` (unique among the running workers; letters, digits, `-` and `_`) of
    /// the partitioned projection `name`. The other arguments are a [`Projection`]'s; the
    /// handler is shared by the partitions this worker holds, which run at once.
    ///
    /// On a partitioned log ([`aether_core::log_partitions`] gives N > 1), its units of work
    /// are the pairs (log partition `l`, partition `k`): N × [`WorkerConfig::partitions`]
    /// of them, leased and rebalanced like partitions, unit `l × partitions + k`
    /// checkpointed as `<name>.l<l>.p<k>`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name or worker id, a page size or concurrency of 0,
    /// no partitions, a lease timeout not above twice the heartbeat, or, on a partitioned
    /// log, more than 65 535 log partitions or partitions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        worker: impl Into<String>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
        worker_config: WorkerConfig,
    ) -> Result<Self> {
        let (name, worker) = (name.into(), worker.into());
        validate_name("projection name", &name)?;
        validate_name("worker name", &worker)?;
        config.validate()?;
        if worker_config.partitions == 0 {
            return Err(Error::invalid("a partitioned projection needs partitions"));
        }
        if worker_config.lease_timeout <= worker_config.heartbeat * 2 {
            return Err(Error::invalid(
                "the lease timeout must be more than twice the heartbeat interval",
            ));
        }
        let logs = crate::runner::log_parts(&log);
        UnitLayout::of(logs.len(), worker_config.partitions)?;
        Ok(Self {
            name,
            worker,
            logs,
            store,
            handler,
            codec,
            config,
            worker_config,
            observer: None,
            actor_types: Vec::new(),
            by_type: None,
            owned: Mutex::new(BTreeMap::new()),
        })
    }

    /// Reads only the events of actors of `types`, as [`Projection::actor_types`] does. Each
    /// partition also reads only its own shard's actors where the store can select them (the
    /// JetStream store asks the server for the partition's buckets), so a worker holding 8
    /// partitions reads the log about once, not 8 times.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a name that is not an actor type.
    pub fn actor_types<I, S>(mut self, types: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.actor_types = crate::runner::validated_types(types)?;
        Ok(self)
    }

    /// Decodes by actor type, as [`Projection::decode_by_type`] does, in every partition.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `events` names no type.
    pub fn decode_by_type(mut self, events: ActorEvents<E>) -> Result<Self> {
        if events.types().is_empty() {
            return Err(Error::invalid(
                "decoding by actor type needs at least one actor type",
            ));
        }
        self.actor_types = crate::runner::validated_types(events.types())?;
        self.by_type = Some(events);
        Ok(self)
    }

    /// Tells `observer` of every partition this worker takes or gives up.
    #[must_use]
    pub fn with_observer(mut self, observer: OwnershipObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The partitions this worker handles now; on a partitioned log, its units of work, unit
    /// `l × partitions + k` being partition `k` of log partition `l` (see
    /// [`owned_units`](Self::owned_units)).
    pub fn owned(&self) -> Vec<u32> {
        self.lock_owned().keys().copied().collect()
    }

    /// The units of work this worker handles now, as (log partition, partition) pairs (log
    /// partition 0 throughout on a log that is one order).
    pub fn owned_units(&self) -> Vec<(u32, u32)> {
        let shards = self.worker_config.partitions;
        self.owned()
            .into_iter()
            .map(|u| (u / shards, u % shards))
            .collect()
    }

    /// How many independent logs the projection reads: the number of partitions of a
    /// partitioned log, 1 for a log that is one order.
    pub fn log_partitions(&self) -> usize {
        self.logs.len()
    }

    /// Its units of work: [`WorkerConfig::partitions`] times [`log_partitions`](Self::log_partitions).
    pub fn units(&self) -> u32 {
        // Checked in `new`: at most 65 535 of each on a partitioned log.
        self.worker_config
            .partitions
            .saturating_mul(u32::try_from(self.logs.len()).unwrap_or(u32::MAX))
    }

    /// The status of each partition this worker handles now (named `<name>.p<partition>`, or
    /// `<name>.l<l>.p<partition>` on a partitioned log).
    pub fn status(&self) -> Vec<ProjectionStatus> {
        self.lock_owned().values().map(|p| p.status()).collect()
    }

    /// Runs until `shutdown` is cancelled, then stops its partitions (each checkpoints what it
    /// handled), frees their leases and leaves, so others take over at once. Store errors
    /// are logged and retried at the next heartbeat. Dropping the future instead is a crash:
    /// the partitions stop, their leases expire and others take over after the timeout.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the store holds another partition count for this
    /// projection, or another number of log partitions (a worker of a log of another
    /// partitioning); a partition's error when it is configured to stop on a failing event
    /// ([`OnFailure::Stop`](crate::OnFailure::Stop)).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let layout = UnitLayout::of(self.logs.len(), self.worker_config.partitions)?;
        let stored = self
            .store
            .partition_count(&self.name, layout.stored())
            .await?;
        if stored != layout.stored() {
            return Err(Error::invalid(format!(
                "projection {} is split into {} in the projection store, and worker {} is \
                 configured for {}: every worker of a projection needs the same partitions \
                 over the same log",
                self.name,
                UnitLayout::describe_stored(stored),
                self.worker,
                layout
            )));
        }
        let mut core = Coordinator::new(
            self.worker.clone(),
            layout.units(),
            self.worker_config.lease_timeout,
        );
        // Dropped with this future, which aborts the partitions' tasks.
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let outcome = loop {
            if let Err(e) = self.tick(&mut core, &mut held).await {
                tracing::warn!(projection = %self.name, worker = %self.worker, error = %e, "projection worker could not coordinate; retrying");
            }
            // A partition that ended on its own stopped on a failing event.
            let ended = held
                .iter()
                .find(|(_, h)| h.task.is_finished())
                .map(|(p, _)| *p);
            if let Some(partition) = ended {
                if let Some(Err(e)) = self.stop_partition(&mut held, partition).await {
                    break Err(e);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = tokio::time::sleep(self.worker_config.heartbeat) => {}
            }
        };
        for partition in held.keys().copied().collect::<Vec<_>>() {
            let revision = held.get(&partition).map(|h| h.revision);
            self.stop_partition(&mut held, partition).await;
            if let Some(revision) = revision {
                if let Err(e) = self
                    .store
                    .write_lease(&self.name, partition, None, revision)
                    .await
                {
                    tracing::warn!(projection = %self.name, partition, error = %e, "could not free a partition lease; it expires instead");
                }
            }
        }
        if let Err(e) = self.store.leave(&self.name, &self.worker).await {
            tracing::warn!(projection = %self.name, worker = %self.worker, error = %e, "could not remove the worker's heartbeat; it expires instead");
        }
        outcome
    }

    /// One round: heartbeat, read, plan, act.
    async fn tick(&self, core: &mut Coordinator, held: &mut BTreeMap<u32, Held>) -> Result<()> {
        // Leases not renewed for half the timeout: stop before anyone may take them over.
        let now = Instant::now();
        let stale: Vec<u32> = held
            .iter()
            .filter(|(_, h)| now.duration_since(h.renewed) >= self.worker_config.lease_timeout / 2)
            .map(|(p, _)| *p)
            .collect();
        for partition in stale {
            tracing::warn!(projection = %self.name, partition, "could not renew a partition lease in time; stopping the partition");
            self.stop_partition(held, partition).await;
        }

        self.store.heartbeat(&self.name, &self.worker).await?;
        let heartbeats = self.store.workers(&self.name).await?;
        let mut leases = Vec::with_capacity(core.partitions as usize);
        for partition in 0..core.partitions {
            leases.push(self.store.lease(&self.name, partition).await?);
        }
        let revisions: BTreeMap<u32, u64> = held.iter().map(|(p, h)| (*p, h.revision)).collect();
        for action in core.plan(Instant::now(), &heartbeats, &leases, &revisions) {
            match action {
                Action::Renew {
                    partition,
                    revision,
                } => {
                    let sent = Instant::now();
                    match self
                        .store
                        .write_lease(&self.name, partition, Some(&self.worker), revision)
                        .await?
                    {
                        Some(next) => {
                            if let Some(h) = held.get_mut(&partition) {
                                h.revision = next;
                                h.renewed = sent;
                            }
                        }
                        None => {
                            tracing::warn!(projection = %self.name, partition, "partition lease taken over; stopping the partition");
                            self.stop_partition(held, partition).await;
                        }
                    }
                }
                Action::Release {
                    partition,
                    revision,
                } => {
                    self.stop_partition(held, partition).await;
                    self.store
                        .write_lease(&self.name, partition, None, revision)
                        .await?;
                    tracing::info!(projection = %self.name, worker = %self.worker, partition, "gave a partition up");
                }
                Action::Claim {
                    partition,
                    expected,
                } => {
                    let sent = Instant::now();
                    if let Some(revision) = self
                        .store
                        .write_lease(&self.name, partition, Some(&self.worker), expected)
                        .await?
                    {
                        self.start_partition(held, partition, revision, sent)?;
                        tracing::info!(projection = %self.name, worker = %self.worker, partition, "took a partition");
                    }
                }
            }
        }
        Ok(())
    }

    fn start_partition(
        &self,
        held: &mut BTreeMap<u32, Held>,
        partition: u32,
        revision: u64,
        renewed: Instant,
    ) -> Result<()> {
        let shards = self.worker_config.partitions;
        let (l, k) = (partition / shards, partition % shards);
        let log = self
            .logs
            .get(l as usize)
            .ok_or_else(|| Error::invalid(format!("no log partition {l}")))?;
        let log_partition = (self.logs.len() > 1).then_some(l);
        let id = CheckpointName::new(&self.name, log_partition, Some(k)).to_string();
        let mut projection = Projection::unit(
            self.name.clone(),
            id,
            k,
            shards,
            log.clone(),
            self.store.clone(),
            self.handler.clone(),
            self.codec.clone(),
            self.config,
        )?
        .actor_types(self.actor_types.iter().cloned())?;
        if let Some(by_type) = &self.by_type {
            projection = projection.decode_by_type(by_type.clone())?;
        }
        let projection = Arc::new(projection);
        let stop = CancellationToken::new();
        let task = {
            let (projection, stop) = (projection.clone(), stop.clone());
            AbortOnDropHandle::new(tokio::spawn(async move { projection.run(stop).await }))
        };
        self.lock_owned().insert(partition, projection);
        held.insert(
            partition,
            Held {
                task,
                stop,
                revision,
                renewed,
            },
        );
        if let Some(observer) = &self.observer {
            observer(OwnershipChange::Acquired(partition));
        }
        Ok(())
    }

    /// Stops a partition and waits until it has (it checkpoints what it handled); returns
    /// how its run ended (`None`: it was not running, or its task panicked).
    async fn stop_partition(
        &self,
        held: &mut BTreeMap<u32, Held>,
        partition: u32,
    ) -> Option<Result<()>> {
        let h = held.remove(&partition)?;
        h.stop.cancel();
        let outcome = match h.task.await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                tracing::error!(projection = %self.name, partition, error = %e, "a partition's task panicked");
                None
            }
        };
        self.lock_owned().remove(&partition);
        if let Some(observer) = &self.observer {
            observer(OwnershipChange::Released(partition));
        }
        outcome
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<Projection<E>>>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}
