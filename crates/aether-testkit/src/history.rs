//! A history of event-store operations recorded by concurrent clients, and a checker that
//! holds it against what the store holds at the end.
//!
//! Fault tests (partitions, crashes, pauses) cannot predict which writes survive; they can
//! only say which answers were wrong. So every client records each operation twice: when it
//! is invoked and when it completes, with its outcome: acknowledged, conflict, unknown (a
//! timeout, a lost connection: it may or may not have taken effect) or a definite error (it
//! did not take effect). At the end the test reads every actor's stored history and
//! [`check`] verifies, per actor:
//!
//! - every acknowledged append is stored, at its versions ([`Rule::LostWrite`]);
//! - no event id is stored twice ([`Rule::Duplicate`]), and the stored versions increase
//!   ([`Rule::FinalNotIncreasing`]);
//! - no two acknowledged appends claim one version with different events
//!   ([`Rule::ConflictingAcks`]);
//! - an append with an unknown outcome is stored at most once, whole or not at all, and a batch
//!   or transaction is stored whole or not at all ([`Rule::PartialWrite`]);
//! - an append that failed with a conflict or a definite error is absent
//!   ([`Rule::FailedWritePresent`]), and nothing is stored that no one attempted
//!   ([`Rule::Phantom`]);
//! - a read of the latest version returns a version some append that had not failed was
//!   attempting by then ([`Rule::ReadUnattempted`]) and that is still stored at the end
//!   ([`Rule::ReadOfLostVersion`]);
//! - one client's reads never go backwards ([`Rule::MonotonicReads`]);
//! - with [`CheckOptions::linearizable_reads`], a read or replay reflects every append
//!   acknowledged, and every read answered, before it began ([`Rule::StaleRead`]);
//! - every replay is a prefix of the final history ([`Rule::ReplayNotPrefix`]).
//!
//! Time is [`std::time::Instant`], taken under the recorder's lock, so operations of one
//! client and "completed before invoked" comparisons between clients are exact. Recording
//! never holds the lock across an `.await`: invoking and completing are plain method calls.
//! An operation whose completion is never recorded (its task was cancelled) counts as
//! unknown and as never completed.
//!
//! Every write to the actors checked must be recorded, setup included: an event no recorded
//! operation attempted is a [`Rule::Phantom`].
//!
//! # Example
//! ```
//! use aether_testkit::history::{CheckOptions, FinalState, History, Rule};
//!
//! let history = History::new();
//! let alice = history.recorder();
//! let bob = history.recorder();
//!
//! // Alice appends at version 1 and is acknowledged; Bob loses the race for version 1.
//! let a = alice.append("account-1", 1, ["e1"]);
//! let b = bob.append("account-1", 1, ["e2"]);
//! a.ok();
//! b.conflict();
//! // Bob's next try times out: it may or may not have been stored.
//! bob.append("account-1", 2, ["e3"]).unknown();
//! // Alice reads the latest version, then replays the actor.
//! alice.read_version("account-1").ok(2);
//! alice.replay("account-1", 1).ok([(1, "e1"), (2, "e3")]);
//!
//! // What the store holds at the end (read with `get_events(actor, 1)`).
//! let stored = FinalState::new().with_actor("account-1", [(1, "e1"), (2, "e3")]);
//! let report = history.check(&stored, &CheckOptions::default())?;
//! assert_eq!(report.acknowledged, 1);
//! println!("{report}");
//!
//! // Had the store lost Alice's acknowledged write, the checker would say so.
//! let lost = FinalState::new().with_actor("account-1", [(2, "e3")]);
//! let violation = history.check(&lost, &CheckOptions::default()).unwrap_err();
//! assert_eq!(violation.rule, Rule::LostWrite);
//! println!("{violation}");
//! # Ok::<(), aether_testkit::history::Violation>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aether_core::{Error as StoreError, Event, Transaction};
use serde::{Deserialize, Serialize};

/// One client of a history: a sequence of operations, usually one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The events one append writes to one actor, as `(version, event id)` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    /// The actor.
    pub actor: String,
    /// `(version, event id)` of every event, in order.
    pub events: Vec<(u64, String)>,
}

impl Append {
    /// Events with the given ids at consecutive versions from `first_version`.
    pub fn new(
        actor: impl Into<String>,
        first_version: u64,
        event_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            actor: actor.into(),
            events: (first_version..)
                .zip(event_ids.into_iter().map(Into::into))
                .collect(),
        }
    }

    /// The events of a `save_event`/`save_events` call, at their own versions. The actor is
    /// the first event's (a batch is of one actor).
    pub fn of_events(events: &[Event]) -> Self {
        Self {
            actor: events
                .first()
                .map(|e| e.actor_id.clone())
                .unwrap_or_default(),
            events: events.iter().map(|e| (e.version, e.id.clone())).collect(),
        }
    }
}

/// What a client asked the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Append one event or a batch to one actor (`save_event`, `save_events`).
    Append(Append),
    /// Append to several actors, all or nothing (`commit`).
    Transaction(Vec<Append>),
    /// Read an actor's latest version (`get_latest_version`).
    ReadVersion {
        /// The actor.
        actor: String,
    },
    /// Read an actor's events from a version on (`get_events`).
    Replay {
        /// The actor.
        actor: String,
        /// The first version asked for (1 or 0: the whole history).
        from_version: u64,
    },
}

impl Operation {
    /// Whether this writes (an append or a transaction).
    pub fn is_write(&self) -> bool {
        matches!(self, Self::Append(_) | Self::Transaction(_))
    }

    /// The appends this writes (none for reads).
    pub fn appends(&self) -> &[Append] {
        match self {
            Self::Append(a) => std::slice::from_ref(a),
            Self::Transaction(appends) => appends,
            Self::ReadVersion { .. } | Self::Replay { .. } => &[],
        }
    }

    /// `(actor, version, event id)` of every event this writes.
    fn events(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.appends().iter().flat_map(|a| {
            a.events
                .iter()
                .map(move |(v, id)| (a.actor.as_str(), *v, id.as_str()))
        })
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A write was acknowledged: it is stored.
    Ok,
    /// A read of the latest version answered this version.
    Version(u64),
    /// A replay answered these `(version, event id)` pairs.
    Events(Vec<(u64, String)>),
    /// A write was rejected by optimistic concurrency: nothing of it is stored.
    Conflict,
    /// No answer (timeout, lost connection, cancelled): a write may or may not be stored. Also
    /// the outcome of an operation whose completion was never recorded.
    Unknown,
    /// A definite failure: nothing of a write is stored.
    Error(String),
}

impl Outcome {
    /// The outcome a failed store call implies: [`Conflict`](Self::Conflict) for version and
    /// transaction conflicts; [`Error`](Self::Error) for the errors documented as "nothing was
    /// written" ([`StoreError::InvalidInput`], [`StoreError::Unsupported`],
    /// [`StoreError::PayloadTooLarge`], [`StoreError::Encoding`]); [`Unknown`](Self::Unknown)
    /// for everything else, since a backend that failed or did not answer may have stored the
    /// write anyway.
    pub fn of_error(error: &StoreError) -> Self {
        if error.is_version_conflict() || error.as_transaction_conflict().is_some() {
            return Self::Conflict;
        }
        match error {
            StoreError::InvalidInput(_)
            | StoreError::Unsupported { .. }
            | StoreError::PayloadTooLarge { .. }
            | StoreError::StorageFull { .. }
            | StoreError::Encoding(_) => Self::Error(error.to_string()),
            _ => Self::Unknown,
        }
    }

