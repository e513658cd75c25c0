//! Routing: the wire format of everything nodes say to each other, and the subjects they say
//! it on.
//!
//! Every message is a versioned JSON envelope `{"v": 3, "body": ...}` whose body is a concrete
//! serde type. An actor request names the actor type and carries the command in that type's
//! own serde form; the receiving node decodes it as the type's command, and the sender decodes
//! the reply or rejection as the type's reply or error. Decoding checks the version first, so
//! another format is reported as such; decoding arbitrary bytes gives [`WireError`], never a
//! panic.
//!
//! Version 2 added the actor type, command metadata and typed rejections; nodes speaking
//! version 1 cannot join a cluster of version-2 nodes. Version 3 drops the shard from actor
//! requests (the owner computes it from the actor id and never used the sender's).
//!
//! # Versions in a cluster of mixed releases
//! A node reads every version from [`MIN_WIRE_VERSION`] to [`WIRE_VERSION`], and says in its
//! heartbeats which ones it speaks ([`Heartbeat::wire`]; a heartbeat without it comes from a
//! node that speaks version 2 only). It sends each actor request in the highest version both
//! it and the receiving node speak (the oldest it reads while it has not heard the receiver).
//! Messages that every node reads are written in [`MIN_WIRE_VERSION`]: heartbeats, leave
//! notices, the bucket's table and lease, and answers to requests (whose form is the same in
//! versions 2 and 3). So a cluster can be upgraded one node at a time: nodes of the new
//! release speak the old version to nodes of the old one, and the new one among themselves.
//!
//! Private to the crate: applications and tools read a cluster through
//! [`ClusterObserver`](crate::ClusterObserver). The feature `unstable-wire` makes this module
//! public (hidden from the docs, not part of the supported API) for the fuzz targets, the
//! benchmarks and the tests that speak the protocol from outside a node; the lint setting
//! below is for the build without it.
#![cfg_attr(not(feature = "unstable-wire"), allow(unreachable_pub))]

use aether_actor::{CommandError, CommandMeta, DecodeError, RetiredError, WrongTypeError};
use aether_core::{Error, ReactionError, VersionConflictError};
use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The newest wire format version this crate writes and reads.
pub const WIRE_VERSION: u16 = 3;

/// The oldest wire format version this crate still reads and speaks to nodes that know no
/// newer one: the previous release's.
pub const MIN_WIRE_VERSION: u16 = 2;

/// Whether this crate reads wire version `v`.
pub fn reads_version(v: u64) -> bool {
    (u64::from(MIN_WIRE_VERSION)..=u64::from(WIRE_VERSION)).contains(&v)
}

/// The wire versions a node speaks, as its heartbeats announce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRange {
    /// The oldest version it reads.
    pub min: u16,
    /// The newest version it reads and speaks.
    pub max: u16,
}

impl WireRange {
    /// The range of a node that announces none: a node of the release before ranges were
    /// announced, which speaks version 2 only.
    pub const UNANNOUNCED: Self = Self { min: 2, max: 2 };

    /// The version to speak to a node of this range, from a node that speaks up to `own_max`:
    /// the highest both speak, or `None` when they share none.
    pub fn common(self, own_max: u16) -> Option<u16> {
        let top = self.max.min(own_max);
        (top >= self.min.max(MIN_WIRE_VERSION)).then_some(top)
    }
}

/// Why bytes from the network could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a well-formed envelope of the expected type.
    #[error("malformed cluster message: {0}")]
    Malformed(String),
    /// An envelope of a format version this node does not speak.
    #[error(
        "unsupported cluster message version {found} (this release reads {MIN_WIRE_VERSION} to \
         {WIRE_VERSION}; a node held at an older version reads only up to it)"
    )]
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

/// A field name of the envelope.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EnvelopeField {
    V,
    Body,
    #[serde(other)]
    Other,
}

/// What an envelope held, before it is judged.
enum Opened<T> {
    Body(u16, T),
    Unsupported(u64),
    MissingVersion,
}

