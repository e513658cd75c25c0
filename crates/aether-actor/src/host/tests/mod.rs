use std::sync::atomic::AtomicBool;
use std::time::Duration;

use aether_core::{
    ActorKey, Event, EventStore, Result as CoreResult, Snapshot, METADATA_ACTOR_TYPE,
    METADATA_CORRELATION_ID, METADATA_MESSAGE_ID, METADATA_REPLY, METADATA_SCHEMA_VERSION,
    METADATA_USER_ID,
};
use aether_store::InMemoryEventStore;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::*;
use crate::{
    ActorClient, CommandMeta, DomainEvent, PassivationPolicy, RetryPolicy, SnapshotPolicy,
};

mod across;
mod inline;
mod lifecycle;
mod reactions;
mod retire;
mod stored;
mod transactions;

/// The key of the test shop's actor `id`.
pub(super) fn stock(id: &str) -> ActorKey<'_> {
    ActorKey::new("stock", id)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stock {
    pub(crate) available: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StockCommand {
    Restock(u32),
    Reserve(u32),
    /// Restocks in two events.
    RestockTwice(u32),
    Get,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum StockEvent {
    Restocked { n: u32 },
    Reserved { n: u32 },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Restocked { .. } => "Restocked",
            Self::Reserved { .. } => "Reserved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum StockError {
    #[error("only {available} available")]
    OutOfStock { available: u32 },
}

pub(crate) struct Shop;

impl Actor for Shop {
    type State = Stock;
    type Command = StockCommand;
    type Event = StockEvent;
    type Reply = u32;
    type Error = StockError;
    const TYPE: &'static str = "stock";

    async fn decide(
        &self,
        _: &str,
        state: &Stock,
        command: &StockCommand,
    ) -> Result<Vec<StockEvent>, StockError> {
        Ok(match *command {
            StockCommand::Restock(n) => vec![StockEvent::Restocked { n }],
            StockCommand::RestockTwice(n) => {
                vec![StockEvent::Restocked { n }, StockEvent::Restocked { n }]
            }
            StockCommand::Reserve(n) if n > state.available => {
                return Err(StockError::OutOfStock {
                    available: state.available,
                })
            }
            StockCommand::Reserve(n) => vec![StockEvent::Reserved { n }],
            StockCommand::Get => vec![],
        })
    }

    fn apply(state: &mut Stock, event: &StockEvent) {
        match event {
            StockEvent::Restocked { n } => state.available += n,
            StockEvent::Reserved { n } => state.available -= n,
        }
    }

    fn reply(state: &Stock, _: &StockCommand, _: &[StockEvent]) -> u32 {
        state.available
    }
}

fn host(store: &Arc<InMemoryEventStore>, config: RuntimeConfig) -> ActorHost<Shop> {
    ActorHost::new(Shop, Arc::clone(store) as Arc<dyn SnapshotStore>, config)
}

fn store() -> Arc<InMemoryEventStore> {
    Arc::new(InMemoryEventStore::new())
}

fn with_id(command: StockCommand, id: &str) -> Envelope<StockCommand> {
    Envelope::new(command).with_id(id)
}

fn reply(outcome: Outcome<Shop>) -> (u32, u64) {
    match outcome {
        Ok(Handled::Reply { reply, version }) => (reply, version),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[tokio::test]
async fn commands_decide_save_apply_and_reply() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    assert_eq!(h.send("sku-1", StockCommand::Restock(5)).await.unwrap(), 5);
    assert_eq!(
        h.send("sku-1", StockCommand::RestockTwice(2))
            .await
            .unwrap(),
        9
    );
    assert_eq!(
        reply(h.dispatch("sku-1", StockCommand::Reserve(4).into()).await),
        (5, 4)
    );
    assert_eq!(h.send("sku-1", StockCommand::Get).await.unwrap(), 5);
    let events = s.events_of(stock("sku-1"), 1).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Restocked", "Restocked", "Restocked", "Reserved"]);
    assert!(events
        .iter()
        .all(|e| e.metadata_value(METADATA_SCHEMA_VERSION) == Some("1")));
    assert_eq!(events[3].data["n"], 4);
    let stats = h.stats();
    assert_eq!((stats.commands, stats.activations, stats.active), (4, 1, 1));
    assert!(matches!(
        h.send("", StockCommand::Get).await,
        Err(CommandError::Infrastructure(Error::InvalidInput(_)))
    ));
}

#[tokio::test]
async fn a_rejection_is_typed_and_writes_nothing() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    h.send("sku", StockCommand::Restock(1)).await.unwrap();
    match h.send("sku", StockCommand::Reserve(3)).await {
        Err(CommandError::Rejected(StockError::OutOfStock { available })) => {
            assert_eq!(available, 1)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 1);
    assert_eq!(h.stats().rejections, 1);
}

#[tokio::test]
async fn a_rejection_decided_on_a_stale_state_is_decided_again() {
    // Two hosts on one store: the first has the actor active with nothing in stock when the
    // second restocks it.
    let s = store();
    let first = host(&s, RuntimeConfig::default());
    let second = host(&s, RuntimeConfig::default());
    assert_eq!(first.send("sku", StockCommand::Get).await.unwrap(), 0);
    assert_eq!(
        second.send("sku", StockCommand::Restock(5)).await.unwrap(),
        5
    );
    // Decided on the first host's stale state this would be refused with `available: 0`.
    assert_eq!(
        first.send("sku", StockCommand::Reserve(3)).await.unwrap(),
        2
    );
    assert_eq!(first.stats().stale_rejections, 1);
    assert_eq!(first.stats().rejections, 0);
    // A rejection on the current state stands, and says what is really available.
    second.send("sku", StockCommand::Get).await.unwrap();
    match second.send("sku", StockCommand::Reserve(3)).await {
        Err(CommandError::Rejected(StockError::OutOfStock { available: 2 })) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn writes_from_another_host_are_conflicts_that_are_decided_again() {
    let s = store();
    let a = host(&s, RuntimeConfig::default());
    let b = host(&s, RuntimeConfig::default());
    for i in 0..20u32 {
        let host = if i % 2 == 0 { &a } else { &b };
        host.send("sku", StockCommand::Restock(1)).await.unwrap();
    }
    // The last writer is current (a read decides nothing, so the other host answers from
    // the state it last saw: a host's reads are as fresh as its activation).
    assert_eq!(b.send("sku", StockCommand::Get).await.unwrap(), 20);
    // Every write after the first two met the other host's write.
    assert_eq!(a.stats().conflicts + b.stats().conflicts, 18);
    assert_eq!(
        a.stats().conflicts_exhausted + b.stats().conflicts_exhausted,
        0
    );
}

/// A store whose saves always lose the race.
struct AlwaysConflicts(InMemoryEventStore);

#[async_trait]
impl EventStore for AlwaysConflicts {
    async fn save_event(&self, event: &Event) -> CoreResult<()> {
        Err(Error::version_conflict(
            event.actor_id.clone(),
            event.version,
            event.version,
        ))
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> CoreResult<()> {
        Err(Error::version_conflict(actor_id, events.len() as u64, 9))
    }
    async fn events_of(&self, actor: ActorKey<'_>, from: u64) -> CoreResult<Vec<Event>> {
        self.0.events_of(actor, from).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> CoreResult<u64> {
        self.0.latest_version_of(actor).await
    }
}

#[async_trait]
impl SnapshotStore for AlwaysConflicts {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> CoreResult<()> {
        self.0.save_snapshot(snapshot).await
    }
    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> CoreResult<Option<Snapshot>> {
        self.0.latest_snapshot_of(actor).await
    }
}

#[tokio::test(start_paused = true)]
async fn conflicts_beyond_the_retry_policy_are_their_own_error() {
    let h = ActorHost::new(
        Shop,
        Arc::new(AlwaysConflicts(InMemoryEventStore::new())),
        RuntimeConfig::default().retry(RetryPolicy::default().max_retries(3)),
    );
    match h.send("sku", StockCommand::Restock(1)).await {
        Err(CommandError::Conflict {
            actor_id, attempts, ..
        }) => assert_eq!((actor_id.as_str(), attempts), ("sku", 4)),
        other => panic!("{other:?}"),
    }
    let stats = h.stats();
    assert_eq!((stats.conflicts, stats.conflicts_exhausted), (4, 1));
}

#[tokio::test]
async fn a_command_id_is_applied_once_and_its_retry_gets_the_first_outcome() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().snapshot(SnapshotPolicy::every(3)),
    );
    assert_eq!(
        reply(
            h.dispatch("sku", with_id(StockCommand::Restock(10), "c-1"))
                .await
        ),
        (10, 1)
    );
    h.send("sku", StockCommand::Restock(1)).await.unwrap();
    // The retry is not applied again, and gets the first reply, not the current state.
    assert_eq!(
        h.dispatch("sku", with_id(StockCommand::Restock(10), "c-1"))
            .await
            .ok(),
        Some(Handled::Reply {
            reply: 10,
            version: 2
        })
    );
    // A rejection's retry gets the rejection, even once the state would allow it.
    let refused = h
        .dispatch("sku", with_id(StockCommand::Reserve(20), "c-2"))
        .await;
    assert!(matches!(refused, Err(CommandError::Rejected(_))));
    h.send("sku", StockCommand::Restock(20)).await.unwrap();
    let again = h
        .dispatch("sku", with_id(StockCommand::Reserve(20), "c-2"))
        .await;
    assert!(matches!(
        again,
        Err(CommandError::Rejected(StockError::OutOfStock {
            available: 11
        }))
    ));
    assert_eq!(h.stats().deduplicated, 2);
    let events = s.events_of(stock("sku"), 1).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].metadata_value(METADATA_MESSAGE_ID), Some("c-1"));
    // Only the id is stored: no reply, on any event.
    assert!(events
        .iter()
        .all(|e| e.metadata_value(METADATA_REPLY).is_none()));

    // A new activation (after a restart, or on a new owner) behind a snapshot taken after
    // c-1 still recognises c-1 from the events' metadata: not applied again, answered as
    // already applied with the reply on the current state.
    assert_eq!(
        s.latest_snapshot_of(stock("sku"))
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    let other = host(&s, RuntimeConfig::default());
    assert_eq!(
        other
            .dispatch("sku", with_id(StockCommand::Restock(10), "c-1"))
            .await
            .ok(),
        Some(Handled::AlreadyApplied {
            reply: 31,
            version: 3
        })
    );
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 3);
    assert_eq!(other.stats().deduplicated, 1);
}

#[tokio::test]
async fn a_multi_event_command_stores_its_id_and_metadata_on_every_event() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    let meta = CommandMeta::new()
        .command_id("c-9")
        .correlation_id("corr")
        .causation_id("cause")
        .user_id("ada");
    let outcome = h
        .dispatch(
            "sku",
            Envelope::new(StockCommand::RestockTwice(3)).with_meta(meta),
        )
        .await;
    assert_eq!(reply(outcome), (6, 2));
    let events = s.events_of(stock("sku"), 1).await.unwrap();
    for e in &events {
        assert_eq!(e.metadata_value(METADATA_MESSAGE_ID), Some("c-9"));
        assert_eq!(e.metadata_value(METADATA_CORRELATION_ID), Some("corr"));
        assert_eq!(e.causation_id(), Some("cause"));
        assert_eq!(e.metadata_value(METADATA_USER_ID), Some("ada"));
        assert_eq!(e.actor_type.as_deref(), Some("stock"));
        assert_eq!(e.metadata_value(METADATA_ACTOR_TYPE), None);
        assert_eq!(e.metadata_value(METADATA_REPLY), None);
    }
    let fresh = host(&s, RuntimeConfig::default());
    let retry = fresh
        .dispatch("sku", with_id(StockCommand::RestockTwice(3), "c-9"))
        .await;
    assert_eq!(
        retry.ok(),
        Some(Handled::AlreadyApplied {
            reply: 6,
            version: 2
        })
    );
    // Events written by an earlier release carry the reply; a small one is still the answer.
    let old = Event::new("Restocked", "old", 1)
        .with_actor_type("stock")
        .with_field("n", 4)
        .with_metadata(METADATA_MESSAGE_ID, "c-old")
        .with_metadata(METADATA_REPLY, "4");
    s.save_event(&old).await.unwrap();
    s.save_event(
        &Event::new("Restocked", "old", 2)
            .with_actor_type("stock")
            .with_field("n", 1),
    )
    .await
    .unwrap();
    assert_eq!(
        reply(
            fresh
                .dispatch("old", with_id(StockCommand::Restock(4), "c-old"))
                .await
        ),
        (4, 2)
    );
}
