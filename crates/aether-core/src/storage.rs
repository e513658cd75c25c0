//! Where a backend keeps what it creates.

/// Where a backend keeps the streams and buckets it creates (the event store's stream, the
/// bus stream, the cluster's and the projections' buckets): on disk, or in memory.
///
/// It is a setting of every NATS backend's config, and lives here rather than in the NATS
/// layer so that the configs carry it whether or not their NATS feature is on (a field that
/// exists only under a feature breaks struct literals when another crate turns the feature on).
///
/// ```
/// use aether_core::StorageKind;
///
/// assert_eq!(StorageKind::default(), StorageKind::File);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageKind {
    /// On disk (the default; what an event store wants).
    #[default]
    File,
    /// In server memory (tests, caches): lost when the server stops.
    Memory,
}