    fn write_class(&self) -> WriteClass {
        match self {
            Self::Ok | Self::Version(_) | Self::Events(_) => WriteClass::Acked,
            Self::Unknown => WriteClass::Unknown,
            Self::Conflict | Self::Error(_) => WriteClass::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteClass {
    Acked,
    Unknown,
    Failed,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Its position in the history (`#index` in messages).
    pub index: usize,
    /// Who invoked it.
    pub client: ClientId,
    /// What was asked.
    pub operation: Operation,
    /// When it was invoked, since the history began.
    pub invoked: Duration,
    /// When it completed, since the history began; `None` if that was never recorded.
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// Whether this completed before `other` was invoked (so `other` began after it).
    pub fn precedes(&self, other: &Op) -> bool {
        self.completed.is_some_and(|c| c < other.invoked)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} ", self.index, self.client)?;
        let events = |f: &mut fmt::Formatter<'_>, a: &Append| {
            write!(f, "{:?} [", a.actor)?;
            for (k, (v, id)) in a.events.iter().enumerate() {
                let sep = if k == 0 { "" } else { ", " };
                write!(f, "{sep}v{v} {id}")?;
            }
            write!(f, "]")
        };
        match &self.operation {
            Operation::Append(a) => {
                write!(f, "append ")?;
                events(f, a)?;
            }
            Operation::Transaction(appends) => {
                write!(f, "transaction {{")?;
                for (k, a) in appends.iter().enumerate() {
                    write!(f, "{}", if k == 0 { " " } else { "; " })?;
                    events(f, a)?;
                }
                write!(f, " }}")?;
            }
            Operation::ReadVersion { actor } => write!(f, "read-version {actor:?}")?,
            Operation::Replay {
                actor,
                from_version,
            } => write!(f, "replay {actor:?} from v{from_version}")?,
        }
        write!(f, " at {:?}..", self.invoked)?;
        match self.completed {
            Some(c) => write!(f, "{c:?}")?,
            None => write!(f, "(never completed)")?,
        }
        match &self.outcome {
            Outcome::Ok => write!(f, ": ok"),
            Outcome::Version(v) => write!(f, ": version {v}"),
            Outcome::Events(events) => {
                write!(f, ": {} events [", events.len())?;
                for (k, (v, id)) in events.iter().enumerate() {
                    let sep = if k == 0 { "" } else { ", " };
                    write!(f, "{sep}v{v} {id}")?;
                }
                write!(f, "]")
            }
            Outcome::Conflict => write!(f, ": conflict"),
            Outcome::Unknown => write!(f, ": unknown"),
            Outcome::Error(e) => write!(f, ": error ({e})"),
        }
    }
}

/// A history being recorded: cheap to clone, shared by every client task.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug)]
struct Recorded {
    start: Instant,
    ops: Vec<Op>,
    clients: u64,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history; its clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recorded {
                start: Instant::now(),
                ops: Vec::new(),
                clients: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // Recording never panics while holding the lock; if a panic elsewhere poisoned it,
        // the history is still intact.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A recorder for a new client.
    pub fn recorder(&self) -> Recorder {
        let mut inner = self.lock();
        inner.clients += 1;
        Recorder {
            client: ClientId(inner.clients),
            history: self.clone(),
        }
    }

    /// A copy of the operations recorded so far, in invocation order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// The number of operations recorded.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every actor an operation touched, sorted: the actors whose final history to read.
    pub fn actors(&self) -> Vec<String> {
        let inner = self.lock();
        let mut actors = BTreeSet::new();
        for op in &inner.ops {
            match &op.operation {
                Operation::Append(a) => {
                    actors.insert(a.actor.clone());
                }
                Operation::Transaction(appends) => {
                    actors.extend(appends.iter().map(|a| a.actor.clone()));
                }
                Operation::ReadVersion { actor } | Operation::Replay { actor, .. } => {
                    actors.insert(actor.clone());
                }
            }
        }
        actors.into_iter().collect()
    }

    /// Checks the history against the final state; see [`check`].
    ///
    /// # Errors
    /// The first [`Violation`] found.
    pub fn check(
        &self,
        final_state: &FinalState,
        options: &CheckOptions,
    ) -> Result<CheckReport, Violation> {
        check(&self.ops(), final_state, options)
    }

    /// Checks the history against the final state and returns every violation; see
    /// [`check_all`].
    pub fn check_all(
        &self,
        final_state: &FinalState,
        options: &CheckOptions,
    ) -> (CheckReport, Vec<Violation>) {
        check_all(&self.ops(), final_state, options)
    }

    fn invoke(&self, client: ClientId, operation: Operation) -> usize {
        let mut inner = self.lock();
        let index = inner.ops.len();
        let invoked = inner.start.elapsed();
        inner.ops.push(Op {
            index,
            client,
            operation,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
        });
        index
    }

    fn complete(&self, index: usize, outcome: Outcome) {
        let mut inner = self.lock();
        let completed = inner.start.elapsed();
        if let Some(op) = inner.ops.get_mut(index) {
            op.completed = Some(completed);
            op.outcome = outcome;
        }
    }
}

/// Records one client's operations into a [`History`]. Each `append`/`read_version`/...
/// records the invocation and returns a handle on which the test records the completion.
#[derive(Debug)]
pub struct Recorder {
    client: ClientId,
    history: History,
}

impl Recorder {
    /// This client's id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// Records the invocation of an append of events with the given ids at consecutive
    /// versions from `first_version`.
    pub fn append(
        &self,
        actor: impl Into<String>,
        first_version: u64,
        event_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> PendingWrite {
        self.write(Operation::Append(Append::new(
            actor,
            first_version,
            event_ids,
        )))
    }

    /// Records the invocation of `save_event(event)` or `save_events(actor, events)`.
    pub fn append_events(&self, events: &[Event]) -> PendingWrite {
        self.write(Operation::Append(Append::of_events(events)))
    }

    /// Records the invocation of a transaction of these appends.
    pub fn transaction(&self, appends: impl IntoIterator<Item = Append>) -> PendingWrite {
        self.write(Operation::Transaction(appends.into_iter().collect()))
    }

    /// Records the invocation of `commit(transaction)`.
    pub fn commit(&self, transaction: &Transaction) -> PendingWrite {
        self.transaction(transaction.appends().iter().map(|a| Append {
            actor: a.actor_id.clone(),
            events: a.events.iter().map(|e| (e.version, e.id.clone())).collect(),
        }))
    }

    /// Records the invocation of `get_latest_version(actor)`.
    pub fn read_version(&self, actor: impl Into<String>) -> PendingRead {
        let actor = actor.into();
        PendingRead {
            history: self.history.clone(),
            index: self
                .history
                .invoke(self.client, Operation::ReadVersion { actor }),
        }
    }

    /// Records the invocation of `get_events(actor, from_version)`.
    pub fn replay(&self, actor: impl Into<String>, from_version: u64) -> PendingReplay {
        let actor = actor.into();
        PendingReplay {
            history: self.history.clone(),
            index: self.history.invoke(
                self.client,
                Operation::Replay {
                    actor,
                    from_version,
                },
            ),
        }
    }

    fn write(&self, operation: Operation) -> PendingWrite {
        PendingWrite {
            history: self.history.clone(),
            index: self.history.invoke(self.client, operation),
        }
    }
}

/// A write whose invocation is recorded; record its completion with one of the methods. If
/// it is dropped instead, the write stays unknown and never completed.
#[derive(Debug)]
#[must_use = "record the completion (ok, conflict, unknown, error or finish)"]
pub struct PendingWrite {
    history: History,
    index: usize,
}

impl PendingWrite {
    /// The store acknowledged the write.
    pub fn ok(self) {
        self.history.complete(self.index, Outcome::Ok);
    }

    /// Optimistic concurrency rejected the write.
    pub fn conflict(self) {
        self.history.complete(self.index, Outcome::Conflict);
    }

    /// No answer: the write may or may not be stored.
    pub fn unknown(self) {
        self.history.complete(self.index, Outcome::Unknown);
    }

    /// A definite failure: nothing was stored.
    pub fn error(self, reason: impl Into<String>) {
        self.history
            .complete(self.index, Outcome::Error(reason.into()));
    }

