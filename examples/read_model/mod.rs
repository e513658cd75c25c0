//! A checkpointed read model: account balances projected from the stored events of the
//! [`Bank`] actor.
//!
//! The projection follows `EventStored` notifications from a durable bus subscription, reads
//! each stored event from the event store, decodes it as a [`BankEvent`] with the actor's
//! [`EventCodec`] (the same upcasters the actor uses), and folds it into its state. An event
//! that does not decode stops the projection with an error naming it: nothing is skipped and
//! no field is defaulted. The state and the
//! checkpoint (the bus stream sequence of the last notification applied) are saved together,
//! atomically, so after a crash the projection never applies an event twice and never skips
//! one: it resumes at `checkpoint + 1`, and a notification at or below the checkpoint (a
//! redelivery) is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_actor::{Actor, EventCodec};
use aether_bus::{DurableEvent, DurableSubscription, StartFrom};
use aether_core::{Error, Event, EventStore, EVENT_TYPE_EVENT_STORED};
use serde_json::{json, Value};

use crate::bank::{Bank, BankEvent};

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

/// Account balances derived from [`BankEvent`]s: an opened account starts at zero, deposits
/// and withdrawals move it.
#[derive(Debug)]
pub struct BalanceProjection {
    codec: EventCodec<BankEvent>,
    balances: BTreeMap<String, i64>,
    checkpoint: u64,
    applied: u64,
}

impl Default for BalanceProjection {
    /// Empty, decoding with the [`Bank`] actor's upcasters.
    fn default() -> Self {
        Self {
            codec: EventCodec::new(Bank::upcasters()),
            balances: BTreeMap::new(),
            checkpoint: 0,
            applied: 0,
        }
    }
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
                ..Self::default()
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
    /// Store errors; [`Error::Decoding`] when the notification is malformed, names an event
    /// the store does not have, or the event does not decode as a [`BankEvent`]; an error too
    /// when a balance would overflow. The checkpoint does not move past such an event.
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
        self.fold(&stored)?;
        self.checkpoint = note.sequence;
        self.applied += 1;
        Ok(true)
    }

    /// Decodes one stored event and folds it into the balances.
    fn fold(&mut self, stored: &Event) -> Result<(), Error> {
        let event = self
            .codec
            .decode(stored)
            .map_err(|e| Error::Decoding(e.to_string()))?;
        // An account starts at zero; a projection started on part of a history (or a
        // history written by hand) may meet its deposits before its opening.
        let balance = self.balances.entry(stored.actor_id.clone()).or_insert(0);
        let before = *balance;
        *balance = match &event {
            BankEvent::AccountOpened { .. } => Some(before),
            BankEvent::Deposited { amount } => before.checked_add(*amount),
            BankEvent::Withdrawn { amount } => before.checked_sub(*amount),
        }
        .ok_or_else(|| {
            Error::invalid(format!(
                "{event:?} at version {} of {} overflows its balance {before}",
                stored.version, stored.actor_id
            ))
        })?;
        Ok(())
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
    use aether_core::SubscriptionFilter;
    use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore, Notify};

    /// The stored form of `event` at `version` of `actor`, as the bank actor writes it.
    fn stored(actor: &str, version: u64, event: &BankEvent) -> Event {
        EventCodec::<BankEvent>::default()
            .encode(event)
            .unwrap()
            .into_event(actor, version)
    }

    /// The bus delivery announcing `event` at bus stream sequence `sequence`.
    fn note(sequence: u64, event: &Event) -> DurableEvent {
        DurableEvent {
            sequence,
            namespace: "stored".into(),
            event: Arc::new(event.event_stored()),
        }
    }

    #[tokio::test]
    async fn folds_typed_events_and_ignores_redeliveries() {
        let store = InMemoryEventStore::new();
        let history = [
            stored(
                "acc",
                1,
                &BankEvent::AccountOpened {
                    owner: "Ada".into(),
                },
            ),
            stored("acc", 2, &BankEvent::Deposited { amount: 100 }),
            stored("acc", 3, &BankEvent::Withdrawn { amount: 30 }),
        ];
        let mut p = BalanceProjection::default();
        for (i, event) in history.iter().enumerate() {
            store.save_event(event).await.unwrap();
            assert!(p.apply(&store, &note(i as u64 + 1, event)).await.unwrap());
            if i == 0 {
                assert_eq!(p.balances().get("acc"), Some(&0));
            }
        }
        assert_eq!(p.balances().get("acc"), Some(&70));
        assert_eq!((p.checkpoint(), p.applied()), (3, 3));
        // A redelivery at or below the checkpoint changes nothing.
        assert!(!p.apply(&store, &note(2, &history[1])).await.unwrap());
        assert_eq!(p.balances().get("acc"), Some(&70));
    }

    #[tokio::test]
    async fn an_event_that_does_not_decode_stops_the_projection_instead_of_counting_as_zero() {
        let store = InMemoryEventStore::new();
        let good = stored("acc", 1, &BankEvent::Deposited { amount: 5 });
        // Written by hand, without its amount.
        let bad = Event::new("Deposited", "acc", 2);
        let unknown = Event::new("Refunded", "acc", 3).with_field("amount", 1);
        for e in [&good, &bad, &unknown] {
            store.save_event(e).await.unwrap();
        }
        let mut p = BalanceProjection::default();
        p.apply(&store, &note(1, &good)).await.unwrap();
        for (sequence, event) in [(2, &bad), (3, &unknown)] {
            let err = p.apply(&store, &note(sequence, event)).await.unwrap_err();
            assert!(matches!(err, Error::Decoding(_)), "{err:?}");
            assert!(err.to_string().contains(&event.event_type), "{err}");
        }
        assert_eq!(p.balances().get("acc"), Some(&5));
        assert_eq!(p.checkpoint(), 1);
    }

    #[tokio::test]
    async fn a_balance_that_would_overflow_is_an_error() {
        let store = InMemoryEventStore::new();
        let events = [
            stored("acc", 1, &BankEvent::Deposited { amount: i64::MAX }),
            stored("acc", 2, &BankEvent::Deposited { amount: 1 }),
        ];
        let mut p = BalanceProjection::default();
        for (i, e) in events.iter().enumerate() {
            store.save_event(e).await.unwrap();
            let applied = p.apply(&store, &note(i as u64 + 1, e)).await;
            assert_eq!(applied.is_err(), i == 1, "{applied:?}");
        }
        assert_eq!(p.balances().get("acc"), Some(&i64::MAX));
    }

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
            stored(acc, *v, &BankEvent::Deposited { amount })
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
