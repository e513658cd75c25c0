use super::*;
use crate::vm::{NewEvent, RuntimeMessage};
use aether_core::EventStore;
use aether_store::InMemoryEventStore;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Account {
    pub(crate) balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Cmd {
    Deposit(i64),
    Get,
    Fail,
}
impl RuntimeMessage for Cmd {}

pub(crate) struct Bank;
impl RuntimeModel for Bank {
    type State = Account;
    type Message = Cmd;
    type Reply = i64;
    fn name(&self) -> &str {
        "bank"
    }
    fn handle(&self, _: &str, _: &Account, m: &Cmd) -> Result<Vec<NewEvent>> {
        match m {
            Cmd::Deposit(n) => Ok(vec![NewEvent::new("Deposited").with_field("amount", *n)]),
            Cmd::Get => Ok(vec![]),
            Cmd::Fail => Err(Error::invalid("rejected")),
        }
    }
    fn apply(&self, s: &mut Account, e: &Event) {
        s.balance += e.data.get("amount").and_then(Value::as_i64).unwrap_or(0);
    }
    fn reply(&self, s: &Account, _: &Cmd) -> i64 {
        s.balance
    }
}

fn host(store: Arc<InMemoryEventStore>, config: ActorConfig) -> ActorHost<Bank> {
    ActorHost::new(Bank, store, config)
}

fn reply(h: Handled<i64>) -> (i64, u64) {
    match h {
        Handled::Reply { reply, version } => (reply, version),
        Handled::NotOwner => panic!("not owner"),
    }
}

#[tokio::test]
async fn a_message_id_is_applied_once_even_on_another_activation() {
    let store = Arc::new(InMemoryEventStore::new());
    let h = host(Arc::clone(&store), ActorConfig::default().snapshot_every(2));
    let first = h.dispatch_with_id("acc", Some("m-1"), Cmd::Deposit(10));
    assert_eq!(reply(first.await.unwrap()), (10, 1));
    // The retry of the same message is answered from the state, not applied again.
    let again = h.dispatch_with_id("acc", Some("m-1"), Cmd::Deposit(10));
    assert_eq!(reply(again.await.unwrap()), (10, 1));
    let e = &store.get_events("acc", 1).await.unwrap()[0];
    assert_eq!(e.metadata_value(METADATA_MESSAGE_ID), Some("m-1"));
    // Messages without an id are applied every time.
    assert_eq!(
        reply(h.dispatch("acc", Cmd::Deposit(1)).await.unwrap()),
        (11, 2)
    );
    assert_eq!(
        reply(h.dispatch("acc", Cmd::Deposit(1)).await.unwrap()),
        (12, 3)
    );
    // A snapshot was taken at version 2, after m-1; another node (a new owner after a
    // failover) still recognises the id from the events it reads behind the snapshot.
    assert_eq!(
        store
            .get_latest_snapshot("acc")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let other = host(Arc::clone(&store), ActorConfig::default());
    let retried = other.dispatch_with_id("acc", Some("m-1"), Cmd::Deposit(10));
    assert_eq!(reply(retried.await.unwrap()), (12, 3));
    let fresh = other.dispatch_with_id("acc", Some("m-2"), Cmd::Deposit(10));
    assert_eq!(reply(fresh.await.unwrap()), (22, 4));
    assert_eq!(store.get_latest_version("acc").await.unwrap(), 4);
}

#[test]
fn recent_ids_are_bounded() {
    let mut r = RecentIds::default();
    for i in 0..RECENT_IDS + 10 {
        r.record(&format!("m-{i}"));
    }
    r.record("m-2000");
    assert_eq!(r.order.len(), RECENT_IDS);
    assert_eq!(r.set.len(), RECENT_IDS);
    assert!(!r.contains("m-0"));
    assert!(!r.contains("m-10"));
    assert!(r.contains("m-11"));
    assert!(r.contains("m-2000"));
    assert!(r.contains(&format!("m-{}", RECENT_IDS + 9)));
}

#[tokio::test]
async fn activation_handling_and_rebuild() {
    let store = Arc::new(InMemoryEventStore::new());
    let h = host(Arc::clone(&store), ActorConfig::default().snapshot_every(3));
    for i in 1..=5 {
        let (bal, v) = reply(h.dispatch("acc", Cmd::Deposit(10)).await.unwrap());
        assert_eq!((bal, v), (10 * i, i as u64));
    }
    assert!(h.is_active("acc"));
    assert_eq!(store.get_latest_version("acc").await.unwrap(), 5);
    let snap = store.get_latest_snapshot("acc").await.unwrap().unwrap();
    assert_eq!(snap.version, 3);
    assert!(matches!(
        h.dispatch("acc", Cmd::Fail).await,
        Err(Error::InvalidInput(_))
    ));
    // A second host (another node) rebuilds from snapshot + later events.
    let other = host(Arc::clone(&store), ActorConfig::default());
    assert_eq!(
        reply(other.dispatch("acc", Cmd::Get).await.unwrap()),
        (50, 5)
    );
    assert_eq!(
        other.load_state("acc").await.unwrap(),
        (Account { balance: 50 }, 5)
    );
    assert_eq!(other.active_actors(), ["acc"]);
    assert!(h.dispatch("", Cmd::Get).await.is_err());
}

#[tokio::test]
async fn concurrent_hosts_resolve_conflicts_by_reloading() {
    let store = Arc::new(InMemoryEventStore::new());
    let a = host(
        Arc::clone(&store),
        ActorConfig::default().max_conflict_retries(50),
    );
    let b = host(
        Arc::clone(&store),
        ActorConfig::default().max_conflict_retries(50),
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            h.dispatch("shared", Cmd::Deposit(1)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get_latest_version("shared").await.unwrap(), 40);
    let (state, _) = a.load_state("shared").await.unwrap();
    assert_eq!(state.balance, 40);
}

#[tokio::test]
async fn fence_refuses_without_writing() {
    let store = Arc::new(InMemoryEventStore::new());
    let h = host(Arc::clone(&store), ActorConfig::default());
    let owned = Arc::new(AtomicBool::new(true));
    let o = Arc::clone(&owned);
    h.set_fence(Arc::new(move |_| o.load(Ordering::SeqCst)));
    reply(h.dispatch("x", Cmd::Deposit(1)).await.unwrap());
    owned.store(false, Ordering::SeqCst);
    assert_eq!(
        h.dispatch("x", Cmd::Deposit(1)).await.unwrap(),
        Handled::NotOwner
    );
    assert_eq!(store.get_latest_version("x").await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_actors_passivate_and_snapshot() {
    let store = Arc::new(InMemoryEventStore::new());
    let h = host(
        Arc::clone(&store),
        ActorConfig::default()
            .idle_timeout(Duration::from_secs(30))
            .snapshot_every(None),
    );
    reply(h.dispatch("p", Cmd::Deposit(7)).await.unwrap());
    assert!(h.is_active("p"));
    let vm = h.activation("p").unwrap();
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(h.is_active("p"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..100 {
        if vm.state() == VMState::Stopped {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!h.is_active("p"));
    assert_eq!(vm.state(), VMState::Stopped);
    assert_eq!(
        store
            .get_latest_snapshot("p")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    // Reactivates with a new machine and the same state.
    assert_eq!(reply(h.dispatch("p", Cmd::Get).await.unwrap()), (7, 1));
    assert_ne!(h.activation("p").unwrap().id(), vm.id());
}

#[tokio::test]
async fn explicit_passivation() {
    let store = Arc::new(InMemoryEventStore::new());
    let h = host(Arc::clone(&store), ActorConfig::default());
    for id in ["a", "b", "c"] {
        reply(h.dispatch(id, Cmd::Deposit(1)).await.unwrap());
    }
    assert_eq!(h.active_actors(), ["a", "b", "c"]);
    assert!(h.passivate("a"));
    assert!(!h.passivate("zzz"));
    let gone = h.passivate_where(|id| id == "b");
    assert_eq!(gone, ["b"]);
    // Messages keep working through passivation.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.dispatch("c", Cmd::Deposit(1)).await
        }));
    }
    h.passivate_all();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get_latest_version("c").await.unwrap(), 21);
}
