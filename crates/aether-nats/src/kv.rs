//! Key-value buckets: versioned reads, compare-and-set, create-if-absent, deletes and watches,
//! each under the connection's permission guard.
//!
//! A bucket is a JetStream stream (`KV_<bucket>`) with one subject per key
//! (`$KV.<bucket>.<key>`) and one message per key ([`ensure_kv_bucket`]): a key's revision is
//! the stream sequence of its last message, and a write that names the revision it expects
//! (`Nats-Expected-Last-Subject-Sequence`) is refused by the server when the key moved on.
//! That refusal is the only conflict there is; every other failure is an error.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aether_core::{Error, Result};
use async_nats::header::{self, HeaderMap, HeaderValue};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, EntryErrorKind, Operation as KvOperation};
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::backend::{ensure_kv_bucket, get_stream, JsSubject};
use crate::errors::classify;
use crate::setup::BucketConfig;
use crate::{Connection, Operation, PermissionWatch};
use aether_core::StorageKind;

/// Rounds of [`KvBucket::create`] against writers that keep deleting and re-creating the key.
const CREATE_ROUNDS: usize = 4;

/// The header that marks a key's message as a delete (`DEL`) or a purge (`PURGE`).
const KV_OPERATION: &str = "KV-Operation";

/// A key of a bucket as read: absent, deleted, or a value, with the revision that says which
/// write it is (for a later [`compare_and_set`](KvBucket::compare_and_set)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioned {
    /// The key was never written (or the bucket no longer holds any of its history).
    Absent,
    /// The key's last write deleted (or purged) it, at `revision`.
    Deleted {
        /// The revision of the delete.
        revision: u64,
    },
    /// The key holds `value`, written at `revision`.
    Value {
        /// What the key holds.
        value: Bytes,
        /// The revision of the write.
        revision: u64,
    },
}

impl Versioned {
    /// The key's revision: what a compare-and-set of the key expects; 0 when absent (which
    /// a compare-and-set reads as "not written yet").
    pub fn revision(&self) -> u64 {
        match self {
            Self::Absent => 0,
            Self::Deleted { revision } | Self::Value { revision, .. } => *revision,
        }
    }

