//! [`JetStreamEventStore`]: the public store, one stream or several (partitions), routing
//! every operation on an actor to the stream that holds it.

use std::fmt;
use std::sync::Arc;

use aether_core::{
    ActorKey, CrossPartitionError, Error, Event, EventLog, EventStore, EventStoreWithErrors,
    LogFilter, LogPage, LogPosition, LoggedEvent, ReplayResult, ReplayStart, Result, Snapshot,
    SnapshotAndEvents, SnapshotStore, Transaction,
};
use aether_nats::subject::MAX_STREAM_NAME_BYTES;
use aether_nats::{Connection, PermissionWatch};
use async_nats::jetstream::Context;
use async_trait::async_trait;

use super::config::JetStreamConfig;
use super::leaders::{self, LeaderMove, PartitionLeader};
use super::partition::{self, PartitionKey};
use super::setup;
use super::store::{dooms, StreamStore};

/// A durable event store on NATS JetStream, correct with any number of writers on any number of
/// machines.
///
/// - **Concurrency.** Every save is published with the `Nats-Expected-Last-Subject-Sequence`
///   header set to the stream sequence of the actor's last message, so the server rejects a
///   write based on a stale view; the rejection becomes [`Error::VersionConflict`] with the
///   current version read fresh from the stream. A per-actor cache of the last (sequence,
///   version) saves a read before each write; it is only ever a guess the server checks.
/// - **Batches.** [`save_events`](EventStore::save_events) stores the whole batch in one message
///   (a JSON array of events), so it is appended atomically on every server version: readers
///   see all of the batch or none of it. The batch must fit in the server's `max_payload`.
/// - **Subjects.** A typed actor's events go to `<stream>.events.<type>.<bucket>.<id>` and its
///   snapshots to `<stream>.snapshots.<type>.<bucket>.<id>`; an untyped actor's to
///   `<stream>.events.<id>` and `<stream>.snapshots.<id>` (the layout of streams written before
///   actor types; see [`JetStreamConfig::legacy_actor_type`]). The id is encoded by
///   [`encode_actor_id`](aether_nats::subject::encode_actor_id) into one wildcard-free token,
///   the bucket is [`aether_placement::bucket_for`] of the id, so the server can select a
///   type's events and the actors of some buckets.
/// - **Partitions.** With [`JetStreamConfig::partitions`] above 1 the log is spread over that
///   many streams (`<stream>_P<k>`), each actor in one of them
///   ([`partition_of`](Self::partition_of)): saves to different partitions are stored and
///   synced in parallel, a transaction holds actors of one partition, and the global order is
///   one order per partition ([`EventLog::partitions`]).
/// - **Reads.** The latest version is one direct get of the actor's last message. Replays use a
///   short-lived pull consumer filtered to the actor's subject, starting at the first message
///   that holds `from_version` (found by a search of direct gets, several at once per round).
/// - **Immutability.** The stream denies deletes and purges; events leave it only by age, and
///   only when [`JetStreamConfig::max_age`] sets one (by default they are kept forever).
/// - **Replication.** `replicas > 1` needs nats-server 2.11 or later; older servers are refused
///   (see [`JetStreamConfig::allow_replication_on_old_servers`]).
/// - **Permissions.** NATS never answers a request its permissions refuse. With a
///   [`PermissionWatch`] (installed by [`connect`](Self::connect)), such an operation fails
///   with [`Error::PermissionDenied`] naming the refused subject as soon as the server reports
///   the refusal.
///
/// ```no_run
/// use aether_core::{Event, EventStore};
/// use aether_store::{JetStreamConfig, JetStreamEventStore};
///
/// # async fn run() -> aether_core::Result<()> {
/// let store =
///     JetStreamEventStore::connect("nats://127.0.0.1:4222", JetStreamConfig::default().namespace("orders"))
///         .await?;
/// store.save_event(&Event::new("OrderPlaced", "order-1", 1)).await?;
/// assert_eq!(store.get_latest_version("order-1").await?, 1);
/// # Ok(())
/// # }
/// ```
pub struct JetStreamEventStore {
    /// One stream per partition; one for an unpartitioned store.
    parts: Vec<Arc<StreamStore>>,
    key: PartitionKey,
    /// The unpartitioned stream's name, which partitions' names extend.
    base_name: String,
    config: JetStreamConfig,
    /// The archive store of a compactable history, opened when first needed.
    pub(super) archive: tokio::sync::OnceCell<Arc<JetStreamEventStore>>,
}

