//! What a check is given and what it answers: the final stored state, options, the report
//! and the violations.

use std::collections::BTreeMap;
use std::fmt;

use aether_core::Event;
use serde::{Deserialize, Serialize};

use super::*;

/// Every actor's stored history at the end of a test: `(version, event id)` in the order the
/// store returned them (`get_events(actor, 1)`). An actor not listed has no events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub(super) actors: BTreeMap<String, Vec<(u64, String)>>,
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

    pub(super) fn name(self) -> &'static str {
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
