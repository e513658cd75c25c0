//! Transactions: events appended to several actors of one store, all or nothing.

use std::collections::HashSet;

use crate::actor::ActorKey;
use crate::error::{Error, Result};
use crate::event::Event;

/// The most bytes a transaction id may have (it travels in a message header).
pub const MAX_TRANSACTION_ID_BYTES: usize = 64;

/// The events one transaction appends to one actor.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorAppend {
    /// The actor.
    pub actor_id: String,
    /// The version the actor must be at for the transaction to commit (0: no events yet).
    pub expected_version: u64,
    /// Its new events, at versions `expected_version + 1`, `+ 2`, ...
    pub events: Vec<Event>,
}

impl ActorAppend {
    /// The actor: `actor_id` and the actor type of its events (the first event's; every event
    /// of one append must name the same type, which [`Transaction::validate`] checks).
    pub fn actor_key(&self) -> ActorKey<'_> {
        ActorKey {
            actor_type: self.events.first().and_then(|e| e.actor_type.as_deref()),
            actor_id: &self.actor_id,
        }
    }
}

/// Events for several actors of one store, appended all or nothing, each actor at the version
/// the caller expects (optimistic concurrency on every actor involved).
///
/// Commit it with [`EventStore::commit`](crate::EventStore::commit). Readers see all of a
/// committed transaction's events on every actor involved, or none.
///
/// ```
/// use aether_core::{Event, Transaction};
///
/// let transfer = Transaction::new()
///     .append("account-a", 4, vec![Event::new("Withdrawn", "account-a", 5).with_field("amount", 10)])
///     .append("account-b", 0, vec![Event::new("Deposited", "account-b", 1).with_field("amount", 10)]);
/// transfer.validate()?;
/// assert_eq!(transfer.event_count(), 2);
/// # Ok::<(), aether_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    id: String,
    appends: Vec<ActorAppend>,
}

impl Default for Transaction {
    fn default() -> Self {
        Self::new()
    }
}

impl Transaction {
    /// An empty transaction with a new random id.
    pub fn new() -> Self {
        Self::with_id(uuid::Uuid::new_v4().simple().to_string())
    }

    /// An empty transaction with the given id (letters, digits, `-` and `_`, at most 64
    /// bytes; checked by [`validate`](Self::validate)). Stores use it to recognise their own
    /// commit when an acknowledgement was lost, so it must be unique.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            appends: Vec::new(),
        }
    }

    /// Adds `events` for `actor_id`, which must be at `expected_version` when the transaction
    /// commits. The actor's type is its events' [`Event::actor_type`], so one transaction may
    /// hold actors of several types (and two actors of different types with the same id).
    pub fn append(
        mut self,
        actor_id: impl Into<String>,
        expected_version: u64,
        events: Vec<Event>,
    ) -> Self {
        self.appends.push(ActorAppend {
            actor_id: actor_id.into(),
            expected_version,
            events,
        });
        self
    }

    /// The transaction's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The appends, in the order they were added.
    pub fn appends(&self) -> &[ActorAppend] {
        &self.appends
    }

    /// The number of events over all actors.
    pub fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    /// Checks what every store requires: an id of at most 64 bytes of letters, digits, `-` and
    /// `_`; at least one actor; no actor twice; every actor with at least one event; every
    /// event valid, of its actor, at the versions following the expected one without a gap;
    /// event ids unique within the transaction.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty()
            || self.id.len() > MAX_TRANSACTION_ID_BYTES
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(format!(
                "transaction id {:?} must be 1 to {MAX_TRANSACTION_ID_BYTES} letters, digits, '-' or '_'",
                self.id
            )));
        }
        if self.appends.is_empty() {
            return Err(Error::invalid("a transaction needs at least one actor"));
        }
        let mut actors = HashSet::new();
        let mut ids = HashSet::new();
        for a in &self.appends {
            if a.actor_id.is_empty() {
                return Err(Error::invalid("actor id must not be empty"));
            }
            if !actors.insert(a.actor_key()) {
                return Err(Error::invalid(format!(
                    "actor {} appears twice in transaction {}; put all its events in one append",
                    a.actor_key(),
                    self.id
                )));
            }
            if a.events.is_empty() {
                return Err(Error::invalid(format!(
                    "actor {:?} has no events in transaction {}",
                    a.actor_id, self.id
                )));
            }
            for (e, want) in a.events.iter().zip(a.expected_version + 1..) {
                e.validate()?;
                if e.actor_key() != a.actor_key() {
                    return Err(Error::invalid(format!(
                        "an event of actor {} is in the append of actor {}",
                        e.actor_key(),
                        a.actor_key()
                    )));
                }
                if e.version != want {
                    return Err(Error::invalid(format!(
                        "actor {:?} expects version {}, so its events must be at {}, {}, ...; \
                         found version {} where {want} was due",
                        a.actor_id,
                        a.expected_version,
                        a.expected_version + 1,
                        a.expected_version + 2,
                        e.version
                    )));
                }
                if !ids.insert(e.id.as_str()) {
                    return Err(Error::invalid(format!(
                        "event id {:?} appears twice in transaction {}",
                        e.id, self.id
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(actor: &str, v: u64) -> Event {
        Event::new("T", actor, v)
    }

    #[test]
    fn valid_transactions_pass() {
        let t = Transaction::with_id("t-1")
            .append("a", 2, vec![ev("a", 3), ev("a", 4)])
            .append("b", 0, vec![ev("b", 1)]);
        assert!(t.validate().is_ok());
        assert_eq!((t.id(), t.event_count(), t.appends().len()), ("t-1", 3, 2));
        assert_eq!(Transaction::new().id().len(), 32);
    }

    #[test]
    fn bad_transactions_are_invalid_input() {
        let bad = [
            Transaction::new(),
            Transaction::with_id("").append("a", 0, vec![ev("a", 1)]),
            Transaction::with_id("x".repeat(65)).append("a", 0, vec![ev("a", 1)]),
            Transaction::with_id("a b").append("a", 0, vec![ev("a", 1)]),
            Transaction::new()
                .append("a", 0, vec![ev("a", 1)])
                .append("a", 1, vec![ev("a", 2)]),
            Transaction::new().append("a", 0, vec![]),
            Transaction::new().append("a", 0, vec![ev("b", 1)]),
            Transaction::new().append("a", 0, vec![ev("a", 2)]),
            Transaction::new().append("a", 3, vec![ev("a", 4), ev("a", 6)]),
            Transaction::new().append("", 0, vec![ev("", 1)]),
            Transaction::new().append("a", 0, vec![Event::new("", "a", 1)]),
        ];
        for t in bad {
            assert!(matches!(t.validate(), Err(Error::InvalidInput(_))), "{t:?}");
        }
        let e = ev("a", 1);
        let twice = Transaction::new().append("a", 0, vec![e.clone()]).append(
            "b",
            0,
            vec![Event {
                actor_id: "b".into(),
                ..e
            }],
        );
        assert!(twice.validate().is_err());
    }
}
