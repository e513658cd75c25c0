//! Routing: the wire format of everything nodes say to each other, and the subjects they say
//! it on.
//!
//! Every message is a versioned JSON envelope `{"v": 2, "body": ...}` whose body is a concrete
//! serde type. An actor request names the actor type and carries the command in that type's
//! own serde form; the receiving node decodes it as the type's command, and the sender decodes
//! the reply or rejection as the type's reply or error. Decoding checks the version first, so
//! another format is reported as such; decoding arbitrary bytes gives [`WireError`], never a
//! panic.
//!
//! Version 2 added the actor type, command metadata and typed rejections; nodes speaking
//! version 1 cannot join a cluster of version-2 nodes.
//!
//! Private to the crate: applications and tools read a cluster through
//! [`ClusterObserver`](crate::ClusterObserver). The feature `unstable-wire` makes this module
//! public (hidden from the docs, not part of the supported API) for the fuzz targets, the
//! benchmarks and the tests that speak the protocol from outside a node; the lint setting
//! below is for the build without it.
#![cfg_attr(not(feature = "unstable-wire"), allow(unreachable_pub))]

use aether_actor::{CommandError, CommandMeta, DecodeError, WrongTypeError};
use aether_core::{Error, ReactionError, VersionConflictError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The wire format version this crate writes and reads.
pub const WIRE_VERSION: u16 = 2;

/// Why bytes from the network could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a well-formed envelope of the expected type.
    #[error("malformed cluster message: {0}")]
    Malformed(String),
    /// An envelope of a format version this node does not speak.
    #[error("unsupported cluster message version {found} (this node speaks {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version in the envelope.
        found: u64,
    },
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Decoding(e.to_string())
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeHeader {
    v: Option<u64>,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    body: T,
}

/// Encodes `body` in a current-version envelope.
///
/// # Errors
/// [`Error::Encoding`] if `body` cannot be serialised.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(&EnvelopeOut {
        v: WIRE_VERSION,
        body,
    })
    .map_err(|e| Error::Encoding(e.to_string()))
}

/// Decodes an envelope holding a `T`.
///
/// # Errors
/// [`WireError::UnsupportedVersion`] for another version, [`WireError::Malformed`] for
/// anything else that is not a current-version envelope of a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let header: EnvelopeHeader =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    match header.v {
        Some(v) if v == u64::from(WIRE_VERSION) => {}
        Some(found) => return Err(WireError::UnsupportedVersion { found }),
        None => return Err(WireError::Malformed("missing version field `v`".into())),
    }
    let env: EnvelopeIn<T> =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(env.body)
}

/// "I am alive", published every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The node.
    pub node_id: String,
    /// Unique per start of the node: a restarted node is a new incarnation.
    pub incarnation: String,
    /// Counts up from 0 within an incarnation.
    pub seq: u64,
}

/// "I am leaving", published once on a clean shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leave {
    /// The node.
    pub node_id: String,
    /// The incarnation that leaves.
    pub incarnation: String,
}

/// A command for an actor, sent to the node that owns its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorRequest {
    /// The actor type ([`Actor::TYPE`](aether_actor::Actor::TYPE)).
    pub actor_type: String,
    /// The actor.
    pub actor_id: String,
    /// The actor's shard as the sender computed it.
    pub shard: u32,
    /// The assignment epoch the sender routed with: a receiver that knows an older one
    /// refreshes before deciding whether it owns the shard.
    pub epoch: u64,
    /// The command's metadata; its command id identifies the command across retries, so the
    /// owner applies it at most once.
    #[serde(default)]
    pub meta: CommandMeta,
    /// The command, as the actor type's serde form (`null` for a refresh).
    pub command: Value,
    /// Not a command: the actor's events changed outside it (a transaction committed by
    /// another node), so the owner drops its activation and reloads at the next command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
}

/// An error a node reports back for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RemoteError {
    /// The request was invalid (an empty actor id, a command that does not fit the type...).
    Invalid {
        /// Why.
        message: String,
    },
    /// The receiver hosts no actor type of this name.
    UnknownActorType {
        /// The type asked for.
        actor_type: String,
    },
    /// Version conflicts outlasted the owner's retry policy.
    Conflict {
        /// The actor.
        actor_id: String,
        /// How many times the command was decided.
        attempts: u32,
        /// The version the last attempt tried to write.
        attempted_version: u64,
        /// The version the store had.
        current_version: u64,
    },
    /// A stored event of the actor does not fit its type.
    EventDecoding {
        /// Which event, and why.
        error: DecodeError,
    },
    /// The actor's stored events were written by another actor type.
    WrongType {
        /// The actor and both types.
        error: WrongTypeError,
    },
    /// The decision's timers or effects were refused, or a fired timer was stale.
    Reaction {
        /// The refusal.
        error: ReactionError,
    },
    /// The request could not be decoded.
    Decoding {
        /// The decoder's message.
        message: String,
    },
    /// Anything else (store unavailable, ...).
    Other {
        /// The error, as text.
        message: String,
    },
}

