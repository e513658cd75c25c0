//! What a history is made of: clients, operations and their outcomes.

use std::fmt;
use std::time::Duration;

use aether_core::{Error as StoreError, Event};
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
    pub(super) fn events(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
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
    /// [`StoreError::PayloadTooLarge`], [`StoreError::Encoding`], [`StoreError::CrossPartition`]); [`Unknown`](Self::Unknown)
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
            | StoreError::CrossPartition(_)
            | StoreError::Encoding(_) => Self::Error(error.to_string()),
            _ => Self::Unknown,
        }
    }

    pub(super) fn write_class(&self) -> WriteClass {
        match self {
            Self::Ok | Self::Version(_) | Self::Events(_) => WriteClass::Acked,
            Self::Unknown => WriteClass::Unknown,
            Self::Conflict | Self::Error(_) => WriteClass::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteClass {
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
