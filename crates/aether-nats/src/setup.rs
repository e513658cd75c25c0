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

/// The key-value bucket `bucket`, created when missing with one value per key (compare-and-set
/// needs only the latest revision), deletes denied, direct gets allowed, one replica, kept as
/// `storage` says.
///
/// The bucket's stream (`KV_<bucket>`) is created directly rather than with the client's
/// `create_key_value`, which first reads account information in a form servers before 2.10 do
/// not send. When several clients race to create it, all get the same bucket.
///
/// # Errors
/// [`Error::Unavailable`] when the bucket can be neither opened nor created (its source says
/// why), or as [`ensure_stream`].
pub async fn ensure_kv_bucket(
    context: &Context,
    bucket: &str,
    description: &str,
    storage: StorageKind,
) -> Result<kv::Store> {
    if let Ok(store) = context.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = ensure_stream(
        context,
        stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_string()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: storage_type(storage),
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        },
    )
    .await;
    // Whether we or another client created it, it is now there (or the error says why not).
    context
        .get_key_value(bucket)
        .await
        .map_err(|get_err| match created {
            Err(e) => e,
            Ok(_) => Error::unavailable(format!("opening the key-value bucket {bucket}"), get_err),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_kinds_map_to_the_client() {
        assert_eq!(storage_type(StorageKind::File), StorageType::File);
        assert_eq!(storage_type(StorageKind::Memory), StorageType::Memory);
        assert_eq!(storage_type(StorageKind::default()), StorageType::File);
    }
}