impl RemoteError {
    /// Describes `e` for the wire.
    pub fn from_error(e: &Error) -> Self {
        match e {
            Error::InvalidInput(m) => Self::Invalid { message: m.clone() },
            Error::VersionConflict(c) => Self::Conflict {
                actor_id: c.actor_id.clone(),
                attempts: 1,
                attempted_version: c.attempted_version,
                current_version: c.current_version,
            },
            Error::Decoding(m) => Self::Decoding { message: m.clone() },
            other => Self::Other {
                message: other.to_string(),
            },
        }
    }

    /// Describes a failed command for the wire; the rejection case is carried separately
    /// ([`ActorResponse::Rejected`]).
    pub fn from_command_error<E>(e: &CommandError<E>) -> Self {
        match e {
            CommandError::Conflict {
                actor_id,
                attempts,
                last,
            } => Self::Conflict {
                actor_id: actor_id.clone(),
                attempts: *attempts,
                attempted_version: last.attempted_version,
                current_version: last.current_version,
            },
            CommandError::Decode(d) => Self::EventDecoding { error: d.clone() },
            CommandError::WrongType(w) => Self::WrongType { error: w.clone() },
            CommandError::Reaction(r) => Self::Reaction { error: r.clone() },
            CommandError::Infrastructure(e) => Self::from_error(e),
            CommandError::Rejected(_) => Self::Other {
                message: "command rejected".into(),
            },
        }
    }

    /// The caller-side error.
    pub fn into_command_error<E>(self, node: &str) -> CommandError<E> {
        match self {
            Self::Invalid { message } => Error::InvalidInput(message).into(),
            Self::UnknownActorType { actor_type } => {
                Error::NotFound(format!("node {node} hosts no actor type {actor_type:?}")).into()
            }
            Self::Conflict {
                actor_id,
                attempts,
                attempted_version,
                current_version,
            } => CommandError::Conflict {
                actor_id: actor_id.clone(),
                attempts,
                last: VersionConflictError {
                    actor_id,
                    attempted_version,
                    current_version,
                },
            },
            Self::EventDecoding { error } => CommandError::Decode(error),
            Self::WrongType { error } => CommandError::WrongType(error),
            Self::Reaction { error } => CommandError::Reaction(error),
            Self::Decoding { message } => Error::Decoding(format!(
                "node {node} could not decode the request: {message}"
            ))
            .into(),
            Self::Other { message } => {
                Error::backend(format!("node {node} failed to handle the request"), message).into()
            }
        }
    }
}

/// The answer to an [`ActorRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ActorResponse {
    /// The actor's reply.
    Reply {
        /// The reply, as the actor type's serde form.
        reply: Value,
        /// The actor's version after the command.
        version: u64,
        /// The command's id had been applied before, by an activation that does not keep its
        /// first reply: `reply` is the reply on the current state (see
        /// `aether_actor::Handled::AlreadyApplied`). Absent on the wire when false, so
        /// nodes that predate it read the answer as a plain reply.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        already_applied: bool,
    },
    /// The actor refused the command.
    Rejected {
        /// The rejection, as the actor type's serde form of its error.
        error: Value,
    },
    /// The receiver does not own the actor's shard under the newest assignment it knows.
    NotOwner {
        /// The receiver's assignment epoch.
        epoch: u64,
        /// The owner under that assignment, if any.
        owner: Option<String>,
    },
    /// Handling failed.
    Error {
        /// What went wrong.
        error: RemoteError,
    },
}

/// The subjects of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the NATS transport's and the observer's
pub struct Subjects {
    prefix: String,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Subjects {
    /// Subjects of the cluster `cluster_name` (an already validated name).
    pub fn new(cluster_name: &str) -> Self {
        Self {
            prefix: format!("aether.cluster.{cluster_name}"),
        }
    }

    /// The prefix every subject of the cluster starts with (`aether.cluster.<cluster>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where heartbeats go.
    pub fn heartbeat(&self) -> String {
        format!("{}.members.heartbeat", self.prefix)
    }

    /// Where leave notices go.
    pub fn leave(&self) -> String {
        format!("{}.members.leave", self.prefix)
    }

    /// Everything membership-related (for subscribing).
    pub fn members_all(&self) -> String {
        format!("{}.members.>", self.prefix)
    }

    /// Where `node` takes actor requests.
    pub fn node_requests(&self, node: &str) -> String {
        format!("{}.node.{node}.actor", self.prefix)
    }
}

/// The key-value bucket of a cluster.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub fn bucket_name(cluster_name: &str) -> String {
    format!("AETHER_CLUSTER_{cluster_name}")
}

