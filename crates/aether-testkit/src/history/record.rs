//! Recording a history from concurrent clients.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use aether_core::{Event, Transaction};

use super::*;

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
    pub(super) history: History,
    pub(super) index: usize,
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
