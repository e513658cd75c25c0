//! Running a projection: read the global order from the checkpoint, decode, handle with
//! retries, park what keeps failing, checkpoint, follow live writes.
//!
//! - this module: [`Projection`], how it is made, controlled (pause, resume, reset, parked
//!   events) and run (catch up, follow live writes, report its status), and its lanes: one
//!   per independent log it reads (the log, or each partition of a partitioned log), each
//!   with its own position, checkpoint, parked events and status.
//! - `step`: one page: read, handle (at once or in order), retry, park, checkpoint.
//! - `handler`: [`Handler`], [`Projected`], [`SinkPosition`], [`Park`].
//! - `config`: [`ProjectionConfig`], [`Order`], [`OnFailure`].
//! - `status`: [`ProjectionStatus`], [`CatchUpReport`], [`lag`], the exported metrics.

use std::sync::{Arc, Mutex};

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{EventLog, LogFilter, LogPosition, Result};

use crate::by_type::ActorEvents;
use crate::CheckpointName;
use aether_placement::validate_name;
use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{ParkedEvent, PositionKeeper, ProjectionStore, ReportedStatus};
#[cfg(doc)]
use aether_core::Error;

mod config;
mod handler;
mod status;
mod step;

pub use config::{OnFailure, Order, ProjectionConfig};
pub use handler::{Handler, Park, Projected, SinkPosition};
pub use status::{lag, CatchUpReport, ProjectionStatus};
use step::StepError;

/// A named, checkpointed consumer of every actor's events in the store's global order: it
/// catches up from its checkpoint, then follows live writes, with no gap and no duplicate at
/// the boundary (it always reads after the last position it handled).
///
/// Delivery is at least once: the checkpoint is saved after each page, so after a crash the
/// events of the unfinished page are handed over again; handlers use the actor and version to
/// ignore them.
///
/// On a partitioned log ([`EventLog::partitions`]: actors spread over several independent
/// logs, each with its own positions) it reads every partition at once, each from its own
/// checkpoint (`<name>.l<k>` for partition `k`, see
/// [`checkpoint_names`](Self::checkpoint_names)): each actor's events still come in order,
/// but there is no order across partitions (an event of one actor may be handled before an
/// event of another that was stored earlier in another partition). Events that do not decode (a payload that fits no version of `E`) or whose
/// handler keeps failing are parked (see [`OnFailure`]).
pub struct Projection<E> {
    name: String,
    /// The name its checkpoint and parked events are kept under: `name`, or
    /// `<name>.p<partition>` for a partition (`<name>.l<l>.p<partition>` for a partition of
    /// log partition `l`). On a partitioned log each lane has its own name.
    id: Arc<str>,
    /// `(partition, partitions)`: handle only the actors of this shard.
    partition: Option<(u32, u32)>,
    /// What the projection reads of the log: its actor types (all when none are named) and
    /// its partition's shard, selected by the store where it can.
    filter: LogFilter,
    /// The independent logs it reads, each from its own position: the log itself, or each
    /// partition of a partitioned log.
    lanes: Vec<Lane>,
    store: Arc<dyn ProjectionStore>,
    handler: Arc<dyn Handler<E>>,
    codec: EventCodec<E>,
    /// Decoding by actor type, when the projection reads several types' events.
    by_type: Option<ActorEvents<E>>,
    config: ProjectionConfig,
    paused: watch::Sender<bool>,
}

/// One independent log a projection reads with its own position, checkpoint, parked events
/// and status: the whole log when it is one order, or one partition of a partitioned log.
pub(crate) struct Lane {
    pub(crate) log: Arc<dyn EventLog>,
    /// The name its checkpoint, parked events and sink position are kept under.
    pub(crate) id: Arc<str>,
    pub(crate) status: Mutex<ProjectionStatus>,
    /// Past the last event handled or parked in this run: a sink that keeps its own position
    /// stays behind a parked event, which must not be read again and again.
    pub(crate) cursor: Mutex<Option<LogPosition>>,
    /// When the status was last reported to the store (sink-kept positions only).
    pub(crate) reported: Mutex<Option<Instant>>,
}

