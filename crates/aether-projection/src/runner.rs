//! Running a projection: read the global order from the checkpoint, decode, handle with
//! retries, park what keeps failing, checkpoint, follow live writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec, RetryPolicy};
use aether_core::{BoxError, Error, Event, EventLog, LogPosition, LoggedEvent, Metadata, Result};
use aether_placement::validate_name;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{ParkedEvent, PositionKeeper, ProjectionStore, ReportedStatus};

/// An event handed to a projection's handler: the typed event and where it comes from. The
/// actor and version identify it, so an idempotent sink can ignore a redelivery (delivery is
/// at least once: after a crash, the events since the last checkpoint come again).
#[derive(Debug, Clone, PartialEq)]
pub struct Projected<E> {
    /// The name its position is kept under: the projection's name, or `<name>.p<partition>`
    /// in a partitioned projection (see [`ProjectionWorker`](crate::ProjectionWorker)). A sink
    /// that keeps its own position ([`SinkPosition::Kept`]) keeps one per name.
    pub projection: Arc<str>,
    /// Its position in the store's global order.
    pub position: LogPosition,
    /// The actor.
    pub actor_id: String,
    /// Its version in the actor's history.
    pub version: u64,
    /// The stored event's id.
    pub event_id: String,
    /// When it was stored.
    pub timestamp: DateTime<Utc>,
    /// Its metadata (correlation, causation, user...).
    pub metadata: Metadata,
    /// The typed event.
    pub event: E,
}

/// Where a sink stands, for exactly-once delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkPosition {
    /// The sink keeps no position: the projection's store keeps the checkpoint, and delivery
    /// is at least once.
    NotKept,
    /// The sink stores the position of each event it applies (`Projected::position`) in the
    /// same transaction as the update, and this is the last one (`None`: none applied yet).
    /// The projection resumes from it, so every event is applied exactly once.
    Kept(Option<LogPosition>),
}

/// What a projection does with each event: update a read model.
#[async_trait]
pub trait Handler<E>: Send + Sync {
    /// Applies one event. An error is retried under the projection's retry policy, then the
    /// event is parked (or the projection stops, see [`OnFailure`]).
    ///
    /// # Errors
    /// Any error the sink has; it is recorded in the status and with a parked event.
    async fn handle(&self, event: &Projected<E>) -> std::result::Result<(), BoxError>;

    /// The position the sink has applied up to under the name `projection` (see
    /// [`Projected::projection`]), if it keeps one with its updates (see [`SinkPosition`]).
    /// The default keeps none.
    ///
    /// # Errors
    /// Any error reading it; the projection retries after its poll interval.
    async fn position(&self, projection: &str) -> std::result::Result<SinkPosition, BoxError> {
        let _ = projection;
        Ok(SinkPosition::NotKept)
    }
}

/// A handler error that parks the event at once, without retries: for an event that will
/// never succeed (a malformed address, a webhook that answers "gone").
///
/// ```
/// use aether_core::BoxError;
/// use aether_projection::Park;
///
/// fn send_mail(to: &str) -> Result<(), BoxError> {
///     if !to.contains('@') {
///         return Err(Park::new(format!("{to:?} is not an address")).into());
///     }
///     Ok(())
/// }
/// assert!(send_mail("nobody").unwrap_err().is::<Park>());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parked: {0}")]
pub struct Park(pub String);

impl Park {
    /// Parks the event with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// In which order events are handed to the handler when several are handled at once
/// ([`ProjectionConfig::concurrency`] above 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Each actor's events one after the other, in their order; different actors at once.
    #[default]
    PerActor,
    /// Any order: every event of a page at once (up to the concurrency).
    Any,
}

/// What to do with an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Set it aside (list and replay it later) and go on with the next event.
    #[default]
    Park,
    /// Stop the projection at it; it is handled again when the projection runs again.
    Stop,
}

