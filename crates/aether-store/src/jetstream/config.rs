//! Settings of the JetStream event store.

use std::time::Duration;

use aether_core::StorageKind;

use super::partition::PartitionKey;

/// Default base name of the event stream.
pub const DEFAULT_STREAM_NAME: &str = "AETHER_EVENTS";

/// JetStream event store settings.
///
/// Retention is by limits only, and by default nothing expires: events are the source of
/// truth. Nothing is ever deleted or purged through Aether, and the stream denies deletes and
/// purges.
///
/// ```
/// use std::time::Duration;
/// use aether_core::StorageKind;
/// use aether_store::JetStreamConfig;
///
/// let config = JetStreamConfig {
///     namespace: Some("orders".into()),
///     replicas: Some(3),
///     ..Default::default()
/// };
/// assert_eq!(config.max_age, None); // kept forever
/// let test = JetStreamConfig::default().storage(StorageKind::Memory);
/// # let _ = (config, test);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Base stream name ([`DEFAULT_STREAM_NAME`] by default); prefixed by the namespace. Must
    /// not be empty.
    pub stream_name: String,
    /// Optional namespace: stores in different namespaces use different streams and cannot see
    /// each other's events. An empty namespace is the same as none.
    pub namespace: Option<String>,
    /// How long events are kept; `None` (the default) keeps them forever.
    ///
    /// An age limit makes the server delete every event older than it, whatever it is: an
    /// actor whose early events are gone replays only what is left, and rebuilds a wrong state
    /// (an account without its opening deposit) without any error. Set one only for actors
    /// whose state never depends on old events, or together with snapshots newer than the
    /// limit.
    pub max_age: Option<Duration>,
    /// Stream replicas; `None` means 1. Use 3 on a production cluster.
    pub replicas: Option<usize>,
    /// File (the default) or memory storage.
    pub storage: StorageKind,
    /// Accept `replicas > 1` on servers older than nats-server 2.11 (off by default).
    ///
    /// Before 2.11 a new stream leader checks the expected last subject sequence against what
    /// it has applied rather than against its whole log, and replicas can diverge across a
    /// leader change: acknowledged events can be lost and one version accepted twice. The
    /// JetStream store therefore refuses a replicated stream on such servers unless this is
    /// set; set it only to run on an old cluster knowingly, until it is upgraded.
    pub allow_replication_on_old_servers: bool,
    /// How long a JetStream request (a publish's acknowledgement, a read, a consumer's
    /// creation) waits for its answer before it fails with `Error::Unavailable`; `None` (the
    /// default) keeps the client's 5 s. Shorter fails faster when a server hangs; longer
    /// rides out slow elections.
    pub request_timeout: Option<Duration>,
    /// The JetStream domain to use (a leaf node's, say): requests go to `$JS.<domain>.API`
    /// instead of `$JS.API`. `None` (the default) uses the connected server's own.
    pub domain: Option<String>,
    /// The actor type whose actors stay on the id-only subjects of streams written before
    /// actor types (`<stream>.events.<id>`); `None` (the default) keeps those subjects for
    /// untyped actors only.
    ///
    /// Set it when upgrading an application whose stream holds one actor type's events: the
    /// typed runtime then reads and appends that type's histories where they are, and events
    /// read from id-only subjects report this type. Every other type goes to typed subjects.
    /// The untyped actor with the same id is then the same actor. Must be a valid type name
    /// (`aether_core::validate_actor_type`). See `docs/migration.md`.
    pub legacy_actor_type: Option<String>,
    /// How many streams the log is spread over; `None` (the default) or 1 is one stream, the
    /// layout of every earlier release. Fixed when the streams are created: a store opened
    /// later with another count is refused. See `docs/jetstream.md` ("Partitioned log") for
    /// choosing it.
    ///
    /// With N above 1, partition `k` is the stream `<stream>_P<k>` (same subjects under its
    /// own name), each actor lives in one partition ([`partition_key`](Self::partition_key)),
    /// saves of actors in different partitions are appended and synced in parallel (and on a
    /// cluster by different leaders), transactions hold actors of one partition only
    /// ([`Error::CrossPartition`](aether_core::Error::CrossPartition)), and the global order
    /// becomes one order per partition ([`EventLog::partitions`](aether_core::EventLog::partitions)).
    pub partitions: Option<u32>,
    /// What decides an actor's partition (the whole id by default). Fixed with
    /// [`partitions`](Self::partitions).
    pub partition_key: PartitionKey,
    /// Whether actors' old events may be moved out of the stream (`false`, the default: the
    /// stream denies purges, and no one can ever remove an event from it).
    ///
    /// A compactable stream is created allowing purges (deletes stay denied), so that
    /// [`JetStreamEventStore::compact`](super::JetStreamEventStore::compact) can make an actor's latest snapshot the start of its
    /// history in the stream: the events before it are copied to the archive store (the
    /// stream `<stream>_ARCHIVE`, immutable) and then removed from this one. Reads of an
    /// actor's events from before the cut read the archive too, so replays and versions stay
    /// whole. Fixed when the stream is created (a stream that denies purges can never be
    /// changed to allow them). Not available with [`partitions`](Self::partitions) above 1.
    /// See `docs/data-lifecycle.md`.
    pub compactable: bool,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream_name: DEFAULT_STREAM_NAME.to_string(),
            namespace: None,
            max_age: None,
            replicas: None,
            storage: StorageKind::File,
            allow_replication_on_old_servers: false,
            request_timeout: None,
            domain: None,
            legacy_actor_type: None,
            partitions: None,
            partition_key: PartitionKey::ActorId,
            compactable: false,
        }
    }
}

impl JetStreamConfig {
    /// Sets [`legacy_actor_type`](Self::legacy_actor_type).
    pub fn legacy_actor_type(mut self, actor_type: impl Into<String>) -> Self {
        self.legacy_actor_type = Some(actor_type.into());
        self
    }

    /// Sets [`partitions`](Self::partitions).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Sets [`compactable`](Self::compactable).
    pub fn compactable(mut self, compactable: bool) -> Self {
        self.compactable = compactable;
        self
    }

    /// The configuration of this store's archive: the stream `<stream>_ARCHIVE` of the same
    /// namespace, immutable and unpartitioned, where compaction moves old events.
    pub fn archive_config(&self) -> Self {
        let mut archive = self.clone();
        archive.stream_name = format!("{}_ARCHIVE", self.stream_name);
        archive.compactable = false;
        archive.partitions = None;
        archive
    }

    /// Sets [`partition_key`](Self::partition_key).
    pub fn partition_key(mut self, key: PartitionKey) -> Self {
        self.partition_key = key;
        self
    }

    /// The partition count (1 when not set).
    pub fn partition_count(&self) -> u32 {
        self.partitions.unwrap_or(1)
    }

    /// Sets the base stream name.
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.stream_name = name.into();
        self
    }
    /// Sets the namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    /// Sets an age limit (see [`max_age`](Self::max_age) for what it costs).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
    /// Sets the replica count.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }
    /// Sets the storage kind.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }
    /// Sets [`allow_replication_on_old_servers`](Self::allow_replication_on_old_servers).
    pub fn allow_replication_on_old_servers(mut self, allow: bool) -> Self {
        self.allow_replication_on_old_servers = allow;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets the JetStream [`domain`](Self::domain).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The namespace, when there is a non-empty one.
    pub(crate) fn namespace_in_use(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }

    /// The replica count asked for (1 when not set).
    pub(crate) fn replica_count(&self) -> usize {
        self.replicas.unwrap_or(1)
    }
}
