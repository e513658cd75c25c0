//! A local view of every actor's latest version ([`LatestVersions`]), kept current by a watch
//! on the stream and answering reads with bounded staleness.
//!
//! Three parts: `Shared` (module `shared`: the map and the freshness stamp that readers use,
//! lock-free on the read path), `Confirmations` (module `confirmations`, I/O-free: which
//! confirmation rounds the watch has caught up with), and `Watch` (module `watch`, the task: an
//! ordered push consumer on the events subjects plus a periodic confirmation round, both driven
//! from one `select!` loop). This module holds the view readers use.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aether_core::{ActorKey, Error, EventStore, Result};
use aether_nats::backend::classify;
use aether_nats::subject::validate_actor_id;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::JetStreamEventStore;

mod confirmations;
mod shared;
mod watch;

use shared::Shared;
use watch::Watch;

/// A local view of the latest version of every actor in one store's stream, kept current by a
/// watch on the stream, answering [`get_latest_version`](Self::get_latest_version) from memory
/// when it can prove it is fresh enough and from the store otherwise.
///
/// [`JetStreamEventStore::get_latest_version`](aether_core::EventStore::get_latest_version)
/// is one round trip to the server (on one server it sees every acknowledged save; on a
/// replicated stream a replica may answer from behind, though one store's reads never go
/// backwards). This view trades a bounded, documented staleness for a read that is a map
/// lookup.
///
/// # How it stays current
/// - **Watch.** An ordered push consumer on `<stream>.events.*`, starting with the last message
///   of every actor (`DeliverPolicy::LastPerSubject`, so the initial load is one message per
///   actor), then every new message in stream order. The version of a message is its
///   `Aether-Version` header, or, for messages written without it, the last version in its
///   payload (one event or an array). A message that decodes to neither is skipped and counted
///   in [`malformed_messages`](Self::malformed_messages); the watch goes on.
/// - **Confirmation.** Every `max_staleness / 2`, the view notes the time `t0`, then asks the
///   stream leader for the last message on `<stream>.events.*` (its sequence `S`) and the
///   stream's creation time. Once the watch has applied every message up to `S`, the view is
///   *current as of `t0`*. Snapshot messages share the stream but are not in the filter, which
///   is why `S` is the last *event* message and not the stream's last sequence.
/// - **Reads.** A read starting at `now` answers from the map when the view was current as of
///   some `t0 >= now - max_staleness`; otherwise it calls the store's `get_latest_version`
///   (counted in [`fallbacks`](Self::fallbacks)) and folds the answer into the map.
///
/// # Guarantee
/// For a read that starts at time `now` and returns `Ok(v)`:
/// - `v` reflects every save of that actor acknowledged (to any writer, in any process) before
///   `now - max_staleness`, and whatever the view has seen since: `v` is at least the version
///   of each of those saves.
/// - `v` is a version that was stored (or 0 when the actor had no events): the view never
///   invents or predicts one.
/// - Per view, answers never go backwards: a read that starts after another returned answers
///   at least what that one did. Versions in the map only grow, and a fallback's answer is
///   folded in.
///
/// Times are this process's monotonic clock; no clock agreement between machines is assumed.
/// When the view cannot confirm (server paused or unreachable, watch lagging more than
/// `max_staleness / 2`), reads fall back, and fail as the store fails
/// ([`Error::Unavailable`] when the server cannot be reached) rather than answer from a map
/// that is older than the bound.
///
/// On a partitioned store the view watches and confirms each partition's stream on its own
/// (one consumer and one confirmation round per partition), and answers for an actor from its
/// partition's part, with the same guarantee.
///
/// Exceptions, by design: if the stream is deleted and created again, the view notices at its
/// next confirmation (the creation time changed), empties the map and loads the new stream, so
/// versions can go back then, as the stream itself did. With a `max_age`, versions of actors
/// whose events have aged out stay in the view (the store then answers 0).
///
/// # Costs
/// One ephemeral consumer (removed by the server 30 s after the view stops), every event
/// message delivered to this process, two requests per `max_staleness / 2`, and memory for
/// every actor id in the stream. Fallbacks use the store's read, so open the store without
/// [`with_cached_reads`](JetStreamEventStore::with_cached_reads) for them to ask the server.
///
/// # Stopping
/// The view's task stops when the view is dropped or [`shutdown`](Self::shutdown) is awaited
/// (which also waits for the task to finish).
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use aether_core::{Event, EventStore};
/// use aether_store::{JetStreamConfig, JetStreamEventStore, LatestVersions};
///
/// # async fn run() -> aether_core::Result<()> {
/// let store = Arc::new(
///     JetStreamEventStore::connect("nats://127.0.0.1:4222", JetStreamConfig::default()).await?,
/// );
/// let view = LatestVersions::start(Arc::clone(&store), Duration::from_millis(500)).await?;
/// store.save_event(&Event::new("OrderPlaced", "order-1", 1)).await?;
/// // At least every version acknowledged more than 500 ms ago; never one that was not stored.
/// let version = view.get_latest_version("order-1").await?;
/// assert!(version <= 1);
/// view.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct LatestVersions {
    store: Arc<JetStreamEventStore>,
    /// One part per partition of the store, in partition order.
    parts: Vec<Arc<Shared>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for LatestVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestVersions")
            .field("stream_name", &self.store.stream_name())
            .field("partitions", &self.parts.len())
            .field("max_staleness", &self.max_staleness())
            .field("current", &self.is_current())
            .field("actors", &self.actors())
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

