//! An activation's life: passivation, the cap, fencing, commands queued and serialised.

use super::stock;
use super::*;

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
        s.latest_snapshot_of(stock("sku"))
            .await
            .unwrap()
            .unwrap()
            .version,
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
    assert_eq!(s.latest_version_of(stock("theirs")).await.unwrap(), 0);
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
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 50);
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

#[tokio::test(start_paused = true)]
async fn an_idle_actor_keeps_no_task_and_the_sweeper_ends_with_the_host() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default()
            .passivation(PassivationPolicy::never().idle_timeout(Duration::from_secs(10))),
    );
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    for id in ["a", "b", "c"] {
        h.send(id, StockCommand::Restock(1)).await.unwrap();
    }
    // The three actors are active and idle: only the host's idle sweeper is a task.
    wait_until(|| tasks() == 1).await;
    assert_eq!(h.active_count(), 3);
    // Used again, an idle actor answers from the state it kept.
    assert_eq!(h.send("a", StockCommand::Get).await.unwrap(), 1);
    assert_eq!(h.stats().activations, 3);
    drop(h);
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_until(|| tasks() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_leaves_busy_actors_alone_and_ends_when_none_is_active() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default()
            .passivation(PassivationPolicy::never().idle_timeout(Duration::from_secs(10))),
    );
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    h.send("a", StockCommand::Restock(1)).await.unwrap();
    // Used every 6 seconds, "a" never reaches the timeout; "b", left alone, passivates.
    h.send("b", StockCommand::Restock(1)).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        h.send("a", StockCommand::Get).await.unwrap();
    }
    assert_eq!(h.active_actors(), ["a"]);
    assert_eq!(h.stats().passivated_idle, 1);
    tokio::time::sleep(Duration::from_secs(12)).await;
    wait_until(|| !h.is_active("a")).await;
    // No actor left: the sweeper has ended (the next activation starts another).
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_until(|| tasks() == 0).await;
    assert_eq!(h.send("a", StockCommand::Get).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(12)).await;
    wait_until(|| !h.is_active("a")).await;
    assert_eq!(h.stats().passivated_idle, 3);
}

#[tokio::test]
async fn senders_wait_for_room_in_a_full_mailbox_in_arrival_order() {
    let s = store();
    let h = host(&s, RuntimeConfig::default().mailbox_capacity(1));
    // On this one-thread runtime the senders reach the mailbox in the order they are spawned,
    // all but the first finding it full.
    let mut tasks = Vec::new();
    for n in 1..=30 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.send("sku", StockCommand::Restock(n)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let events = s.events_of(stock("sku"), 1).await.unwrap();
    let order: Vec<u64> = events.iter().filter_map(|e| e.data["n"].as_u64()).collect();
    assert_eq!(order, (1..=30).collect::<Vec<u64>>());
    assert_eq!(h.stats().activations, 1);
}

#[tokio::test]
async fn an_idle_actor_asked_to_passivate_from_outside_the_runtime_passivates() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().snapshot(SnapshotPolicy::on_passivation()),
    );
    h.send("sku", StockCommand::Restock(3)).await.unwrap();
    let other = h.clone();
    let asked = std::thread::spawn(move || other.passivate("sku"))
        .join()
        .unwrap();
    assert!(asked);
    wait_until(|| !h.is_active("sku")).await;
    assert_eq!(h.stats().passivated_requested, 1);
    assert_eq!(
        s.latest_snapshot_of(stock("sku"))
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

/// The shop, except that reserving panics.
struct Fragile;

impl Actor for Fragile {
    type State = Stock;
    type Command = StockCommand;
    type Event = StockEvent;
    type Reply = u32;
    type Error = StockError;
    const TYPE: &'static str = "stock";

    async fn decide(
        &self,
        id: &str,
        state: &Stock,
        command: &StockCommand,
    ) -> Result<Vec<StockEvent>, StockError> {
        if matches!(command, StockCommand::Reserve(_)) {
            panic!("reserving is broken");
        }
        Shop.decide(id, state, command).await
    }

    fn apply(state: &mut Stock, event: &StockEvent) {
        Shop::apply(state, event);
    }

    fn reply(state: &Stock, command: &StockCommand, events: &[StockEvent]) -> u32 {
        Shop::reply(state, command, events)
    }
}

#[tokio::test]
async fn an_actor_whose_code_panics_ends_its_activation_and_comes_back() {
    let s = store();
    let h = ActorHost::new(
        Fragile,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    h.send("sku", StockCommand::Restock(2)).await.unwrap();
    assert!(matches!(
        h.send("sku", StockCommand::Reserve(1)).await,
        Err(CommandError::Infrastructure(Error::Closed(_)))
    ));
    wait_until(|| !h.is_active("sku")).await;
    assert_eq!(h.stats().active, 0);
    // The next command activates it again, from the store.
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 2);
    assert_eq!(h.stats().activations, 2);
}