impl fmt::Debug for JetStreamEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamEventStore")
            .field("stream_name", &self.base_name)
            .field("partitions", &self.parts.len())
            .field("namespace", &self.namespace())
            .field("streams", &self.parts)
            .finish()
    }
}

impl JetStreamEventStore {
    /// Opens the store on a bare `client`, creating its streams if they are missing and
    /// attaching to them if they exist.
    ///
    /// Prefer [`open`](Self::open) on a [`Connection`]: a bare client does not report the
    /// server's permission refusals, so an operation the server refuses fails as a timeout
    /// ([`Error::Unavailable`]) instead of [`Error::PermissionDenied`]. Use this with a client
    /// you set up yourself and watch it with
    /// [`with_permission_watch`](Self::with_permission_watch).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when JetStream does not answer, [`Error::InvalidInput`] when a
    /// stream of that name exists but captures other subjects or belongs to a store of
    /// another partition count, or the partition count is out of range; other backend errors
    /// as typed variants.
    pub async fn new(client: async_nats::Client, config: JetStreamConfig) -> Result<Self> {
        let builder = async_nats::jetstream::ContextBuilder::new();
        let builder = match config.request_timeout {
            Some(timeout) => builder.timeout(timeout),
            None => builder,
        };
        let context = match &config.domain {
            Some(domain) => builder.domain(domain.clone()).build(client),
            None => builder.build(client),
        };
        Self::from_context(context, config).await
    }

    pub(super) async fn from_context(context: Context, config: JetStreamConfig) -> Result<Self> {
        if config.stream_name.is_empty() {
            return Err(Error::invalid("the stream name must not be empty"));
        }
        let count = config.partition_count();
        partition::validate_partitions(count)?;
        if config.compactable && count > 1 {
            return Err(Error::invalid(
                "a compactable history is not available on a partitioned log yet: use one \
                 partition, or leave compactable off",
            ));
        }
        let base_name = setup::stream_name_for(&config);
        let names = Self::stream_names_for(&config);
        // The server keeps a stream in a directory of that name, so names are limited; say so
        // plainly instead of letting the request fail obscurely.
        if let Some(long) = names.iter().find(|n| n.len() > MAX_STREAM_NAME_BYTES) {
            return Err(Error::invalid(format!(
                "stream name for namespace {:?} would be {} bytes; the limit is {} (use a shorter \
                 namespace or stream name): {long}",
                config.namespace_in_use().unwrap_or(""),
                long.len(),
                MAX_STREAM_NAME_BYTES
            )));
        }
        let parts = if count == 1 {
            vec![StreamStore::open_stream(context, config.clone(), base_name.clone(), None).await?]
        } else {
            let parts = futures::future::try_join_all(names.into_iter().enumerate().map(
                |(index, name)| {
                    let partition = Some((index as u32, count));
                    StreamStore::open_stream(context.clone(), config.clone(), name, partition)
                },
            ))
            .await?;
            check_no_unpartitioned_history(&context, &base_name).await?;
            parts
        };
        Ok(Self {
            parts: parts.into_iter().map(Arc::new).collect(),
            key: config.partition_key,
            base_name,
            config,
            archive: tokio::sync::OnceCell::new(),
        })
    }

    /// Connects to `url` and opens the store: the quick start. For credentials, TLS or a
    /// connection shared with a bus, connect with
    /// [`Connection::connect`](aether_nats::Connection::connect) and use [`open`](Self::open).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached; otherwise as
    /// [`open`](Self::open).
    pub async fn connect(url: &str, config: JetStreamConfig) -> Result<Self> {
        let connection = Connection::connect(url, async_nats::ConnectOptions::new()).await?;
        Self::open(&connection, config).await
    }