/// Settings of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionConfig {
    /// Events read per page (and the most handled between two checkpoints).
    pub page_size: usize,
    /// Events handled at once within a page (1: one after the other, in the global order).
    /// Above 1 the page is checkpointed once all its events are handled or parked, and
    /// [`order`](Self::order) says what stays in order. A sink that keeps its own position
    /// ([`SinkPosition::Kept`]) needs 1.
    pub concurrency: usize,
    /// What stays in order when `concurrency` is above 1.
    pub order: Order,
    /// How long to wait before looking for new events once caught up.
    pub poll_interval: Duration,
    /// Retries of a failing handler before the event is parked.
    pub retry: RetryPolicy,
    /// Park or stop.
    pub on_failure: OnFailure,
    /// How often a projection whose sink keeps its position ([`SinkPosition::Kept`]) reports
    /// its status to the projection store ([`ProjectionStore::report_status`]), so that
    /// operators' tools see it although it writes no checkpoint: at most once per interval
    /// while it runs (an idle one too, so the report's age shows it is alive), and once at the
    /// end of [`Projection::catch_up`].
    pub status_interval: Duration,
}

impl ProjectionConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a page size or concurrency of 0.
    pub fn validate(&self) -> Result<()> {
        if self.page_size == 0 {
            return Err(Error::invalid("the page size must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("the concurrency must be at least 1"));
        }
        Ok(())
    }
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            page_size: 500,
            concurrency: 1,
            order: Order::PerActor,
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy::default().max_retries(3),
            on_failure: OnFailure::Park,
            status_interval: Duration::from_secs(1),
        }
    }
}

/// Where a projection is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The last event it handled or parked (its checkpoint, or the position its sink keeps),
    /// `None` before the first.
    pub position: Option<LogPosition>,
    /// Whether its sink keeps the position ([`SinkPosition::Kept`]): it then writes no
    /// checkpoint and reports its status to the store instead
    /// ([`ProjectionConfig::status_interval`]). Known from its first look at the log.
    pub kept_by_sink: bool,
    /// The last stored message when it last looked (`None`: the log was empty, or it has not
    /// looked yet; [`lag`](Self::lag) tells which).
    pub head: Option<LogPosition>,
    /// Stored messages after its position when it last looked (`Some(0)`: caught up). `None`
    /// until it has read the log's head: right after it starts, how far behind it is is not
    /// known. While it handles a page, the page's events count as not yet handled, so a lag
    /// of 0 means everything up to the head was handled (or parked).
    pub lag: Option<u64>,
    /// How far behind the newest event it handled is, by the events' timestamps (zero when
    /// caught up; `None`, like `lag`, until it has looked).
    pub lag_time: Option<Duration>,
    /// Events handled since it started (successfully: parked events are not counted here).
    pub handled: u64,
    /// Events parked since it started.
    pub parked: u64,
    /// The last handler or read error.
    pub last_error: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
}

/// What [`Projection::catch_up`] did: events read, handled and parked, separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatchUpReport {
    /// Events read from the log: handled, parked, or (in a partition) another partition's.
    pub read: u64,
    /// Events the handler applied.
    pub handled: u64,
    /// Events set aside (see [`OnFailure::Park`]): not applied.
    pub parked: u64,
}

impl CatchUpReport {
    fn add(&mut self, other: Self) {
        self.read += other.read;
        self.handled += other.handled;
        self.parked += other.parked;
    }
}

