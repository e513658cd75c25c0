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
