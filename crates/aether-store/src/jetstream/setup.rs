//! The store's stream: its name and configuration, and attaching to an existing one.

use aether_core::{Error, Result};
use aether_nats::subject::sanitize_stream_name;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::Context;

use super::config::JetStreamConfig;
use super::subject::Subjects;

/// The stream name for a config: the sanitised base name, prefixed with the sanitised namespace
/// and `_` when there is one.
pub(crate) fn stream_name_for(config: &JetStreamConfig) -> String {
    let base = sanitize_stream_name(&config.stream_name);
    match config.namespace_in_use() {
        Some(ns) => format!("{}_{base}", sanitize_stream_name(ns)),
        None => base,
    }
}

/// The stream configuration the store asks for.
pub(crate) fn desired_config(
    name: &str,
    subjects: &Subjects,
    config: &JetStreamConfig,
    atomic: bool,
) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        description: Some("Aether event store: append-only actor histories".into()),
        subjects: subjects.stream_subjects(),
        // Retention only by age, and only when asked for: nothing is removed because it was
        // read or because a limit on count or size was hit.
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        // Zero is "no limit" to the server.
        max_age: config.max_age.unwrap_or_default(),
        storage: aether_nats::backend::storage_type(config.storage),
        num_replicas: config.replica_count(),
        // O(1) last-by-subject reads from any replica.
        allow_direct: true,
        // Immutability at the storage level: no message can be deleted or purged through the
        // JetStream API, whoever asks.
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        // Transactions: one atomic batch across actors (servers 2.12+; older ones refuse the
        // setting, so it is only asked for where it exists).
        allow_atomic_publish: atomic,
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
    let stream = aether_nats::backend::ensure_stream(context, desired.clone()).await?;
    check_existing(&stream.cached_info().config, &desired)?;
    Ok(stream)
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
    use aether_core::StorageKind;
    use async_nats::jetstream::stream::StorageType;
    use std::time::Duration;

    #[test]
    fn stream_names_are_sanitised_and_namespaced() {
        assert_eq!(
            stream_name_for(&JetStreamConfig::default()),
            "AETHER_EVENTS"
        );
        let c = JetStreamConfig::default().namespace("tenant a.b*>");
        assert_eq!(stream_name_for(&c), "tenant_a_b___AETHER_EVENTS");
        let c = JetStreamConfig::default().namespace("");
        assert_eq!(stream_name_for(&c), "AETHER_EVENTS");
        let c = JetStreamConfig::default().stream_name("my events");
        assert_eq!(stream_name_for(&c), "my_events");
    }

    #[test]
    fn desired_config_is_immutable_and_limits_based() {
        let cfg = JetStreamConfig::default()
            .max_age(Duration::from_secs(60))
            .replicas(1)
            .storage(StorageKind::Memory);
        let s = desired_config("S", &Subjects::new("S"), &cfg, true);
        assert!(s.allow_atomic_publish);
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
        // By default nothing expires.
        let forever = desired_config("S", &Subjects::new("S"), &JetStreamConfig::default(), false);
        assert!(!forever.allow_atomic_publish);
        assert_eq!(forever.max_age, Duration::ZERO);
        assert_eq!(forever.num_replicas, 1);
    }
}