    /// Opens the store on a [`Connection`] (shared, for example, with a bus), creating the
    /// streams if they are missing and attaching to them if they exist, and watching the
    /// connection's permission violations as
    /// [`with_permission_watch`](Self::with_permission_watch) does: the way to open a store in
    /// production.
    ///
    /// ```no_run
    /// # async fn run() -> aether_core::Result<()> {
    /// use aether_nats::{async_nats::ConnectOptions, Connection};
    /// use aether_store::{JetStreamConfig, JetStreamEventStore};
    ///
    /// let options = ConnectOptions::new().user_and_password("orders".into(), "secret".into());
    /// let connection = Connection::connect("nats://127.0.0.1:4222", options).await?;
    /// let store = JetStreamEventStore::open(&connection, JetStreamConfig::default()).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] when the user may not use the streams; otherwise as
    /// [`new`](Self::new).
    pub async fn open(connection: &Connection, config: JetStreamConfig) -> Result<Self> {
        let names = Self::stream_names_for(&config);
        let watch = connection.permissions().clone();
        let opened = watch
            .guard(
                || format!("opening stream {}", names.join(", ")),
                |_, subject| names.iter().any(|n| dooms(subject, n, None, false)),
                None,
                Self::new(connection.client().clone(), config),
            )
            .await?;
        Ok(opened.with_permission_watch(watch))
    }

    /// Uses `watch` to tell refused operations from slow ones: when the server reports refusing
    /// a subject an operation uses, the operation fails at once with
    /// [`Error::PermissionDenied`] naming the subject, instead of waiting for its timeout and
    /// reporting [`Error::Unavailable`]. NATS reports violations only to the event callback given at
    /// connect time, so `watch` must be that of a monitor installed on this store's client
    /// ([`ConnectionMonitor::install`](aether_nats::ConnectionMonitor::install));
    /// [`connect`](Self::connect) and [`open`](Self::open) do this themselves. A store keeps
    /// the first watch it is given.
    pub fn with_permission_watch(self, watch: PermissionWatch) -> Self {
        for part in &self.parts {
            part.set_permission_watch(watch.clone());
        }
        self
    }

    /// Lets [`get_latest_version`](EventStore::get_latest_version) answer from the per-actor
    /// cache when it knows the actor (off by default).
    ///
    /// Saves are checked by the server either way. With this on, the latest version can lag
    /// behind writes made by other processes until this store writes or reads that actor's
    /// history again; leave it off when several processes write the same actors.
    pub fn with_cached_reads(self, on: bool) -> Self {
        for part in &self.parts {
            part.set_cached_reads(on);
        }
        self
    }

