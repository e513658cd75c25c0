//! The store: its struct, how it is opened and configured, the permission guard every public
//! operation runs under, and the [`EventStore`] face that routes each operation to its path.
//!
//! The paths themselves live in child modules so each can be read on its own: `append` (saves
//! and the optimistic-concurrency loop), `read` (the actor's last message and tip), `replay`
//! (streaming an actor's history), `snapshot` (the snapshot subject), and `errors` (the
//! helpers that sort client errors and permission refusals).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use aether_core::{
    validate_batch, ActorKey, Error, Event, EventStore, EventStoreWithErrors, ReplayResult, Result,
    Transaction,
};
use aether_nats::backend::classify;
pub(super) use aether_nats::backend::server_older_than;
use aether_nats::subject::validate_actor_id;
use aether_nats::PermissionWatch;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_trait::async_trait;
use dashmap::DashMap;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub(crate) use self::errors::dooms;
use super::codec;
use super::config::JetStreamConfig;
use super::setup;
use super::subject::Subjects;

mod append;
mod batch;
pub(crate) mod compact;
mod errors;
mod log;
mod publish;
mod read;
mod replay;
mod snapshot;
#[cfg(test)]
mod tests;
mod transaction;

pub use transaction::MAX_TRANSACTION_EVENTS;

/// How often a save is retried when the server rejects it because another writer appended an
/// earlier version in the meantime (the attempted version is still above the current one).
const MAX_PUBLISH_ATTEMPTS: usize = 16;
/// How often an operation that failed without an answer (timeout, lost connection) is retried
/// before the error is returned. Reads are idempotent, and a save is safe to repeat because
/// the server admits at most one publish per expected sequence.
const MAX_TRANSIENT_RETRIES: u32 = 1;
/// Wait before the first retry; it doubles with each further one.
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between retries of a transient failure.
const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(2);

/// Checks an actor can be stored: its id under the length policy, its type a valid name.
fn check_actor(actor: ActorKey<'_>) -> Result<()> {
    validate_actor_id(actor.actor_id)?;
    match actor.actor_type {
        Some(t) => aether_core::validate_actor_type(t),
        None => Ok(()),
    }
}

/// What reading the actor's last message told: the tip, and what is needed to find the id of
/// the last event in it.
#[derive(Debug, Clone, Default)]
struct TipRead {
    tip: Tip,
    /// The id from the message's header, when it has one.
    header_id: Option<String>,
    /// The message's payload, for the id when no header has it (only decoded when asked).
    payload: Option<bytes::Bytes>,
}

impl TipRead {
    /// The id of the last event of the actor's last message, if it can be read.
    fn last_event_id(&self, owner: codec::Owner<'_>) -> Option<String> {
        if let Some(id) = &self.header_id {
            return Some(id.clone());
        }
        let payload = self.payload.as_ref()?;
        codec::decode_message(owner, self.tip.seq, payload)
            .ok()?
            .pop()
            .map(|e| e.id)
    }
}

/// The actor's last stored message: its stream sequence and the last version in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tip {
    seq: u64,
    version: u64,
}

/// One stream of the store: the whole log of an unpartitioned store, or one partition of a
/// partitioned one ([`JetStreamEventStore`](super::super::JetStreamEventStore) routes each
/// actor to its partition's `StreamStore`). Everything about a single stream lives here: the
/// concurrency checks, the caches, the reads, the transactions.
pub(crate) struct StreamStore {
    client: async_nats::Client,
    context: Context,
    stream: Stream,
    stream_name: String,
    pub(crate) subjects: Subjects,
    direct: bool,
    // Fast, randomly seeded hashing: the warm latest-version lookup is one map probe.
    cache: DashMap<String, Tip, foldhash::fast::RandomState>,
    cached_reads: AtomicBool,
    malformed: AtomicU64,
    /// Messages the global-order reads received from the server.
    log_messages: AtomicU64,
    /// Set once, when the store is opened on a connection (or given a watch).
    permissions: OnceLock<PermissionWatch>,
    /// Best-effort clean-up of replay consumers, off the callers' path.
    cleanups: TaskTracker,
    /// Whether the stream is known to allow atomic batch publish (transactions).
    atomic: AtomicBool,
    /// Whether the stream has more than one replica: then a refused publish may still have
    /// been stored (by the real leader, while a deposed one refused it), and the store checks.
    replicated: bool,
    /// The stream allows purges (a compactable history).
    purgeable: bool,
    /// On a replicated stream, the highest stream sequence this store has seen of each actor
    /// (written, read or replayed). Unlike the tip cache it is never dropped on an error, so
    /// a read answered by a replica that is behind it can always be told and sent to the
    /// leader: one store's reads never go backwards.
    seen: DashMap<String, u64, foldhash::fast::RandomState>,
}

