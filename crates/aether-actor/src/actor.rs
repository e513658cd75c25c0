//! The typed actor: what an application writes.

use std::future::Future;

use aether_core::{
    Event, TimerFire, TraceContext, METADATA_CAUSATION_ID, METADATA_CORRELATION_ID,
    METADATA_MESSAGE_ID, METADATA_SPAN_ID, METADATA_TRACE_ID, METADATA_USER_ID,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::event::DomainEvent;
use crate::reaction::{Effect, Timer};
use crate::upcast::Upcasters;

/// An event-sourced actor type: its state, the commands it takes, the events it records, what
/// it answers and how it refuses.
///
/// The runtime keeps one `State` per active actor, rebuilt from the latest snapshot plus the
/// later events. For each command it calls [`decide`](Self::decide); when that returns events
/// they are appended with the next versions (optimistic concurrency: on a conflict the
/// runtime catches up and decides again), folded in with [`apply`](Self::apply), and the
/// sender gets [`reply`](Self::reply). A rejection writes nothing and reaches the sender typed,
/// across nodes too.
///
/// `decide` may run more than once for one command (after a conflict, or when the state it
/// saw turned out to be stale), so it must not have effects of its own beyond reading.
/// `apply` must be a pure fold: replaying the same events always gives the same state.
///
/// The same actor type runs embedded ([`ActorHost`](crate::ActorHost) over any store) and on
/// an `aether-cluster` node, unchanged.
///
/// ```
/// use aether_actor::{Actor, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Counter { value: i64 }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum CounterCommand { Add(i64) }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Added { by: i64 } }
///
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &'static str { "Added" }
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// enum CounterError {
///     #[error("adding {0} would overflow")]
///     Overflow(i64),
/// }
///
/// struct Counters;
///
/// impl Actor for Counters {
///     type State = Counter;
///     type Command = CounterCommand;
///     type Event = CounterEvent;
///     type Reply = i64;
///     type Error = CounterError;
///     const TYPE: &'static str = "counter";
///
///     async fn decide(&self, _id: &str, state: &Counter, command: &CounterCommand)
///         -> Result<Vec<CounterEvent>, CounterError>
///     {
///         let CounterCommand::Add(by) = *command;
///         state.value.checked_add(by).ok_or(CounterError::Overflow(by))?;
///         Ok(vec![CounterEvent::Added { by }])
///     }
///
///     fn apply(state: &mut Counter, event: &CounterEvent) {
///         let CounterEvent::Added { by } = event;
///         state.value += by;
///     }
///
///     fn reply(state: &Counter, _: &CounterCommand, _: &[CounterEvent]) -> i64 {
///         state.value
///     }
/// }
/// ```
pub trait Actor: Send + Sync + 'static {
    /// The state of one actor. It is snapshotted as JSON, so it must serialise to a JSON
    /// object.
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The commands it takes; they cross the wire as themselves (serde).
    type Command: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The events it records.
    type Event: DomainEvent;
    /// What a sender gets back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// A domain rejection; it reaches the sender typed, across nodes too.
    type Error: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The actor type's name: commands are routed to it by this name, so every node must use
    /// the same. Letters, digits, `-` and `_`.
    const TYPE: &'static str;

    /// The schema version of [`State`](Self::State) as snapshotted. Raise it when the state's
    /// shape changes: snapshots of another version are then ignored and actors rebuilt from
    /// their events.
    const STATE_VERSION: u32 = 1;

    /// Decides which events `command` causes given the current `state`, or refuses it.
    ///
    /// Asynchronous so that a decision may consult a service; it must not change anything
    /// itself, since it may run more than once for one command.
    fn decide(
        &self,
        actor_id: &str,
        state: &Self::State,
        command: &Self::Command,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send;

    /// Folds one event into the state.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// The answer to `command`, given the state after its `events` were applied (no events
    /// when the command decided none).
    fn reply(state: &Self::State, command: &Self::Command, events: &[Self::Event]) -> Self::Reply;

    /// The upcasters of this actor's events ([`Upcasters`]); none by default.
    fn upcasters() -> Upcasters {
        Upcasters::new()
    }

    /// The timers this actor wants pending in `state` ([`Timer`]); none by default.
    ///
    /// After every decision the runtime compares the timers declared before and after it and
    /// records the changes on the decision's last event (set, replaced, cancelled, by name):
    /// atomic with the events, rebuilt with the state. A reactor started with timers
    /// (`aether-reactions`) sets the schedules and sends each timer's command when it is due.
    /// Without one, a decision that sets a timer is refused with
    /// [`ReactionError::TimersUnavailable`](aether_core::ReactionError::TimersUnavailable).
    ///
    /// Must be a pure function of the state (no clock): due times live in the state, taken
    /// from events. At most [`MAX_TIMERS_PER_ACTOR`](aether_core::MAX_TIMERS_PER_ACTOR) per
    /// actor; a timer being set must be due within an hour before and 400 days after the
    /// decision (see [`aether_core::ReactionError`] for every refusal).
    fn timers(actor_id: &str, state: &Self::State) -> Vec<Timer<Self::Command>> {
        let _ = (actor_id, state);
        Vec::new()
    }

    /// The messages `event` sends once it is stored ([`Effect`]): commands to other actors,
    /// publishes to NATS subjects; none by default.
    ///
    /// Recorded on the event when it is decided (so stored with it, all or nothing) and
    /// carried out by a reactor after the commit, at least once, each with an id derived from
    /// the event ([`aether_core::effect_id`]) that the receiver deduplicates by. Must be a
    /// pure function of the event.
    fn effects(actor_id: &str, event: &Self::Event) -> Vec<Effect> {
        let _ = (actor_id, event);
        Vec::new()
    }
}

/// What travels with a command besides its content. Every event the command causes carries
/// these in its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandMeta {
    /// The command's id. A command sent again with the same id (a retry after a timeout) is
    /// applied once, and the retry gets the first outcome. Recorded as
    /// [`METADATA_MESSAGE_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Ties together everything one request caused ([`METADATA_CORRELATION_ID`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the event or command that caused this command ([`METADATA_CAUSATION_ID`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// On whose behalf ([`METADATA_USER_ID`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The trace the command belongs to: carried to the owning node (as a `traceparent`
    /// header too), recorded on that node's span and on the events as
    /// [`METADATA_TRACE_ID`] and [`METADATA_SPAN_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// Set on the command a timer sends when it fires: which timer. The actor drops the
    /// command, undecided, when that timer is no longer pending
    /// ([`ReactionError::StaleTimer`](aether_core::ReactionError::StaleTimer)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<TimerFire>,
}