    /// Records what a store call returned, classified by [`Outcome::of_error`].
    pub fn finish<T>(self, result: &aether_core::Result<T>) {
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of_error(e),
        };
        self.history.complete(self.index, outcome);
    }
}

/// A read of the latest version whose invocation is recorded.
#[derive(Debug)]
#[must_use = "record the completion (ok, unknown, error or finish)"]
pub struct PendingRead {
    history: History,
    index: usize,
}

impl PendingRead {
    /// The store answered `version`.
    pub fn ok(self, version: u64) {
        self.history.complete(self.index, Outcome::Version(version));
    }

    /// No answer.
    pub fn unknown(self) {
        self.history.complete(self.index, Outcome::Unknown);
    }

    /// The read failed.
    pub fn error(self, reason: impl Into<String>) {
        self.history
            .complete(self.index, Outcome::Error(reason.into()));
    }

    /// Records what `get_latest_version` returned.
    pub fn finish(self, result: &aether_core::Result<u64>) {
        let outcome = match result {
            Ok(v) => Outcome::Version(*v),
            Err(e) => Outcome::of_error(e),
        };
        self.history.complete(self.index, outcome);
    }
}

/// A replay whose invocation is recorded.
#[derive(Debug)]
#[must_use = "record the completion (ok, ok_events, unknown, error or finish)"]
pub struct PendingReplay {
    history: History,
    index: usize,
}

impl PendingReplay {
    /// The store answered these `(version, event id)` pairs.
    pub fn ok(self, events: impl IntoIterator<Item = (u64, impl Into<String>)>) {
        let events = events.into_iter().map(|(v, id)| (v, id.into())).collect();
        self.history.complete(self.index, Outcome::Events(events));
    }

    /// The store answered these events.
    pub fn ok_events(self, events: &[Event]) {
        self.ok(events.iter().map(|e| (e.version, e.id.as_str())));
    }

    /// No answer.
    pub fn unknown(self) {
        self.history.complete(self.index, Outcome::Unknown);
    }

    /// The replay failed.
    pub fn error(self, reason: impl Into<String>) {
        self.history
            .complete(self.index, Outcome::Error(reason.into()));
    }

    /// Records what `get_events` returned.
    pub fn finish(self, result: &aether_core::Result<Vec<Event>>) {
        match result {
            Ok(events) => self.ok_events(events),
            Err(e) => {
                let outcome = Outcome::of_error(e);
                self.history.complete(self.index, outcome);
            }
        }
    }
}

/// Every actor's stored history at the end of a test: `(version, event id)` in the order the
/// store returned them (`get_events(actor, 1)`). An actor not listed has no events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    actors: BTreeMap<String, Vec<(u64, String)>>,
}

impl FinalState {
    /// No actor has events.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `actor`'s history set to `events`.
    pub fn with_actor(
        mut self,
        actor: impl Into<String>,
        events: impl IntoIterator<Item = (u64, impl Into<String>)>,
    ) -> Self {
        self.insert(actor, events);
        self
    }

    /// Sets `actor`'s history to `events`.
    pub fn insert(
        &mut self,
        actor: impl Into<String>,
        events: impl IntoIterator<Item = (u64, impl Into<String>)>,
    ) {
        self.actors.insert(
            actor.into(),
            events.into_iter().map(|(v, id)| (v, id.into())).collect(),
        );
    }

    /// Adds events as read from the store, each to its actor's history, in order.
    pub fn insert_events(&mut self, events: &[Event]) {
        for e in events {
            self.actors
                .entry(e.actor_id.clone())
                .or_default()
                .push((e.version, e.id.clone()));
        }
    }

    /// `actor`'s history (empty if not listed).
    pub fn actor(&self, actor: &str) -> &[(u64, String)] {
        self.actors
            .get(actor)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The actors listed, sorted.
    pub fn actors(&self) -> impl Iterator<Item = &str> {
        self.actors.keys().map(String::as_str)
    }

    /// The number of events over all actors.
    pub fn event_count(&self) -> usize {
        self.actors.values().map(Vec::len).sum()
    }
}

/// Which guarantees of reads to check. The default checks all of them.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// A read or replay reflects every append acknowledged, and is not older than any read
    /// answered, before it began ([`Rule::StaleRead`]). Turn off for reads documented as
    /// possibly stale (served by a replica that may lag).
    pub linearizable_reads: bool,
    /// A client's reads and replays of an actor never go backwards ([`Rule::MonotonicReads`]).
    pub monotonic_reads: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            linearizable_reads: true,
            monotonic_reads: true,
        }
    }
}

/// What a check looked at: one line of figures when displayed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// Operations recorded.
    pub operations: usize,
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Writes with an unknown outcome.
    pub unknown: usize,
    /// Writes with an unknown outcome found stored at the end.
    pub unknown_stored: usize,
    /// Writes rejected by a conflict.
    pub conflicts: usize,
    /// Writes that failed definitely.
    pub errors: usize,
    /// Reads and replays answered.
    pub reads: usize,
    /// Reads and replays without an answer (unknown or error).
    pub unanswered_reads: usize,
    /// Actors in the history or the final state.
    pub actors: usize,
    /// Events in the final state.
    pub stored_events: usize,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations: {} acknowledged, {} unknown ({} stored), {} conflicts, {} errors, \
             {} reads ({} unanswered); {} events stored for {} actors",
            self.operations,
            self.acknowledged,
            self.unknown,
            self.unknown_stored,
            self.conflicts,
            self.errors,
            self.reads,
            self.unanswered_reads,
            self.stored_events,
            self.actors,
        )
    }
}

/// A rule of [`check`], in the order violations are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rule {
    /// An actor's final history does not have strictly increasing versions.
    FinalNotIncreasing,
    /// One event id is stored more than once.
    Duplicate,
    /// Two acknowledged appends put different events at one version.
    ConflictingAcks,
    /// Part of a batch or transaction is stored and part is not.
    PartialWrite,
    /// An acknowledged append is not stored at its version.
    LostWrite,
    /// An append that failed (conflict or definite error) is stored.
    FailedWritePresent,
    /// A stored event was attempted by no operation, or not at that version of that actor.
    Phantom,
    /// A replay is not a prefix of the actor's final history.
    ReplayNotPrefix,
    /// A read returned a version no append that had not failed was attempting before the read
    /// completed.
    ReadUnattempted,
    /// A read returned a version that is not in the final history: it saw a state the store
    /// later lost.
    ReadOfLostVersion,
    /// A client's read or replay returned an older version than one of its earlier ones.
    MonotonicReads,
    /// A read or replay missed an append acknowledged, or a version read, before it began.
    StaleRead,
}

