//! Virtual machines: the contracts between the cluster and the actors it hosts.
//!
//! An application describes its actors with a [`RuntimeModel`]: how a [`RuntimeMessage`] turns
//! into new events given the current state (`handle`), how an event changes the state
//! (`apply`), and what the sender gets back (`reply`). The cluster runs one
//! [`VirtualMachine`] per active actor; [`VMProvider`] lets other components look them up
//! without depending on the runtime that hosts them.

use std::fmt;

use aether_core::{Event, EventData, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lifecycle state of a [`VirtualMachine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VMState {
    /// Active and waiting for a message.
    #[default]
    Idle,
    /// Handling a message.
    Running,
    /// Active but not taking messages (for example while its shard changes hands).
    Paused,
    /// Passivated or shut down; a new message activates a new machine.
    Stopped,
}

impl VMState {
    /// The lowercase name (`idle`, `running`, `paused`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Idle => 0,
            Self::Running => 1,
            Self::Paused => 2,
            Self::Stopped => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Running,
            2 => Self::Paused,
            _ => Self::Stopped,
        }
    }
}

impl fmt::Display for VMState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One running instance of an actor.
pub trait VirtualMachine: Send + Sync + fmt::Debug {
    /// This machine's own id (a new one for every activation).
    fn id(&self) -> &str;
    /// The actor it runs.
    fn actor_id(&self) -> &str;
    /// Its lifecycle state.
    fn state(&self) -> VMState;
}

/// A message sent to an actor. It crosses the wire as itself (serde), never as a loose JSON
/// map, so the receiving node gets the concrete type back.
pub trait RuntimeMessage: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// A short name for logs and metrics; the Rust type name unless overridden.
    fn message_type(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// An event an actor decided to record, before the runtime gives it an id, a version and a
/// timestamp.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    /// The event type, for example `Deposited`.
    pub event_type: String,
    /// The payload.
    pub data: EventData,
}

impl NewEvent {
    /// An event of `event_type` with an empty payload.
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            data: EventData::new(),
        }
    }

    /// Sets one payload field.
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
}

/// How an application's actors behave: the contract between the event-storming model and the
/// runtime.
///
/// The runtime keeps one `State` per active actor, rebuilt from the latest snapshot plus the
/// later events; for each message it calls [`handle`](Self::handle), persists the returned
/// events with the next versions (optimistic concurrency: on a conflict it reloads and calls
/// `handle` again), folds them in with [`apply`](Self::apply) and answers with
/// [`reply`](Self::reply). `handle` must not have side effects, since it can run more than once
/// for a message.
pub trait RuntimeModel: Send + Sync + 'static {
    /// The actor's state. It is snapshotted as JSON, so it must serialise to a JSON object.
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The messages actors accept.
    type Message: RuntimeMessage;
    /// What the sender gets back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The model's name, for logs.
    fn name(&self) -> &str;

    /// Decides which events `message` causes, given the current `state`.
    ///
    /// # Errors
    /// Any error rejects the message; it reaches the sender and nothing is persisted.
    fn handle(
        &self,
        actor_id: &str,
        state: &Self::State,
        message: &Self::Message,
    ) -> Result<Vec<NewEvent>>;

    /// Folds one persisted event into the state.
    fn apply(&self, state: &mut Self::State, event: &Event);

    /// The answer to `message`, given the state after its events were applied.
    fn reply(&self, state: &Self::State, message: &Self::Message) -> Self::Reply;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            VMState::Idle,
            VMState::Running,
            VMState::Paused,
            VMState::Stopped,
        ] {
            assert_eq!(VMState::from_u8(s.to_u8()), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(VMState::default(), VMState::Idle);
    }

    #[test]
    fn new_event_builder() {
        let e = NewEvent::new("Deposited").with_field("amount", 5);
        assert_eq!(e.event_type, "Deposited");
        assert_eq!(e.data["amount"], 5);
    }
}