impl CommandMeta {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the command id.
    pub fn command_id(mut self, id: impl Into<String>) -> Self {
        self.command_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the trace context.
    pub fn trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Writes the set fields into `event`'s metadata.
    pub fn stamp(&self, event: &mut Event) {
        for (key, value) in [
            (METADATA_MESSAGE_ID, &self.command_id),
            (METADATA_CORRELATION_ID, &self.correlation_id),
            (METADATA_CAUSATION_ID, &self.causation_id),
            (METADATA_USER_ID, &self.user_id),
        ] {
            if let Some(v) = value {
                event.set_metadata(key, v.clone());
            }
        }
        if let Some(t) = &self.trace {
            event.set_metadata(METADATA_TRACE_ID, t.trace_id());
            event.set_metadata(METADATA_SPAN_ID, t.span_id());
        }
    }
}

/// A command with its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<C> {
    /// The command.
    pub command: C,
    /// Its metadata.
    #[serde(default)]
    pub meta: CommandMeta,
}

impl<C> Envelope<C> {
    /// `command` with no metadata.
    pub fn new(command: C) -> Self {
        Self {
            command,
            meta: CommandMeta::default(),
        }
    }

    /// Sets the metadata.
    pub fn with_meta(mut self, meta: CommandMeta) -> Self {
        self.meta = meta;
        self
    }

    /// Sets the command id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.meta.command_id = Some(id.into());
        self
    }
}

impl<C> From<C> for Envelope<C> {
    fn from(command: C) -> Self {
        Self::new(command)
    }
}
