//! Running a projection: read the global order from the checkpoint, decode, handle with
//! retries, park what keeps failing, checkpoint, follow live writes.
//!
//! - this module: [`Projection`], how it is made, controlled (pause, resume, reset, parked
//!   events) and run (catch up, follow live writes, report its status).
//! - `step`: one page: read, handle (at once or in order), retry, park, checkpoint.
//! - `handler`: [`Handler`], [`Projected`], [`SinkPosition`], [`Park`].
//! - `config`: [`ProjectionConfig`], [`Order`], [`OnFailure`].
//! - `status`: [`ProjectionStatus`], [`CatchUpReport`], [`lag`], the exported metrics.

use std::sync::{Arc, Mutex};

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{EventLog, LogFilter, LogPosition, Result};

use crate::by_type::ActorEvents;
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
/// ignore them. Events that do not decode (a payload that fits no version of `E`) or whose
/// handler keeps failing are parked (see [`OnFailure`]).
pub struct Projection<E> {
    name: String,
    /// The name its checkpoint and parked events are kept under: `name`, or
    /// `<name>.p<partition>` for a partition.
    id: Arc<str>,
    /// `(partition, partitions)`: handle only the actors of this shard.
    partition: Option<(u32, u32)>,
    /// What the projection reads of the log: its actor types (all when none are named) and
    /// its partition's shard, selected by the store where it can.
    filter: LogFilter,
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    handler: Arc<dyn Handler<E>>,
    codec: EventCodec<E>,
    /// Decoding by actor type, when the projection reads several types' events.
    by_type: Option<ActorEvents<E>>,
    config: ProjectionConfig,
    status: Mutex<ProjectionStatus>,
    paused: watch::Sender<bool>,
    /// Past the last event handled or parked in this run: a sink that keeps its own position
    /// stays behind a parked event, which must not be read again and again.
    cursor: Mutex<Option<LogPosition>>,
    /// When the status was last reported to the store (sink-kept positions only).
    reported: Mutex<Option<Instant>>,
}