    /// The value, when the key holds one.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Self::Value { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value, when the key holds one.
    pub fn into_value(self) -> Option<Bytes> {
        match self {
            Self::Value { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A key's message as the bucket keeps it: its operation, its stream sequence and its
    /// payload.
    fn of(operation: KvOperation, revision: u64, value: Bytes) -> Self {
        match operation {
            KvOperation::Put => Self::Value { value, revision },
            KvOperation::Delete | KvOperation::Purge => Self::Deleted { revision },
        }
    }

    fn of_entry(entry: Option<kv::Entry>) -> Self {
        entry.map_or(Self::Absent, |e| Self::of(e.operation, e.revision, e.value))
    }
}

/// What came of a conditional write ([`compare_and_set`](KvBucket::compare_and_set),
/// [`create`](KvBucket::create), a [`delete`](KvBucket::delete) at a revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum CasOutcome {
    /// Written: the key is now at this revision.
    Written(u64),
    /// Not written: the key was not at the expected revision (someone else wrote it first).
    Conflict {
        /// The key's revision, when the operation learned it: [`create`](KvBucket::create)
        /// reads it; a compare-and-set does not (the server's refusal does not say it), so it
        /// is `None` there and a caller that needs it reads the key.
        current: Option<u64>,
    },
}

impl CasOutcome {
    /// The new revision, when written.
    pub fn written(self) -> Option<u64> {
        match self {
            Self::Written(revision) => Some(revision),
            Self::Conflict { .. } => None,
        }
    }
}

/// A key-value bucket on a connection: every operation runs under the connection's
/// [`PermissionWatch::guard`], so an operation the server refused fails with
/// [`Error::PermissionDenied`] naming the subject, at once, instead of timing out.
///
/// Cloning is cheap; clones share the bucket.
///
/// ```no_run
/// use aether_core::StorageKind;
/// use aether_nats::{CasOutcome, Connection, KvBucket, Versioned};
///
/// # async fn run() -> aether_core::Result<()> {
/// let conn = Connection::connect("nats://127.0.0.1:4222", async_nats::ConnectOptions::new()).await?;
/// let bucket = KvBucket::open(&conn, "LEASES", "leases", StorageKind::File).await?;
/// let read = bucket.read("leader").await?;
/// match bucket.compare_and_set("leader", "me".into(), read.revision()).await? {
///     CasOutcome::Written(revision) => println!("leader at revision {revision}"),
///     CasOutcome::Conflict { .. } => println!("someone else wrote first"),
/// }
/// assert!(matches!(bucket.read("leader").await?, Versioned::Value { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KvBucket {
    store: kv::Store,
    context: Context,
    permissions: PermissionWatch,
    /// `$KV.<bucket>.`: where the keys' messages are published.
    prefix: String,
    /// `KV_<bucket>`: the bucket's stream.
    stream: String,
    timeout: Option<Duration>,
}

impl fmt::Debug for KvBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvBucket")
            .field("bucket", &self.store.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KvBucket {
    /// Opens the bucket `bucket` on `connection`, creating it when missing as
    /// [`ensure_kv_bucket`] does (with `description`, kept as `storage` says, and the default
    /// replicas: see [`BucketConfig::replicas`]).
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub async fn open(
        connection: &Connection,
        bucket: &str,
        description: &str,
        storage: StorageKind,
    ) -> Result<Self> {
        Self::open_with(
            connection,
            bucket,
            &BucketConfig::new(description).storage(storage),
        )
        .await
    }

    /// Opens the bucket `bucket` on `connection`, creating it when missing (and setting its
    /// replicas when `config` names them) as [`ensure_kv_bucket`] does.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] when the server refuses the bucket's stream;
    /// [`Error::Unavailable`] when it does not answer; as [`ensure_kv_bucket`].
    pub async fn open_with(
        connection: &Connection,
        bucket: &str,
        config: &BucketConfig,
    ) -> Result<Self> {
        let context = connection.jetstream();
        let permissions = connection.permissions().clone();
        let prefix = format!("$KV.{bucket}.");
        let stream = format!("KV_{bucket}");
        let store = permissions
            .guard(
                || format!("opening the key-value bucket {bucket}"),
                |op, subject| concerns(&prefix, &stream, op, subject),
                None,
                ensure_kv_bucket(&context, bucket, config),
            )
            .await?;
        Ok(Self {
            store,
            context,
            permissions,
            prefix,
            stream,
            timeout: None,
        })
    }

    /// Opens the bucket `bucket` on `connection` if it exists; `None` if it does not. Never
    /// creates it: for readers that must leave no trace (an observer, a command-line tool),
    /// where [`open`](Self::open) would create the bucket they asked about.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_existing(connection: &Connection, bucket: &str) -> Result<Option<Self>> {
        let context = connection.jetstream();
        let permissions = connection.permissions().clone();
        let prefix = format!("$KV.{bucket}.");
        let stream = format!("KV_{bucket}");
        let what = format!("opening the key-value bucket {bucket}");
        let store = permissions
            .guard(
                || what.clone(),
                |op, subject| concerns(&prefix, &stream, op, subject),
                None,
                async {
                    // The stream first: a missing one is a typed answer, where the client's
                    // `get_key_value` only says that it failed.
                    if get_stream(&context, &stream).await?.is_none() {
                        return Ok(None);
                    }
                    match context.get_key_value(bucket).await {
                        Ok(store) => Ok(Some(store)),
                        Err(e) => Err(classify(&what, e)),
                    }
                },
            )
            .await?;
        Ok(store.map(|store| Self {
            store,
            context,
            permissions,
            prefix,
            stream,
            timeout: None,
        }))
    }

    /// Bounds every operation to `timeout` (`None`, the default: each request's own timeout,
    /// the JetStream context's, bounds it); a slower one fails with [`Error::Unavailable`].
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.store.name
    }

    /// The key's last write: its value, or that it was deleted, or that it is absent.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a key the bucket cannot hold; [`Error::PermissionDenied`],
    /// [`Error::Unavailable`] and other server errors as typed variants ([`classify`]).
    pub async fn read(&self, key: &str) -> Result<Versioned> {
        let context = self.context("reading", key);
        self.guarded(&context, async {
            match self.store.entry(key).await {
                Ok(entry) => Ok(Versioned::of_entry(entry)),
                Err(e) if e.kind() == EntryErrorKind::InvalidKey => Err(invalid_key(key)),
                Err(e) => Err(classify(&context, e)),
            }
        })
        .await
    }

