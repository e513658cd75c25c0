//! What handling a command or rebuilding an actor can fail with.

use aether_core::{Error, ReactionError, VersionConflictError};
use serde::{Deserialize, Serialize};

/// A stored event that does not fit its typed form. Nothing is guessed: the event is not
/// skipped and no field is defaulted.
///
/// Handling: the stored history and the code disagree. When the reason says the actor id
/// holds another actor type's events, the command went to the wrong id (keep the ids of
/// different actor types apart). Otherwise register an upcaster for the event's type and
/// schema version ([`Upcasters`](crate::Upcasters)), or fix the writer. Retrying fails the
/// same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[error(
    "event at version {version} of actor {actor_id:?} (type {event_type:?}, schema version \
     {schema_version}, id {event_id}) does not decode: {reason}"
)]
pub struct DecodeError {
    /// The actor whose history holds the event.
    pub actor_id: String,
    /// The event's version: its position in the actor's stream.
    pub version: u64,
    /// The event's id.
    pub event_id: String,
    /// The event type as stored.
    pub event_type: String,
    /// The schema version as stored (0 when the metadata held no number).
    pub schema_version: u32,
    /// Why it does not decode.
    pub reason: String,
}

/// An actor's stored history was written by another actor type: a command or a read of type
/// `expected` met an event of type `found` under the same actor.
///
/// With typed subjects every type has its own histories, so this only happens where types
/// share subjects: a stream written before actor types, read with a declared legacy type
/// (`JetStreamConfig::legacy_actor_type` in `aether-store`), whose id holds another type's
/// events.
///
/// Handling: the command went to the wrong id or the wrong type; nothing was written. Send it
/// to the right actor. Retrying fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[error(
    "actor {actor_id:?} holds events of actor type {found:?} (version {version}), not of \
     {expected:?}"
)]
pub struct WrongTypeError {
    /// The actor id.
    pub actor_id: String,
    /// The type the command or read was for.
    pub expected: String,
    /// The type that wrote the stored event.
    pub found: String,
    /// The version of the first event of the other type.
    pub version: u64,
}

/// The actor was retired: its history ends with the final event
/// ([`aether_core::EVENT_TYPE_RETIRED`]) and it takes no more commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("actor {actor_type}/{actor_id} is retired (at version {version})")]
#[serde(rename_all = "camelCase")]
pub struct RetiredError {
    /// The actor's type.
    pub actor_type: String,
    /// The actor.
    pub actor_id: String,
    /// The version of its final event.
    pub version: u64,
}

