//! [`NatsKeyStore`]: data keys in a NATS key-value bucket of their own.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use aether_core::{Error, Result, StorageKind};
use aether_nats::async_nats::jetstream::stream::DeleteMessageErrorKind;
use aether_nats::async_nats::jetstream::ErrorCode;
use aether_nats::backend::get_stream;
use aether_nats::{BucketConfig, CasOutcome, Connection, KvBucket, Versioned};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use tokio::time::Instant;

use crate::keys::{
    check_subject, erased_refusal, unknown_subject, DataKey, Erasure, KeyState, KeyStore, KEY_BYTES,
};

/// The bucket's name without a namespace.
pub const DEFAULT_KEY_BUCKET: &str = "AETHER_KEYS";

/// A key record: this tag, then the key's bytes.
const KEY_TAG: &[u8] = b"k1";
/// A tombstone record: this tag, then the revision of the key record it replaced (which the
/// erasure wipes).
const ERASED_TAG: &[u8] = b"erased:";
/// A key and its tombstone: the bucket keeps both until the erasure has wiped the key.
const HISTORY: u8 = 2;
/// The server's "message delete failed" code (`JSStreamMsgDeleteFailedF`), which carries
/// the reason in its description.
const STREAM_MSG_DELETE_FAILED: ErrorCode = ErrorCode(10057);
/// Rounds of a create or an erasure racing other writers of the same subject.
const ROUNDS: usize = 5;

/// How a [`NatsKeyStore`] keeps its bucket and caches keys.
///
/// ```
/// use std::time::Duration;
/// use aether_privacy::KeyStoreConfig;
///
/// let config = KeyStoreConfig::default().namespace("shop").cache_ttl(Duration::from_secs(2));
/// assert_eq!(config.bucket_name(), "AETHER_KEYS_shop");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreConfig {
    /// The bucket's name before the namespace ([`DEFAULT_KEY_BUCKET`]).
    pub bucket: String,
    /// The namespace: stores of one namespace share a bucket (`<bucket>_<namespace>`). Use
    /// the event store's namespace.
    pub namespace: Option<String>,
    /// Where the server keeps the keys. On disk by default: keys kept in memory die with the
    /// server, and every sealed field with them.
    pub storage: StorageKind,
    /// Replicas of the bucket (`None`: as every Aether bucket, see
    /// [`BucketConfig::replicas`]).
    pub replicas: Option<usize>,
    /// How long this process trusts a key or an erasure it has read (5 s by default). An
    /// erasure made by another process is seen here at the latest this long after it; one
    /// made through this store at once.
    pub cache_ttl: Duration,
    /// How many subjects' keys this process keeps at most (100 000 by default).
    pub cache_capacity: usize,
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_KEY_BUCKET.into(),
            namespace: None,
            storage: StorageKind::File,
            replicas: None,
            cache_ttl: Duration::from_secs(5),
            cache_capacity: 100_000,
        }
    }
}