impl Lane {
    fn new(log: Arc<dyn EventLog>, id: Arc<str>) -> Self {
        Self {
            log,
            status: Mutex::new(ProjectionStatus {
                name: id.to_string(),
                ..ProjectionStatus::default()
            }),
            id,
            cursor: Mutex::new(None),
            reported: Mutex::new(None),
        }
    }

    pub(crate) fn lock_status(&self) -> std::sync::MutexGuard<'_, ProjectionStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_cursor(&self) -> std::sync::MutexGuard<'_, Option<LogPosition>> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<E> std::fmt::Debug for Projection<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .field("log_partitions", &self.lanes.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<E: DomainEvent> Projection<E> {
    /// A projection named `name` (letters, digits, `-` and `_`) of the events in `log`,
    /// decoded with `codec` (its upcasters applied), handled by `handler`, with its state in
    /// `store`.
    ///
    /// On a partitioned log ([`aether_core::log_partitions`] gives more than one) it reads
    /// each partition concurrently from its own checkpoint, kept under `<name>.l<k>` for
    /// partition `k`; on a log that is one order, under `<name>`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, or a page size or concurrency of 0.
    pub fn new(
        name: impl Into<String>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
    ) -> Result<Self> {
        let name = name.into();
        // Checked before it goes into the lanes' names.
        validate_name("projection name", &name)?;
        let parts = log_parts(&log);
        let lanes = if parts.len() == 1 {
            vec![Lane::new(log, name.as_str().into())]
        } else {
            parts
                .into_iter()
                .enumerate()
                .map(|(l, part)| {
                    let l = lane_index(l)?;
                    Ok(Lane::new(part, log_partition_id(&name, l).into()))
                })
                .collect::<Result<Vec<_>>>()?
        };
        let id: Arc<str> = name.as_str().into();
        Self::build(name, id, None, lanes, store, handler, codec, config)
    }

    /// One partition of a partitioned projection over one log partition: the actors whose
    /// shard among `partitions` is `partition`, read from `log` (the log, or log partition
    /// `l` of it), checkpointed as `id` (`<name>.p<partition>` on a log that is one order,
    /// `<name>.l<l>.p<partition>` on a partitioned one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn unit(
        name: String,
        id: String,
        partition: u32,
        partitions: u32,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
    ) -> Result<Self> {
        validate_name("projection name", &name)?;
        let id: Arc<str> = id.into();
        let lanes = vec![Lane::new(log, id.clone())];
        Self::build(
            name,
            id,
            Some((partition, partitions)),
            lanes,
            store,
            handler,
            codec,
            config,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: String,
        id: Arc<str>,
        partition: Option<(u32, u32)>,
        lanes: Vec<Lane>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
    ) -> Result<Self> {
        config.validate()?;
        let filter = LogFilter {
            actor_types: Vec::new(),
            shard: partition,
        };
        Ok(Self {
            id,
            partition,
            filter,
            name,
            lanes,
            store,
            handler,
            codec,
            by_type: None,
            config,
            paused: watch::channel(false).0,
        })
    }

    /// Reads only the events of actors of `types` (every actor when none are given): the
    /// store selects them where it can (the JetStream store on the server), so a projection
    /// of one type in five reads about a fifth of the log. Events of other types are neither
    /// decoded nor parked. Changing the types of a projection that has run needs a rebuild
    /// from the start: its checkpoint has moved past the events it did not read.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a name that is not an actor type
    /// ([`aether_core::validate_actor_type`]).
    pub fn actor_types<I, S>(mut self, types: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filter.actor_types = validated_types(types)?;
        Ok(self)
    }

    /// Decodes each event with the codec of the actor type that wrote it and reads only those
    /// types (see [`ActorEvents`]): the way to project several types' events into one enum.
    /// The codec given to [`new`](Self::new) is then not used.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `events` names no type.
    pub fn decode_by_type(mut self, events: ActorEvents<E>) -> Result<Self> {
        if events.types().is_empty() {
            return Err(aether_core::Error::invalid(
                "decoding by actor type needs at least one actor type",
            ));
        }
        self.filter.actor_types = validated_types(events.types())?;
        self.by_type = Some(events);
        Ok(self)
    }

    /// The actor types the projection reads (empty: every actor).
    pub fn types(&self) -> &[String] {
        &self.filter.actor_types
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name its checkpoint and parked events are kept under: its name, or
    /// `<name>.p<partition>` for a partition of a partitioned projection
    /// (`<name>.l<l>.p<partition>` on log partition `l`). On a partitioned log each log
    /// partition has a name of its own: see [`checkpoint_names`](Self::checkpoint_names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many independent logs it reads, each from its own position: the number of
    /// partitions of a partitioned log, 1 for a log that is one order.
    pub fn log_partitions(&self) -> usize {
        self.lanes.len()
    }

    /// The names its checkpoints, parked events and sink positions are kept under, one per
    /// log partition in order: `[id]` on a log that is one order, `<name>.l<k>` for
    /// partition `k` of a partitioned log.
    pub fn checkpoint_names(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.id.to_string()).collect()
    }

    /// Where it is. On a partitioned log, the sum over its log partitions: events handled
    /// and parked, and the lag, summed (known once every partition's is); the largest time
    /// lag; no single `position` or `head` (each partition has its own: see
    /// [`partition_status`](Self::partition_status)).
    pub fn status(&self) -> ProjectionStatus {
        let paused = *self.paused.borrow();
        if let [lane] = self.lanes.as_slice() {
            let mut status = lane.lock_status().clone();
            status.paused = paused;
            return status;
        }
        let parts = self.partition_status();
        ProjectionStatus {
            name: self.id.to_string(),
            position: None,
            kept_by_sink: parts.iter().any(|s| s.kept_by_sink),
            head: None,
            lag: parts.iter().map(|s| s.lag).sum(),
            lag_time: parts
                .iter()
                .map(|s| s.lag_time)
                .collect::<Option<Vec<_>>>()
                .map(|t| t.into_iter().max().unwrap_or_default()),
            handled: parts.iter().map(|s| s.handled).sum(),
            parked: parts.iter().map(|s| s.parked).sum(),
            last_error: parts.iter().find_map(|s| s.last_error.clone()),
            paused,
        }
    }

    /// The status of each log partition it reads, in order, each named after its checkpoint
    /// (one entry, equal to [`status`](Self::status), on a log that is one order).
    pub fn partition_status(&self) -> Vec<ProjectionStatus> {
        let paused = *self.paused.borrow();
        self.lanes
            .iter()
            .map(|lane| {
                let mut status = lane.lock_status().clone();
                status.paused = paused;
                status
            })
            .collect()
    }

    /// Stops handling events after the current one (in every log partition), until
    /// [`resume`](Self::resume).
    pub fn pause(&self) {
        self.paused.send_replace(true);
        for lane in &self.lanes {
            lane.lock_status().paused = true;
        }
    }

    /// Goes on after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.send_replace(false);
        for lane in &self.lanes {
            lane.lock_status().paused = false;
        }
    }

    /// Forgets the checkpoint (of every log partition), so that the projection handles every
    /// event again from the start (into a fresh read model: clear the sink first). Do it
    /// while the projection is not running.
    ///
    /// # Errors
    /// Store errors.
    pub async fn reset(&self) -> Result<()> {
        for lane in &self.lanes {
            self.store.clear_checkpoint(&lane.id).await?;
            *lane.lock_cursor() = None;
            let mut status = lane.lock_status();
            status.position = None;
            // Not known again until it next looks at the log.
            status.lag = None;
            status.lag_time = None;
        }
        Ok(())
    }

    /// The parked events: of each log partition in turn, each in order (a position is one
    /// partition's own; [`ProjectionStore::parked`] of a name of
    /// [`checkpoint_names`](Self::checkpoint_names) gives one partition's).
    ///
    /// # Errors
    /// Store errors.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>> {
        let mut out = Vec::new();
        for lane in &self.lanes {
            out.extend(self.store.parked(&lane.id).await?);
        }
        Ok(out)
    }