impl fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamStore")
            .field("stream_name", &self.stream_name)
            .field("direct_get", &self.direct)
            .field("cached_actors", &self.cache.len())
            .field("cached_reads", &self.cached_reads.load(Ordering::Relaxed))
            .field("malformed_events", &self.malformed_events())
            .field("pending_cleanups", &self.cleanups.len())
            .finish()
    }
}

impl StreamStore {
    /// Opens (creating it when missing) the stream `stream_name`: the whole log, or
    /// partition `.0` of `.1`.
    pub(crate) async fn open_stream(
        context: Context,
        config: JetStreamConfig,
        stream_name: String,
        partition: Option<(u32, u32)>,
    ) -> Result<Self> {
        if config.replica_count() > 1 {
            let version = context.client().server_info().version;
            if server_older_than(&version, 2, 11) {
                if !config.allow_replication_on_old_servers {
                    return Err(Error::invalid(format!(
                        "a replicated event stream ({} replicas) needs nats-server 2.11 or later; \
                         this server is {version}, on which a leader change can lose acknowledged \
                         events or accept one version twice. Upgrade the servers, use one \
                         replica, or set allow_replication_on_old_servers to accept the risk",
                        config.replica_count()
                    )));
                }
                tracing::warn!(
                    server_version = %version,
                    stream = %stream_name,
                    "replicated event streams on nats-server before 2.11 can lose acknowledged \
                     writes or accept one version twice across leader changes; upgrade the servers"
                );
            }
        }
        if let Some(t) = &config.legacy_actor_type {
            aether_core::validate_actor_type(t)?;
        }
        let subjects = Subjects::new(&stream_name, config.legacy_actor_type.clone());
        // Servers from 2.12 can append atomically across actors (transactions).
        let atomic_capable = !server_older_than(&context.client().server_info().version, 2, 12);
        let desired =
            setup::desired_config(&stream_name, &subjects, &config, atomic_capable, partition);
        let stream =
            setup::ensure_stream(&context, desired, config.legacy_actor_type.is_some()).await?;
        let direct = stream.cached_info().config.allow_direct;
        let atomic = stream.cached_info().config.allow_atomic_publish;
        let replicated = stream.cached_info().config.num_replicas > 1;
        let purgeable = !stream.cached_info().config.deny_purge;
        Ok(Self {
            client: context.client(),
            context,
            stream,
            stream_name,
            subjects,
            direct,
            cache: DashMap::default(),
            cached_reads: AtomicBool::new(false),
            malformed: AtomicU64::new(0),
            log_messages: AtomicU64::new(0),
            permissions: OnceLock::new(),
            cleanups: TaskTracker::new(),
            atomic: AtomicBool::new(atomic),
            replicated,
            purgeable,
            seen: DashMap::default(),
        })
    }

    /// Whether the stream allowed purges when the store opened it: a compactable stream,
    /// whatever the config of the store that reads it.
    pub(crate) fn purgeable(&self) -> bool {
        self.purgeable
    }

    /// Uses `watch` for permission refusals (see
    /// [`JetStreamEventStore::with_permission_watch`](super::super::JetStreamEventStore::with_permission_watch));
    /// the first watch set stays.
    pub(crate) fn set_permission_watch(&self, watch: PermissionWatch) {
        if self.permissions.set(watch).is_err() {
            tracing::debug!(stream = %self.stream_name, "a permission watch was already set");
        }
    }

    /// Lets the latest-version read answer from the cache (see
    /// [`JetStreamEventStore::with_cached_reads`](super::super::JetStreamEventStore::with_cached_reads)).
    pub(crate) fn set_cached_reads(&self, on: bool) {
        self.cached_reads.store(on, Ordering::Relaxed);
    }