    /// The namespace the store was opened with, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.config.namespace_in_use()
    }

    /// The name of the stream a store opened with `config` uses: the sanitised stream name,
    /// prefixed with the sanitised namespace and `_` when there is one. A partitioned store's
    /// streams extend it ([`stream_names_for`](Self::stream_names_for)). Lets tools look the
    /// stream up without opening a store (which would create it).
    pub fn stream_name_for(config: &JetStreamConfig) -> String {
        setup::stream_name_for(config)
    }

    /// The names of every stream a store opened with `config` uses, partition by partition:
    /// [`stream_name_for`](Self::stream_name_for) alone when unpartitioned, else
    /// `<name>_P0` to `<name>_P<N-1>`.
    pub fn stream_names_for(config: &JetStreamConfig) -> Vec<String> {
        let base = setup::stream_name_for(config);
        match config.partition_count() {
            0 | 1 => vec![base],
            n => (0..n)
                .map(|k| partition::partition_stream_name(&base, k))
                .collect(),
        }
    }

    /// The store's stream name (namespace prefix included): the stream holding the events when
    /// unpartitioned, the name the partitions' streams extend otherwise
    /// ([`stream_names`](Self::stream_names)).
    pub fn stream_name(&self) -> &str {
        &self.base_name
    }

    /// The streams holding the events, partition by partition (one when unpartitioned).
    pub fn stream_names(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.stream_name()).collect()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// How many partitions (streams) the log is spread over: 1 when unpartitioned.
    pub fn partition_count(&self) -> u32 {
        self.parts.len() as u32
    }

    /// The partition `actor` lives in (0 when unpartitioned): see [`PartitionKey`].
    pub fn partition_of<'a>(&self, actor: impl Into<ActorKey<'a>>) -> u32 {
        self.key
            .partition_of(actor.into().actor_id, self.partition_count())
    }

    /// Whether the (unpartitioned) stream allows purges.
    pub(super) fn parts_purgeable(&self) -> bool {
        self.parts.len() == 1 && self.parts[0].purgeable()
    }

    /// The stream of `actor`'s partition.
    pub(super) fn part(&self, actor: ActorKey<'_>) -> &Arc<StreamStore> {
        if self.parts.len() == 1 {
            return &self.parts[0];
        }
        let index = self
            .key
            .partition_of(actor.actor_id, self.partition_count()) as usize;
        &self.parts[index.min(self.parts.len() - 1)]
    }

    /// The stream of partition `index`, if there is one.
    pub(crate) fn partition(&self, index: u32) -> Option<&Arc<StreamStore>> {
        self.parts.get(index as usize)
    }

    /// The subject an actor's events are stored on (an id alone names the untyped actor), in
    /// its partition's stream.
    pub fn event_subject<'a>(&self, actor: impl Into<ActorKey<'a>>) -> String {
        let actor = actor.into();
        self.part(actor).event_subject(actor)
    }

    /// The subject an actor's snapshots are stored on (an id alone names the untyped actor),
    /// in its partition's stream.
    pub fn snapshot_subject<'a>(&self, actor: impl Into<ActorKey<'a>>) -> String {
        let actor = actor.into();
        self.part(actor).snapshot_subject(actor)
    }

    /// How many malformed messages reads have met so far (skipped by
    /// [`get_events`](EventStore::get_events), reported by
    /// [`get_events_with_errors`](EventStoreWithErrors::get_events_with_errors)).
    pub fn malformed_events(&self) -> u64 {
        self.parts.iter().map(|p| p.malformed_events()).sum()
    }

    /// How many messages this store's reads of the global order
    /// ([`EventLog`](aether_core::EventLog)) have received from the server, over every
    /// partition: what a projection over some types or shards costs the server, since only
    /// what the filter selects is delivered. A page resumes at the message the previous one
    /// ended with (a batch may hold more events after the position), so each page after the
    /// first reads one message again.
    pub fn log_messages_read(&self) -> u64 {
        self.parts.iter().map(|p| p.log_messages_read()).sum()
    }

    /// The latest version this store has seen for the actor, from memory, without asking the
    /// server (`None` when the actor is not cached). May lag behind other writers.
    pub fn cached_latest_version<'a>(&self, actor: impl Into<ActorKey<'a>>) -> Option<u64> {
        let actor = actor.into();
        self.part(actor).cached_latest_version(actor)
    }

    /// The current info (configuration and state) of the stream holding the events, from the
    /// server; of partition 0's stream when partitioned (see
    /// [`stream_infos`](Self::stream_infos)).
    ///
    /// # Errors
    /// Backend errors as typed variants.
    pub async fn stream_info(&self) -> Result<async_nats::jetstream::stream::Info> {
        self.parts[0].stream_info().await
    }

    /// The current info of every partition's stream, in partition order.
    ///
    /// # Errors
    /// Backend errors as typed variants.
    pub async fn stream_infos(&self) -> Result<Vec<async_nats::jetstream::stream::Info>> {
        futures::future::try_join_all(self.parts.iter().map(|p| p.stream_info())).await
    }

    /// The JetStream context the store uses.
    pub fn context(&self) -> &Context {
        self.parts[0].context()
    }

    /// Where each partition's stream leader is, and which servers hold a current replica that
    /// could lead it (none on a single server).
    ///
    /// # Errors
    /// Backend errors as typed variants.
    pub async fn partition_leaders(&self) -> Result<Vec<PartitionLeader>> {
        let infos = self.stream_infos().await?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(k, info)| {
                let cluster = info.cluster.unwrap_or_default();
                PartitionLeader {
                    partition: k as u32,
                    stream: info.config.name,
                    leader: cluster.leader,
                    followers: cluster
                        .replicas
                        .into_iter()
                        .filter(|r| r.current && !r.offline)
                        .map(|r| r.name)
                        .collect(),
                }
            })
            .collect())
    }

    /// Spreads the partitions' stream leaders over the cluster's servers, so that no server
    /// leads more than its share (the partitions over the servers, rounded up) while others
    /// only follow: asks each leader over its share to step down in favour of the least loaded
    /// server holding a current replica ([`leaders::plan`](crate::leaders::plan)), and returns
    /// the moves asked for (none on a single server or a balanced cluster). The server elects
    /// the new leaders in the next moments; call it again to check. nats-server honours the
    /// preferred server from 2.11; older ones elect any follower.
    ///
    /// Leaders drift after servers restart; run this (or `aether leaders --spread`)
    /// after maintenance. See `docs/jetstream.md` ("Partitioned log").
    ///
    /// # Errors
    /// Backend errors as typed variants; a step-down the server refuses is
    /// [`Error::Backend`] naming the stream.
    pub async fn spread_leaders(&self) -> Result<Vec<LeaderMove>> {
        let moves = leaders::plan(&self.partition_leaders().await?);
        for m in &moves {
            let body = serde_json::json!({ "placement": { "preferred": m.to } });
            let response: serde_json::Value = self
                .context()
                .request(format!("STREAM.LEADER.STEPDOWN.{}", m.stream), &body)
                .await
                .map_err(|e| {
                    Error::unavailable(format!("asking the leader of {} to step down", m.stream), e)
                })?;
            if let Some(error) = response.get("error") {
                return Err(Error::backend(
                    format!("moving the leader of {} to {}", m.stream, m.to),
                    error.to_string(),
                ));
            }
            tracing::info!(stream = %m.stream, from = %m.from, to = %m.to, "moved a partition's leader");
        }
        Ok(moves)
    }

    /// The refusal of a whole-log read on a partitioned store.
    fn whole_log_refused(&self) -> Error {
        Error::invalid(format!(
            "the event log of {} is spread over {} partitions and has no single order: read \
             each of EventLog::partitions() from its own position",
            self.base_name,
            self.parts.len()
        ))
    }
}