impl Rule {
    /// What the rule requires, in a sentence.
    pub fn description(self) -> &'static str {
        match self {
            Self::FinalNotIncreasing => "an actor's stored versions strictly increase",
            Self::Duplicate => "an event is stored at most once",
            Self::ConflictingAcks => "two acknowledged appends never share a version",
            Self::PartialWrite => "a batch or transaction is stored whole or not at all",
            Self::LostWrite => "an acknowledged append is stored at its version",
            Self::FailedWritePresent => "an append that failed is not stored",
            Self::Phantom => "every stored event was attempted, at that actor and version",
            Self::ReplayNotPrefix => "a replay is a prefix of the final history",
            Self::ReadUnattempted => "a read returns 0 or a version being attempted",
            Self::ReadOfLostVersion => "a version read is still stored at the end",
            Self::MonotonicReads => "a client's reads never go backwards",
            Self::StaleRead => {
                "a read reflects every append acknowledged and every version read before it began"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::FinalNotIncreasing => "final-not-increasing",
            Self::Duplicate => "duplicate",
            Self::ConflictingAcks => "conflicting-acks",
            Self::PartialWrite => "partial-write",
            Self::LostWrite => "lost-write",
            Self::FailedWritePresent => "failed-write-present",
            Self::Phantom => "phantom",
            Self::ReplayNotPrefix => "replay-not-prefix",
            Self::ReadUnattempted => "read-unattempted",
            Self::ReadOfLostVersion => "read-of-lost-version",
            Self::MonotonicReads => "monotonic-reads",
            Self::StaleRead => "stale-read",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken rule: which, on which actor, what was seen, and the operations involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// The actor concerned.
    pub actor: String,
    /// What was seen.
    pub detail: String,
    /// The operations involved, in history order.
    pub ops: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({}):", self.rule, self.rule.description())?;
        write!(f, "  actor {:?}: {}", self.actor, self.detail)?;
        for op in &self.ops {
            write!(f, "\n  {op}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Checks `ops` against `final_state` (see the [module docs](self) for the rules) and returns
/// the figures, or the first violation in [`Rule`] order.
///
/// # Errors
/// The first [`Violation`]; [`check_all`] returns them all.
pub fn check(
    ops: &[Op],
    final_state: &FinalState,
    options: &CheckOptions,
) -> Result<CheckReport, Violation> {
    let (report, violations) = check_all(ops, final_state, options);
    match violations.into_iter().next() {
        Some(v) => Err(v),
        None => Ok(report),
    }
}

/// Checks `ops` against `final_state` and returns the figures and every violation, sorted by
/// [`Rule`], then actor, then first operation.
pub fn check_all(
    ops: &[Op],
    final_state: &FinalState,
    options: &CheckOptions,
) -> (CheckReport, Vec<Violation>) {
    let checker = Checker::new(ops, final_state);
    let mut violations = Vec::new();
    checker.final_order(&mut violations);
    checker.duplicates(&mut violations);
    checker.writes(&mut violations);
    checker.phantoms(&mut violations);
    checker.reads(options, &mut violations);
    violations.sort_by(|a, b| {
        (a.rule, &a.actor, a.ops.first().map(|o| o.index)).cmp(&(
            b.rule,
            &b.actor,
            b.ops.first().map(|o| o.index),
        ))
    });
    (checker.report(), violations)
}

type Position<'a> = (&'a str, u64);

struct Checker<'a> {
    ops: &'a [Op],
    final_state: &'a FinalState,
    /// (actor, version) → stored event id.
    stored: HashMap<Position<'a>, &'a str>,
    /// Event id → every (actor, version) it is stored at.
    stored_at: HashMap<&'a str, Vec<Position<'a>>>,
    /// (actor, version, id) → the write operations that attempted it.
    attempts: HashMap<(&'a str, u64, &'a str), Vec<usize>>,
}

impl<'a> Checker<'a> {
    fn new(ops: &'a [Op], final_state: &'a FinalState) -> Self {
        let mut stored = HashMap::new();
        let mut stored_at: HashMap<&str, Vec<Position<'a>>> = HashMap::new();
        for (actor, events) in &final_state.actors {
            for (v, id) in events {
                stored.entry((actor.as_str(), *v)).or_insert(id.as_str());
                stored_at
                    .entry(id.as_str())
                    .or_default()
                    .push((actor.as_str(), *v));
            }
        }
        let mut attempts: HashMap<_, Vec<usize>> = HashMap::new();
        for (k, op) in ops.iter().enumerate() {
            for event in op.operation.events() {
                attempts.entry(event).or_default().push(k);
            }
        }
        Self {
            ops,
            final_state,
            stored,
            stored_at,
            attempts,
        }
    }

    fn violation(&self, rule: Rule, actor: &str, detail: String, ops: &[usize]) -> Violation {
        let mut ops: Vec<usize> = ops.to_vec();
        ops.sort_unstable();
        ops.dedup();
        Violation {
            rule,
            actor: actor.to_string(),
            detail,
            ops: ops.iter().map(|k| self.ops[*k].clone()).collect(),
        }
    }

    fn is_stored(&self, actor: &str, version: u64, id: &str) -> bool {
        self.stored.get(&(actor, version)) == Some(&id)
    }

    fn attempted_by(&self, actor: &'a str, version: u64, id: &'a str) -> &[usize] {
        self.attempts
            .get(&(actor, version, id))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Positions of the writes that attempted event `id`, anywhere.
    fn writers_of(&self, id: &str) -> Vec<usize> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.operation.events().any(|(_, _, e)| e == id))
            .map(|(k, _)| k)
            .collect()
    }

    fn final_order(&self, out: &mut Vec<Violation>) {
        for (actor, events) in &self.final_state.actors {
            for pair in events.windows(2) {
                if pair[1].0 <= pair[0].0 {
                    out.push(self.violation(
                        Rule::FinalNotIncreasing,
                        actor,
                        format!(
                            "version {} ({}) is followed by version {} ({})",
                            pair[0].0, pair[0].1, pair[1].0, pair[1].1
                        ),
                        &[],
                    ));
                }
            }
        }
    }

    fn duplicates(&self, out: &mut Vec<Violation>) {
        let mut dups: Vec<_> = self
            .stored_at
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .collect();
        dups.sort();
        for (id, at) in dups {
            let places: Vec<String> = at.iter().map(|(a, v)| format!("{a:?} v{v}")).collect();
            let ops = self.writers_of(id);
            out.push(self.violation(
                Rule::Duplicate,
                at[0].0,
                format!(
                    "event {id} is stored {} times: {}",
                    at.len(),
                    places.join(", ")
                ),
                &ops,
            ));
        }
    }

    fn writes(&self, out: &mut Vec<Violation>) {
        // (actor, version) → (event id, op) of the first acknowledged append claiming it.
        let mut acked: HashMap<Position<'a>, (&str, usize)> = HashMap::new();
        for (k, op) in self.ops.iter().enumerate() {
            if !op.operation.is_write() {
                continue;
            }
            let class = op.outcome.write_class();
            let events: Vec<_> = op.operation.events().collect();
            let Some(&(actor, _, _)) = events.first() else {
                continue;
            };
            if class == WriteClass::Acked {
                for &(a, v, id) in &events {
                    match acked.get(&(a, v)) {
                        Some(&(other_id, other)) if other_id != id => out.push(self.violation(
                            Rule::ConflictingAcks,
                            a,
                            format!("version {v} acknowledged as {other_id} and as {id}"),
                            &[other, k],
                        )),
                        Some(_) => {}
                        None => {
                            acked.insert((a, v), (id, k));
                        }
                    }
                }
            }
            let present: Vec<bool> = events
                .iter()
                .map(|&(a, v, id)| self.is_stored(a, v, id))
                .collect();
            let count = present.iter().filter(|p| **p).count();
            match class {
                WriteClass::Acked | WriteClass::Unknown => {
                    if count > 0 && count < events.len() {
                        let missing: Vec<String> = events
                            .iter()
                            .zip(&present)
                            .filter(|(_, p)| !**p)
                            .map(|((a, v, id), _)| format!("{a:?} v{v} {id}"))
                            .collect();
                        out.push(self.violation(
                            Rule::PartialWrite,
                            actor,
                            format!(
                                "{count} of {} events stored; missing {}{}",
                                events.len(),
                                missing.join(", "),
                                self.found_instead(&events, &present)
                            ),
                            &[k],
                        ));
                    } else if count == 0 && class == WriteClass::Acked {
                        out.push(self.violation(
                            Rule::LostWrite,
                            actor,
                            format!(
                                "none of the {} acknowledged events is stored{}",
                                events.len(),
                                self.found_instead(&events, &present)
                            ),
                            &[k],
                        ));
                    }
                }
                WriteClass::Failed => {
                    for (&(a, v, id), _) in events.iter().zip(&present).filter(|(_, p)| **p) {
                        // The same event may have been written by another attempt (a retry
                        // with the same id) that did not fail.
                        let others: Vec<usize> = self
                            .attempted_by(a, v, id)
                            .iter()
                            .copied()
                            .filter(|w| self.ops[*w].outcome.write_class() != WriteClass::Failed)
                            .collect();
                        if others.is_empty() {
                            out.push(self.violation(
                                Rule::FailedWritePresent,
                                a,
                                format!("event {id} is stored at version {v}"),
                                &[k],
                            ));
                        }
                    }
                }
            }
        }
    }

    /// What the final history holds where the missing events should be, for messages.
    fn found_instead(&self, events: &[(&str, u64, &str)], present: &[bool]) -> String {
        let found: Vec<String> = events
            .iter()
            .zip(present)
            .filter(|(_, p)| !**p)
            .filter_map(|((a, v, id), _)| {
                let here = self.stored.get(&(*a, *v));
                let elsewhere = self.stored_at.get(id);
                match (here, elsewhere) {
                    (Some(other), _) => Some(format!("{a:?} v{v} holds {other}")),
                    (None, Some(at)) => Some(format!("{id} is stored at {at:?}")),
                    (None, None) => None,
                }
            })
            .collect();
        if found.is_empty() {
            String::new()
        } else {
            format!(" (instead: {})", found.join(", "))
        }
    }

    fn phantoms(&self, out: &mut Vec<Violation>) {
        for (actor, events) in &self.final_state.actors {
            for (v, id) in events {
                if !self.attempted_by(actor, *v, id).is_empty() {
                    continue;
                }
                let elsewhere = self.writers_of(id);
                let detail = if elsewhere.is_empty() {
                    format!("event {id} at version {v} was never attempted")
                } else {
                    format!("event {id} is stored at version {v}, where no operation put it")
                };
                out.push(self.violation(Rule::Phantom, actor, detail, &elsewhere));
            }
        }
    }

    fn reads(&self, options: &CheckOptions, out: &mut Vec<Violation>) {
        // Per actor: the earliest invocation of a write attempting each version, by writes
        // that did not fail.
        let mut first_attempt: HashMap<Position<'a>, (Duration, usize)> = HashMap::new();
        // Per actor: (completion, version) of every acknowledged event.
        let mut acked: HashMap<&str, Vec<(Duration, u64, usize)>> = HashMap::new();
        for (k, op) in self.ops.iter().enumerate() {
            let class = op.outcome.write_class();
            if !op.operation.is_write() || class == WriteClass::Failed {
                continue;
            }
            for (a, v, _) in op.operation.events() {
                let entry = first_attempt.entry((a, v)).or_insert((op.invoked, k));
                if op.invoked < entry.0 {
                    *entry = (op.invoked, k);
                }
                if let (WriteClass::Acked, Some(done)) = (class, op.completed) {
                    acked.entry(a).or_default().push((done, v, k));
                }
            }
        }

        // Every answered read and replay, as bounds on the latest version it saw.
        let mut observations: Vec<Observation<'a>> = Vec::new();
        for (k, op) in self.ops.iter().enumerate() {
            let Some(completed) = op.completed else {
                continue;
            };
            match (&op.operation, &op.outcome) {
                (Operation::ReadVersion { actor }, Outcome::Version(r)) => {
                    let r = *r;
                    if r > 0 {
                        match first_attempt.get(&(actor.as_str(), r)) {
                            Some(&(invoked, _)) if invoked < completed => {
                                if !self.stored.contains_key(&(actor.as_str(), r)) {
                                    out.push(self.violation(
                                        Rule::ReadOfLostVersion,
                                        actor,
                                        format!("read version {r}, which is not stored at the end"),
                                        &[k],
                                    ));
                                }
                            }
                            found => out.push(
                                self.violation(
                                    Rule::ReadUnattempted,
                                    actor,
                                    format!(
                                        "read version {r}, which no write that did not fail was \
                                     attempting before the read completed"
                                    ),
                                    &[Some(k), found.map(|f| f.1)]
                                        .into_iter()
                                        .flatten()
                                        .collect::<Vec<_>>(),
                                ),
                            ),
                        }
                    }
                    observations.push(Observation {
                        actor,
                        op,
                        pos: k,
                        completed,
                        lower: r,
                        upper: r,
                    });
                }
                (
                    Operation::Replay {
                        actor,
                        from_version,
                    },
                    Outcome::Events(events),
                ) => {
                    let expected: Vec<&(u64, String)> = self
                        .final_state
                        .actor(actor)
                        .iter()
                        .filter(|(v, _)| v >= from_version)
                        .collect();
                    let prefix = events.len() <= expected.len()
                        && events.iter().zip(&expected).all(|(got, want)| got == *want);
                    if !prefix {
                        let at = events
                            .iter()
                            .zip(&expected)
                            .position(|(got, want)| got != *want)
                            .unwrap_or(expected.len());
                        let show = |e: Option<&(u64, String)>| match e {
                            Some((v, id)) => format!("v{v} {id}"),
                            None => "nothing".to_string(),
                        };
                        out.push(self.violation(
                            Rule::ReplayNotPrefix,
                            actor,
                            format!(
                                "event {} of the replay is {}, the final history has {} there",
                                at + 1,
                                show(events.get(at)),
                                show(expected.get(at).copied()),
                            ),
                            &[k],
                        ));
                    }
                    let (lower, upper) = match events.last() {
                        Some((v, _)) => (*v, *v),
                        // Empty: the latest version was below `from_version`.
                        None => (0, from_version.saturating_sub(1)),
                    };
                    observations.push(Observation {
                        actor,
                        op,
                        pos: k,
                        completed,
                        lower,
                        upper,
                    });
                }
                _ => {}
            }
        }

        if options.monotonic_reads {
            let mut by_client: HashMap<(ClientId, &str), Vec<&Observation<'a>>> = HashMap::new();
            for o in &observations {
                by_client.entry((o.op.client, o.actor)).or_default().push(o);
            }
            for ((client, actor), seen) in by_client {
                let earlier = Frontier::new(seen.iter().map(|o| (o.completed, o.lower, o.pos)));
                for o in &seen {
                    if let Some((before, k)) = earlier.max_before(o.op.invoked) {
                        if o.upper < before {
                            out.push(self.violation(
                                Rule::MonotonicReads,
                                actor,
                                format!("{client} saw version {before}, then at most {}", o.upper),
                                &[k, o.pos],
                            ));
                        }
                    }
                }
            }
        }

        if options.linearizable_reads {
            let mut by_actor: HashMap<&str, Vec<&Observation<'a>>> = HashMap::new();
            for o in &observations {
                by_actor.entry(o.actor).or_default().push(o);
            }
            for (actor, seen) in by_actor {
                let writes = Frontier::new(acked.get(actor).into_iter().flatten().copied());
                let reads = Frontier::new(seen.iter().map(|o| (o.completed, o.lower, o.pos)));
                for o in &seen {
                    if let Some((v, k)) = writes.max_before(o.op.invoked) {
                        if o.upper < v {
                            out.push(self.violation(
                                Rule::StaleRead,
                                actor,
                                format!(
                                    "version {v} was acknowledged before the read began, \
                                     which saw at most {}",
                                    o.upper
                                ),
                                &[k, o.pos],
                            ));
                            continue;
                        }
                    }
                    if let Some((v, k)) = reads.max_before(o.op.invoked) {
                        if o.upper < v {
                            out.push(self.violation(
                                Rule::StaleRead,
                                actor,
                                format!(
                                    "version {v} was read before this read began, which saw \
                                     at most {}",
                                    o.upper
                                ),
                                &[k, o.pos],
                            ));
                        }
                    }
                }
            }
        }
    }

    fn report(&self) -> CheckReport {
        let mut r = CheckReport {
            operations: self.ops.len(),
            stored_events: self.final_state.event_count(),
            ..CheckReport::default()
        };
        let mut actors: HashSet<&str> = self.final_state.actors().collect();
        for op in self.ops {
            match &op.operation {
                Operation::Append(_) | Operation::Transaction(_) => {
                    actors.extend(op.operation.events().map(|(a, _, _)| a));
                    match &op.outcome {
                        Outcome::Unknown => {
                            r.unknown += 1;
                            let mut events = op.operation.events().peekable();
                            if events.peek().is_some()
                                && events.all(|(a, v, id)| self.is_stored(a, v, id))
                            {
                                r.unknown_stored += 1;
                            }
                        }
                        Outcome::Conflict => r.conflicts += 1,
                        Outcome::Error(_) => r.errors += 1,
                        Outcome::Ok | Outcome::Version(_) | Outcome::Events(_) => {
                            r.acknowledged += 1;
                        }
                    }
                }
                Operation::ReadVersion { actor } | Operation::Replay { actor, .. } => {
                    actors.insert(actor);
                    match &op.outcome {
                        Outcome::Version(_) | Outcome::Events(_) | Outcome::Ok => r.reads += 1,
                        _ => r.unanswered_reads += 1,
                    }
                }
            }
        }
        r.actors = actors.len();
        r
    }
}

/// What an answered read or replay says about an actor's latest version when it ran.
struct Observation<'a> {
    actor: &'a str,
    op: &'a Op,
    /// Its position in the ops checked.
    pos: usize,
    completed: Duration,
    /// The latest version was at least this (what a later read must not go below).
    lower: u64,
    /// The latest version was at most this (what an earlier write or read must not exceed).
    upper: u64,
}

/// Points `(time, value, op)`; answers "the largest value at a time before `t`, and whose".
struct Frontier {
    times: Vec<Duration>,
    /// Running maximum of the value, with its op, in time order.
    best: Vec<(u64, usize)>,
}

impl Frontier {
    fn new(points: impl Iterator<Item = (Duration, u64, usize)>) -> Self {
        let mut points: Vec<_> = points.collect();
        points.sort_unstable();
        let mut best: Vec<(u64, usize)> = Vec::with_capacity(points.len());
        for &(_, value, op) in &points {
            let next = match best.last() {
                Some(&(max, k)) if max >= value => (max, k),
                _ => (value, op),
            };
            best.push(next);
        }
        Self {
            times: points.iter().map(|p| p.0).collect(),
            best,
        }
    }