impl LatestVersions {
    /// The smallest staleness bound accepted: below it a confirmation round (two requests to
    /// the server) could not complete within the bound even on loopback.
    pub const MIN_STALENESS: Duration = Duration::from_millis(1);

    /// Starts a view of `store`'s streams that answers with at most `max_staleness` of
    /// staleness (see the type's docs for the exact guarantee).
    ///
    /// Returns once the watches are set up; the initial load goes on in the background, and
    /// reads fall back to the store until it is done and confirmed. Choose `max_staleness`
    /// well above a round trip to the server (two requests must complete within half of it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `max_staleness` is below
    /// [`MIN_STALENESS`](Self::MIN_STALENESS);
    /// [`Error::NotFound`] when a stream is gone; [`Error::Unavailable`] when the server
    /// does not answer; other backend errors as typed variants.
    pub async fn start(store: Arc<JetStreamEventStore>, max_staleness: Duration) -> Result<Self> {
        if max_staleness < Self::MIN_STALENESS {
            return Err(Error::invalid(format!(
                "max_staleness of {max_staleness:?} is below the minimum of {:?}",
                Self::MIN_STALENESS
            )));
        }
        let cancel = CancellationToken::new();
        let mut view = Self {
            store: Arc::clone(&store),
            parts: Vec::new(),
            cancel: cancel.clone(),
            tasks: Vec::new(),
        };
        // Dropping `view` on an error below stops the watches already started.
        for stream_name in store.stream_names() {
            let stream_name = stream_name.to_string();
            let context = store.context().clone();
            let stream = context
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| classify(format!("opening stream {stream_name}"), e))?;
            // The creation time tells this incarnation of the stream from a later one of the
            // same name (see `Watch::on_round`).
            let info = stream
                .get_info()
                .await
                .map_err(|e| classify(format!("reading info of stream {stream_name}"), e))?;
            let shared = Arc::new(Shared::new(max_staleness));
            let (watch, first) = Watch::start(
                stream,
                context.client(),
                stream_name.clone(),
                store.config().legacy_actor_type.clone(),
                info.created.unix_timestamp_nanos(),
                Arc::clone(&shared),
            )
            .await?;
            let span = tracing::info_span!("latest_versions", stream = %stream_name);
            view.tasks.push(tokio::spawn(
                watch.run(first, cancel.clone()).instrument(span),
            ));
            view.parts.push(shared);
        }
        Ok(view)
    }

    /// The part of the view that watches `actor`'s partition.
    fn part(&self, actor: ActorKey<'_>) -> &Arc<Shared> {
        let index = self.store.partition_of(actor) as usize;
        &self.parts[index.min(self.parts.len().saturating_sub(1))]
    }

    /// The latest version of `actor_id` (0 when it has no events), with the guarantee in the
    /// type's docs: from the view when it was confirmed current within `max_staleness`,
    /// otherwise from the store (counted in [`fallbacks`](Self::fallbacks)).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an actor id the store does not accept; when the read falls
    /// back, the store's errors ([`Error::Unavailable`] when the server cannot be reached).
    pub async fn get_latest_version<'a>(&self, actor: impl Into<ActorKey<'a>>) -> Result<u64> {
        let actor = actor.into();
        validate_actor_id(actor.actor_id)?;
        if let Some(t) = actor.actor_type {
            aether_core::validate_actor_type(t)?;
        }
        let now = Instant::now();
        let index = self.store.partition_of(actor);
        let (Some(stream), Some(shared)) =
            (self.store.partition(index), self.parts.get(index as usize))
        else {
            return Err(Error::invalid(format!(
                "actor {actor} maps to partition {index}, which this view does not watch"
            )));
        };
        if let Some(version) = stream.subjects.with_key(actor, |k| shared.answer(k, now)) {
            return Ok(version);
        }
        let key = stream.subjects.key(actor);
        shared.fallbacks.fetch_add(1, Ordering::Relaxed);
        let version = self.store.latest_version_of(actor).await?;
        // Folding the answer in keeps later answers from the map from going below it while
        // the watch catches up. An unknown actor is not inserted: lookups of ids that do not
        // exist must not grow the map.
        if version == 0 {
            return Ok(shared.version(&key));
        }
        Ok(shared.raise(key, version))
    }

    /// Whether a read starting now would answer from the view: every partition's part was
    /// confirmed current as of a moment no more than `max_staleness` ago.
    pub fn is_current(&self) -> bool {
        let now = Instant::now();
        self.parts.iter().all(|p| p.fresh(now))
    }

    /// Whether a read of `actor` starting now would answer from the view.
    pub fn is_current_for<'a>(&self, actor: impl Into<ActorKey<'a>>) -> bool {
        self.part(actor.into()).fresh(Instant::now())
    }

    /// The staleness bound the view was started with.
    pub fn max_staleness(&self) -> Duration {
        self.parts
            .first()
            .map_or(Duration::ZERO, |p| p.max_staleness)
    }

    /// How many reads went to the store because the view was not confirmed current.
    pub fn fallbacks(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.fallbacks.load(Ordering::Relaxed))
            .sum()
    }

    /// How many messages on the events subjects the watch skipped because neither their header
    /// nor their payload gave a version (or their subject names no actor).
    pub fn malformed_messages(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.malformed.load(Ordering::Relaxed))
            .sum()
    }

    /// How many actors the view knows.
    pub fn actors(&self) -> usize {
        self.parts.iter().map(|p| p.versions.len()).sum()
    }

    /// Stops the watches and waits for their tasks to finish. Dropping the view stops them
    /// too, without waiting.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "the latest-versions watch panicked");
                }
            }
        }
    }
}

impl Drop for LatestVersions {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