impl KeyStoreConfig {
    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets where the server keeps the keys.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the replicas of the bucket.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets how long a key or an erasure read is trusted.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The bucket's name: `<bucket>_<namespace>`, or `<bucket>` without a namespace.
    pub fn bucket_name(&self) -> String {
        match self.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{}_{ns}", self.bucket),
            None => self.bucket.clone(),
        }
    }

    fn validate(&self) -> Result<()> {
        let name = self.bucket_name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid(format!(
                "key bucket name {name:?} may hold only letters, digits, '_' and '-'"
            )));
        }
        if self.cache_capacity == 0 {
            return Err(Error::invalid(
                "the key cache's capacity must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
enum Cached {
    Active(DataKey),
    Erased,
}

/// The data subjects' keys in a NATS key-value bucket (`AETHER_KEYS[_<namespace>]`), one
/// record per subject, cached in this process for [`KeyStoreConfig::cache_ttl`].
///
/// An erasure replaces the subject's key record with a tombstone, then wipes the key record
/// from the bucket's stream with the server's secure delete, which overwrites the stored
/// bytes. If the process dies between the two, erasing again finishes the wipe. The bucket is
/// created with deletes allowed for this (an event stream never is).
///
/// Backups and mirrors of this bucket hold keys: see `docs/data-lifecycle.md` for how to keep
/// them (in short: never longer than the time an erasure may take).
pub struct NatsKeyStore {
    bucket: KvBucket,
    connection: Connection,
    stream: String,
    config: KeyStoreConfig,
    cache: Mutex<HashMap<String, (Cached, Instant)>>,
}

impl fmt::Debug for NatsKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsKeyStore")
            .field("bucket", &self.bucket.name())
            .field("cache_ttl", &self.config.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl NatsKeyStore {
    /// Opens the key bucket `config` names, creating it when missing.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad bucket name or an existing bucket that cannot erase
    /// (created by hand with deletes denied, or keeping one value per key); as
    /// [`KvBucket::open_with`].
    pub async fn open(connection: &Connection, config: KeyStoreConfig) -> Result<Self> {
        config.validate()?;
        let name = config.bucket_name();
        let mut bucket_config = BucketConfig::new("Aether: data subjects' keys")
            .storage(config.storage)
            .history(HISTORY)
            .erasable(true);
        bucket_config.replicas = config.replicas;
        let bucket = KvBucket::open_with(connection, &name, &bucket_config).await?;
        Self::with_bucket(connection, bucket, config).await
    }

    /// Opens the key bucket `config` names if it exists (`None` otherwise), creating nothing:
    /// for tools.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_existing(
        connection: &Connection,
        config: KeyStoreConfig,
    ) -> Result<Option<Self>> {
        config.validate()?;
        match KvBucket::open_existing(connection, &config.bucket_name()).await? {
            Some(bucket) => Ok(Some(Self::with_bucket(connection, bucket, config).await?)),
            None => Ok(None),
        }
    }

    async fn with_bucket(
        connection: &Connection,
        bucket: KvBucket,
        config: KeyStoreConfig,
    ) -> Result<Self> {
        let stream = format!("KV_{}", bucket.name());
        let context = connection.jetstream();
        let what = format!("reading the settings of key bucket {}", bucket.name());
        let Some(mut handle) = get_stream(&context, &stream).await? else {
            return Err(Error::NotFound(format!("{what}: its stream is gone")));
        };
        let info = handle
            .info()
            .await
            .map_err(|e| aether_nats::backend::classify(&what, e))?;
        if info.config.deny_delete || info.config.max_messages_per_subject < i64::from(HISTORY) {
            return Err(Error::invalid(format!(
                "key bucket {} cannot erase: its stream must allow deletes and keep {HISTORY} \
                 values per key (it was not created by Aether); move its keys to a new bucket",
                bucket.name()
            )));
        }
        Ok(Self {
            bucket,
            connection: connection.clone(),
            stream,
            config,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    /// Forgets every cached key and erasure, so the next reads ask the bucket.
    pub fn clear_cache(&self) {
        self.cache().clear();
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Cached, Instant)>> {
        // Entries are whole values: a panicked holder leaves nothing half-written.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, subject: &str) -> Option<Cached> {
        let cache = self.cache();
        let (value, at) = cache.get(subject)?;
        (at.elapsed() < self.config.cache_ttl).then(|| value.clone())
    }

    fn remember(&self, subject: &str, value: Cached) {
        let mut cache = self.cache();
        if cache.len() >= self.config.cache_capacity && !cache.contains_key(subject) {
            let ttl = self.config.cache_ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= self.config.cache_capacity {
                // Still full of fresh entries: start over rather than grow (a cache miss costs
                // one read).
                cache.clear();
            }
        }
        cache.insert(subject.to_owned(), (value, Instant::now()));
    }

    /// The record's key in the bucket: any subject id, encoded into the characters a bucket
    /// key may hold.
    fn record_key(subject: &str) -> String {
        format!("s.{}", URL_SAFE_NO_PAD.encode(subject.as_bytes()))
    }

    async fn read(&self, subject: &str) -> Result<(Record, u64)> {
        let versioned = self.bucket.read(&Self::record_key(subject)).await?;
        let revision = versioned.revision();
        let record = match versioned {
            Versioned::Absent | Versioned::Deleted { .. } => Record::Absent,
            Versioned::Value { value, .. } => Record::parse(&value).ok_or_else(|| {
                Error::Decoding(format!(
                    "the key record of a subject in bucket {} is malformed",
                    self.bucket.name()
                ))
            })?,
        };
        Ok((record, revision))
    }

    /// Overwrites the stored key record at `revision` (the server's secure delete); a record
    /// already gone is fine.
    async fn wipe(&self, revision: u64) -> Result<()> {
        let context = self.connection.jetstream();
        let what = format!("wiping a key record of bucket {}", self.bucket.name());
        let Some(stream) = get_stream(&context, &self.stream).await? else {
            return Err(Error::NotFound(format!("{what}: its stream is gone")));
        };
        match stream.delete_message(revision).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                // Gone already (wiped by an earlier erasure): depending on where the message
                // sat in the stream, the server says "sequence not found", or the general
                // delete failure with "no message found".
                DeleteMessageErrorKind::JetStream(api)
                    if api.error_code() == ErrorCode::NO_MESSAGE_FOUND
                        || api.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                        || (api.error_code() == STREAM_MSG_DELETE_FAILED
                            && api.to_string().contains("no message found")) =>
                {
                    Ok(())
                }
                DeleteMessageErrorKind::TimedOut => Err(Error::unavailable(what, e)),
                _ => Err(aether_nats::backend::classify(what, e)),
            },
        }
    }
}

/// A subject's record in the bucket.
enum Record {
    Absent,
    Key(DataKey),
    /// Erased; the revision of the key record to wipe.
    Erased(u64),
}

impl Record {
    fn parse(value: &[u8]) -> Option<Self> {
        if let Some(bytes) = value.strip_prefix(KEY_TAG) {
            let key: [u8; KEY_BYTES] = bytes.try_into().ok()?;
            return Some(Self::Key(DataKey::from_bytes(key)));
        }
        let revision = std::str::from_utf8(value.strip_prefix(ERASED_TAG)?).ok()?;
        revision.parse().ok().map(Self::Erased)
    }

    fn key_bytes(key: &DataKey) -> Bytes {
        let mut out = Vec::with_capacity(KEY_TAG.len() + KEY_BYTES);
        out.extend_from_slice(KEY_TAG);
        out.extend_from_slice(key.as_bytes());
        Bytes::from(out)
    }

    fn tombstone(revision: u64) -> Bytes {
        let mut out = ERASED_TAG.to_vec();
        out.extend_from_slice(revision.to_string().as_bytes());
        Bytes::from(out)
    }
}

#[async_trait]
impl KeyStore for NatsKeyStore {
    async fn key_for(&self, subject: &str) -> Result<DataKey> {
        check_subject(subject)?;
        match self.cached(subject) {
            Some(Cached::Active(key)) => return Ok(key),
            Some(Cached::Erased) => return Err(erased_refusal(subject)),
            None => {}
        }
        for _ in 0..ROUNDS {
            match self.read(subject).await?.0 {
                Record::Key(key) => {
                    self.remember(subject, Cached::Active(key.clone()));
                    return Ok(key);
                }
                Record::Erased(_) => {
                    self.remember(subject, Cached::Erased);
                    return Err(erased_refusal(subject));
                }
                Record::Absent => {
                    let key = DataKey::generate()?;
                    let record = Record::key_bytes(&key);
                    if let CasOutcome::Written(_) = self
                        .bucket
                        .create(&Self::record_key(subject), record)
                        .await?
                    {
                        self.remember(subject, Cached::Active(key.clone()));
                        return Ok(key);
                    }
                    // Another writer created it first: read theirs.
                }
            }
        }
        Err(Error::unavailable(
            format!("creating the key of data subject {subject:?}"),
            "other writers kept changing it",
        ))
    }

    async fn lookup(&self, subject: &str) -> Result<KeyState> {
        check_subject(subject)?;
        match self.cached(subject) {
            Some(Cached::Active(key)) => return Ok(KeyState::Active(key)),
            Some(Cached::Erased) => return Ok(KeyState::Erased),
            None => {}
        }
        Ok(match self.read(subject).await?.0 {
            Record::Key(key) => {
                self.remember(subject, Cached::Active(key.clone()));
                KeyState::Active(key)
            }
            Record::Erased(_) => {
                self.remember(subject, Cached::Erased);
                KeyState::Erased
            }
            Record::Absent => KeyState::Unknown,
        })
    }

    async fn erase(&self, subject: &str) -> Result<Erasure> {
        check_subject(subject)?;
        let key = Self::record_key(subject);
        for _ in 0..ROUNDS {
            let (record, revision) = self.read(subject).await?;
            match record {
                Record::Absent => return Err(unknown_subject(subject)),
                Record::Erased(key_revision) => {
                    self.remember(subject, Cached::Erased);
                    self.wipe(key_revision).await?;
                    return Ok(Erasure::AlreadyErased);
                }
                Record::Key(_) => {
                    if let CasOutcome::Written(_) = self
                        .bucket
                        .compare_and_set(&key, Record::tombstone(revision), revision)
                        .await?
                    {
                        self.remember(subject, Cached::Erased);
                        self.wipe(revision).await?;
                        tracing::info!(bucket = %self.bucket.name(), "erased a data subject");
                        return Ok(Erasure::Erased);
                    }
                }
            }
        }
        Err(Error::unavailable(
            format!("erasing data subject {subject:?}"),
            "other writers kept changing its key",
        ))
    }
}
