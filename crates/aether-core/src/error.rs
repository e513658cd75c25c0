//! The workspace's error type.

use std::fmt;

/// A boxed error from a backend (NATS client, I/O), kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A save was rejected because the actor's history already reached a version at or beyond the
/// one attempted: someone else wrote first (optimistic concurrency).
///
/// Handling: reload the actor (or at least read `current_version`), re-decide, and save again
/// with a version above `current_version`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "version conflict for actor {actor_id:?}: attempted version {attempted_version}, \
     but the current version is {current_version}"
)]
pub struct VersionConflictError {
    /// The actor whose history was written concurrently.
    pub actor_id: String,
    /// The version the rejected save tried to write.
    pub attempted_version: u64,
    /// The actor's latest version as the store saw it when it rejected the save.
    pub current_version: u64,
}

/// A transaction was rejected because one or more of its actors were not at the version it
/// expected: someone else wrote first. Nothing of the transaction was written.
///
/// Handling: reload the actors named in `conflicts`, decide again, and commit a new
/// transaction (with a new id) at their current versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transaction {transaction_id} conflicts: {}",
    conflicts
        .iter()
        .map(|c| format!("actor {:?} is at version {}, not {}", c.actor_id, c.current_version, c.attempted_version.saturating_sub(1)))
        .collect::<Vec<_>>()
        .join("; ")
)]
pub struct TransactionConflictError {
    /// The transaction.
    pub transaction_id: String,
    /// Every actor whose expectation failed: `attempted_version` is the version its first new
    /// event would have had (expected + 1), `current_version` the actor's latest.
    pub conflicts: Vec<VersionConflictError>,
}

/// A transaction named actors that live in different partitions of a partitioned event log,
/// which cannot be appended all or nothing. Nothing was written.
///
/// Handling: keep actors that must change together in one partition (a partition key the
/// application chooses, such as a tenant), or split the work into steps that each touch one
/// partition and coordinate them with a process manager (`aether-reactions`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transaction {transaction_id} spans partitions of the event log ({}): a transaction is \
     all or nothing only within one partition; keep these actors together with a partition key, \
     or coordinate the steps with a process manager",
    actors
        .iter()
        .map(|(actor, partition)| format!("{actor} in partition {partition}"))
        .collect::<Vec<_>>()
        .join(", ")
)]
pub struct CrossPartitionError {
    /// The transaction.
    pub transaction_id: String,
    /// Every actor of the transaction (as `type/id`, or the id of an untyped actor) with the
    /// partition it lives in.
    pub actors: Vec<(String, u32)>,
}