/// Refuses to start a partitioned store next to an unpartitioned stream of the same name that
/// holds events: they would be invisible to it, which is a lost history, not a fresh start.
/// A stream that cannot be looked up (absent, or not ours to read) is no obstacle.
async fn check_no_unpartitioned_history(context: &Context, base_name: &str) -> Result<()> {
    let Ok(mut stream) = context.get_stream(base_name).await else {
        return Ok(());
    };
    let Ok(info) = stream.info().await else {
        return Ok(());
    };
    if info.state.messages > 0 {
        return Err(Error::invalid(format!(
            "stream {base_name} holds {} messages of an unpartitioned store with this name; a \
             partitioned store would not see them. The partition count is fixed when the \
             streams are created: open it without partitions, or use another stream name or \
             namespace",
            info.state.messages
        )));
    }
    Ok(())
}

#[async_trait]
impl EventStore for JetStreamEventStore {
    async fn save_event(&self, event: &Event) -> Result<()> {
        self.part(event.actor_key()).save_event(event).await
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        // The batch's own actor decides: `validate_batch` (in the stream's path) refuses events
        // of other actors.
        let actor = events
            .first()
            .map_or(ActorKey::untyped(actor_id), |e| e.actor_key());
        self.part(actor).save_events(actor_id, events).await
    }

    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        let hot = self.part(actor).events_of(actor, from_version).await?;
        self.with_archived(actor, from_version, hot).await
    }

    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.part(actor).latest_version_of(actor).await
    }

    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        let actor = ActorKey::untyped(actor_id);
        self.part(actor).get_latest_version(actor_id).await
    }

    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        let actor = ActorKey::untyped(actor_id);
        let hot = self.part(actor).get_events(actor_id, from_version).await?;
        self.with_archived(actor, from_version, hot).await
    }

    /// All or nothing within one partition; a transaction whose actors live in different
    /// partitions fails with [`Error::CrossPartition`] before anything is sent.
    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        let Some(first) = transaction.appends().first() else {
            return self.parts[0].commit(transaction).await;
        };
        let part = self.partition_of(first.actor_key());
        let spans = transaction
            .appends()
            .iter()
            .any(|a| self.partition_of(a.actor_key()) != part);
        if spans {
            transaction.validate()?;
            return Err(CrossPartitionError {
                transaction_id: transaction.id().to_string(),
                actors: transaction
                    .appends()
                    .iter()
                    .map(|a| {
                        let actor = a.actor_key();
                        (partition::describe(actor), self.partition_of(actor))
                    })
                    .collect(),
            }
            .into());
        }
        self.parts[part as usize].commit(transaction).await
    }
}