/// Reads an envelope in one pass: the body is decoded straight into `T` when the version came
/// before it (as this crate writes it); when the body came first it is only checked as JSON
/// and decoded once the version is known, so the version is always judged before the body.
struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Opened<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a cluster message envelope")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Opened<T>, M::Error> {
        let mut version: Option<Option<u64>> = None;
        let mut body: Option<T> = None;
        let mut early: Option<&'de RawValue> = None;
        while let Some(field) = map.next_key::<EnvelopeField>()? {
            match field {
                EnvelopeField::V => {
                    if version.is_some() {
                        return Err(de::Error::duplicate_field("v"));
                    }
                    version = Some(map.next_value::<Option<u64>>()?);
                }
                EnvelopeField::Body => {
                    if body.is_some() || early.is_some() {
                        return Err(de::Error::duplicate_field("body"));
                    }
                    if version.flatten().is_some_and(reads_version) {
                        body = Some(map.next_value::<T>()?);
                    } else {
                        early = Some(map.next_value::<&'de RawValue>()?);
                    }
                }
                EnvelopeField::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        match version.flatten() {
            None => Ok(Opened::MissingVersion),
            Some(v) if !reads_version(v) => Ok(Opened::Unsupported(v)),
            Some(v) => {
                // In range, so it fits.
                let v = u16::try_from(v).unwrap_or(WIRE_VERSION);
                match (body, early) {
                    (Some(body), _) => Ok(Opened::Body(v, body)),
                    (None, Some(raw)) => T::deserialize(raw)
                        .map(|body| Opened::Body(v, body))
                        .map_err(de::Error::custom),
                    (None, None) => Err(de::Error::missing_field("body")),
                }
            }
        }
    }
}

/// Encodes `body` in an envelope every node reads ([`MIN_WIRE_VERSION`]): for messages to all
/// nodes (heartbeats, leave notices) and the bucket's values.
///
/// # Errors
/// [`Error::Encoding`] if `body` cannot be serialised.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, Error> {
    encode_at(MIN_WIRE_VERSION, body)
}

/// Encodes `body` in an envelope of version `v` (which the caller chose from the receiver's
/// range; the body must be of that version's form).
///
/// # Errors
/// [`Error::Encoding`] if `body` cannot be serialised.
pub fn encode_at<T: Serialize>(v: u16, body: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(&EnvelopeOut { v, body }).map_err(|e| Error::Encoding(e.to_string()))
}

/// Decodes an envelope holding a `T`, which may borrow from `bytes` (the [`RawValue`] parts of
/// [`ActorRequestIn`] and [`ActorResponseIn`] do).
///
/// # Errors
/// As [`decode_versioned`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    decode_versioned(bytes).map(|(_, body)| body)
}