impl<E> std::fmt::Debug for Projection<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<E: DomainEvent> Projection<E> {
    /// A projection named `name` (letters, digits, `-` and `_`) of the events in `log`,
    /// decoded with `codec` (its upcasters applied), handled by `handler`, with its state in
    /// `store`.
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
        Self::build(name.into(), None, log, store, handler, codec, config)
    }

    /// One partition of a partitioned projection: the actors whose shard among `partitions`
    /// is `partition`, checkpointed as `<name>.p<partition>`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn partition(
        name: String,
        partition: u32,
        partitions: u32,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
    ) -> Result<Self> {
        Self::build(
            name,
            Some((partition, partitions)),
            log,
            store,
            handler,
            codec,
            config,
        )
    }

    fn build(
        name: String,
        partition: Option<(u32, u32)>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        handler: Arc<dyn Handler<E>>,
        codec: EventCodec<E>,
        config: ProjectionConfig,
    ) -> Result<Self> {
        // The name goes into key-value keys and checkpoint names.
        validate_name("projection name", &name)?;
        config.validate()?;
        let id: Arc<str> = match partition {
            None => name.as_str().into(),
            Some((p, _)) => format!("{name}.p{p}").into(),
        };
        let filter = LogFilter {
            actor_types: Vec::new(),
            shard: partition,
        };
        Ok(Self {
            status: Mutex::new(ProjectionStatus {
                name: id.to_string(),
                ..ProjectionStatus::default()
            }),
            id,
            partition,
            filter,
            name,
            log,
            store,
            handler,
            codec,
            by_type: None,
            config,
            paused: watch::channel(false).0,
            cursor: Mutex::new(None),
            reported: Mutex::new(None),
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
    /// `<name>.p<partition>` for a partition of a partitioned projection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it is.
    pub fn status(&self) -> ProjectionStatus {
        self.lock_status().clone()
    }

    /// Stops handling events after the current one, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.paused.send_replace(true);
        self.lock_status().paused = true;
    }

    /// Goes on after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.send_replace(false);
        self.lock_status().paused = false;
    }

    /// Forgets the checkpoint, so that the projection handles every event again from the start
    /// (into a fresh read model: clear the sink first). Do it while the projection is not
    /// running.
    ///
    /// # Errors
    /// Store errors.
    pub async fn reset(&self) -> Result<()> {
        self.store.clear_checkpoint(&self.id).await?;
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut status = self.lock_status();
        status.position = None;
        // Not known again until it next looks at the log.
        status.lag = None;
        status.lag_time = None;
        Ok(())
    }

    /// The parked events.
    ///
    /// # Errors
    /// Store errors.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>> {
        self.store.parked(&self.id).await
    }

    /// Handles every parked event again (once each, after a fix); those that succeed are
    /// removed from the parked list. Returns how many succeeded.
    ///
    /// # Errors
    /// Store errors; a parked event that fails again stays parked with its new error.
    pub async fn replay_parked(&self) -> Result<usize> {
        let mut done = 0;
        for mut parked in self.store.parked(&self.id).await? {
            let outcome = match self.decode(&parked.event, parked.position) {
                Ok(projected) => self
                    .handler
                    .handle(&projected)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            tracing::info!(
                projection = %self.id,
                position = %parked.position,
                ok = outcome.is_ok(),
                "replayed a parked event"
            );
            match outcome {
                Ok(()) => {
                    self.store.unpark(&self.id, parked.position).await?;
                    done += 1;
                }
                Err(e) => {
                    parked.error = e;
                    parked.attempts += 1;
                    self.store.park(&self.id, &parked).await?;
                }
            }
        }
        Ok(done)
    }

    /// Runs until `shutdown` is cancelled: catches up, then follows live writes. Read errors
    /// are recorded in the status and retried after the poll interval.
    ///
    /// # Errors
    /// Only when configured to stop on a failing event ([`OnFailure::Stop`]): the handler's
    /// error, as [`Error::Backend`].
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut paused = self.paused.subscribe();
        loop {
            if *paused.borrow_and_update() {
                self.report_status(false).await;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = paused.changed() => continue,
                    // A paused projection still reports that it is paused.
                    () = tokio::time::sleep(self.config.status_interval) => continue,
                }
            }
            let progressed = match self.step(&shutdown).await {
                Ok(step) => step.read > 0,
                Err(StepError::Stopped(e)) => {
                    self.report_status(true).await;
                    return Err(e);
                }
                Err(StepError::Read(e)) => {
                    tracing::warn!(projection = %self.id, error = %e, "projection read failed; retrying");
                    self.lock_status().last_error = Some(e.to_string());
                    false
                }
            };
            self.report_status(false).await;
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !progressed {
                self.replay_if_requested().await;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = paused.changed() => {}
                }
            }
        }
    }

    /// Replays the parked events if an operator asked for it through the store
    /// ([`ProjectionStore::request_replay`]); errors are recorded in the status.
    pub(crate) async fn replay_if_requested(&self) {
        let outcome = match self.store.take_replay_request(&self.id).await {
            Ok(false) => return,
            Ok(true) => self.replay_parked().await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(projection = %self.id, error = %e, "replaying parked events failed");
            self.lock_status().last_error = Some(e.to_string());
        }
    }

    /// Handles what is stored now and says how many events it read, handled and parked: a
    /// rebuild, or a test. Returns early, with what it did so far, when paused.
    ///
    /// # Errors
    /// Read and store errors; with [`OnFailure::Stop`], the failing handler's error.
    pub async fn catch_up(&self) -> Result<CatchUpReport> {
        let mut total = CatchUpReport::default();
        let never = CancellationToken::new();
        let outcome = loop {
            match self.step(&never).await {
                Ok(step) if step.read == 0 => break Ok(total),
                Ok(step) => {
                    total.add(step);
                    self.report_status(false).await;
                }
                Err(StepError::Stopped(e) | StepError::Read(e)) => break Err(e),
            }
        };
        // Where a rebuild ended is worth reporting at once: nothing may run after it.
        self.report_status(true).await;
        outcome
    }

    /// Reports the status to the store if the sink keeps the position (the store has no
    /// checkpoint to show then) and the last report is older than the status interval, or at
    /// once with `now`. A failure is logged: the projection goes on.
    async fn report_status(&self, now: bool) {
        // Checked before copying the status: this runs after every page.
        if !self.lock_status().kept_by_sink {
            return;
        }
        {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            let due = match *reported {
                None => true,
                Some(at) => now || at.elapsed() >= self.config.status_interval,
            };
            if !due {
                return;
            }
            *reported = Some(Instant::now());
        }
        let status = self.status();
        let report = ReportedStatus {
            position_kept_by: PositionKeeper::Sink,
            position: status.position,
            head: status.head,
            lag: status.lag,
            handled: status.handled,
            parked: status.parked,
            last_error: status.last_error,
            paused: status.paused,
            reported_at: Utc::now(),
            interval_ms: u64::try_from(self.config.status_interval.as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(e) = self.store.report_status(&self.id, &report).await {
            tracing::warn!(projection = %self.id, error = %e, "reporting the projection's status failed");
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ProjectionStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
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