/// Why an actor could not be rebuilt from its store.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The actor was retired: nothing loads it for writing any more.
    ///
    /// Handling: see [`RetiredError`]; a final answer.
    #[error(transparent)]
    Retired(RetiredError),
    /// A stored event does not fit the actor's event type.
    ///
    /// Handling: see [`DecodeError`].
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The actor's stored events were written by another actor type.
    ///
    /// Handling: see [`WrongTypeError`].
    #[error(transparent)]
    WrongType(#[from] WrongTypeError),
    /// The store failed.
    ///
    /// Handling: as the [`Error`] says (retry when [`Error::is_retryable`]).
    #[error(transparent)]
    Store(#[from] Error),
}

/// Why a command got no reply. The four cases call for different handling, so they are told
/// apart.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The actor refused the command, deciding on its current state. Nothing was written.
    ///
    /// Handling: a business answer; show it to the user. Retrying the same command on the
    /// same state is refused the same way.
    #[error("command rejected: {0}")]
    Rejected(E),

    /// Other writers kept changing the actor while the command was decided, more often than
    /// the retry policy allows. Nothing was written.
    ///
    /// Handling: retry later, or raise [`RetryPolicy::max_retries`](crate::RetryPolicy).
    #[error("version conflicts on actor {actor_id:?} outlasted {attempts} attempts: {last}")]
    Conflict {
        /// The actor.
        actor_id: String,
        /// How many times the command was decided.
        attempts: u32,
        /// The last conflict.
        #[source]
        last: VersionConflictError,
    },

    /// A stored event of the actor does not fit its type.
    ///
    /// Handling: see [`DecodeError`].
    #[error(transparent)]
    Decode(DecodeError),

    /// The actor's stored events were written by another actor type. Nothing was written.
    ///
    /// Handling: see [`WrongTypeError`].
    #[error(transparent)]
    WrongType(WrongTypeError),

    /// The decision's timers or effects were refused (a timer too far in the past or future,
    /// too many timers, an unknown target type, timers with no timer service), or the
    /// command came from a timer that is no longer pending. Nothing was written.
    ///
    /// Handling: see [`ReactionError`]; retrying the same command on the same state fails
    /// the same way.
    #[error(transparent)]
    Reaction(ReactionError),

    /// The actor was retired ([`ActorHost::retire`](crate::ActorHost::retire)): it takes no
    /// more commands. Nothing was written.
    ///
    /// Handling: a final answer; the actor's history stays readable.
    #[error(transparent)]
    Retired(RetiredError),

    /// The store, the network or the runtime failed. The command may or may not have been
    /// applied when the error is [`Error::Unavailable`].
    ///
    /// Handling: as the [`Error`] says; a command sent with an id
    /// ([`CommandMeta::command_id`](crate::CommandMeta)) may be sent again with the same id
    /// safely.
    #[error(transparent)]
    Infrastructure(#[from] Error),
}

impl<E> CommandError<E> {
    /// The rejection, when the actor refused the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// Whether sending the command again later may succeed: exhausted conflicts and an
    /// unavailable backend.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } => true,
            Self::Infrastructure(e) => e.is_retryable(),
            Self::Rejected(_)
            | Self::Decode(_)
            | Self::WrongType(_)
            | Self::Reaction(_)
            | Self::Retired(_) => false,
        }
    }

    /// The same error with the rejection mapped by `f`.
    pub fn map_rejection<F, T>(self, f: F) -> CommandError<T>
    where
        F: FnOnce(E) -> T,
    {
        match self {
            Self::Rejected(e) => CommandError::Rejected(f(e)),
            Self::Conflict {
                actor_id,
                attempts,
                last,
            } => CommandError::Conflict {
                actor_id,
                attempts,
                last,
            },
            Self::Decode(e) => CommandError::Decode(e),
            Self::WrongType(e) => CommandError::WrongType(e),
            Self::Reaction(e) => CommandError::Reaction(e),
            Self::Retired(e) => CommandError::Retired(e),
            Self::Infrastructure(e) => CommandError::Infrastructure(e),
        }
    }
}

impl<E> From<LoadError> for CommandError<E> {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Retired(r) => Self::Retired(r),
            LoadError::Decode(d) => Self::Decode(d),
            LoadError::WrongType(w) => Self::WrongType(w),
            LoadError::Store(s) => Self::Infrastructure(s),
        }
    }
}

/// For code that reports every failure as the workspace's [`Error`] (tools, tests): a
/// rejection becomes [`Error::InvalidInput`] with its message, exhausted conflicts
/// [`Error::VersionConflict`], a decoding failure [`Error::Decoding`], another type's history
/// [`Error::InvalidInput`], a refused reaction [`Error::InvalidInput`] (timers unavailable:
/// [`Error::Unsupported`]), a retired actor [`Error::InvalidInput`].
impl<E: std::fmt::Display> From<CommandError<E>> for Error {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(r) => Error::InvalidInput(format!("command rejected: {r}")),
            CommandError::Conflict { last, .. } => Error::VersionConflict(last),
            CommandError::Decode(d) => Error::Decoding(d.to_string()),
            CommandError::WrongType(w) => Error::InvalidInput(w.to_string()),
            CommandError::Reaction(ReactionError::TimersUnavailable { reason }) => {
                Error::Unsupported {
                    operation: "setting a timer".into(),
                    reason,
                }
            }
            CommandError::Reaction(r) => Error::InvalidInput(r.to_string()),
            CommandError::Retired(r) => Error::InvalidInput(r.to_string()),
            CommandError::Infrastructure(e) => e,
        }
    }
}