/// What became of one event.
enum Outcome {
    Handled,
    Parked,
}

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
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    handler: Arc<dyn Handler<E>>,
    codec: EventCodec<E>,
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
        Ok(Self {
            status: Mutex::new(ProjectionStatus {
                name: id.to_string(),
                ..ProjectionStatus::default()
            }),
            id,
            partition,
            name,
            log,
            store,
            handler,
            codec,
            config,
            paused: watch::channel(false).0,
            cursor: Mutex::new(None),
            reported: Mutex::new(None),
        })
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

    /// One page: read after the checkpoint, handle, checkpoint. Says how many events it read
    /// (0: nothing new), handled and parked.
    async fn step(
        &self,
        stop: &CancellationToken,
    ) -> std::result::Result<CatchUpReport, StepError> {
        let kept = match self.handler.position(&self.id).await {
            Ok(p) => p,
            Err(e) => {
                return Err(StepError::Read(Error::backend(
                    format!("reading the position of projection {}'s sink", self.id),
                    e,
                )))
            }
        };
        if kept != SinkPosition::NotKept && self.config.concurrency > 1 {
            return Err(StepError::Stopped(Error::invalid(format!(
                "projection {}: a sink that keeps its own position needs a concurrency of 1",
                self.id
            ))));
        }
        let from = match kept {
            SinkPosition::NotKept => self
                .store
                .checkpoint(&self.id)
                .await
                .map_err(StepError::Read)?,
            SinkPosition::Kept(p) => p,
        };
        let cursor = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let from = from.max(cursor);
        let page = self
            .log
            .read_after(from, self.config.page_size)
            .await
            .map_err(StepError::Read)?;
        let head = self.log.head().await.map_err(StepError::Read)?;
        let Some(last) = page.last().map(|l| l.position) else {
            let mut status = self.lock_status();
            status.position = from;
            status.kept_by_sink = kept != SinkPosition::NotKept;
            status.head = head;
            status.lag = Some(lag(from, head));
            status.lag_time = Some(Duration::ZERO);
            export(&status);
            return Ok(CatchUpReport::default());
        };
        {
            // The page is not handled yet: until it is, the lag counts it (a lag of 0 while
            // half of it is applied would tell a reader the read model is complete).
            let mut status = self.lock_status();
            status.kept_by_sink = kept != SinkPosition::NotKept;
            status.head = head;
            status.lag = Some(lag(from, head));
            if status.lag_time.is_none() {
                status.lag_time = page.first().map(|l| {
                    (Utc::now() - l.event.timestamp)
                        .to_std()
                        .unwrap_or_default()
                });
            }
        }
        let mut newest: Option<DateTime<Utc>> = None;
        let mut handled_to = from;
        let mut report = CatchUpReport::default();
        if self.config.concurrency == 1 {
            for logged in &page {
                // Paused or stopped: checkpoint what was handled and let the caller decide.
                if *self.paused.borrow() || stop.is_cancelled() {
                    break;
                }
                if self.mine(logged) {
                    match self.handle_one(logged).await? {
                        Outcome::Handled => report.handled += 1,
                        Outcome::Parked => report.parked += 1,
                    }
                }
                report.read += 1;
                handled_to = Some(logged.position);
                newest = Some(logged.event.timestamp);
            }
        } else {
            let (handled, parked) = self.handle_page(&page).await?;
            report = CatchUpReport {
                read: page.len() as u64,
                handled,
                parked,
            };
            handled_to = Some(last);
            newest = page.last().map(|l| l.event.timestamp);
        }
        if let Some(position) = handled_to.filter(|p| Some(*p) != from) {
            *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some(position);
            if kept == SinkPosition::NotKept {
                self.store
                    .save_checkpoint(&self.id, position)
                    .await
                    .map_err(StepError::Read)?;
            }
        }
        let mut status = self.lock_status();
        status.position = handled_to;
        status.head = head;
        let behind = lag(handled_to, head);
        status.lag = Some(behind);
        status.lag_time = Some(match (handled_to == Some(last), behind, newest) {
            (true, 0, _) | (_, _, None) => Duration::ZERO,
            (_, _, Some(t)) => (Utc::now() - t).to_std().unwrap_or_default(),
        });
        export(&status);
        Ok(report)
    }

    /// Whether the event belongs to this projection (always, unless it is a partition).
    fn mine(&self, logged: &LoggedEvent) -> bool {
        match self.partition {
            None => true,
            Some((p, n)) => aether_placement::shard_for(&logged.event.actor_id, n) == p,
        }
    }

    /// Handles a page's events at once, up to the configured concurrency: each actor's events
    /// in order ([`Order::PerActor`]) or all at once ([`Order::Any`]). Returns once every
    /// event is handled or parked, with how many of each; the first error that stops the
    /// projection wins.
    async fn handle_page(
        &self,
        page: &[LoggedEvent],
    ) -> std::result::Result<(u64, u64), StepError> {
        // Chains of indices into the page (owned, so the futures borrow only `page`).
        let mine = (0..page.len()).filter(|&i| self.mine(&page[i]));
        let chains: Vec<Vec<usize>> = match self.config.order {
            Order::Any => mine.map(|i| vec![i]).collect(),
            Order::PerActor => {
                let mut by_actor: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for i in mine {
                    by_actor.entry(&page[i].event.actor_id).or_default().push(i);
                }
                by_actor.into_values().collect()
            }
        };
        let outcomes: Vec<std::result::Result<(u64, u64), StepError>> =
            futures::stream::iter(chains)
                .map(|chain| async move {
                    let (mut handled, mut parked) = (0, 0);
                    for i in chain {
                        match self.handle_one(&page[i]).await? {
                            Outcome::Handled => handled += 1,
                            Outcome::Parked => parked += 1,
                        }
                    }
                    Ok((handled, parked))
                })
                .buffer_unordered(self.config.concurrency)
                .collect()
                .await;
        let mut total = (0, 0);
        for outcome in outcomes {
            let (handled, parked) = outcome?;
            total = (total.0 + handled, total.1 + parked);
        }
        Ok(total)
    }

    fn decode(
        &self,
        event: &Event,
        position: LogPosition,
    ) -> std::result::Result<Projected<E>, String> {
        let typed = self.codec.decode(event).map_err(|e| e.to_string())?;
        Ok(Projected {
            projection: self.id.clone(),
            position,
            actor_id: event.actor_id.clone(),
            version: event.version,
            event_id: event.id.clone(),
            timestamp: event.timestamp,
            metadata: event.metadata.clone(),
            event: typed,
        })
    }

    async fn handle_one(&self, logged: &LoggedEvent) -> std::result::Result<Outcome, StepError> {
        let (error, attempts) = match self.decode(&logged.event, logged.position) {
            // A payload that does not decode fails the same way every time: no retries.
            Err(e) => (e, 1),
            Ok(projected) => {
                let mut attempts = 0;
                let outcome = self
                    .config
                    .retry
                    .run(
                        |_| {
                            attempts += 1;
                            self.handler.handle(&projected)
                        },
                        // A handler that says "park" is not retried.
                        |e: &BoxError| !e.is::<Park>(),
                    )
                    .await;
                match outcome {
                    Ok(()) => {
                        self.lock_status().handled += 1;
                        metrics::counter!("aether_projection_handled_total", "projection" => self.id.to_string())
                            .increment(1);
                        return Ok(Outcome::Handled);
                    }
                    Err(e) => (e.to_string(), attempts),
                }
            }
        };
        tracing::warn!(
            projection = %self.id,
            position = %logged.position,
            actor_id = %logged.event.actor_id,
            version = logged.event.version,
            error = %error,
            "projection could not handle an event"
        );
        self.lock_status().last_error = Some(error.clone());
        match self.config.on_failure {
            OnFailure::Stop => Err(StepError::Stopped(Error::backend(
                format!(
                    "projection {} stopped at {} (actor {:?}, version {})",
                    self.id, logged.position, logged.event.actor_id, logged.event.version
                ),
                error,
            ))),
            OnFailure::Park => {
                let parked = ParkedEvent {
                    position: logged.position,
                    event: logged.event.clone(),
                    error,
                    attempts,
                };
                self.store
                    .park(&self.id, &parked)
                    .await
                    .map_err(StepError::Read)?;
                self.lock_status().parked += 1;
                metrics::counter!("aether_projection_parked_total", "projection" => self.id.to_string())
                    .increment(1);
                Ok(Outcome::Parked)
            }
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ProjectionStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum StepError {
    /// Reading the log or the store failed: retried.
    Read(Error),
    /// The handler failed and the projection is configured to stop.
    Stopped(Error),
}

/// A projection's lag: the stored messages between its `position` and the log's `head` (an
/// upper bound on events: snapshot messages and batches count once).
///
/// ```
/// use aether_core::LogPosition;
/// assert_eq!(aether_projection::lag(Some(LogPosition::new(7, 0)), Some(LogPosition::new(10, 2))), 3);
/// assert_eq!(aether_projection::lag(None, Some(LogPosition::new(4, 0))), 4);
/// assert_eq!(aether_projection::lag(None, None), 0);
/// ```
pub fn lag(position: Option<LogPosition>, head: Option<LogPosition>) -> u64 {
    match (position, head) {
        (_, None) => 0,
        (None, Some(h)) => h.sequence,
        (Some(p), Some(h)) => h.sequence.saturating_sub(p.sequence),
    }
}

/// Hands a projection's position and lag to the metrics exporter:
/// `aether_projection_position{projection}` (the checkpoint's stream sequence),
/// `aether_projection_lag{projection}` (stored messages behind) and
/// `aether_projection_lag_seconds{projection}`; the lag only once known.
fn export(status: &ProjectionStatus) {
    let name = status.name.clone();
    let position = status.position.map_or(0, |p| p.sequence);
    metrics::gauge!("aether_projection_position", "projection" => name.clone())
        .set(position as f64);
    if let Some(lag) = status.lag {
        metrics::gauge!("aether_projection_lag", "projection" => name.clone()).set(lag as f64);
    }
    if let Some(lag_time) = status.lag_time {
        metrics::gauge!("aether_projection_lag_seconds", "projection" => name)
            .set(lag_time.as_secs_f64());
    }
}
