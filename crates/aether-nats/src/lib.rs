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
//! What applications use, at the crate root:
//! - [`Connection`] (a client and its monitor, shareable by a store and a bus), [`NatsUrl`]
//!   (server addresses with the credentials written into them taken out, and used),
//!   [`redact_url`] (what to show of a URL: never its password or token) and
//!   [`error_chain`] (an error with its causes, in words).
//! - [`ConnectionMonitor`], the one listener to a connection's events; [`PermissionWatch`],
//!   refusals by subject, and its [`guard`](PermissionWatch::guard) for operations that wait
//!   for an answer; [`Operation`], [`PermissionViolation`].
//! - [`KvBucket`], a key-value bucket under the permission guard (opened, created if missing,
//!   or [only if it exists](KvBucket::open_existing)): [`Versioned`] reads, compare-and-set
//!   and create-if-absent with a typed [`CasOutcome`], deletes, key listings and watches.
//!
//! Two modules:
//! - [`subject`]: user strings as subject tokens ([`namespace_subject`](subject::namespace_subject),
//!   [`encode_actor_id`](subject::encode_actor_id)...), stream names, and the length policy;
//!   its docs state the codecs' rules, which NATS permissions are written against.
//! - [`backend`]: what Aether's own NATS backends share (error sorting, consumers, stream
//!   setup, confirmed subscriptions, JetStream subject parsing). Applications do not need it.
//!
//! The crate re-exports [`async_nats`], whose types its API takes.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use aether_nats::backend::JsSubject;
//! use aether_nats::{Connection, Operation};
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
//!             aether_nats::backend::get_stream(&js, "ORDERS").await
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

pub use connect::{error_chain, Connection};
pub use kv::{CasOutcome, KvBucket, Versioned};
pub use monitor::ConnectionMonitor;
pub use permission::{Operation, PermissionViolation, PermissionWatch};
pub use setup::{BucketConfig, CLUSTERED_BUCKET_REPLICAS, MAX_REPLICAS};
pub mod backend {
    //! What Aether's own NATS backends (the event store, the bus, the cluster, projections and
    //! the command-line tools) share beyond the client, each in one place. Applications do not
    //! need it; it follows the backends' needs rather than a stability promise.
    //!
    //! - [`connect_error`], [`explain_connect_error`]: a failed connection in words, its cause
    //!   included; [`round_trip`]: the proof that the server processed what was sent
    //!   (`Client::flush` is not one); [`subscribe_confirmed`].
    //! - [`JsSubject`]: which stream, consumer and data subject a JetStream subject names.
    //! - [`ensure_stream`], [`ensure_kv_bucket`], [`get_stream`]: stream and bucket setup;
    //!   [`storage_type`]: the client's form of an [`aether_core::StorageKind`];
    //!   [`bucket_replicas`], [`validate_replicas`]: how many replicas a bucket gets;
    //!   [`server_older_than`]: a server version compared with a release.
    //! - [`ConsumerSpec`]: reading a stream through a consumer (ephemeral pull, ordered pull or
    //!   ordered push) with a filter and a [`StartAt`], the one sorting of a failed creation
    //!   ([`consumer_error`]), and [`StartAt::resume_after`] a failure.
    //! - [`classify`], [`classify_api`], [`has_api_code`], [`timeout_error`]: client errors
    //!   sorted into typed [`aether_core::Error`] variants.

    pub use crate::api::JsSubject;
    pub use crate::connect::{
        connect_error, explain_connect_error, round_trip, subscribe_confirmed,
    };
    pub use crate::consumer::{consumer_error, ConsumerSpec, StartAt};
    pub use crate::errors::{classify, classify_api, has_api_code, timeout_error};
    pub use crate::setup::{
        bucket_replicas, ensure_kv_bucket, ensure_stream, get_stream, server_older_than,
        storage_type, validate_replicas,
    };
}
pub use url::{redact_url, NatsUrl, UrlCredentials};
