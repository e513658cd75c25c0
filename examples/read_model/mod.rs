//! A checkpointed read model: account balances projected from stored events.
//!
//! The projection follows `EventStored` notifications from a durable bus subscription, reads
//! each stored event from the event store, and folds it into its state. The state and the
//! checkpoint (the bus stream sequence of the last notification applied) are saved together,
//! atomically, so after a crash the projection never applies an event twice and never skips
//! one: it resumes at `checkpoint + 1`, and a notification at or below the checkpoint (a
//! redelivery) is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_bus::{DurableEvent, DurableSubscription, StartFrom};
use aether_core::{Error, EventStore, EVENT_TYPE_EVENT_STORED};
use serde_json::{json, Value};

/// A saved checkpoint with the balances as of it.
type Saved = (u64, BTreeMap<String, i64>);

/// Where the projection keeps its state and checkpoint: one JSON file, replaced atomically
/// (write to a temporary file, then rename), so a crash leaves either the old or the new
/// state, never half of one.
#[derive(Debug, Clone)]
pub struct ReadModelFile {
    path: PathBuf,
}

impl ReadModelFile {
    /// A read model stored at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Option<Saved>, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::backend("reading the read model", e)),
        };
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Decoding(e.to_string()))?;
        let checkpoint = v["checkpoint"]
            .as_u64()
            .ok_or_else(|| Error::Decoding("read model without a checkpoint".into()))?;
        let balances = serde_json::from_value(v["balances"].clone())
            .map_err(|e| Error::Decoding(e.to_string()))?;
        Ok(Some((checkpoint, balances)))
    }

    fn save(&self, checkpoint: u64, balances: &BTreeMap<String, i64>) -> Result<(), Error> {
        let tmp = self.path.with_extension("tmp");
        let body = json!({ "checkpoint": checkpoint, "balances": balances });
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Encoding(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::backend("writing the read model", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::backend("replacing the read model", e))
    }
}

/// Account balances derived from `Deposited` and `Withdrawn` events.
#[derive(Debug, Default)]
pub struct BalanceProjection {
    balances: BTreeMap<String, i64>,
    checkpoint: u64,
    applied: u64,
}

impl BalanceProjection {
    /// Loads the saved state, or starts empty.
    ///
    /// # Errors
    /// I/O or decoding errors of the read model file.
    pub fn load(file: &ReadModelFile) -> Result<Self, Error> {
        Ok(match file.load()? {
            Some((checkpoint, balances)) => Self {
                balances,
                checkpoint,
                applied: 0,
            },
            None => Self::default(),
        })
    }

    /// Where the durable subscription should start: right after the checkpoint.
    pub fn resume_from(&self) -> StartFrom {
        if self.checkpoint == 0 {
            StartFrom::Beginning
        } else {
            StartFrom::Sequence(self.checkpoint + 1)
        }
    }

    /// The balances.
    pub fn balances(&self) -> &BTreeMap<String, i64> {
        &self.balances
    }

    /// The bus stream sequence of the last notification applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Events applied since this projection was loaded.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies one notification: reads the stored event it names and folds it in. Returns
    /// whether it changed anything (redeliveries at or below the checkpoint do not).
    ///
    /// # Errors
    /// Store errors, or [`Error::Decoding`] when the notification is malformed or names an
    /// event the store does not have.
    pub async fn apply(
        &mut self,
        store: &dyn EventStore,
        note: &DurableEvent,
    ) -> Result<bool, Error> {
        if note.sequence <= self.checkpoint {
            return Ok(false);
        }
        let n = &note.event;
        if n.event_type != EVENT_TYPE_EVENT_STORED {
            self.checkpoint = note.sequence;
            return Ok(false);
        }
        let version = n.data["version"]
            .as_u64()
            .ok_or_else(|| Error::Decoding("EventStored without a version".into()))?;
        let stored = store
            .get_events(&n.actor_id, version)
            .await?
            .into_iter()
            .find(|e| e.version == version)
            .ok_or_else(|| {
                Error::Decoding(format!(
                    "EventStored names {} v{version}, which the store does not have",
                    n.actor_id
                ))
            })?;
        let amount = stored.data["amount"].as_i64().unwrap_or(0);
        let delta = match stored.event_type.as_str() {
            "Deposited" => amount,
            "Withdrawn" => -amount,
            _ => 0,
        };
        *self.balances.entry(stored.actor_id.clone()).or_default() += delta;
        self.checkpoint = note.sequence;
        self.applied += 1;
        Ok(true)
    }

