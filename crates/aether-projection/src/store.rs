//! Where a projection keeps its checkpoint and its parked events.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aether_core::{Event, LogPosition, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// An event a projection gave up on: its handler kept failing (or it did not decode), so it
/// was set aside and the projection went on. It can be listed and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    /// Its position in the store's global order.
    pub position: LogPosition,
    /// The stored event.
    pub event: Event,
    /// The last error.
    pub error: String,
    /// How many times it was handled.
    pub attempts: u32,
}

/// Durable state of projections: one checkpoint per projection (the position of the last
/// event it handled), and its parked events. Object-safe: hold it as
/// `Arc<dyn ProjectionStore>`.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// The checkpoint of `projection`, `None` before its first event.
    async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>>;
    /// Records that `projection` handled everything up to `position`.
    async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()>;
    /// Forgets the checkpoint (the projection starts again from the beginning).
    async fn clear_checkpoint(&self, projection: &str) -> Result<()>;
    /// Sets `event` aside.
    async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()>;
    /// The parked events, in order.
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>>;
    /// Removes a parked event (handled after all).
    async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()>;
}

/// Projection state in memory: the embedded default, and for tests.
#[derive(Debug, Default)]
pub struct InMemoryProjectionStore {
    checkpoints: Mutex<BTreeMap<String, LogPosition>>,
    parked: Mutex<BTreeMap<(String, LogPosition), ParkedEvent>>,
}

impl InMemoryProjectionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ProjectionStore for InMemoryProjectionStore {
    async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
        Ok(lock(&self.checkpoints).get(projection).copied())
    }
    async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()> {
        lock(&self.checkpoints).insert(projection.to_string(), position);
        Ok(())
    }
    async fn clear_checkpoint(&self, projection: &str) -> Result<()> {
        lock(&self.checkpoints).remove(projection);
        Ok(())
    }
    async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()> {
        lock(&self.parked).insert((projection.to_string(), event.position), event.clone());
        Ok(())
    }
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>> {
        Ok(lock(&self.parked)
            .iter()
            .filter(|((p, _), _)| p == projection)
            .map(|(_, e)| e.clone())
            .collect())
    }
    async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()> {
        lock(&self.parked).remove(&(projection.to_string(), position));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "nats")]
pub use nats::NatsProjectionStore;

/// The key-value bucket projections keep their state in unless told otherwise.
pub const DEFAULT_PROJECTION_BUCKET: &str = "AETHER_PROJECTIONS";

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use aether_core::Error;
    use aether_nats::{classify, StorageKind};
    use async_nats::jetstream::kv;
    use futures::StreamExt;

    /// Projection state in a NATS JetStream key-value bucket: `cp.<projection>` holds the
    /// checkpoint, `parked.<projection>.<sequence>_<index>` each parked event (projection names
    /// are letters, digits, `-` and `_`).
    #[derive(Debug, Clone)]
    pub struct NatsProjectionStore {
        kv: kv::Store,
    }

    impl NatsProjectionStore {
        /// Opens (creating if needed) the bucket `bucket` on `client`.
        ///
        /// # Errors
        /// [`Error::Unavailable`] or [`Error::PermissionDenied`] from the server.
        pub async fn open(
            client: async_nats::Client,
            bucket: &str,
            storage: StorageKind,
        ) -> Result<Self> {
            let context = async_nats::jetstream::new(client);
            let kv = aether_nats::ensure_kv_bucket(
                &context,
                bucket,
                "Aether projections: checkpoints and parked events",
                storage,
            )
            .await?;
            Ok(Self { kv })
        }

        /// The projections this bucket holds state for (a checkpoint or parked events),
        /// sorted.
        ///
        /// # Errors
        /// Server errors.
        pub async fn projections(&self) -> Result<Vec<String>> {
            let mut keys = self
                .kv
                .keys()
                .await
                .map_err(|e| classify("listing projections", e))?;
            let mut names = std::collections::BTreeSet::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| classify("listing projections", e))?;
                let name = match key.split_once('.') {
                    Some(("cp", name)) => Some(name),
                    Some(("parked", rest)) => rest.split_once('.').map(|(name, _)| name),
                    _ => None,
                };
                if let Some(name) = name {
                    names.insert(name.to_string());
                }
            }
            Ok(names.into_iter().collect())
        }

        fn parked_key(projection: &str, position: LogPosition) -> String {
            format!(
                "parked.{projection}.{}_{}",
                position.sequence, position.index
            )
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Decoding(format!("projection state {key}: {e}")))
    }

    fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes> {
        serde_json::to_vec(value)
            .map(Into::into)
            .map_err(|e| Error::Encoding(e.to_string()))
    }

    #[async_trait]
    impl ProjectionStore for NatsProjectionStore {
        async fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
            let key = format!("cp.{projection}");
            match self
                .kv
                .get(&key)
                .await
                .map_err(|e| classify(format!("reading {key}"), e))?
            {
                Some(bytes) => decode(&key, &bytes).map(Some),
                None => Ok(None),
            }
        }
        async fn save_checkpoint(&self, projection: &str, position: LogPosition) -> Result<()> {
            let key = format!("cp.{projection}");
            self.kv
                .put(&key, encode(&position)?)
                .await
                .map_err(|e| classify(format!("writing {key}"), e))?;
            Ok(())
        }
        async fn clear_checkpoint(&self, projection: &str) -> Result<()> {
            let key = format!("cp.{projection}");
            self.kv
                .delete(&key)
                .await
                .map_err(|e| classify(format!("deleting {key}"), e))?;
            Ok(())
        }
        async fn park(&self, projection: &str, event: &ParkedEvent) -> Result<()> {
            let key = Self::parked_key(projection, event.position);
            self.kv
                .put(&key, encode(event)?)
                .await
                .map_err(|e| classify(format!("writing {key}"), e))?;
            Ok(())
        }
        async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>> {
            let prefix = format!("parked.{projection}.");
            let mut keys = self
                .kv
                .keys()
                .await
                .map_err(|e| classify("listing parked events", e))?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| classify("listing parked events", e))?;
                if !key.starts_with(&prefix) {
                    continue;
                }
                if let Some(bytes) = self
                    .kv
                    .get(&key)
                    .await
                    .map_err(|e| classify(format!("reading {key}"), e))?
                {
                    out.push(decode::<ParkedEvent>(&key, &bytes)?);
                }
            }
            out.sort_by_key(|p| p.position);
            Ok(out)
        }
        async fn unpark(&self, projection: &str, position: LogPosition) -> Result<()> {
            let key = Self::parked_key(projection, position);
            self.kv
                .delete(&key)
                .await
                .map_err(|e| classify(format!("deleting {key}"), e))?;
            Ok(())
        }
    }
}