    /// Handles every parked event again (once each, after a fix), in every log partition;
    /// those that succeed are removed from the parked list. Returns how many succeeded.
    ///
    /// # Errors
    /// Store errors; a parked event that fails again stays parked with its new error.
    pub async fn replay_parked(&self) -> Result<usize> {
        let mut done = 0;
        for lane in &self.lanes {
            done += self.replay_lane(lane).await?;
        }
        Ok(done)
    }

    async fn replay_lane(&self, lane: &Lane) -> Result<usize> {
        let mut done = 0;
        for mut parked in self.store.parked(&lane.id).await? {
            let outcome = match self.decode(lane, &parked.event, parked.position) {
                Ok(projected) => self
                    .handler
                    .handle(&projected)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            tracing::info!(
                projection = %lane.id,
                position = %parked.position,
                ok = outcome.is_ok(),
                "replayed a parked event"
            );
            match outcome {
                Ok(()) => {
                    self.store.unpark(&lane.id, parked.position).await?;
                    done += 1;
                }
                Err(e) => {
                    parked.error = e;
                    parked.attempts += 1;
                    self.store.park(&lane.id, &parked).await?;
                }
            }
        }
        Ok(done)
    }

    /// Runs until `shutdown` is cancelled: catches up, then follows live writes; on a
    /// partitioned log, every partition at once, each from its own checkpoint. Read errors
    /// are recorded in the status and retried after the poll interval.
    ///
    /// # Errors
    /// Only when configured to stop on a failing event ([`OnFailure::Stop`]): the handler's
    /// error, as [`Error::Backend`] (the other log partitions stop too).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        if let [lane] = self.lanes.as_slice() {
            return self.run_lane(lane, &shutdown).await;
        }
        // One lane stopping on a failing event stops the others, not the caller's token.
        let stop = shutdown.child_token();
        let runs = self.lanes.iter().map(|lane| {
            let stop = stop.clone();
            async move {
                let outcome = self.run_lane(lane, &stop).await;
                if outcome.is_err() {
                    stop.cancel();
                }
                outcome
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(drop)
    }

    /// One log partition's read loop (see [`run`](Self::run)).
    async fn run_lane(&self, lane: &Lane, shutdown: &CancellationToken) -> Result<()> {
        let mut paused = self.paused.subscribe();
        loop {
            if *paused.borrow_and_update() {
                self.report_status(lane, false).await;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = paused.changed() => continue,
                    // A paused projection still reports that it is paused.
                    () = tokio::time::sleep(self.config.status_interval) => continue,
                }
            }
            let progressed = match self.step(lane, shutdown).await {
                Ok(step) => step.read > 0,
                Err(StepError::Stopped(e)) => {
                    self.report_status(lane, true).await;
                    return Err(e);
                }
                Err(StepError::Read(e)) => {
                    tracing::warn!(projection = %lane.id, error = %e, "projection read failed; retrying");
                    lane.lock_status().last_error = Some(e.to_string());
                    false
                }
            };
            self.report_status(lane, false).await;
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !progressed {
                self.replay_if_requested(lane).await;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = paused.changed() => {}
                }
            }
        }
    }

