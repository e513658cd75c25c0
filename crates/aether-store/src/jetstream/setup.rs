//! Creating or attaching to the store's stream.

use aether_core::{Error, JetStreamConfig, Result, StorageKind};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{Context, ErrorCode};

use super::errors::classify_api;
use super::subject::{sanitize_stream_name, Subjects};

/// Longest stream name the store accepts: the server stores each stream in a directory named
/// after it, and file names are limited to 255 bytes.
pub(crate) const MAX_STREAM_NAME_BYTES: usize = 255;

/// The stream name for a config: the sanitised base name, prefixed with the sanitised namespace
/// and `_` when there is one.
pub(crate) fn stream_name_for(config: &JetStreamConfig) -> String {
    let base = sanitize_stream_name(config.effective_stream_name());
    match config.effective_namespace() {
        Some(ns) => format!("{}_{base}", sanitize_stream_name(ns)),
        None => base,
    }
}

/// The stream configuration the store asks for.
pub(crate) fn desired_config(
    name: &str,
    subjects: &Subjects,
    config: &JetStreamConfig,
) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        description: Some("Aether event store: append-only actor histories".into()),
        subjects: subjects.stream_subjects(),
        // Retention only by age: nothing is removed because it was read or because a limit on
        // count or size was hit.
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: config.effective_max_age(),
        storage: match config.storage {
            StorageKind::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        num_replicas: config.effective_replicas(),
        // O(1) last-by-subject reads from any replica.
        allow_direct: true,
        // Immutability at the storage level: no message can be deleted or purged through the
        // JetStream API, whoever asks.
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..Default::default()
    }
}

/// Gets the stream, creating it when missing. An existing stream is attached to as it is; where
/// its settings differ from `desired` this is logged, and only a stream that does not capture
/// the store's subjects is an error.
pub(crate) async fn ensure_stream(
    context: &Context,
    desired: stream::Config,
) -> Result<stream::Stream> {
    let name = desired.name.clone();
    let stream = match get(context, &name).await? {
        Some(s) => s,
        None => match context.create_stream(desired.clone()).await {
            Ok(s) => {
                tracing::info!(stream = %name, "created the event stream");
                s
            }
            // Another store created it between our lookup and our create (with a different
            // config, or the server would have answered with the stream).
            Err(e)
                if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref api)
                    if api.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                get(context, &name).await?.ok_or_else(|| {
                    Error::NotFound(format!("stream {name} vanished while being created"))
                })?
            }
            Err(e) => {
                let api = match e.kind() {
                    CreateStreamErrorKind::JetStream(api) => Some(api),
                    _ => None,
                };
                return Err(classify_api(
                    format!("creating stream {name}"),
                    api.as_ref(),
                    e,
                ));
            }
        },
    };
    check_existing(&stream.cached_info().config, &desired)?;
    Ok(stream)
}

async fn get(context: &Context, name: &str) -> Result<Option<stream::Stream>> {
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

fn check_existing(actual: &stream::Config, desired: &stream::Config) -> Result<()> {
    let missing: Vec<&String> = desired
        .subjects
        .iter()
        .filter(|s| !actual.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "stream {} exists but does not capture the store's subjects {missing:?} (it has {:?}); \
             use another stream name or namespace",
            actual.name, actual.subjects
        )));
    }
    let mut differences = Vec::new();
    if actual.max_age != desired.max_age {
        differences.push(format!(
            "max_age {:?} (wanted {:?})",
            actual.max_age, desired.max_age
        ));
    }
    if actual.num_replicas != desired.num_replicas {
        differences.push(format!(
            "replicas {} (wanted {})",
            actual.num_replicas, desired.num_replicas
        ));
    }
    if actual.storage != desired.storage {
        differences.push(format!(
            "storage {:?} (wanted {:?})",
            actual.storage, desired.storage
        ));
    }
    if actual.retention != desired.retention {
        differences.push(format!("retention {:?}", actual.retention));
    }
    if !actual.deny_delete || !actual.deny_purge {
        differences.push("deletes or purges allowed".to_string());
    }
    if !actual.allow_direct {
        differences.push("direct get disabled (reads go to the stream leader)".to_string());
    }
    if !differences.is_empty() {
        tracing::warn!(
            stream = %actual.name,
            differences = %differences.join(", "),
            "attached to an existing event stream whose settings differ from this store's config"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stream_names_are_sanitised_and_namespaced() {
        assert_eq!(
            stream_name_for(&JetStreamConfig::default()),
            "AETHER_EVENTS"
        );
        let c = JetStreamConfig::default().namespace("tenant a.b*>");
        assert_eq!(stream_name_for(&c), "tenant_a_b___AETHER_EVENTS");
        let c = JetStreamConfig::default().namespace("").stream_name("");
        assert_eq!(stream_name_for(&c), "AETHER_EVENTS");
        let c = JetStreamConfig::default().stream_name("my events");
        assert_eq!(stream_name_for(&c), "my_events");
    }

    #[test]
    fn desired_config_is_immutable_and_limits_based() {
        let cfg = JetStreamConfig::default()
            .max_age(Duration::from_secs(60))
            .replicas(0)
            .storage(StorageKind::Memory);
        let s = desired_config("S", &Subjects::new("S"), &cfg);
        assert!(s.deny_delete && s.deny_purge && s.allow_direct);
        assert_eq!(s.retention, RetentionPolicy::Limits);
        assert_eq!(s.max_age, Duration::from_secs(60));
        assert_eq!(s.num_replicas, 1);
        assert_eq!(s.storage, StorageType::Memory);
        assert_eq!(s.subjects, ["S.events.*", "S.snapshots.*"]);
        assert!(check_existing(&s, &s).is_ok());
        let other = stream::Config {
            subjects: vec!["elsewhere.>".into()],
            ..s.clone()
        };
        assert!(matches!(
            check_existing(&other, &s),
            Err(Error::InvalidInput(_))
        ));
        let relaxed = stream::Config {
            deny_delete: false,
            max_age: Duration::from_secs(1),
            ..s.clone()
        };
        assert!(check_existing(&relaxed, &s).is_ok());
    }
}