    fn max_before(&self, t: Duration) -> Option<(u64, usize)> {
        let n = self.times.partition_point(|time| *time < t);
        n.checked_sub(1).map(|k| self.best[k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: u64) -> Duration {
        Duration::from_millis(t)
    }

    /// A history built by hand with exact times, for planting violations.
    #[derive(Default)]
    struct Plan {
        ops: Vec<Op>,
    }

    impl Plan {
        fn op(
            &mut self,
            client: u64,
            operation: Operation,
            at: (u64, Option<u64>),
            outcome: Outcome,
        ) -> &mut Self {
            self.ops.push(Op {
                index: self.ops.len(),
                client: ClientId(client),
                operation,
                invoked: ms(at.0),
                completed: at.1.map(ms),
                outcome,
            });
            self
        }

        fn append(
            &mut self,
            client: u64,
            actor: &str,
            first: u64,
            ids: &[&str],
            at: (u64, u64),
            outcome: Outcome,
        ) -> &mut Self {
            let op = Operation::Append(Append::new(actor, first, ids.iter().copied()));
            self.op(client, op, (at.0, Some(at.1)), outcome)
        }

        fn read(&mut self, client: u64, actor: &str, at: (u64, u64), version: u64) -> &mut Self {
            let op = Operation::ReadVersion {
                actor: actor.into(),
            };
            self.op(client, op, (at.0, Some(at.1)), Outcome::Version(version))
        }

        fn replay(
            &mut self,
            client: u64,
            actor: &str,
            from_version: u64,
            at: (u64, u64),
            events: &[(u64, &str)],
        ) -> &mut Self {
            let op = Operation::Replay {
                actor: actor.into(),
                from_version,
            };
            let events = events.iter().map(|(v, id)| (*v, id.to_string())).collect();
            self.op(client, op, (at.0, Some(at.1)), Outcome::Events(events))
        }

        fn check(&self, final_state: &FinalState) -> Result<CheckReport, Violation> {
            check(&self.ops, final_state, &CheckOptions::default())
        }

        fn violation(&self, final_state: &FinalState) -> Violation {
            match self.check(final_state) {
                Ok(report) => panic!("expected a violation, the check passed: {report}"),
                Err(v) => v,
            }
        }
    }

    fn stored(actor: &str, events: &[(u64, &str)]) -> FinalState {
        FinalState::new().with_actor(actor, events.iter().copied())
    }

    #[test]
    fn catches_a_lost_write() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok);
        let v = plan.violation(&stored("a", &[(1, "e1")]));
        assert_eq!(v.rule, Rule::LostWrite);
        assert_eq!(v.actor, "a");
        assert_eq!(v.ops.len(), 1);
        assert_eq!(v.ops[0].index, 1);
        // An actor missing from the final state has no events.
        let v = plan.violation(&FinalState::new());
        assert_eq!(v.rule, Rule::LostWrite);
    }

