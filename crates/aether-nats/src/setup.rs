//! Creating or attaching to JetStream streams and key-value buckets, and where they are kept.

use aether_core::{Error, Result, StorageKind};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{kv, Context, ErrorCode};

use crate::errors::classify_api;

/// The client's storage type for a [`StorageKind`].
pub fn storage_type(kind: StorageKind) -> StorageType {
    match kind {
        StorageKind::Memory => StorageType::Memory,
        // File, and any kind added later: the durable choice.
        _ => StorageType::File,
    }
}

/// Gets the stream `desired.name`, creating it with `desired` when it is missing. An existing
/// stream is returned as it is (compare its `cached_info().config` with `desired` to check it);
/// when another client creates it between the lookup and the create, theirs is returned.
///
/// # Errors
/// The server's answer sorted into typed errors ([`classify_api`]):
/// [`Error::Unavailable`] when JetStream does not answer, [`Error::PermissionDenied`],
/// [`Error::Backend`] for other refusals.
pub async fn ensure_stream(context: &Context, desired: stream::Config) -> Result<stream::Stream> {
    let name = desired.name.clone();
    if let Some(s) = get_stream(context, &name).await? {
        return Ok(s);
    }
    match context.create_stream(desired).await {
        Ok(s) => {
            tracing::info!(stream = %name, "created stream");
            Ok(s)
        }
        // Another client created it between our lookup and our create (with a different
        // config, or the server would have answered with the stream).
        Err(e)
            if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref api)
                if api.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
        {
            get_stream(context, &name).await?.ok_or_else(|| {
                Error::NotFound(format!("stream {name} vanished while being created"))
            })
        }
        Err(e) => {
            let api = match e.kind() {
                CreateStreamErrorKind::JetStream(api) => Some(api),
                _ => None,
            };
            Err(classify_api(
                format!("creating stream {name}"),
                api.as_ref(),
                e,
            ))
        }
    }
}

/// The stream `name`, or `None` when the server says it does not exist.
///
/// # Errors
/// As [`ensure_stream`].
pub async fn get_stream(context: &Context, name: &str) -> Result<Option<stream::Stream>> {
    match context.get_stream(name).await {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(e) => {
            let api = match e.kind() {
                GetStreamErrorKind::JetStream(api) => Some(api),
                _ => None,
            };
            Err(classify_api(
                format!("looking up stream {name}"),
                api.as_ref(),
                e,
            ))
        }
    }
}

/// Most replicas a JetStream stream can have.
pub const MAX_REPLICAS: usize = 5;

/// Replicas of a bucket created on a clustered server when none are asked for.
pub const CLUSTERED_BUCKET_REPLICAS: usize = 3;

/// How a key-value bucket is created when it is missing.
///
/// ```
/// use aether_core::StorageKind;
/// use aether_nats::BucketConfig;
///
/// let config = BucketConfig::new("leases").replicas(3);
/// assert_eq!(config.storage, StorageKind::File);
/// assert_eq!(config.replicas, Some(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketConfig {
    /// The description of the bucket's stream.
    pub description: String,
    /// Where the server keeps the bucket.
    pub storage: StorageKind,
    /// Replicas of the bucket's stream (1 to [`MAX_REPLICAS`]). `None`:
    /// [`CLUSTERED_BUCKET_REPLICAS`] when the server is part of a cluster and runs
    /// nats-server 2.11 or later, else 1 (see [`bucket_replicas`]).
    ///
    /// Set, it also applies to an existing bucket with another count: the server moves it to
    /// the new count. Unset, an existing bucket is used as it is.
    pub replicas: Option<usize>,
    /// Values kept per key, the latest included: `None` is 1 (compare-and-set needs only the
    /// latest). Applies when the bucket is created.
    pub history: Option<u8>,
    /// Whether single messages of the bucket's stream may be deleted, which a secure erase
    /// (`STREAM.MSG.DELETE` overwriting the stored bytes) needs; denied by default. Applies
    /// when the bucket is created.
    pub erasable: bool,
}