/// [`decode`], with the envelope's version.
///
/// # Errors
/// [`WireError::UnsupportedVersion`] for a version outside [`MIN_WIRE_VERSION`] to
/// [`WIRE_VERSION`], [`WireError::Malformed`] for anything else that is not such an envelope of
/// a `T`.
pub fn decode_versioned<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(u16, T), WireError> {
    let malformed = |e: serde_json::Error| WireError::Malformed(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let opened = de
        .deserialize_struct("Envelope", &["v", "body"], EnvelopeVisitor(PhantomData))
        .map_err(malformed)?;
    de.end().map_err(malformed)?;
    match opened {
        Opened::Body(v, body) => Ok((v, body)),
        Opened::Unsupported(found) => Err(WireError::UnsupportedVersion { found }),
        Opened::MissingVersion => Err(WireError::Malformed("missing version field `v`".into())),
    }
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
    /// The wire versions the node speaks; absent from nodes of releases before it was added
    /// ([`WireRange::UNANNOUNCED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireRange>,
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
    /// The actor's shard as the sender computed it: version-2 receivers require it; from
    /// version 3 it is left out (the owner computes the shard from the actor id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
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

/// An [`ActorRequest`] as the sender writes it: every field borrowed and the command
/// serialised straight from the actor type's own, in one pass (no JSON value in between). The
/// bytes are an [`ActorRequest`]'s.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActorRequestOut<'a, C: Serialize> {
    pub(crate) actor_type: &'a str,
    pub(crate) actor_id: &'a str,
    /// Version 2 only, where receivers require it (see [`ActorRequest::shard`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shard: Option<u32>,
    pub(crate) epoch: u64,
    pub(crate) meta: &'a CommandMeta,
    pub(crate) command: &'a C,
    /// The newest version the sender reads, when it writes an older one (to a receiver it
    /// has not heard announce a newer one): the answer may then use what that version added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaks: Option<u16>,
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
    /// The actor is retired and takes no more commands (wire version 3; answered to a
    /// version-2 sender as [`Other`](Self::Other), which it can read).
    Retired {
        /// The actor, and its final event's version.
        error: RetiredError,
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
            CommandError::Retired(r) => Self::Retired { error: r.clone() },
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
            Self::Retired { error } => CommandError::Retired(error),
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

impl ActorResponse {
    /// This answer in a form a sender of wire version `v` reads: what a version added is
    /// told to older senders in words ([`RemoteError::Other`]).
    pub fn for_version(self, v: u16) -> Self {
        match self {
            Self::Error {
                error: RemoteError::Retired { error },
            } if v < 3 => Self::Error {
                error: RemoteError::Other {
                    message: error.to_string(),
                },
            },
            other => other,
        }
    }
}

/// An [`ActorResponse`] as the owner writes it: the reply or rejection serialised straight from
/// the actor type's own, in one pass. The bytes are an [`ActorResponse`]'s.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub(crate) enum ActorResponseOut<'a, R: Serialize, E: Serialize> {
    /// See [`ActorResponse::Reply`].
    Reply {
        reply: &'a R,
        version: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        already_applied: bool,
    },
    /// See [`ActorResponse::Rejected`].
    Rejected { error: &'a E },
}

/// An [`ActorRequest`] as the owner reads it: the command stays as its JSON text, borrowed
/// from the message, and is decoded once, straight into the actor type's command.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorRequestIn<'a> {
    /// The actor type.
    pub actor_type: String,
    /// The actor.
    pub actor_id: String,
    /// The actor's shard as the sender computed it: required in version 2 (a version-2
    /// request without one is refused, as nodes of that release refuse it), absent from
    /// version 3. The owner computes the shard itself.
    #[serde(default)]
    pub shard: Option<u32>,
    /// The assignment epoch the sender routed with.
    pub epoch: u64,
    /// The command's metadata.
    #[serde(default)]
    pub meta: CommandMeta,
    /// The command's JSON.
    #[serde(borrow)]
    pub command: &'a RawValue,
    /// A refresh rather than a command.
    #[serde(default)]
    pub refresh: bool,
    /// The newest version the sender reads, when newer than the request's (see
    /// [`ActorRequestIn::answer_version`]).
    #[serde(default)]
    pub speaks: Option<u16>,
}

impl ActorRequestIn<'_> {
    /// The version to answer a request of version `v` in: the newest the sender reads, as far
    /// as this release knows versions.
    pub fn answer_version(&self, v: u16) -> u16 {
        v.max(self.speaks.unwrap_or(v)).min(WIRE_VERSION)
    }
}

/// Decodes an actor request for a node that speaks up to version `own_max`, with the version
/// it came in.
///
/// # Errors
/// [`WireError::UnsupportedVersion`] for a version outside [`MIN_WIRE_VERSION`] to `own_max`;
/// [`WireError::Malformed`] for a version-2 request without its shard, or anything else that is
/// not a request.
pub fn decode_request(bytes: &[u8], own_max: u16) -> Result<(u16, ActorRequestIn<'_>), WireError> {
    let (v, request) = decode_versioned::<ActorRequestIn<'_>>(bytes)?;
    if v > own_max {
        return Err(WireError::UnsupportedVersion {
            found: u64::from(v),
        });
    }
    if v == 2 && request.shard.is_none() {
        return Err(WireError::Malformed(
            "missing field `shard` (required in version 2)".into(),
        ));
    }
    Ok((v, request))
}

/// An [`ActorResponse`] as the sender reads it: the reply or rejection stays as its JSON text,
/// borrowed from the message, and is decoded once, straight into the actor type's own.
#[derive(Debug)]
pub enum ActorResponseIn<'a> {
    /// See [`ActorResponse::Reply`].
    Reply {
        /// The reply's JSON.
        reply: &'a RawValue,
        /// The actor's version after the command.
        version: u64,
        /// The reply is on the current state.
        already_applied: bool,
    },
    /// See [`ActorResponse::Rejected`].
    Rejected {
        /// The rejection's JSON.
        error: &'a RawValue,
    },
    /// See [`ActorResponse::NotOwner`].
    NotOwner {
        /// The receiver's assignment epoch.
        epoch: u64,
        /// The owner under that assignment, if any.
        owner: Option<String>,
    },
    /// See [`ActorResponse::Error`].
    Error {
        /// What went wrong.
        error: RemoteError,
    },
}