    /// Applies notifications from `sub` until `done` says so or `timeout` passes without one,
    /// saving state and checkpoint after each.
    ///
    /// # Errors
    /// As [`apply`](Self::apply), [`Error::Closed`] if the subscription ends, and
    /// [`Error::Unavailable`] on the timeout.
    pub async fn follow(
        &mut self,
        store: &dyn EventStore,
        sub: &mut DurableSubscription,
        file: &ReadModelFile,
        done: impl Fn(&Self) -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        while !done(self) {
            let note = match tokio::time::timeout(timeout, sub.recv()).await {
                Ok(Some(n)) => n,
                Ok(None) => return Err(Error::Closed("the durable subscription ended".into())),
                Err(elapsed) => {
                    return Err(Error::unavailable(
                        "waiting for the next notification",
                        elapsed,
                    ))
                }
            };
            if self.apply(store, &note).await? {
                file.save(self.checkpoint, &self.balances)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use aether_bus::{BusStreamConfig, NatsBusConfig, NatsEventBus};
    use aether_core::{Event, SubscriptionFilter};
    use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catches_up_after_downtime_without_gaps_or_repeats() {
        let server = aether_testkit::NatsServer::start().expect("nats-server");
        let bus = Arc::new(
            NatsEventBus::connect(
                &server.url(),
                NatsBusConfig::default().jetstream(BusStreamConfig::default()),
            )
            .await
            .unwrap(),
        );
        let client = async_nats::connect(server.url()).await.unwrap();
        let store = Notify::new(
            JetStreamEventStore::new(client, JetStreamConfig::default())
                .await
                .unwrap(),
            bus.clone(),
            "stored",
        );
        let dir = tempfile::tempdir().unwrap();
        let file = ReadModelFile::new(dir.path().join("rm.json"));
        let filter = SubscriptionFilter::new().event_type(EVENT_TYPE_EVENT_STORED);
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        let mut write = |acc: &str, amount: i64| {
            let v = versions.entry(acc.to_string()).or_default();
            *v += 1;
            *expected.entry(acc.to_string()).or_default() += amount;
            Event::new("Deposited", acc, *v).with_field("amount", amount)
        };
        for i in 0..20 {
            let e = write(&format!("acc-{}", i % 4), i);
            store.save_event(&e).await.unwrap();
        }
        {
            let mut p = BalanceProjection::load(&file).unwrap();
            let mut sub = bus
                .subscribe_durable("stored", p.resume_from(), filter.clone())
                .await
                .unwrap();
            p.follow(
                &store,
                &mut sub,
                &file,
                |p| p.applied() == 12,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
        for i in 20..30 {
            let e = write(&format!("acc-{}", i % 4), i);
            store.save_event(&e).await.unwrap();
        }
        let mut p = BalanceProjection::load(&file).unwrap();
        assert!(p.checkpoint() > 0);
        let mut sub = bus
            .subscribe_durable("stored", p.resume_from(), filter)
            .await
            .unwrap();
        p.follow(
            &store,
            &mut sub,
            &file,
            |p| p.applied() == 18,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(p.balances(), &expected);
        // Nothing more is pending: a redelivery of the last notification changes nothing.
        assert!(sub.try_recv().is_none());
        let reloaded = BalanceProjection::load(&file).unwrap();
        assert_eq!(reloaded.balances(), &expected);
        assert_eq!(reloaded.checkpoint(), p.checkpoint());
    }
}