impl BucketConfig {
    /// A bucket described as `description`, on disk, with the default replicas.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            ..Self::default()
        }
    }

    /// Sets where the server keeps the bucket.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the replicas of the bucket's stream.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets the values kept per key (at least 1).
    pub fn history(mut self, history: u8) -> Self {
        self.history = Some(history.max(1));
        self
    }

    /// Allows deleting (and securely erasing) single messages of the bucket's stream.
    pub fn erasable(mut self, erasable: bool) -> Self {
        self.erasable = erasable;
        self
    }
}

/// Checks a replica count asked for in a setting: 1 to [`MAX_REPLICAS`].
///
/// # Errors
/// [`Error::InvalidInput`] naming `what` otherwise.
pub fn validate_replicas(what: &str, replicas: Option<usize>) -> Result<()> {
    match replicas {
        Some(n) if n == 0 || n > MAX_REPLICAS => Err(Error::invalid(format!(
            "{what} must be between 1 and {MAX_REPLICAS}, not {n}"
        ))),
        _ => Ok(()),
    }
}

/// The replicas a bucket gets on a server that is `clustered` (its INFO names a cluster) and
/// runs `version`, when `requested` are asked for.
///
/// Unset, a clustered server of 2.11 or later gives [`CLUSTERED_BUCKET_REPLICAS`], anything
/// else 1. Before 2.11 a replicated stream checks an expected last sequence against what its
/// leader has applied rather than against its whole log, so two compare-and-sets can both
/// pass across a leader change: the owners of Aether's buckets (the cluster's table and
/// lease) rely on those checks, so more than one replica is refused there.
///
/// # Errors
/// [`Error::InvalidInput`] for a count outside 1 to [`MAX_REPLICAS`];
/// [`Error::Unsupported`] for more than one replica on a server older than 2.11.
pub fn bucket_replicas(requested: Option<usize>, clustered: bool, version: &str) -> Result<usize> {
    validate_replicas("bucket replicas", requested)?;
    let old = server_older_than(version, 2, 11);
    match requested {
        Some(n) if n > 1 && old => Err(Error::unsupported(
            format!("a key-value bucket with {n} replicas"),
            format!(
                "nats-server {version} can accept two compare-and-sets of one key across a \
                 leader change of a replicated stream; 2.11 or later is needed"
            ),
        )),
        Some(n) => Ok(n),
        None if clustered && !old => Ok(CLUSTERED_BUCKET_REPLICAS),
        None => Ok(1),
    }
}

/// Whether a server version string (`2.9.10`, `2.12.0-RC.1`) is older than `major.minor`. A
/// version that does not parse counts as recent: features are then tried, and the server's
/// answer says what it lacks.
pub fn server_older_than(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => false,
    }
}