/// The tags of [`ActorResponse`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum ResponseStatus {
    Reply,
    Rejected,
    NotOwner,
    Error,
}

/// Every field any [`ActorResponse`] variant has, in one struct: read in one pass whatever
/// the order of the fields (the tag need not come first), then checked against the tag as
/// the tagged enum's own decoding does. A present field is `Some` even when its JSON is
/// `null` (a reply of `()` is `null`). The field names are as the enum writes them: its
/// `rename_all` renames the variants (the tag's values), not their fields.
#[derive(Deserialize)]
struct ResponseFields<'a> {
    status: ResponseStatus,
    #[serde(borrow, default, deserialize_with = "present")]
    reply: Option<&'a RawValue>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    already_applied: bool,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    owner: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl<'de: 'a, 'a> Deserialize<'de> for ActorResponseIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = ResponseFields::deserialize(d)?;
        let missing = de::Error::missing_field;
        Ok(match f.status {
            ResponseStatus::Reply => Self::Reply {
                reply: f.reply.ok_or_else(|| missing("reply"))?,
                version: f.version.ok_or_else(|| missing("version"))?,
                already_applied: f.already_applied,
            },
            ResponseStatus::Rejected => Self::Rejected {
                error: f.error.ok_or_else(|| missing("error"))?,
            },
            ResponseStatus::NotOwner => Self::NotOwner {
                epoch: f.epoch.ok_or_else(|| missing("epoch"))?,
                owner: f.owner,
            },
            ResponseStatus::Error => Self::Error {
                error: serde_json::from_str(f.error.ok_or_else(|| missing("error"))?.get())
                    .map_err(de::Error::custom)?,
            },
        })
    }
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
    fn both_versions_are_read_and_each_node_is_spoken_to_in_one_it_knows() {
        let v2 =
            br#"{"v":2,"body":{"actorType":"t","actorId":"a","shard":3,"epoch":1,"command":null}}"#;
        let v3 = br#"{"v":3,"body":{"actorType":"t","actorId":"a","epoch":1,"command":null}}"#;
        let (v, req) = decode_request(v2, WIRE_VERSION).unwrap();
        assert_eq!((v, req.shard), (2, Some(3)));
        let (v, req) = decode_request(v3, WIRE_VERSION).unwrap();
        assert_eq!((v, req.shard), (3, None));
        // A node of the previous release refuses what it does not know, typed.
        assert_eq!(
            decode_request(v3, 2).map(|(v, _)| v),
            Err(WireError::UnsupportedVersion { found: 3 })
        );
        // Version 2 receivers require the shard: a version-2 request without one is refused.
        let v2_without =
            br#"{"v":2,"body":{"actorType":"t","actorId":"a","epoch":1,"command":null}}"#;
        assert!(matches!(
            decode_request(v2_without, WIRE_VERSION),
            Err(WireError::Malformed(_))
        ));
        // A later version than this release knows is refused, naming it.
        let v4 = br#"{"v":4,"body":{"nodeId":"n","incarnation":"i","seq":0}}"#;
        assert_eq!(
            decode::<Heartbeat>(v4),
            Err(WireError::UnsupportedVersion { found: 4 })
        );
        // The version each pair speaks.
        let new = WireRange { min: 2, max: 3 };
        assert_eq!(new.common(3), Some(3));
        assert_eq!(new.common(2), Some(2));
        assert_eq!(WireRange::UNANNOUNCED.common(3), Some(2));
        assert_eq!(WireRange { min: 4, max: 5 }.common(3), None);
        // Heartbeats of the previous release carry no range and still decode; this
        // release's are written in the oldest version, with the range.
        let old_hb = br#"{"v":2,"body":{"nodeId":"n","incarnation":"i","seq":4}}"#;
        assert_eq!(decode::<Heartbeat>(old_hb).unwrap().wire, None);
        let hb = Heartbeat {
            node_id: "n".into(),
            incarnation: "i".into(),
            seq: 4,
            wire: Some(new),
        };
        let bytes = encode(&hb).unwrap();
        assert!(
            bytes.starts_with(br#"{"v":2,"#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(decode::<Heartbeat>(&bytes).unwrap(), hb);
    }

    #[test]
    fn a_version_3_request_leaves_the_shard_out() {
        let meta = CommandMeta::new();
        let out = |shard| ActorRequestOut {
            actor_type: "t",
            actor_id: "a",
            shard,
            epoch: 1,
            meta: &meta,
            command: &(),
            speaks: None,
        };
        let v3 = encode_at(3, &out(None)).unwrap();
        assert!(!String::from_utf8_lossy(&v3).contains("shard"));
        let v2 = encode_at(2, &out(Some(5))).unwrap();
        assert_eq!(decode_request(&v2, 2).unwrap().1.shard, Some(5));
        assert_eq!(decode_request(&v3, 3).unwrap().1.shard, None);
    }

    #[test]
    fn the_borrowed_forms_write_what_the_owned_ones_read() {
        #[derive(Serialize)]
        enum Command {
            Deposit { amount: i64, note: String },
        }
        let meta = CommandMeta::new().command_id("m-1").user_id("ada");
        let command = Command::Deposit {
            amount: 5,
            note: "rent".into(),
        };
        let bytes = encode(&ActorRequestOut {
            actor_type: "account",
            actor_id: "acc-1",
            shard: Some(7),
            epoch: 42,
            meta: &meta,
            command: &command,
            speaks: None,
        })
        .unwrap();
        let back: ActorRequest = decode(&bytes).unwrap();
        assert_eq!(
            back,
            ActorRequest {
                actor_type: "account".into(),
                actor_id: "acc-1".into(),
                shard: Some(7),
                epoch: 42,
                meta: meta.clone(),
                command: serde_json::json!({"Deposit": {"amount": 5, "note": "rent"}}),
                refresh: false,
            }
        );
        let reply = |already_applied| {
            let out: ActorResponseOut<'_, u64, String> = ActorResponseOut::Reply {
                reply: &5,
                version: 9,
                already_applied,
            };
            decode::<ActorResponse>(&encode(&out).unwrap()).unwrap()
        };
        for applied in [false, true] {
            assert_eq!(
                reply(applied),
                ActorResponse::Reply {
                    reply: serde_json::json!(5),
                    version: 9,
                    already_applied: applied,
                }
            );
        }
        let out: ActorResponseOut<'_, u64, String> = ActorResponseOut::Rejected {
            error: &"no".to_string(),
        };
        assert_eq!(
            decode::<ActorResponse>(&encode(&out).unwrap()).unwrap(),
            ActorResponse::Rejected {
                error: serde_json::json!("no")
            }
        );
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let req = ActorRequest {
            actor_type: "account".into(),
            actor_id: "acc-1".into(),
            shard: Some(7),
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
    fn responses_read_as_written() {
        let reply = |already_applied| ActorResponse::Reply {
            reply: serde_json::json!({"b": 1, "a": [null]}),
            version: 9,
            already_applied,
        };
        for resp in [
            reply(false),
            reply(true),
            ActorResponse::Reply {
                reply: Value::Null,
                version: 0,
                already_applied: false,
            },
            ActorResponse::Rejected {
                error: serde_json::json!({"InsufficientFunds": {"balance": 3}}),
            },
            ActorResponse::NotOwner {
                epoch: 3,
                owner: Some("n".into()),
            },
            ActorResponse::NotOwner {
                epoch: 4,
                owner: None,
            },
            ActorResponse::Error {
                error: RemoteError::Conflict {
                    actor_id: "a".into(),
                    attempts: 2,
                    attempted_version: 3,
                    current_version: 4,
                },
            },
        ] {
            let bytes = encode(&resp).unwrap();
            let read = decode::<ActorResponseIn<'_>>(&bytes).unwrap();
            let back = match read {
                ActorResponseIn::Reply {
                    reply,
                    version,
                    already_applied,
                } => ActorResponse::Reply {
                    reply: serde_json::from_str(reply.get()).unwrap(),
                    version,
                    already_applied,
                },
                ActorResponseIn::Rejected { error } => ActorResponse::Rejected {
                    error: serde_json::from_str(error.get()).unwrap(),
                },
                ActorResponseIn::NotOwner { epoch, owner } => {
                    ActorResponse::NotOwner { epoch, owner }
                }
                ActorResponseIn::Error { error } => ActorResponse::Error { error },
            };
            assert_eq!(back, resp, "{}", String::from_utf8_lossy(&bytes));
        }
        // The tag need not come first; a field the tag needs must be there.
        let moved = br#"{"v":2,"body":{"version":5,"reply":"x","status":"reply"}}"#;
        assert!(matches!(
            decode::<ActorResponseIn<'_>>(moved),
            Ok(ActorResponseIn::Reply { version: 5, .. })
        ));
        for bad in [
            &br#"{"v":2,"body":{"status":"reply","reply":1}}"#[..],
            br#"{"v":2,"body":{"status":"rejected"}}"#,
            br#"{"v":2,"body":{"status":"other"}}"#,
            br#"{"v":2,"body":{"status":"error","error":{"kind":"nope"}}}"#,
        ] {
            assert!(matches!(
                decode::<ActorResponseIn<'_>>(bad),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn requests_read_as_written_with_the_version_anywhere() {
        let req = ActorRequest {
            actor_type: "account".into(),
            actor_id: "acc-1".into(),
            shard: Some(7),
            epoch: 42,
            meta: CommandMeta::new().command_id("m-1"),
            command: serde_json::json!({"Deposit": {"amount": 5}}),
            refresh: false,
        };
        let bytes = encode(&req).unwrap();
        let read = decode::<ActorRequestIn<'_>>(&bytes).unwrap();
        assert_eq!(
            (read.actor_type.as_str(), read.actor_id.as_str(), read.epoch),
            ("account", "acc-1", 42)
        );
        assert_eq!(read.command.get(), r#"{"Deposit":{"amount":5}}"#);
        assert_eq!(read.meta, req.meta);
        // The body before the version: decoded once the version is known.
        let body = serde_json::to_string(&req).unwrap();
        let swapped = format!(r#"{{"body":{body},"v":2}}"#);
        assert_eq!(decode::<ActorRequest>(swapped.as_bytes()).unwrap(), req);
        let other = format!(r#"{{"body":{body},"v":7}}"#);
        assert_eq!(
            decode::<ActorRequest>(other.as_bytes()),
            Err(WireError::UnsupportedVersion { found: 7 })
        );
        for bad in [
            format!(r#"{{"v":2,"body":{body},"v":2}}"#),
            format!(r#"{{"v":2,"body":{body},"body":{body}}}"#),
            r#"{"v":2}"#.to_string(),
            format!(r#"{{"v":null,"body":{body}}}"#),
            format!(r#"{{"v":2,"body":{body}}} x"#),
        ] {
            assert!(
                matches!(
                    decode::<ActorRequest>(bad.as_bytes()),
                    Err(WireError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_version_and_garbage_are_typed_errors() {
        assert_eq!(
            decode::<Heartbeat>(br#"{"v":4,"body":{}}"#),
            Err(WireError::UnsupportedVersion { found: 4 })
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
            let _ = decode::<ActorRequestIn<'_>>(&bytes);
            let _ = decode::<ActorResponse>(&bytes);
            let _ = decode::<ActorResponseIn<'_>>(&bytes);
            let _ = decode::<Heartbeat>(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\{\"v\":2,\"body\":.{0,40}\\}") {
            let _ = decode::<ActorRequest>(s.as_bytes());
            let _ = decode::<ActorRequestIn<'_>>(s.as_bytes());
            let _ = decode::<ActorResponseIn<'_>>(s.as_bytes());
        }
    }
}