    /// Replays a log partition's parked events if an operator asked for it through the store
    /// ([`ProjectionStore::request_replay`] of its checkpoint name); errors are recorded in
    /// the status.
    async fn replay_if_requested(&self, lane: &Lane) {
        let outcome = match self.store.take_replay_request(&lane.id).await {
            Ok(false) => return,
            Ok(true) => self.replay_lane(lane).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(projection = %lane.id, error = %e, "replaying parked events failed");
            lane.lock_status().last_error = Some(e.to_string());
        }
    }

    /// Handles what is stored now and says how many events it read, handled and parked
    /// (summed over the log partitions, read at once): a rebuild, or a test. Returns early,
    /// with what it did so far, when paused.
    ///
    /// # Errors
    /// Read and store errors; with [`OnFailure::Stop`], the failing handler's error.
    pub async fn catch_up(&self) -> Result<CatchUpReport> {
        if let [lane] = self.lanes.as_slice() {
            return self.catch_up_lane(lane).await;
        }
        let outcomes =
            futures::future::join_all(self.lanes.iter().map(|lane| self.catch_up_lane(lane))).await;
        let mut total = CatchUpReport::default();
        for outcome in outcomes {
            total.add(outcome?);
        }
        Ok(total)
    }

    async fn catch_up_lane(&self, lane: &Lane) -> Result<CatchUpReport> {
        let mut total = CatchUpReport::default();
        let never = CancellationToken::new();
        let outcome = loop {
            match self.step(lane, &never).await {
                Ok(step) if step.read == 0 => break Ok(total),
                Ok(step) => {
                    total.add(step);
                    self.report_status(lane, false).await;
                }
                Err(StepError::Stopped(e) | StepError::Read(e)) => break Err(e),
            }
        };
        // Where a rebuild ended is worth reporting at once: nothing may run after it.
        self.report_status(lane, true).await;
        outcome
    }