/// The key-value bucket `bucket`, created when missing with one value per key (compare-and-set
/// needs only the latest revision), deletes denied, direct gets allowed, kept and replicated as
/// `config` says ([`bucket_replicas`]).
///
/// The bucket's stream (`KV_<bucket>`) is created directly rather than with the client's
/// `create_key_value`, which first reads account information in a form servers before 2.10 do
/// not send. When several clients race to create it, all get the same bucket.
///
/// With replicas left to the default on a cluster that cannot place three (fewer JetStream
/// servers), the bucket is created with one and a warning is logged; replicas that were asked
/// for are never lowered.
///
/// # Errors
/// [`Error::Unavailable`] when the bucket can be neither opened nor created (its source says
/// why); as [`bucket_replicas`] and [`ensure_stream`]; the server's refusal to change an
/// existing bucket's replicas.
pub async fn ensure_kv_bucket(
    context: &Context,
    bucket: &str,
    config: &BucketConfig,
) -> Result<kv::Store> {
    let info = context.client().server_info();
    let replicas = bucket_replicas(config.replicas, info.cluster.is_some(), &info.version)?;
    let stream_name = format!("KV_{bucket}");
    if let Ok(store) = context.get_key_value(bucket).await {
        if config.replicas.is_some() {
            set_replicas(context, &stream_name, replicas).await?;
        }
        return Ok(store);
    }
    let desired = |replicas: usize| stream::Config {
        name: stream_name.clone(),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: i64::from(config.history.unwrap_or(1)),
        storage: storage_type(config.storage),
        allow_rollup: true,
        deny_delete: !config.erasable,
        deny_purge: false,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    let mut created = ensure_stream(context, desired(replicas)).await;
    if let Err(e) = &created {
        if config.replicas.is_none() && replicas > 1 && cannot_place(e) {
            tracing::warn!(
                bucket,
                replicas,
                error = %e,
                "the cluster cannot place the bucket's replicas; creating it with one (set the \
                 bucket's replicas to choose)"
            );
            created = ensure_stream(context, desired(1)).await;
        }
    }
    // Whether we or another client created it, it is now there (or the error says why not).
    context
        .get_key_value(bucket)
        .await
        .map_err(|get_err| match created {
            Err(e) => e,
            Ok(_) => Error::unavailable(format!("opening the key-value bucket {bucket}"), get_err),
        })
}

/// Whether a failed creation says the cluster has too few servers for the replicas asked.
fn cannot_place(e: &Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    // "insufficient resources" (10023), "no suitable peers for placement" (10005), and the
    // answer of a server not running clustered JetStream to replicas above one (10074).
    text.contains("insufficient resources")
        || text.contains("no suitable peers")
        || text.contains("replicas > 1 not supported")
}

/// Moves the stream `name` to `replicas` replicas, when it has another count.
async fn set_replicas(context: &Context, name: &str, replicas: usize) -> Result<()> {
    let Some(mut stream) = get_stream(context, name).await? else {
        return Ok(());
    };
    let info = stream
        .info()
        .await
        .map_err(|e| classify_api(format!("reading stream {name}"), None, e))?;
    if info.config.num_replicas == replicas {
        return Ok(());
    }
    let mut config = info.config.clone();
    let from = config.num_replicas;
    config.num_replicas = replicas;
    context.update_stream(config).await.map_err(|e| {
        classify_api(
            format!("changing the replicas of stream {name} from {from} to {replicas}"),
            None,
            e,
        )
    })?;
    tracing::info!(stream = %name, from, to = replicas, "changed the replicas of a bucket");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_replicas_follow_the_server_unless_set() {
        assert_eq!(bucket_replicas(None, false, "2.15.1").unwrap(), 1);
        assert_eq!(bucket_replicas(None, true, "2.15.1").unwrap(), 3);
        assert_eq!(bucket_replicas(None, true, "2.11.0").unwrap(), 3);
        // Before 2.11, compare-and-set on a replicated stream is not safe across leaders.
        assert_eq!(bucket_replicas(None, true, "2.10.22").unwrap(), 1);
        assert_eq!(bucket_replicas(Some(1), true, "2.15.1").unwrap(), 1);
        assert_eq!(bucket_replicas(Some(5), false, "2.12.0").unwrap(), 5);
        assert_eq!(bucket_replicas(Some(1), true, "2.9.15").unwrap(), 1);
        assert!(matches!(
            bucket_replicas(Some(3), true, "2.9.15"),
            Err(Error::Unsupported { .. })
        ));
        for bad in [0, 6] {
            let e = bucket_replicas(Some(bad), true, "2.15.1").unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
            assert!(e.to_string().contains("between 1 and 5"), "{e}");
        }
    }

    #[test]
    fn server_versions_compare_by_major_and_minor() {
        assert!(server_older_than("2.9.10", 2, 11));
        assert!(server_older_than("2.10.22", 2, 11));
        assert!(!server_older_than("2.11.0", 2, 11));
        assert!(!server_older_than("2.15.1", 2, 11));
        assert!(!server_older_than("v3.0.0-beta", 2, 11));
        assert!(!server_older_than("garbage", 2, 11));
    }

    #[test]
    fn storage_kinds_map_to_the_client() {
        assert_eq!(storage_type(StorageKind::File), StorageType::File);
        assert_eq!(storage_type(StorageKind::Memory), StorageType::Memory);
        assert_eq!(storage_type(StorageKind::default()), StorageType::File);
    }
}