/// Everything a store, bus or cluster operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Optimistic concurrency rejected the save.
    ///
    /// Handling: read [`VersionConflictError::current_version`], rebuild and retry.
    #[error(transparent)]
    VersionConflict(#[from] VersionConflictError),

    /// A transaction's expectations failed on one or more actors; nothing was written.
    ///
    /// Handling: reload the actors named, decide again, commit again.
    #[error(transparent)]
    TransactionConflict(#[from] TransactionConflictError),

    /// A transaction spans partitions of the event log; nothing was written.
    ///
    /// Handling: see [`CrossPartitionError`].
    #[error(transparent)]
    CrossPartition(#[from] CrossPartitionError),

    /// The backend cannot do this at all (for example atomic multi-actor appends on a NATS
    /// server older than 2.12). Nothing was written.
    ///
    /// Handling: upgrade the backend or do without; retrying fails the same way.
    #[error("{operation} is not supported: {reason}")]
    Unsupported {
        /// What was asked for.
        operation: String,
        /// Why it cannot be done, and what would make it possible.
        reason: String,
    },

    /// The caller passed something no store accepts (empty actor id or event type, version 0,
    /// an event of another actor in a batch, a malformed pattern...). Nothing was written.
    ///
    /// Handling: fix the input; retrying the same call fails the same way.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The encoded message is larger than the backend accepts. Nothing was sent.
    ///
    /// Handling: make the payload smaller (or raise the server's `max_payload`).
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the encoded message.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },

    /// A value could not be encoded.
    #[error("encoding failed: {0}")]
    Encoding(String),

    /// Bytes read from storage or the network are not what they should be.
    ///
    /// Handling: the data is malformed; replay with
    /// [`EventStoreWithErrors`](crate::EventStoreWithErrors) to see which messages.
    #[error("decoding failed: {0}")]
    Decoding(String),

    /// The backend could not be reached or did not answer in time. The operation may or may not
    /// have taken effect (for a save: read the latest version before retrying).
    ///
    /// Handling: retry with backoff.
    #[error("{context}: backend unavailable")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },

    /// The server has no room for the write under its JetStream storage limit or the account's
    /// limit. Nothing was stored. (A server whose filesystem fills up before its limit stops
    /// answering instead: saves then fail with [`Error::Unavailable`].)
    ///
    /// Handling: free space or raise the limit (an operator's job), then retry; retrying
    /// before that fails the same way.
    #[error("{context}: storage full")]
    StorageFull {
        /// What was being done.
        context: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },

    /// The backend refused the operation for lack of permission.
    ///
    /// Handling: fix credentials or permissions; retrying will not help.
    #[error("{context}: permission denied")]
    PermissionDenied {
        /// What was being done.
        context: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },

    /// A resource the operation needs (a stream, a bucket, an actor) does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// The component was shut down; no further operations are possible.
    #[error("closed: {0}")]
    Closed(String),

    /// Any other backend failure, with its cause.
    #[error("{context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] with the given message.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Self::InvalidInput(msg.to_string())
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(context: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// An [`Error::Unavailable`] wrapping `source`.
    pub fn unavailable(context: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// A [`VersionConflictError`] for `actor_id`.
    pub fn version_conflict(
        actor_id: impl Into<String>,
        attempted_version: u64,
        current_version: u64,
    ) -> Self {
        Self::VersionConflict(VersionConflictError {
            actor_id: actor_id.into(),
            attempted_version,
            current_version,
        })
    }

    /// Whether this is a [`Error::VersionConflict`].
    pub fn is_version_conflict(&self) -> bool {
        matches!(self, Self::VersionConflict(_))
    }

    /// The conflict details, when this is a [`Error::VersionConflict`].
    pub fn as_version_conflict(&self) -> Option<&VersionConflictError> {
        match self {
            Self::VersionConflict(c) => Some(c),
            _ => None,
        }
    }

    /// The transaction conflict details, when this is a [`Error::TransactionConflict`].
    pub fn as_transaction_conflict(&self) -> Option<&TransactionConflictError> {
        match self {
            Self::TransactionConflict(c) => Some(c),
            _ => None,
        }
    }

    /// The partitions of a transaction refused for spanning them, when this is an
    /// [`Error::CrossPartition`].
    pub fn as_cross_partition(&self) -> Option<&CrossPartitionError> {
        match self {
            Self::CrossPartition(c) => Some(c),
            _ => None,
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(operation: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::Unsupported {
            operation: operation.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether retrying the same operation later can succeed: conflicts (after re-reading) and
    /// unavailability. Invalid input, oversized payloads, decoding errors, permission errors
    /// and unsupported operations are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::VersionConflict(_) | Self::TransactionConflict(_) | Self::Unavailable { .. }
        )
    }

    /// A short, stable name of the error's kind (`version_conflict`, `unavailable`, ...): the
    /// `kind` label of error metrics, and a key for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VersionConflict(_) => "version_conflict",
            Self::TransactionConflict(_) => "transaction_conflict",
            Self::CrossPartition(_) => "cross_partition",
            Self::Unsupported { .. } => "unsupported",
            Self::InvalidInput(_) => "invalid_input",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Encoding(_) => "encoding",
            Self::Decoding(_) => "decoding",
            Self::Unavailable { .. } => "unavailable",
            Self::StorageFull { .. } => "storage_full",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::NotFound(_) => "not_found",
            Self::Closed(_) => "closed",
            Self::Backend { .. } => "backend",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn conflict_display_names_actor_and_both_versions() {
        let e = Error::version_conflict("order.7", 3, 5);
        let s = e.to_string();
        assert!(
            s.contains("order.7") && s.contains('3') && s.contains('5'),
            "{s}"
        );
        assert!(e.is_version_conflict());
        assert!(e.is_retryable());
        let c = e.as_version_conflict().unwrap();
        assert_eq!((c.attempted_version, c.current_version), (3, 5));
        match e {
            Error::VersionConflict(VersionConflictError {
                current_version, ..
            }) => assert_eq!(current_version, 5),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn conflict_with_special_characters_and_huge_versions() {
        let e = Error::version_conflict("a \"b\" ключ", u64::MAX, u64::MAX - 1);
        let s = e.to_string();
        assert!(s.contains(&u64::MAX.to_string()));
        assert!(s.contains("ключ"));
    }

    #[test]
    fn sources_are_kept_and_classification_holds() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let e = Error::unavailable("reading latest version", io);
        assert!(e.source().is_some());
        assert!(e.is_retryable());
        assert!(!e.is_version_conflict());
        assert!(!Error::invalid("x").is_retryable());
        assert!(!Error::PayloadTooLarge { size: 2, limit: 1 }.is_retryable());
        let boxed: BoxError = Box::new(Error::version_conflict("a", 1, 1));
        let back = boxed.downcast::<Error>().unwrap();
        assert!(back.is_version_conflict());
    }
}