    /// The JetStream stream holding the events (namespace prefix included).
    pub(crate) fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The subject an actor's events are stored on (an id alone names the untyped actor).
    pub(crate) fn event_subject<'a>(&self, actor: impl Into<ActorKey<'a>>) -> String {
        self.subjects.events(actor.into())
    }

    /// The subject an actor's snapshots are stored on (an id alone names the untyped actor).
    pub(crate) fn snapshot_subject<'a>(&self, actor: impl Into<ActorKey<'a>>) -> String {
        self.subjects.snapshots(actor.into())
    }

    /// How many malformed messages reads have met so far (skipped by
    /// [`get_events`](EventStore::get_events), reported by
    /// [`get_events_with_errors`](EventStoreWithErrors::get_events_with_errors)).
    pub(crate) fn malformed_events(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// How many messages this store's reads of the global order
    /// ([`EventLog`](aether_core::EventLog)) have received from the server: what a projection
    /// over some types or shards costs the server, since only what the filter selects is
    /// delivered. A page resumes at the message the previous one ended with (a batch may hold
    /// more events after the position), so each page after the first reads one message again.
    pub(crate) fn log_messages_read(&self) -> u64 {
        self.log_messages.load(Ordering::Relaxed)
    }

    /// The latest version this store has seen for the actor, from memory, without asking the
    /// server (`None` when the actor is not cached). May lag behind other writers.
    pub(crate) fn cached_latest_version<'a>(&self, actor: impl Into<ActorKey<'a>>) -> Option<u64> {
        self.subjects
            .with_key(actor.into(), |k| self.cache.get(k).map(|t| t.version))
    }

    /// The stream's current info from the server (configuration and state).
    ///
    /// # Errors
    /// Backend errors as typed variants.
    pub(crate) async fn stream_info(&self) -> Result<async_nats::jetstream::stream::Info> {
        self.stream
            .get_info()
            .await
            .map_err(|e| classify(format!("reading info of stream {}", self.stream_name), e))
    }

    /// The JetStream context the store uses.
    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    /// Runs `op`, operation `name` on behalf of `actor_id` (or the whole stream), in a span
    /// naming them and under the permission watch: NATS never answers a refused request, so
    /// without the watch the operation would wait for its timeout and report `Unavailable`; a
    /// refusal of a subject the operation depends on ([`dooms`]) fails it at once with
    /// [`Error::PermissionDenied`].
    async fn guard<T>(
        &self,
        name: &'static str,
        actor: Option<ActorKey<'_>>,
        writes: bool,
        what: impl Fn() -> String,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::info_span!(
            "store",
            op = name,
            stream = %self.stream_name,
            actor_type = actor.and_then(|a| a.actor_type),
            actor_id = actor.map(|a| a.actor_id)
        );
        // On the heap once: the wrappers below (and the caller's future) then move a pointer,
        // not the operation's whole state machine, which every call would copy and allocate.
        let op = Box::pin(crate::metrics::timed("jetstream", name, op));
        let Some(watch) = self.permissions.get() else {
            return op.instrument(span).await;
        };
        // The actor's subjects are only needed when the server reports a refusal, which is
        // rare: build them then, not on every operation.
        let dooms_op = |_, subject: &str| {
            let subjects = actor.map(|a| (self.subjects.events(a), self.subjects.snapshots(a)));
            let own = subjects.as_ref().map(|(e, s)| (e.as_str(), s.as_str()));
            dooms(subject, &self.stream_name, own, writes)
        };
        watch.guard(what, dooms_op, None, op).instrument(span).await
    }
}

impl StreamStore {
    /// The latest version of `actor`: from the cache when cached reads are on, else one
    /// direct get of its last message.
    async fn latest_version_now(&self, actor: ActorKey<'_>) -> Result<u64> {
        check_actor(actor)?;
        if self.cached_reads.load(Ordering::Relaxed) {
            if let Some(v) = self.cached_latest_version(actor) {
                return Ok(v);
            }
        }
        let read = self
            .guard(
                "get_latest_version",
                Some(actor),
                false,
                || format!("reading the latest version of actor {actor}"),
                self.read_tip(actor, false),
            )
            .await?;
        Ok(read.tip.version)
    }
}

#[async_trait]
impl EventStore for StreamStore {
    async fn save_event(&self, event: &Event) -> Result<()> {
        event.validate()?;
        let actor = event.actor_key();
        let result = self
            .guard(
                "save_event",
                Some(actor),
                true,
                || format!("saving an event of actor {actor}"),
                self.append(actor, std::slice::from_ref(event)),
            )
            .await;
        crate::metrics::saved("jetstream", 1, &result);
        result
    }

    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        validate_batch(actor_id, events)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let actor = first.actor_key();
        let result = self
            .guard(
                "save_events",
                Some(actor),
                true,
                || format!("saving events of actor {actor}"),
                self.append(actor, events),
            )
            .await;
        crate::metrics::saved("jetstream", events.len(), &result);
        result
    }

    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        let result = self.guarded_replay(actor, from_version).await?;
        self.count_malformed(actor, &result);
        Ok(result.events)
    }

    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.latest_version_now(actor).await
    }

    // The id-only reads are overridden (not left to the trait's defaults) so that a call
    // boxes one future, not two: the warm latest-version read is a map lookup.
    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        self.latest_version_now(ActorKey::untyped(actor_id)).await
    }

    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        self.events_of(ActorKey::untyped(actor_id), from_version)
            .await
    }

    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        transaction.validate()?;
        let first = transaction.appends().first().map(|a| a.actor_key());
        let result = self
            .guard(
                "commit",
                first,
                true,
                || format!("committing transaction {}", transaction.id()),
                self.commit_transaction(transaction),
            )
            .await;
        let events = transaction.appends().iter().map(|a| a.events.len()).sum();
        crate::metrics::saved("jetstream", events, &result);
        result
    }
}

#[async_trait]
impl EventStoreWithErrors for StreamStore {
    async fn events_with_errors_of(
        &self,
        actor: ActorKey<'_>,
        from_version: u64,
    ) -> Result<ReplayResult> {
        let result = self.guarded_replay(actor, from_version).await?;
        self.malformed
            .fetch_add(result.errors.len() as u64, Ordering::Relaxed);
        Ok(result)
    }
}
