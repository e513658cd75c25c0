//! The NATS layer of Aether: everything the JetStream event store (`aether-store`), the NATS
//! bus (`aether-bus`), the cluster and the command-line tools need from a NATS connection
//! beyond the client itself, each in one place.
//!
//! NATS does not answer a publish or a subscription it refuses: the server drops it and reports
//! a "Permissions Violation" asynchronously, to the connection's event callback only, so a
//! request to a refused subject just times out. The [`ConnectionMonitor`] listens to those
//! events (and to reconnects and slow consumers), and [`PermissionWatch::guard`] turns an
//! operation the server refused into [`aether_core::Error::PermissionDenied`] naming the
//! subject, at once, instead of a timeout.
//!
//! # Layout
//! - `connect`: [`Connection`] (a client and its monitor), [`connect_error`] and
//!   [`explain_connect_error`] (a failed connection in words, its cause included),
//!   [`round_trip`] (the proof that the server processed what was sent; `Client::flush` is
//!   not one) and [`subscribe_confirmed`].
//! - `url`: [`NatsUrl`], server addresses with the credentials written into them taken out
//!   (and used), and [`redact_url`], what to show of a URL: never its password or token.
//! - `monitor`: [`ConnectionMonitor`], the one listener to a connection's events.
//! - `permission`: [`PermissionWatch`], refusals by subject, and its
//!   [`guard`](PermissionWatch::guard) for operations that wait for an answer.
//! - `api`: [`JsSubject`], which stream, consumer and data subject a JetStream subject names.
//! - [`subject`]: user strings as subject tokens ([`namespace_subject`], [`encode_actor_id`]...),
//!   stream names, and the length policy ([`MAX_SUBJECT_BYTES`]); its docs state the codecs'
//!   rules.
//! - `setup`: [`ensure_stream`], [`ensure_kv_bucket`], [`StorageKind`].
//! - `consumer`: [`ConsumerSpec`], reading a stream through a consumer (ephemeral pull,
//!   ordered pull or ordered push) with a filter and a [`StartAt`], the one sorting of a
//!   failed creation ([`consumer_error`]), and [`StartAt::resume_after`] a failure.
//! - `kv`: [`KvBucket`], a key-value bucket under the permission guard (opened, created if
//!   missing, or [only if it exists](KvBucket::open_existing)): [`Versioned`] reads,
//!   compare-and-set and create-if-absent with a typed [`CasOutcome`], deletes, key listings
//!   and watches.
//! - `errors`: client errors sorted into typed [`aether_core::Error`] variants ([`classify`]).
//!
//! The crate re-exports [`async_nats`], whose types its API takes.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use aether_nats::{Connection, JsSubject, Operation};
//!
//! # async fn run() -> aether_core::Result<()> {
//! let conn = Connection::connect("nats://127.0.0.1:4222", async_nats::ConnectOptions::new()).await?;
//! let js = conn.jetstream();
//! // Fails with `PermissionDenied` as soon as the server reports refusing a request about the
//! // stream, rather than after the timeout.
//! let info = conn
//!     .permissions()
//!     .guard(
//!         || "reading stream ORDERS".to_string(),
//!         |op, subject| {
//!             op == Operation::Publish
//!                 && JsSubject::parse(subject).is_some_and(|s| s.concerns_stream("ORDERS"))
//!         },
//!         Some(Duration::from_secs(5)),
//!         async {
//!             aether_nats::get_stream(&js, "ORDERS").await
//!         },
//!     )
//!     .await?;
//! assert!(info.is_some());
//! # Ok(())
//! # }
//! ```

mod api;
mod connect;
mod consumer;
mod errors;
mod kv;
mod monitor;
mod permission;
mod setup;
pub mod subject;
mod url;

pub use async_nats;

pub use api::JsSubject;
pub use connect::{
    connect_error, error_chain, explain_connect_error, round_trip, subscribe_confirmed, Connection,
};
pub use consumer::{consumer_error, ConsumerSpec, StartAt};
pub use errors::{classify, classify_api, has_api_code, timeout_error};
pub use kv::{CasOutcome, KvBucket, Versioned};
pub use monitor::ConnectionMonitor;
pub use permission::{Operation, PermissionViolation, PermissionWatch};
pub use setup::{ensure_kv_bucket, ensure_stream, get_stream, StorageKind};
pub use subject::{
    check_subject_length, decode_actor_id, decode_namespace, encode_actor_id, namespace_subject,
    pattern_subject, sanitize_stream_name, validate_actor_id, validate_prefix, MAX_ACTOR_ID_BYTES,
    MAX_STREAM_NAME_BYTES, MAX_SUBJECT_BYTES,
};
pub use url::{redact_url, NatsUrl, UrlCredentials};