    /// Reports a log partition's status to the store if the sink keeps the position (the
    /// store has no checkpoint to show then) and the last report is older than the status
    /// interval, or at once with `now`. A failure is logged: the projection goes on.
    async fn report_status(&self, lane: &Lane, now: bool) {
        // Checked before copying the status: this runs after every page.
        if !lane.lock_status().kept_by_sink {
            return;
        }
        {
            let mut reported = lane.reported.lock().unwrap_or_else(|e| e.into_inner());
            let due = match *reported {
                None => true,
                Some(at) => now || at.elapsed() >= self.config.status_interval,
            };
            if !due {
                return;
            }
            *reported = Some(Instant::now());
        }
        let status = lane.lock_status().clone();
        let report = ReportedStatus {
            position_kept_by: PositionKeeper::Sink,
            position: status.position,
            head: status.head,
            lag: status.lag,
            handled: status.handled,
            parked: status.parked,
            last_error: status.last_error,
            paused: *self.paused.borrow(),
            reported_at: Utc::now(),
            interval_ms: u64::try_from(self.config.status_interval.as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(e) = self.store.report_status(&lane.id, &report).await {
            tracing::warn!(projection = %lane.id, error = %e, "reporting the projection's status failed");
        }
    }
}

/// The independent logs `log` is made of, as [`aether_core::log_partitions`] gives them:
/// its partitions, or `log` itself when it is one order.
///
/// Asks the log behind the `Arc` (`(**log).partitions()`): called on the `Arc` itself,
/// method resolution picks the forwarding `impl EventLog for Arc<T>`, and the answer would
/// then depend on that impl passing `partitions` on (at first it did not, and every log
/// looked like one order).
pub(crate) fn log_parts(log: &Arc<dyn EventLog>) -> Vec<Arc<dyn EventLog>> {
    let parts = (**log).partitions();
    if parts.is_empty() {
        vec![log.clone()]
    } else {
        parts
    }
}

/// The checkpoint name of log partition `l` of projection `name` on a partitioned log.
pub(crate) fn log_partition_id(name: &str, l: u32) -> String {
    CheckpointName::new(name, Some(l), None).to_string()
}

/// A log partition's index as a `u32`.
pub(crate) fn lane_index(l: usize) -> Result<u32> {
    u32::try_from(l).map_err(|_| aether_core::Error::invalid("too many log partitions"))
}

/// Checks and collects actor type names.
pub(crate) fn validated_types<I, S>(types: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut out: Vec<String> = Vec::new();
    for t in types {
        let t = t.into();
        aether_core::validate_actor_type(&t)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}
