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
    partition: Option<(u32, u32)>,
) -> stream::Config {
    let description = match partition {
        None => "Aether event store: append-only actor histories".to_string(),
        Some((index, count)) => format!(
            "Aether event store: append-only actor histories, {}",
            super::partition::description_marker(index, count)
        ),
    };
    stream::Config {
        name: name.to_string(),
        description: Some(description),
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
        // JetStream API, whoever asks. A compactable stream allows purges (of an actor's
        // events before its snapshot, once they are archived); deletes stay denied.
        deny_delete: true,
        deny_purge: !config.compactable,
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
    legacy_declared: bool,
) -> Result<stream::Stream> {
    let mut stream = aether_nats::backend::ensure_stream(context, desired.clone()).await?;
    let actual = stream.cached_info().config.clone();
    if let Some(widened) = widen_untyped(&actual, &desired) {
        // A stream made before actor types captures only the id-only subjects: add the typed
        // ones, keeping every other setting as the operator left it. Nothing stored moves.
        match context.update_stream(&widened).await {
            Ok(info) => {
                tracing::info!(
                    stream = %actual.name,
                    "widened an event stream made before actor types to capture typed subjects"
                );
                if !legacy_declared {
                    // The upgrade hazard: typed actors start empty next to their old histories.
                    tracing::warn!(
                        stream = %actual.name,
                        "this event stream was written before actor types: its actors are \
                         untyped, and typed actors will not see their histories unless \
                         JetStreamConfig::legacy_actor_type declares their type \
                         (docs/migration.md)"
                    );
                }
                stream = context.get_stream(&info.config.name).await.map_err(|e| {
                    Error::unavailable(format!("reading stream {}", actual.name), e)
                })?;
            }
            Err(e) => {
                // A reader without the right to update streams still reads everything; typed
                // saves fail until someone with the right opens the store once.
                tracing::warn!(
                    stream = %actual.name,
                    error = %e,
                    "could not widen an event stream made before actor types; typed actors \
                     cannot be saved to it until a store with stream-update permission opens it"
                );
                return Ok(stream);
            }
        }
    }
    check_existing(&stream.cached_info().config, &desired)?;
    Ok(stream)
}

/// The configuration that adds the typed subjects to a stream capturing only the untyped ones
/// of the same store, or `None` when nothing needs adding (or the stream is someone else's).
fn widen_untyped(actual: &stream::Config, desired: &stream::Config) -> Option<stream::Config> {
    let missing: Vec<&String> = desired
        .subjects
        .iter()
        .filter(|s| !actual.subjects.contains(s))
        .collect();
    // The untyped subjects are the ones ending in a single wildcard; a stream that has them
    // all lacks only typed ones.
    let untyped_present = desired
        .subjects
        .iter()
        .filter(|s| !s.ends_with(".*.*.*"))
        .all(|s| actual.subjects.contains(s));
    if missing.is_empty() || !untyped_present {
        return None;
    }
    let mut widened = actual.clone();
    widened.subjects.extend(missing.into_iter().cloned());
    Some(widened)
}

fn check_existing(actual: &stream::Config, desired: &stream::Config) -> Result<()> {
    if let Some(m) = &actual.mirror {
        return Err(Error::invalid(format!(
            "stream {} is a mirror of {} (a standby copy): it takes no writes until it is \
             promoted (aether_store::mirror::promote_mirrors, or `aether mirror promote`)",
            actual.name, m.name
        )));
    }
    // A partition belongs to a store of one partition count: another count spreads actors
    // differently, and reading with it would miss histories.
    let wanted = desired
        .description
        .as_deref()
        .and_then(super::partition::partition_marker);
    if let Some((index, count)) = wanted {
        let found = actual
            .description
            .as_deref()
            .and_then(super::partition::partition_marker);
        if found != Some((index, count)) {
            return Err(Error::invalid(format!(
                "stream {} exists as {} but this store wants it as partition {index} of \
                 {count}: the partition count of a store is fixed when its streams are \
                 created; open it with the count it was created with",
                actual.name,
                found.map_or("an unpartitioned stream".to_string(), |(i, c)| format!(
                    "partition {i} of {c}"
                )),
            )));
        }
    }
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
    if !actual.deny_delete || (!actual.deny_purge && desired.deny_purge) {
        differences.push("deletes or purges allowed".to_string());
    }
    if actual.deny_purge && !desired.deny_purge {
        differences.push("purges denied (the history cannot be compacted)".to_string());
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
        let s = desired_config("S", &Subjects::new("S", None), &cfg, true, None);
        assert!(s.allow_atomic_publish);
        assert!(s.deny_delete && s.deny_purge && s.allow_direct);
        assert_eq!(s.retention, RetentionPolicy::Limits);
        assert_eq!(s.max_age, Duration::from_secs(60));
        assert_eq!(s.num_replicas, 1);
        assert_eq!(s.storage, StorageType::Memory);
        assert_eq!(
            s.subjects,
            [
                "S.events.*",
                "S.events.*.*.*",
                "S.snapshots.*",
                "S.snapshots.*.*.*"
            ]
        );
        // A stream made before actor types is widened, nothing else changes.
        let old = stream::Config {
            subjects: vec!["S.events.*".into(), "S.snapshots.*".into()],
            max_age: Duration::from_secs(5),
            ..s.clone()
        };
        let widened = widen_untyped(&old, &s).expect("widened");
        assert_eq!(widened.max_age, Duration::from_secs(5));
        assert!(check_existing(&widened, &s).is_ok());
        assert!(widen_untyped(&s, &s).is_none());
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
        let forever = desired_config(
            "S",
            &Subjects::new("S", None),
            &JetStreamConfig::default(),
            false,
            None,
        );
        assert!(!forever.allow_atomic_publish);
        assert_eq!(forever.max_age, Duration::ZERO);
        assert_eq!(forever.num_replicas, 1);
    }

    #[test]
    fn a_partition_is_refused_under_another_count() {
        let cfg = JetStreamConfig::default();
        let part = |i, n| {
            desired_config(
                "S_P1",
                &Subjects::new("S_P1", None),
                &cfg,
                true,
                Some((i, n)),
            )
        };
        assert!(check_existing(&part(1, 4), &part(1, 4)).is_ok());
        let err = check_existing(&part(1, 8), &part(1, 4)).unwrap_err();
        assert!(err.to_string().contains("partition 1 of 8"), "{err}");
        let plain = desired_config("S_P1", &Subjects::new("S_P1", None), &cfg, true, None);
        assert!(check_existing(&plain, &part(1, 4)).is_err());
    }
}