#[async_trait]
impl EventStoreWithErrors for JetStreamEventStore {
    async fn events_with_errors_of(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        let mut read = self
            .part(actor)
            .events_with_errors_of(actor, from_version)
            .await?;
        read.events = self
            .with_archived(actor, from_version, std::mem::take(&mut read.events))
            .await?;
        Ok(read)
    }
}

#[async_trait]
impl SnapshotStore for JetStreamEventStore {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.part(snapshot.actor_key())
            .save_snapshot(snapshot)
            .await
    }

    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        self.part(actor).latest_snapshot_of(actor).await
    }

    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &ReplayStart,
    ) -> Result<SnapshotAndEvents> {
        let mut read = self
            .part(actor)
            .snapshot_and_events_of(actor, start)
            .await?;
        read.events = self
            .with_archived(actor, read.from_version, std::mem::take(&mut read.events))
            .await?;
        Ok(read)
    }
}

/// Unpartitioned, the store's log is its stream's order: the position of an event is the
/// stream sequence of its message and its index in it (a `save_events` batch is one message).
/// Snapshot messages share the stream but are skipped, so sequences have gaps. A message that
/// does not decode is skipped and counted, as [`get_events`](EventStore::get_events) does.
///
/// Partitioned, each partition's stream is such a log of its own
/// ([`partitions`](EventLog::partitions)), and reads of the whole fail with
/// [`Error::InvalidInput`].
#[async_trait]
impl EventLog for JetStreamEventStore {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        match self.parts.as_slice() {
            [one] => one.read_after(after, max).await,
            _ => Err(self.whole_log_refused()),
        }
    }

    async fn head(&self) -> Result<Option<LogPosition>> {
        match self.parts.as_slice() {
            [one] => one.head().await,
            _ => Err(self.whole_log_refused()),
        }
    }

    /// The server delivers only the messages of the filter's types and of the buckets that
    /// can hold its shard's actors ([`aether_placement::buckets_of_shard`]); servers before
    /// 2.10 take one filter subject per consumer, so there a filter needing several reads
    /// every event and keeps the wanted types here. Untyped subjects carry no type or bucket:
    /// a read of every type, or of the declared legacy type, gets all of them.
    async fn read_filtered(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        match self.parts.as_slice() {
            [one] => one.read_filtered(after, max, filter).await,
            _ => Err(self.whole_log_refused()),
        }
    }

    fn partitions(&self) -> Vec<Arc<dyn EventLog>> {
        if self.parts.len() == 1 {
            return Vec::new();
        }
        self.parts
            .iter()
            .map(|p| Arc::clone(p) as Arc<dyn EventLog>)
            .collect()
    }
}
