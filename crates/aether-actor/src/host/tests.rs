use std::sync::atomic::AtomicBool;
use std::time::Duration;

use aether_core::{
    Event, EventStore, Result as CoreResult, Snapshot, METADATA_ACTOR_TYPE,
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
    let events = s.get_events("sku-1", 1).await.unwrap();
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
    assert_eq!(s.get_latest_version("sku").await.unwrap(), 1);
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
    async fn get_events(&self, actor_id: &str, from: u64) -> CoreResult<Vec<Event>> {
        self.0.get_events(actor_id, from).await
    }
    async fn get_latest_version(&self, actor_id: &str) -> CoreResult<u64> {
        self.0.get_latest_version(actor_id).await
    }
}

#[async_trait]
impl SnapshotStore for AlwaysConflicts {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> CoreResult<()> {
        self.0.save_snapshot(snapshot).await
    }
    async fn get_latest_snapshot(&self, actor_id: &str) -> CoreResult<Option<Snapshot>> {
        self.0.get_latest_snapshot(actor_id).await
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
    let events = s.get_events("sku", 1).await.unwrap();
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
        s.get_latest_snapshot("sku").await.unwrap().unwrap().version,
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
    assert_eq!(s.get_latest_version("sku").await.unwrap(), 3);
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
    let events = s.get_events("sku", 1).await.unwrap();
    for e in &events {
        assert_eq!(e.metadata_value(METADATA_MESSAGE_ID), Some("c-9"));
        assert_eq!(e.metadata_value(METADATA_CORRELATION_ID), Some("corr"));
        assert_eq!(e.causation_id(), Some("cause"));
        assert_eq!(e.metadata_value(METADATA_USER_ID), Some("ada"));
        assert_eq!(e.metadata_value(METADATA_ACTOR_TYPE), Some("stock"));
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
        .with_field("n", 4)
        .with_metadata(METADATA_MESSAGE_ID, "c-old")
        .with_metadata(METADATA_REPLY, "4");
    s.save_event(&old).await.unwrap();
    s.save_event(&Event::new("Restocked", "old", 2).with_field("n", 1))
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

/// An actor whose state (and reply) is as large as a test asks: a list of names.
struct Guests;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GuestList {
    names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum GuestEvent {
    Invited { name: String },
}

impl DomainEvent for GuestEvent {
    fn event_type(&self) -> &'static str {
        "Invited"
    }
}

impl Actor for Guests {
    type State = GuestList;
    type Command = String;
    type Event = GuestEvent;
    /// The whole state, as many applications reply.
    type Reply = GuestList;
    type Error = StockError;
    const TYPE: &'static str = "guests";

    async fn decide(
        &self,
        _: &str,
        _: &GuestList,
        name: &String,
    ) -> Result<Vec<GuestEvent>, StockError> {
        Ok(vec![GuestEvent::Invited { name: name.clone() }])
    }

    fn apply(state: &mut GuestList, event: &GuestEvent) {
        let GuestEvent::Invited { name } = event;
        state.names.push(name.clone());
    }

    fn reply(state: &GuestList, _: &String, _: &[GuestEvent]) -> GuestList {
        state.clone()
    }
}

/// The bytes of the stored form of each event of `actor_id`, past the first `skip`.
async fn stored_sizes(s: &InMemoryEventStore, actor_id: &str, skip: usize) -> Vec<usize> {
    s.get_events(actor_id, 1)
        .await
        .unwrap()
        .iter()
        .skip(skip)
        .map(|e| {
            let mut e = e.clone();
            // Ids and timestamps differ between runs in their digits only; fix them.
            e.id = "id".into();
            e.timestamp = Default::default();
            serde_json::to_vec(&e).unwrap().len()
        })
        .collect()
}

#[tokio::test]
async fn the_bytes_stored_per_event_do_not_depend_on_the_state_or_the_reply() {
    let s = store();
    let h = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    // Two actors with ids of one length: one grows a 900 KB state from one large name; another stays tiny. Both then take
    // the same twenty commands with ids of the same length.
    h.send("large", "x".repeat(900 * 1024)).await.unwrap();
    h.send("small", "x".to_string()).await.unwrap();
    for i in 0..20 {
        for actor in ["large", "small"] {
            let env =
                Envelope::new(format!("guest-{i:02}")).with_id(format!("cmd-{actor:>5}-{i:02}"));
            let state = h.send_envelope(actor, env).await.unwrap();
            assert_eq!(state.names.len(), i + 2);
        }
    }
    let large = stored_sizes(&s, "large", 1).await;
    let small = stored_sizes(&s, "small", 1).await;
    assert_eq!(large.len(), 20);
    assert_eq!(
        large, small,
        "stored bytes per event differ with the state's size"
    );
    assert!(large.iter().all(|&n| n < 512), "{large:?}");
    // A retry on the same activation gets its first reply when it was small enough to keep;
    // a 900 KB reply is not kept, so its retry is answered as already applied. Neither is
    // applied again.
    let retry =
        |actor: &str| Envelope::new("guest-00".to_string()).with_id(format!("cmd-{actor:>5}-00"));
    let small_again = h.dispatch("small", retry("small")).await;
    assert!(
        matches!(&small_again, Ok(Handled::Reply { reply, version: 21 }) if reply.names.len() == 2),
        "{small_again:?}"
    );
    let large_again = h.dispatch("large", retry("large")).await;
    assert!(
        matches!(&large_again, Ok(Handled::AlreadyApplied { reply, version: 21 }) if reply.names.len() == 21),
        "{large_again:?}"
    );
    // A new activation (a restart, a new owner) knows the ids from the events alone.
    let fresh = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    for actor in ["large", "small"] {
        let again = fresh.dispatch(actor, retry(actor)).await;
        assert!(
            matches!(&again, Ok(Handled::AlreadyApplied { reply, version: 21 }) if reply.names.len() == 21),
            "{again:?}"
        );
        assert_eq!(s.get_latest_version(actor).await.unwrap(), 21);
    }
}

#[tokio::test]
async fn a_command_to_an_id_holding_another_types_events_says_so() {
    let s = store();
    let stock = host(&s, RuntimeConfig::default());
    stock
        .send("shared-id", StockCommand::Restock(1))
        .await
        .unwrap();
    let guests = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    match guests.send("shared-id", "ada".to_string()).await {
        Err(CommandError::Decode(e)) => {
            assert!(
                e.reason
                    .contains("holds events of actor type \"stock\", not \"guests\""),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without the writer's type (an event written otherwise), an unknown event type hints
    // at the same cause.
    s.save_event(&Event::new("Restocked", "bare", 1).with_field("n", 1))
        .await
        .unwrap();
    match guests.send("bare", "ada".to_string()).await {
        Err(CommandError::Decode(e)) => {
            assert!(e.reason.contains("another actor type's events"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_event_that_does_not_fit_is_a_decoding_error_from_handling_and_replay() {
    let s = store();
    s.save_event(&Event::new("Restocked", "sku", 1).with_field("n", 2))
        .await
        .unwrap();
    s.save_event(&Event::new("Restocked", "sku", 2).with_field("n", "two"))
        .await
        .unwrap();
    let h = host(&s, RuntimeConfig::default());
    match h.send("sku", StockCommand::Get).await {
        Err(CommandError::Decode(e)) => {
            assert_eq!((e.actor_id.as_str(), e.version), ("sku", 2));
            assert_eq!(e.event_type, "Restocked");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.stats().decode_errors, 1);
    assert!(matches!(
        h.load_state("sku").await,
        Err(LoadError::Decode(_))
    ));
    let replayed = crate::replay::<Shop>(s.as_ref(), h.codec(), "sku").await;
    assert!(matches!(replayed, Err(LoadError::Decode(e)) if e.version == 2));
    // Nothing was written past the bad event.
    assert_eq!(s.get_latest_version("sku").await.unwrap(), 2);
}

#[tokio::test]
async fn a_snapshot_of_another_state_version_is_ignored_and_the_actor_rebuilt() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().snapshot(SnapshotPolicy::every(2)),
    );
    for _ in 0..3 {
        h.send("sku", StockCommand::Restock(1)).await.unwrap();
    }
    let snap = s.get_latest_snapshot("sku").await.unwrap().unwrap();
    assert_eq!((snap.version, snap.schema_version), (2, Some(1)));
    assert_eq!(h.stats().snapshots_saved, 1);
    // Snapshots of an older state schema (or from before schema versions), even newer ones
    // with a state that no longer fits, are skipped.
    let bogus = serde_json::json!({"available": "lots"});
    s.save_snapshot(&Snapshot::new(
        "sku",
        3,
        bogus.as_object().cloned().unwrap(),
    ))
    .await
    .unwrap();
    let fresh = host(&s, RuntimeConfig::default());
    assert_eq!(
        fresh.load_state("sku").await.unwrap(),
        (Stock { available: 3 }, 3)
    );
    assert_eq!(fresh.send("sku", StockCommand::Get).await.unwrap(), 3);
    assert_eq!(fresh.stats().snapshots_ignored, 2);
    let mismatched =
        Snapshot::new("sku", 3, bogus.as_object().cloned().unwrap()).with_schema_version(1);
    s.save_snapshot(&mismatched).await.unwrap();
    let fresh = host(&s, RuntimeConfig::default());
    assert_eq!(fresh.send("sku", StockCommand::Get).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn idle_actors_passivate_and_snapshot_on_passivation() {
    let s = store();
    let passivated = Arc::new(AtomicBool::new(false));
    let h = host(
        &s,
        RuntimeConfig::default()
            .snapshot(SnapshotPolicy::on_passivation())
            .passivation(PassivationPolicy::never().idle_timeout(Duration::from_secs(10))),
    );
    let flag = Arc::clone(&passivated);
    h.set_passivation_hook(Arc::new(move |_| flag.store(true, Ordering::SeqCst)));
    h.send("sku", StockCommand::Restock(4)).await.unwrap();
    assert!(h.is_active("sku"));
    tokio::time::sleep(Duration::from_secs(11)).await;
    for _ in 0..100 {
        if !h.is_active("sku") && passivated.load(Ordering::SeqCst) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!h.is_active("sku"));
    assert!(passivated.load(Ordering::SeqCst));
    assert_eq!(h.stats().passivated_idle, 1);
    assert_eq!(
        s.get_latest_snapshot("sku").await.unwrap().unwrap().version,
        1
    );
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 4);
    assert_eq!(h.stats().activations, 2);
}

#[tokio::test]
async fn the_cap_passivates_the_least_recently_used_actor_which_comes_back_intact() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().passivation(PassivationPolicy::never().max_active(2)),
    );
    h.send("a", StockCommand::Restock(1)).await.unwrap();
    h.send("b", StockCommand::Restock(2)).await.unwrap();
    h.send("a", StockCommand::Restock(10)).await.unwrap();
    // "b" is the least recently used: activating "c" passivates it.
    h.send("c", StockCommand::Restock(3)).await.unwrap();
    wait_until(|| h.active_actors() == ["a", "c"]).await;
    assert_eq!(h.stats().passivated_evicted, 1);
    // It comes back with its state; "a" is now the least recently used and makes room.
    assert_eq!(h.send("b", StockCommand::Get).await.unwrap(), 2);
    wait_until(|| h.active_actors() == ["b", "c"]).await;
    assert_eq!(h.send("a", StockCommand::Get).await.unwrap(), 11);
    wait_until(|| h.active_count() == 2).await;
    let stats = h.stats();
    assert_eq!((stats.passivated_evicted, stats.activations), (3, 5));
}

async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    assert!(cond(), "condition never held");
}

#[tokio::test]
async fn a_fence_that_refuses_answers_not_owner_and_writes_nothing() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    h.set_fence(Arc::new(|id: &str| id != "theirs"));
    assert!(matches!(
        h.dispatch("theirs", StockCommand::Restock(1).into()).await,
        Ok(Handled::NotOwner)
    ));
    assert!(matches!(
        h.send("theirs", StockCommand::Restock(1)).await,
        Err(CommandError::Infrastructure(Error::Unavailable { .. }))
    ));
    assert_eq!(s.get_latest_version("theirs").await.unwrap(), 0);
    assert_eq!(h.send("mine", StockCommand::Restock(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_commands_to_one_actor_are_serialised() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.send("sku", StockCommand::Restock(1)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 50);
    assert_eq!(s.get_latest_version("sku").await.unwrap(), 50);
    assert_eq!(h.stats().conflicts, 0);
}

#[tokio::test]
async fn passivate_on_request_hands_queued_commands_to_the_next_activation() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    h.send("sku", StockCommand::Restock(1)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.send("sku", StockCommand::Restock(1)).await
        }));
    }
    assert!(h.passivate("sku") || !h.is_active("sku"));
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 21);
    assert_eq!(h.passivate_all().len(), 1);
}

/// Moves `n` from `from` to `to`: a decision over two actors.
fn move_stock(n: u32) -> impl FnMut(&[Stock]) -> crate::Decision<Shop, u32> + Send {
    move |states: &[Stock]| {
        if states[0].available < n {
            return Err(StockError::OutOfStock {
                available: states[0].available,
            });
        }
        Ok((
            vec![
                vec![StockEvent::Reserved { n }],
                vec![StockEvent::Restocked { n }],
            ],
            states[1].available + n,
        ))
    }
}

#[tokio::test]
async fn a_transaction_moves_stock_between_actors_all_or_nothing() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    h.send("a", StockCommand::Restock(10)).await.unwrap();
    assert!(h.is_active("a"));
    let meta = CommandMeta::new().correlation_id("move-1");
    let to = h.transact(&["a", "b"], meta, move_stock(4)).await.unwrap();
    assert_eq!(to, 4);
    // The local activation was passivated, so it sees the committed events.
    assert_eq!(h.send("a", StockCommand::Get).await.unwrap(), 6);
    assert_eq!(h.send("b", StockCommand::Get).await.unwrap(), 4);
    let moved = s.get_events("b", 1).await.unwrap();
    assert_eq!(
        moved[0].metadata_value(METADATA_CORRELATION_ID),
        Some("move-1")
    );
    // Refused on the current state: typed, and nothing written to either actor.
    match h
        .transact(&["a", "b"], CommandMeta::new(), move_stock(7))
        .await
    {
        Err(CommandError::Rejected(StockError::OutOfStock { available: 6 })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get_latest_version("a").await.unwrap(), 2);
    assert_eq!(s.get_latest_version("b").await.unwrap(), 1);
    // Bad shapes are refused.
    let none: &[&str] = &[];
    assert!(matches!(
        h.transact(none, CommandMeta::new(), move_stock(1)).await,
        Err(CommandError::Infrastructure(Error::InvalidInput(_)))
    ));
    assert!(matches!(
        h.transact(&["a", "a"], CommandMeta::new(), move_stock(1))
            .await,
        Err(CommandError::Infrastructure(Error::InvalidInput(_)))
    ));
    let wrong_shape = |_: &[Stock]| -> crate::Decision<Shop, ()> { Ok((vec![vec![]], ())) };
    assert!(matches!(
        h.transact(&["a", "b"], CommandMeta::new(), wrong_shape)
            .await,
        Err(CommandError::Infrastructure(Error::InvalidInput(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_on_two_hosts_conserve_the_total() {
    let s = store();
    let hosts = [
        host(
            &s,
            RuntimeConfig::default().retry(RetryPolicy::default().max_retries(50)),
        ),
        host(
            &s,
            RuntimeConfig::default().retry(RetryPolicy::default().max_retries(50)),
        ),
    ];
    for i in 0..4 {
        hosts[0]
            .send(&format!("sku-{i}"), StockCommand::Restock(100))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let h = hosts[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20usize {
                let a = format!("sku-{}", (t + k) % 4);
                let b = format!("sku-{}", (t + k + 1) % 4);
                match h
                    .transact(&[&a, &b], CommandMeta::new(), move_stock(3))
                    .await
                {
                    Ok(_) | Err(CommandError::Rejected(_)) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for i in 0..4 {
        total += hosts[0]
            .load_state(&format!("sku-{i}"))
            .await
            .unwrap()
            .0
            .available;
    }
    assert_eq!(total, 400);
    let conflicts = hosts[0].stats().conflicts + hosts[1].stats().conflicts;
    assert!(conflicts > 0, "eight writers on four actors must have met");
}

#[tokio::test]
async fn a_store_without_transactions_says_so() {
    let h = ActorHost::new(
        Shop,
        Arc::new(AlwaysConflicts(InMemoryEventStore::new())),
        RuntimeConfig::default(),
    );
    match h
        .transact(
            &["a", "b"],
            CommandMeta::new(),
            |_: &[Stock]| -> crate::Decision<Shop, ()> {
                Ok((vec![vec![StockEvent::Restocked { n: 1 }], vec![]], ()))
            },
        )
        .await
    {
        Err(CommandError::Infrastructure(Error::Unsupported { .. })) => {}
        other => panic!("{other:?}"),
    }
}