    /// Writes `value` under `key` whatever it held; returns the new revision.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64> {
        match self
            .write(key, HeaderMap::new(), value, "writing", None)
            .await?
        {
            CasOutcome::Written(revision) => Ok(revision),
            // Unconditional: the server has no expectation to refuse.
            CasOutcome::Conflict { .. } => Err(Error::backend(
                self.context("writing", key),
                "an unconditional write was refused as a conflict",
            )),
        }
    }

    /// Writes `value` under `key` if the key is still at revision `expected` (0: never
    /// written; see [`Versioned::revision`]).
    ///
    /// # Errors
    /// As [`read`](Self::read); a conflict is an outcome, not an error.
    pub async fn compare_and_set(
        &self,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<CasOutcome> {
        self.write(key, HeaderMap::new(), value, "writing", Some(expected))
            .await
    }

    /// Writes `value` under `key` if the key holds no value: never written, or deleted.
    /// A conflict names the revision of the value it holds.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<CasOutcome> {
        // Absent keys (the common case) take one request; a deleted key has a revision to
        // expect, which only a read tells. Each further round needs another writer to have
        // moved the key meanwhile, so a few are plenty.
        let mut expected = 0;
        for _ in 0..CREATE_ROUNDS {
            if let CasOutcome::Written(revision) =
                self.compare_and_set(key, value.clone(), expected).await?
            {
                return Ok(CasOutcome::Written(revision));
            }
            match self.read(key).await? {
                Versioned::Value { revision, .. } => {
                    return Ok(CasOutcome::Conflict {
                        current: Some(revision),
                    })
                }
                // Deleted, or absent again: create over what is there now.
                other => expected = other.revision(),
            }
        }
        Ok(CasOutcome::Conflict { current: None })
    }

    /// Deletes `key` (a delete marker: the key reads as [`Versioned::Deleted`]), if it is
    /// still at revision `expected` when one is given; returns the revision of the delete.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn delete(&self, key: &str, expected: Option<u64>) -> Result<CasOutcome> {
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        self.write(key, headers, Bytes::new(), "deleting", expected)
            .await
    }

    /// The keys that hold a value and start with `prefix`, in the bucket's order.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let context = format!("listing the keys of bucket {}", self.name());
        self.guarded(&context, async {
            let mut keys = self.store.keys().await.map_err(|e| classify(&context, e))?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| classify(&context, e))?;
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The key's last write now, then every later one, as they happen (nothing while the key
    /// is absent). Only setting the watch up is guarded: once running, the stream yields
    /// [`Error::Unavailable`] (and may end) when the watch breaks; read the key and watch
    /// again then.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn watch(&self, key: &str) -> Result<BoxStream<'static, Result<Versioned>>> {
        let context = self.context("watching", key);
        let watch = self
            .guarded(&context, async {
                self.store
                    .watch_with_history(key)
                    .await
                    .map_err(|e| classify(&context, e))
            })
            .await?;
        Ok(watch
            .map(move |item| match item {
                Ok(e) => Ok(Versioned::of(e.operation, e.revision, e.value)),
                Err(e) => Err(Error::unavailable(&context, e)),
            })
            .boxed())
    }

    fn context(&self, doing: &str, key: &str) -> String {
        format!("{doing} key {key:?} of bucket {}", self.name())
    }

    /// Publishes a message on the key's subject, expecting the key at `expected` when given.
    async fn write(
        &self,
        key: &str,
        mut headers: HeaderMap,
        payload: Bytes,
        doing: &str,
        expected: Option<u64>,
    ) -> Result<CasOutcome> {
        check_key(key)?;
        let context = self.context(doing, key);
        if let Some(revision) = expected {
            headers.insert(
                header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                HeaderValue::from(revision),
            );
        }
        let subject = format!("{}{key}", self.prefix);
        self.guarded(&context, async {
            let acked = match self
                .context
                .publish_with_headers(subject, headers, payload)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            write_outcome(&context, acked.map(|ack| ack.sequence))
        })
        .await
    }

    /// Runs `op` under the permission guard, failing at once when the server refuses one of
    /// the bucket's subjects meanwhile.
    async fn guarded<T>(&self, what: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        self.permissions
            .guard(
                || what.to_string(),
                |o, subject| concerns(&self.prefix, &self.stream, o, subject),
                self.timeout,
                op,
            )
            .await
    }
}

