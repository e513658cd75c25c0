//! Configuration types shared by the layers. Every one implements `Default`, and zero or empty
//! fields fall back to the defaults, so `Config { only_this: x, ..Default::default() }` and a
//! zeroed config both behave sensibly.

use std::time::Duration;

/// Default JetStream stream name.
pub const DEFAULT_STREAM_NAME: &str = "AETHER_EVENTS";
/// Default event retention: 365 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Default number of JetStream stream replicas.
pub const DEFAULT_REPLICAS: usize = 1;

/// Where JetStream keeps a stream's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageKind {
    /// On disk (the default; what an event store wants).
    #[default]
    File,
    /// In server memory (tests, caches).
    Memory,
}

/// JetStream event store settings.
///
/// Retention is by limits only: events older than `max_age` expire; nothing is ever deleted or
/// purged through Aether, and the stream denies deletes and purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Base stream name (empty means [`DEFAULT_STREAM_NAME`]); prefixed by the namespace.
    pub stream_name: String,
    /// Optional namespace: stores in different namespaces use different streams and cannot see
    /// each other's events.
    pub namespace: Option<String>,
    /// How long events are kept (zero means [`DEFAULT_MAX_AGE`]).
    pub max_age: Duration,
    /// Stream replicas (0 means [`DEFAULT_REPLICAS`]); 3 on a production cluster.
    pub replicas: usize,
    /// File or memory storage.
    pub storage: StorageKind,
    /// Accept `replicas > 1` on servers older than nats-server 2.11 (off by default).
    ///
    /// Before 2.11 a new stream leader checks the expected last subject sequence against what
    /// it has applied rather than against its whole log, and replicas can diverge across a
    /// leader change: acknowledged events can be lost and one version accepted twice. The
    /// JetStream store therefore refuses a replicated stream on such servers unless this is
    /// set; set it only to run on an old cluster knowingly, until it is upgraded.
    pub allow_replication_on_old_servers: bool,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream_name: DEFAULT_STREAM_NAME.to_string(),
            namespace: None,
            max_age: DEFAULT_MAX_AGE,
            replicas: DEFAULT_REPLICAS,
            storage: StorageKind::File,
            allow_replication_on_old_servers: false,
        }
    }
}

impl JetStreamConfig {
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
    /// Sets the retention.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }
    /// Sets the replica count.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
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
    /// The base stream name in force.
    pub fn effective_stream_name(&self) -> &str {
        if self.stream_name.is_empty() {
            DEFAULT_STREAM_NAME
        } else {
            &self.stream_name
        }
    }
    /// The retention in force.
    pub fn effective_max_age(&self) -> Duration {
        if self.max_age.is_zero() {
            DEFAULT_MAX_AGE
        } else {
            self.max_age
        }
    }
    /// The replica count in force.
    pub fn effective_replicas(&self) -> usize {
        if self.replicas == 0 {
            DEFAULT_REPLICAS
        } else {
            self.replicas
        }
    }
    /// The namespace in force (an empty string counts as none).
    pub fn effective_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_zero_fallbacks() {
        let j = JetStreamConfig {
            stream_name: String::new(),
            namespace: Some(String::new()),
            max_age: Duration::ZERO,
            replicas: 0,
            storage: StorageKind::File,
            allow_replication_on_old_servers: false,
        };
        assert_eq!(j.effective_stream_name(), DEFAULT_STREAM_NAME);
        assert_eq!(j.effective_max_age(), Duration::from_secs(365 * 86400));
        assert_eq!(j.effective_replicas(), 1);
        assert_eq!(j.effective_namespace(), None);
        let j = JetStreamConfig::default().namespace("orders").replicas(3);
        assert_eq!(j.effective_namespace(), Some("orders"));
        assert_eq!(j.effective_replicas(), 3);
    }
}