/// The bucket's values, for code that reads or forges them from outside a node.
#[cfg(feature = "unstable-wire")]
pub use crate::leader::LeaderLease;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_of_the_previous_format_is_a_typed_error() {
        let old = br#"{"v":1,"body":{"actorId":"a","shard":1,"epoch":2,"message":"Close"}}"#;
        assert_eq!(
            decode::<ActorRequest>(old),
            Err(WireError::UnsupportedVersion { found: 1 })
        );
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let req = ActorRequest {
            actor_type: "account".into(),
            actor_id: "acc-1".into(),
            shard: 7,
            epoch: 42,
            meta: CommandMeta::new().command_id("m-1").user_id("ada"),
            command: serde_json::json!({"Deposit": {"amount": 5}}),
            refresh: false,
        };
        let bytes = encode(&req).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"v\":2,\"body\":{"), "{text}");
        assert!(text.contains("\"actorType\":\"account\""), "{text}");
        let back: ActorRequest = decode(&bytes).unwrap();
        assert_eq!(back, req);
        for resp in [
            ActorResponse::NotOwner {
                epoch: 3,
                owner: Some("n".into()),
            },
            ActorResponse::Rejected {
                error: serde_json::json!({"InsufficientFunds": {"balance": 3}}),
            },
            ActorResponse::Reply {
                reply: serde_json::json!(5),
                version: 9,
                already_applied: false,
            },
            ActorResponse::Reply {
                reply: serde_json::json!(5),
                version: 9,
                already_applied: true,
            },
        ] {
            assert_eq!(
                decode::<ActorResponse>(&encode(&resp).unwrap()).unwrap(),
                resp
            );
        }
    }

    #[test]
    fn wrong_version_and_garbage_are_typed_errors() {
        assert_eq!(
            decode::<Heartbeat>(br#"{"v":3,"body":{}}"#),
            Err(WireError::UnsupportedVersion { found: 3 })
        );
        assert!(matches!(
            decode::<Heartbeat>(br#"{"body":{}}"#),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Heartbeat>(br#"{"v":2,"body":{"nodeId":1}}"#),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Heartbeat>(b"\xff\x00"),
            Err(WireError::Malformed(_))
        ));
        let e: Error = WireError::UnsupportedVersion { found: 9 }.into();
        assert!(matches!(e, Error::Decoding(_)));
    }

    #[test]
    fn remote_errors_map_back_to_command_errors() {
        let conflict: CommandError<()> = CommandError::Conflict {
            actor_id: "a".into(),
            attempts: 4,
            last: VersionConflictError {
                actor_id: "a".into(),
                attempted_version: 3,
                current_version: 5,
            },
        };
        match RemoteError::from_command_error(&conflict).into_command_error::<()>("n") {
            CommandError::Conflict { attempts, last, .. } => {
                assert_eq!((attempts, last.current_version), (4, 5))
            }
            other => panic!("{other:?}"),
        }
        let decode_error = DecodeError {
            actor_id: "a".into(),
            version: 2,
            event_id: "e".into(),
            event_type: "T".into(),
            schema_version: 1,
            reason: "bad".into(),
        };
        let wire =
            RemoteError::from_command_error(&CommandError::<()>::Decode(decode_error.clone()));
        let back: RemoteError =
            serde_json::from_value(serde_json::to_value(&wire).unwrap()).unwrap();
        assert!(
            matches!(back.into_command_error::<()>("n"), CommandError::Decode(d) if d == decode_error)
        );
        assert!(matches!(
            RemoteError::from_error(&Error::invalid("no")).into_command_error::<()>("n"),
            CommandError::Infrastructure(Error::InvalidInput(_))
        ));
        assert!(matches!(
            RemoteError::from_error(&Error::Closed("x".into())).into_command_error::<()>("n"),
            CommandError::Infrastructure(Error::Backend { .. })
        ));
        let unknown = RemoteError::UnknownActorType {
            actor_type: "x".into(),
        };
        assert!(matches!(
            unknown.into_command_error::<()>("n"),
            CommandError::Infrastructure(Error::NotFound(_))
        ));
    }

    #[test]
    fn subjects() {
        let s = Subjects::new("c1");
        assert_eq!(s.heartbeat(), "aether.cluster.c1.members.heartbeat");
        assert_eq!(s.node_requests("n-1"), "aether.cluster.c1.node.n-1.actor");
        assert_eq!(bucket_name("c1"), "AETHER_CLUSTER_c1");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ActorRequest>(&bytes);
            let _ = decode::<ActorResponse>(&bytes);
            let _ = decode::<Heartbeat>(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\{\"v\":2,\"body\":.{0,40}\\}") {
            let _ = decode::<ActorRequest>(s.as_bytes());
        }
    }
}