/// Whether a refusal of `subject` concerns the bucket whose keys are published under `prefix`
/// and whose stream is `stream`: a key's subject, or a JetStream request about the stream
/// (reads, the watch's consumer, the stream's creation).
fn concerns(prefix: &str, stream: &str, _: Operation, subject: &str) -> bool {
    subject.starts_with(prefix)
        || JsSubject::parse(subject).is_some_and(|s| s.concerns_stream(stream))
}

/// A write's answer as an outcome: the server's refusal of the expected revision is a
/// conflict, anything else that failed an error.
fn write_outcome(
    context: &str,
    acked: std::result::Result<u64, PublishError>,
) -> Result<CasOutcome> {
    match acked {
        Ok(revision) => Ok(CasOutcome::Written(revision)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            Ok(CasOutcome::Conflict { current: None })
        }
        // No stream captures the key's subject: the bucket is gone.
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
            Err(Error::NotFound(format!("{context}: {e}")))
        }
        Err(e) => Err(classify(context, e)),
    }
}

/// Keys are what a bucket accepts in a subject token list: letters, digits and `-/_=.`, not
/// starting or ending with a dot.
fn check_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(invalid_key(key))
    }
}

fn invalid_key(key: &str) -> Error {
    Error::invalid(format!(
        "{key:?} is not a key-value key: letters, digits and -/_=. only, not starting or \
         ending with a dot"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tell_absent_deleted_and_values_apart() {
        assert_eq!(Versioned::of_entry(None), Versioned::Absent);
        assert_eq!(Versioned::Absent.revision(), 0);
        let deleted = Versioned::of(KvOperation::Delete, 7, Bytes::new());
        assert_eq!(deleted, Versioned::Deleted { revision: 7 });
        assert_eq!(
            Versioned::of(KvOperation::Purge, 8, Bytes::new()),
            Versioned::Deleted { revision: 8 }
        );
        assert_eq!(deleted.revision(), 7);
        assert_eq!(deleted.value(), None);
        let value = Versioned::of(KvOperation::Put, 9, Bytes::from_static(b"x"));
        assert_eq!(value.revision(), 9);
        assert_eq!(value.value().map(|v| &v[..]), Some(&b"x"[..]));
        assert_eq!(value.into_value(), Some(Bytes::from_static(b"x")));
        // An empty value is a value, not a delete.
        assert!(matches!(
            Versioned::of(KvOperation::Put, 1, Bytes::new()),
            Versioned::Value { .. }
        ));
    }

    #[test]
    fn only_a_wrong_last_sequence_is_a_conflict() {
        assert_eq!(write_outcome("w", Ok(4)).unwrap(), CasOutcome::Written(4));
        assert_eq!(CasOutcome::Written(4).written(), Some(4));
        let conflict = write_outcome(
            "w",
            Err(PublishError::new(PublishErrorKind::WrongLastSequence)),
        )
        .unwrap();
        assert_eq!(conflict, CasOutcome::Conflict { current: None });
        assert_eq!(conflict.written(), None);
        let timeout = write_outcome("w", Err(PublishError::new(PublishErrorKind::TimedOut)));
        assert!(
            matches!(timeout, Err(Error::Unavailable { .. })),
            "{timeout:?}"
        );
        let gone = write_outcome(
            "w",
            Err(PublishError::new(PublishErrorKind::StreamNotFound)),
        );
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
        let other = write_outcome(
            "w",
            Err(PublishError::new(PublishErrorKind::WrongLastMessageId)),
        );
        assert!(matches!(other, Err(Error::Backend { .. })), "{other:?}");
    }

    #[test]
    fn keys_follow_the_bucket_rules() {
        for ok in ["a", "lease.orders.3", "cp.x-y_z", "a/b=c", "A9"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a b", "a*", "a>", "é"] {
            assert!(
                matches!(check_key(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals_concern_the_bucket_by_subject() {
        let c = |s: &str| concerns("$KV.B.", "KV_B", Operation::Publish, s);
        assert!(c("$KV.B.leader"));
        assert!(c("$JS.API.DIRECT.GET.KV_B.$KV.B.leader"));
        assert!(c("$JS.API.CONSUMER.CREATE.KV_B"));
        assert!(c("$JS.API.STREAM.INFO.KV_B"));
        assert!(!c("$KV.BB.leader"));
        assert!(!c("$JS.API.STREAM.INFO.KV_BB"));
        assert!(!c("orders.new"));
    }
}