    #[test]
    fn catches_an_event_stored_twice() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown)
            .append(1, "a", 2, &["e2"], (20, 30), Outcome::Unknown);
        plan.check(&stored("a", &[(1, "e1"), (2, "e2")])).unwrap();
        let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e1")]));
        assert_eq!(v.rule, Rule::Duplicate);
        assert!(v.detail.contains("e1 is stored 2 times"), "{v}");
        assert_eq!(v.ops[0].index, 0);
        // The same event under two actors is a duplicate too.
        let both = stored("a", &[(1, "e1")]).with_actor("b", [(1, "e1")]);
        assert_eq!(plan.violation(&both).rule, Rule::Duplicate);
    }

    #[test]
    fn catches_two_acknowledged_appends_at_one_version() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(2, "a", 1, &["e2"], (5, 15), Outcome::Ok);
        let v = plan.violation(&stored("a", &[(1, "e1")]));
        assert_eq!(v.rule, Rule::ConflictingAcks);
        assert_eq!(
            v.ops.iter().map(|o| o.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let (_, all) = check_all(
            &plan.ops,
            &stored("a", &[(1, "e1")]),
            &CheckOptions::default(),
        );
        let rules: Vec<Rule> = all.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![Rule::ConflictingAcks, Rule::LostWrite]);
    }

    #[test]
    fn a_retry_of_the_same_event_may_be_acknowledged_twice() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown)
            .append(1, "a", 1, &["e1"], (20, 30), Outcome::Ok)
            .append(1, "a", 1, &["e1"], (40, 50), Outcome::Ok)
            // A retry rejected by a conflict (its first try got in) leaves the event present.
            .append(1, "a", 1, &["e1"], (60, 70), Outcome::Conflict);
        plan.check(&stored("a", &[(1, "e1")])).unwrap();
    }

    #[test]
    fn catches_a_failed_write_that_is_stored() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(2, "a", 1, &["e2"], (0, 10), Outcome::Conflict)
            .append(
                2,
                "a",
                2,
                &["e3"],
                (20, 30),
                Outcome::Error("invalid".into()),
            );
        plan.check(&stored("a", &[(1, "e1")])).unwrap();
        let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e3")]));
        assert_eq!(v.rule, Rule::FailedWritePresent);
        assert_eq!(v.ops[0].index, 2);
    }

    #[test]
    fn catches_a_phantom_event() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok);
        let v = plan.violation(&stored("a", &[(1, "e1"), (2, "zz")]));
        assert_eq!(v.rule, Rule::Phantom);
        assert!(v.detail.contains("never attempted"), "{v}");
        // An attempted event stored at another version than attempted.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown);
        let v = plan.violation(&stored("a", &[(3, "e1")]));
        assert_eq!(v.rule, Rule::Phantom);
        assert_eq!(v.ops[0].index, 0);
    }

    #[test]
    fn catches_versions_that_do_not_increase() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Unknown);
        let v = plan.violation(&stored("a", &[(2, "e2"), (1, "e1")]));
        assert_eq!(v.rule, Rule::FinalNotIncreasing);
    }

    #[test]
    fn catches_a_stale_read() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .read(2, "a", (20, 30), 0);
        let final_state = stored("a", &[(1, "e1")]);
        let v = plan.violation(&final_state);
        assert_eq!(v.rule, Rule::StaleRead);
        assert_eq!(
            v.ops.iter().map(|o| o.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // Reads documented as possibly stale pass without the option.
        let lenient = CheckOptions {
            linearizable_reads: false,
            ..CheckOptions::default()
        };
        check(&plan.ops, &final_state, &lenient).unwrap();

        // A read concurrent with the append may see either state.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .read(2, "a", (5, 30), 0)
            .read(3, "a", (5, 30), 1);
        plan.check(&final_state).unwrap();

        // A read older than a read that completed before it began, by another client.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
            .read(2, "a", (10, 20), 1)
            .read(3, "a", (30, 40), 0);
        let v = plan.violation(&final_state);
        assert_eq!(v.rule, Rule::StaleRead);
        assert!(v.detail.contains("was read before"), "{v}");

        // A replay that misses an acknowledged append.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok)
            .replay(2, "a", 1, (40, 50), &[(1, "e1")]);
        let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e2")]));
        assert_eq!(v.rule, Rule::StaleRead);
    }

    #[test]
    fn catches_reads_of_one_client_going_backwards() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
            .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
            .read(2, "a", (10, 20), 2)
            .read(2, "a", (30, 40), 1);
        let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
        let v = plan.violation(&final_state);
        assert_eq!(v.rule, Rule::MonotonicReads);
        assert!(v.detail.contains("c2 saw version 2, then at most 1"), "{v}");
        // Two clients may each see a different state of a concurrent write...
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
            .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
            .read(2, "a", (10, 40), 2)
            .read(3, "a", (30, 50), 1);
        plan.check(&final_state).unwrap();
        // ... and with stale reads allowed, only one client's own order is checked.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
            .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
            .read(2, "a", (10, 20), 2)
            .read(3, "a", (30, 40), 1);
        let lenient = CheckOptions {
            linearizable_reads: false,
            ..CheckOptions::default()
        };
        check(&plan.ops, &final_state, &lenient).unwrap();
    }

    #[test]
    fn catches_a_read_of_a_version_never_attempted() {
        let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok)
            .read(2, "a", (40, 50), 5);
        assert_eq!(plan.violation(&final_state).rule, Rule::ReadUnattempted);

        // Above 0 when nothing was attempted.
        let mut plan = Plan::default();
        plan.read(2, "b", (0, 10), 1);
        let v = plan.violation(&FinalState::new());
        assert_eq!(v.rule, Rule::ReadUnattempted);
        assert_eq!(v.actor, "b");

        // A version only a later write attempted.
        let mut plan = Plan::default();
        plan.read(2, "a", (0, 10), 1)
            .append(1, "a", 1, &["e1"], (20, 30), Outcome::Ok);
        assert_eq!(
            plan.violation(&stored("a", &[(1, "e1")])).rule,
            Rule::ReadUnattempted
        );

        // A version only a conflicting write attempted.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Conflict)
            .read(2, "a", (5, 20), 1);
        assert_eq!(
            plan.violation(&FinalState::new()).rule,
            Rule::ReadUnattempted
        );
    }

    #[test]
    fn catches_a_read_of_a_version_lost_later() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(1, "a", 2, &["e2"], (20, 100), Outcome::Unknown)
            .read(2, "a", (30, 40), 2);
        plan.check(&stored("a", &[(1, "e1"), (2, "e2")])).unwrap();
        let v = plan.violation(&stored("a", &[(1, "e1")]));
        assert_eq!(v.rule, Rule::ReadOfLostVersion);
    }

    #[test]
    fn catches_a_replay_that_is_not_a_prefix() {
        let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Ok)
            .replay(2, "a", 1, (20, 30), &[(1, "e1"), (2, "e2")])
            .replay(2, "a", 2, (20, 30), &[(2, "e2")])
            .replay(2, "a", 3, (20, 30), &[]);
        plan.check(&final_state).unwrap();

        for wrong in [
            &[(1, "e1"), (2, "zz")][..],
            &[(2, "e2")][..],
            &[(1, "e1"), (2, "e2"), (3, "e3")][..],
        ] {
            let mut plan = Plan::default();
            plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Ok)
                .replay(2, "a", 1, (20, 30), wrong);
            let v = plan.violation(&final_state);
            assert_eq!(v.rule, Rule::ReplayNotPrefix, "{wrong:?}: {v}");
        }
    }

    #[test]
    fn catches_a_partial_transaction() {
        let tx = Operation::Transaction(vec![
            Append::new("a", 1, ["t1"]),
            Append::new("b", 1, ["t2"]),
        ]);
        let whole = stored("a", &[(1, "t1")]).with_actor("b", [(1, "t2")]);
        let half = stored("a", &[(1, "t1")]);
        for outcome in [Outcome::Ok, Outcome::Unknown] {
            let mut plan = Plan::default();
            plan.op(1, tx.clone(), (0, Some(10)), outcome.clone());
            plan.check(&whole).unwrap();
            let v = plan.violation(&half);
            assert_eq!(v.rule, Rule::PartialWrite, "{outcome:?}");
            assert!(v.detail.contains("missing \"b\" v1 t2"), "{v}");
        }
        // Unknown and absent entirely is fine; failed and present is not.
        let mut plan = Plan::default();
        plan.op(1, tx.clone(), (0, Some(10)), Outcome::Unknown);
        plan.check(&FinalState::new()).unwrap();
        let mut plan = Plan::default();
        plan.op(1, tx, (0, Some(10)), Outcome::Conflict);
        assert_eq!(plan.violation(&whole).rule, Rule::FailedWritePresent);
        // A batch of one actor is all or nothing too.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Unknown);
        assert_eq!(
            plan.violation(&stored("a", &[(1, "e1")])).rule,
            Rule::PartialWrite
        );
    }

    #[test]
    fn passes_a_correct_concurrent_history_with_unknown_outcomes() {
        // Three clients racing on one actor; two unknown outcomes, one stored and one not.
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["x1"], (0, 10), Outcome::Ok)
            .append(2, "a", 1, &["y1"], (2, 12), Outcome::Conflict)
            .read(3, "a", (5, 8), 0)
            .append(2, "a", 2, &["y2"], (15, 40), Outcome::Unknown) // stored
            .append(1, "a", 2, &["x2"], (16, 30), Outcome::Unknown) // not stored
            .read(3, "a", (20, 25), 2)
            .append(1, "a", 3, &["x3", "x4"], (35, 50), Outcome::Ok)
            .replay(3, "a", 1, (45, 60), &[(1, "x1"), (2, "y2")])
            .read(3, "a", (61, 70), 4)
            .op(
                2,
                Operation::Transaction(vec![
                    Append::new("a", 5, ["t1"]),
                    Append::new("b", 1, ["t2"]),
                ]),
                (62, None), // never completed, and not stored
                Outcome::Unknown,
            )
            .op(
                1,
                Operation::ReadVersion { actor: "b".into() },
                (63, Some(64)),
                Outcome::Unknown,
            );
        let final_state = stored("a", &[(1, "x1"), (2, "y2"), (3, "x3"), (4, "x4")]);
        let report = plan.check(&final_state).unwrap();
        assert_eq!(
            report,
            CheckReport {
                operations: 11,
                acknowledged: 2,
                unknown: 3,
                unknown_stored: 1,
                conflicts: 1,
                errors: 0,
                reads: 4,
                unanswered_reads: 1,
                actors: 2,
                stored_events: 4,
            }
        );
        assert_eq!(
            report.to_string(),
            "11 operations: 2 acknowledged, 3 unknown (1 stored), 1 conflicts, 0 errors, \
             4 reads (1 unanswered); 4 events stored for 2 actors"
        );
    }

    /// A store model under one lock (so its reads are linearizable) that sometimes stores a
    /// write and loses the answer, and sometimes drops the write and answers nothing.
    #[test]
    fn passes_a_recorded_history_from_threads() {
        type Store = Mutex<BTreeMap<String, Vec<(u64, String)>>>;
        let store: Arc<Store> = Arc::default();
        let history = History::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = Arc::clone(&store);
                let rec = history.recorder();
                std::thread::spawn(move || {
                    let mut seed = t * 7919 + 1;
                    let mut random = move |n: u64| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) % n
                    };
                    for k in 0..200 {
                        let actor = format!("actor-{}", random(3));
                        let read = rec.read_version(actor.clone());
                        let latest = {
                            let s = store.lock().unwrap();
                            s.get(&actor).and_then(|e| e.last()).map_or(0, |e| e.0)
                        };
                        read.ok(latest);
                        let ids = [format!("{t}-{k}-a"), format!("{t}-{k}-b")];
                        let n = 1 + random(2) as usize;
                        let pending =
                            rec.append(actor.clone(), latest + 1, ids[..n].iter().cloned());
                        let fate = random(10);
                        let stored = {
                            let mut s = store.lock().unwrap();
                            let events = s.entry(actor.clone()).or_default();
                            let current = events.last().map_or(0, |e| e.0);
                            if current != latest {
                                None
                            } else if fate == 0 {
                                Some(false) // dropped on the way
                            } else {
                                for (i, id) in ids[..n].iter().enumerate() {
                                    events.push((latest + 1 + i as u64, id.clone()));
                                }
                                Some(true)
                            }
                        };
                        match (stored, fate) {
                            (None, _) => pending.conflict(),
                            (Some(false), _) | (Some(true), 1) => pending.unknown(),
                            (Some(true), _) => pending.ok(),
                        }
                        if random(5) == 0 {
                            let replay = rec.replay(actor.clone(), 1 + random(3));
                            let events: Vec<(u64, String)> = {
                                let s = store.lock().unwrap();
                                s.get(&actor).cloned().unwrap_or_default()
                            };
                            let from = match &replay.history.ops()[replay.index].operation {
                                Operation::Replay { from_version, .. } => *from_version,
                                _ => unreachable!(),
                            };
                            replay.ok(events.into_iter().filter(|(v, _)| *v >= from));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut final_state = FinalState::new();
        for actor in history.actors() {
            let events = store
                .lock()
                .unwrap()
                .get(&actor)
                .cloned()
                .unwrap_or_default();
            final_state.insert(actor, events);
        }
        let report = history
            .check(&final_state, &CheckOptions::default())
            .unwrap();
        assert!(report.acknowledged > 0 && report.conflicts > 0, "{report}");
        assert!(report.unknown_stored > 0, "{report}");
        assert!(report.unknown > report.unknown_stored, "{report}");

        // The same history with one acknowledged event removed is caught.
        let ops = history.ops();
        let victim = ops
            .iter()
            .find(|op| op.outcome == Outcome::Ok && op.operation.is_write())
            .unwrap();
        let Operation::Append(a) = &victim.operation else {
            unreachable!()
        };
        let mut damaged = final_state.clone();
        let kept: Vec<(u64, String)> = final_state
            .actor(&a.actor)
            .iter()
            .filter(|e| !a.events.contains(e))
            .cloned()
            .collect();
        damaged.insert(a.actor.clone(), kept);
        let (_, violations) = history.check_all(&damaged, &CheckOptions::default());
        assert!(violations.iter().any(|v| v.rule == Rule::LostWrite));
    }

    #[test]
    fn records_store_calls_and_their_errors() {
        let history = History::new();
        let rec = history.recorder();
        let events = vec![
            Event::new("Opened", "acc", 1),
            Event::new("Deposited", "acc", 2),
        ];
        rec.append_events(&events).finish(&Ok(()));
        let conflict: aether_core::Result<()> = Err(StoreError::version_conflict("acc", 3, 2));
        rec.append_events(&[Event::new("X", "acc", 3)])
            .finish(&conflict);
        let invalid: aether_core::Result<()> = Err(StoreError::invalid("empty type"));
        rec.append_events(&[Event::new("", "acc", 3)])
            .finish(&invalid);
        let down: aether_core::Result<()> = Err(StoreError::unavailable(
            "publishing",
            std::io::Error::other("timed out"),
        ));
        let tx = Transaction::new()
            .append("acc", 2, vec![Event::new("Withdrawn", "acc", 3)])
            .append("other", 0, vec![Event::new("Deposited", "other", 1)]);
        rec.commit(&tx).finish(&down);
        rec.read_version("acc").finish(&Ok(2));
        rec.replay("acc", 1).finish(&Ok(events.clone()));
        rec.read_version("acc").finish(&Err(StoreError::unavailable(
            "reading",
            std::io::Error::other("timed out"),
        )));

        let ops = history.ops();
        let outcomes: Vec<&Outcome> = ops.iter().map(|o| &o.outcome).collect();
        assert_eq!(outcomes[0], &Outcome::Ok);
        assert_eq!(outcomes[1], &Outcome::Conflict);
        assert!(matches!(outcomes[2], Outcome::Error(e) if e.contains("empty type")));
        assert_eq!(outcomes[3], &Outcome::Unknown);
        assert_eq!(outcomes[4], &Outcome::Version(2));
        assert!(matches!(outcomes[5], Outcome::Events(e) if e.len() == 2));
        assert_eq!(outcomes[6], &Outcome::Unknown);
        assert!(matches!(&ops[3].operation, Operation::Transaction(a) if a.len() == 2));
        assert_eq!(
            history.actors(),
            vec!["acc".to_string(), "other".to_string()]
        );
        assert!(ops.iter().all(|o| o.client == rec.client()));
        assert!(ops.windows(2).all(|w| w[0].invoked <= w[1].invoked));

        let mut final_state = FinalState::new();
        final_state.insert_events(&events);
        let report = history
            .check(&final_state, &CheckOptions::default())
            .unwrap();
        assert_eq!((report.acknowledged, report.unknown), (1, 1));
        assert_eq!((report.conflicts, report.errors), (1, 1));
        assert_eq!((report.reads, report.unanswered_reads), (2, 1));
    }

    #[test]
    fn a_pending_operation_that_is_dropped_stays_unknown() {
        let history = History::new();
        let rec = history.recorder();
        drop(rec.append("a", 1, ["e1"]));
        let ops = history.ops();
        assert_eq!(ops[0].outcome, Outcome::Unknown);
        assert_eq!(ops[0].completed, None);
        history
            .check(&stored("a", &[(1, "e1")]), &CheckOptions::default())
            .unwrap();
        history
            .check(&FinalState::new(), &CheckOptions::default())
            .unwrap();
    }

    #[test]
    fn a_violation_reads_well() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .append(2, "a", 1, &["e2"], (5, 15), Outcome::Ok);
        let text = plan.violation(&stored("a", &[(1, "e1")])).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "conflicting-acks (two acknowledged appends never share a version):"
        );
        assert_eq!(
            lines[1],
            "  actor \"a\": version 1 acknowledged as e1 and as e2"
        );
        assert_eq!(lines[2], "  #0 c1 append \"a\" [v1 e1] at 0ns..10ms: ok");
        assert_eq!(lines[3], "  #1 c2 append \"a\" [v1 e2] at 5ms..15ms: ok");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn ops_round_trip_through_json() {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
            .replay(2, "a", 1, (20, 30), &[(1, "e1")]);
        let json = serde_json::to_string(&plan.ops).unwrap();
        let back: Vec<Op> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan.ops);
    }
}
