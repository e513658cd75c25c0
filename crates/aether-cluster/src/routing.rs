//! Routing: the wire format of everything nodes say to each other, and the subjects they say
//! it on.
//!
//! Every message is a versioned JSON envelope `{"v": 1, "body": ...}` whose body is a concrete
//! serde type (an actor's message arrives as the application's own message type, never as a
//! loose map). Decoding checks the version first, so a future format is reported as such;
//! decoding arbitrary bytes gives [`WireError`], never a panic.

use aether_core::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The wire format version this crate writes and reads.
pub const WIRE_VERSION: u16 = 1;

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

/// Encodes `body` in a version-1 envelope.
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
/// anything else that is not a version-1 envelope of a `T`.
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

/// A message for an actor, sent to the node that owns its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorRequest<M> {
    /// The actor.
    pub actor_id: String,
    /// The actor's shard as the sender computed it.
    pub shard: u32,
    /// The assignment epoch the sender routed with: a receiver that knows an older one
    /// refreshes before deciding whether it owns the shard.
    pub epoch: u64,
    /// Identifies this message across retries: the owner applies a message with an id it has
    /// already applied at most once (absent in requests from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The application's message.
    pub message: M,
}

/// An error a node reports back for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RemoteError {
    /// The actor rejected the message, or the request was invalid.
    Invalid {
        /// Why.
        message: String,
    },
    /// Version conflicts outlasted the retries.
    Conflict {
        /// The actor.
        actor_id: String,
        /// The version the last attempt tried to write.
        attempted_version: u64,
        /// The version the store had.
        current_version: u64,
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
                attempted_version: c.attempted_version,
                current_version: c.current_version,
            },
            Error::Decoding(m) => Self::Decoding { message: m.clone() },
            other => Self::Other {
                message: other.to_string(),
            },
        }
    }

    /// The caller-side [`Error`].
    pub fn into_error(self, node: &str) -> Error {
        match self {
            Self::Invalid { message } => Error::InvalidInput(message),
            Self::Conflict {
                actor_id,
                attempted_version,
                current_version,
            } => Error::version_conflict(actor_id, attempted_version, current_version),
            Self::Decoding { message } => Error::Decoding(format!(
                "node {node} could not decode the request: {message}"
            )),
            Self::Other { message } => {
                Error::backend(format!("node {node} failed to handle the request"), message)
            }
        }
    }
}

/// The answer to an [`ActorRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ActorResponse<R> {
    /// The actor's reply.
    Reply {
        /// The reply.
        reply: R,
        /// The actor's version after the message.
        version: u64,
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
pub struct Subjects {
    prefix: String,
}

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
pub fn bucket_name(cluster_name: &str) -> String {
    format!("AETHER_CLUSTER_{cluster_name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Deposit { amount: i64 },
        Close,
    }

    #[test]
    fn a_request_without_a_message_id_from_an_older_node_decodes() {
        let old = br#"{"v":1,"body":{"actorId":"a","shard":1,"epoch":2,"message":"Close"}}"#;
        let req: ActorRequest<Msg> = decode(old).unwrap();
        assert_eq!(req.message_id, None);
        assert_eq!(req.message, Msg::Close);
    }

    #[test]
    fn requests_round_trip_as_concrete_types() {
        let req = ActorRequest {
            actor_id: "acc-1".into(),
            shard: 7,
            epoch: 42,
            message_id: Some("m-1".into()),
            message: Msg::Deposit { amount: 5 },
        };
        let bytes = encode(&req).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"v\":1,\"body\":{"), "{text}");
        let back: ActorRequest<Msg> = decode(&bytes).unwrap();
        assert_eq!(back, req);
        let resp: ActorResponse<i64> = ActorResponse::NotOwner {
            epoch: 3,
            owner: Some("n".into()),
        };
        assert_eq!(
            decode::<ActorResponse<i64>>(&encode(&resp).unwrap()).unwrap(),
            resp
        );
    }

    #[test]
    fn wrong_version_and_garbage_are_typed_errors() {
        assert_eq!(
            decode::<Heartbeat>(br#"{"v":2,"body":{}}"#),
            Err(WireError::UnsupportedVersion { found: 2 })
        );
        assert!(matches!(
            decode::<Heartbeat>(br#"{"body":{}}"#),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Heartbeat>(br#"{"v":1,"body":{"nodeId":1}}"#),
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
    fn remote_errors_map_back() {
        let c = Error::version_conflict("a", 3, 5);
        let back = RemoteError::from_error(&c).into_error("n");
        assert_eq!(back.as_version_conflict().unwrap().current_version, 5);
        assert!(matches!(
            RemoteError::from_error(&Error::invalid("no")).into_error("n"),
            Error::InvalidInput(_)
        ));
        assert!(matches!(
            RemoteError::from_error(&Error::Closed("x".into())).into_error("n"),
            Error::Backend { .. }
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
            let _ = decode::<ActorRequest<Msg>>(&bytes);
            let _ = decode::<ActorResponse<Msg>>(&bytes);
            let _ = decode::<Heartbeat>(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\{\"v\":1,\"body\":.{0,40}\\}") {
            let _ = decode::<ActorRequest<Msg>>(s.as_bytes());
        }
    }
}
