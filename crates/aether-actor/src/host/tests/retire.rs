//! Retiring an actor: its final event ends its history for writing, on this host and on any
//! other that shares the store, while commands race it.

use super::*;
use crate::replay;

#[tokio::test]
async fn a_retired_actor_refuses_every_command_on_every_host_and_keeps_its_history() {
    let s = store();
    let h = host(&s, RuntimeConfig::default());
    let other = host(&s, RuntimeConfig::default());
    h.send("a", StockCommand::Restock(5)).await.unwrap();
    // Another host holds an activation with the state before the retirement.
    assert_eq!(other.send("a", StockCommand::Get).await.unwrap(), 5);
    assert!(other.is_active("a"));

    let meta = CommandMeta::new().user_id("ada").command_id("retire-a");
    assert_eq!(h.retire("a", meta).await.unwrap(), 2);
    let last = s.events_of(stock("a"), 2).await.unwrap();
    assert!(last[0].is_retirement());
    assert_eq!(last[0].actor_type.as_deref(), Some("stock"));
    assert_eq!(last[0].metadata_value(METADATA_USER_ID), Some("ada"));

    let retired = |outcome: std::result::Result<u32, CommandError<StockError>>| match outcome {
        Err(CommandError::Retired(r)) => {
            assert_eq!(
                (r.actor_type.as_str(), r.actor_id.as_str(), r.version),
                ("stock", "a", 2)
            );
            assert!(!CommandError::<StockError>::Retired(r).is_retryable());
        }
        other => panic!("{other:?}"),
    };
    // Here, read-only or not.
    retired(h.send("a", StockCommand::Get).await);
    retired(h.send("a", StockCommand::Restock(1)).await);
    // On the other host, its stale activation notices at its next write, and reloads.
    retired(other.send("a", StockCommand::Restock(1)).await);
    retired(other.send("a", StockCommand::Get).await);
    // Transactions, and retiring again.
    match h
        .transact(&["a", "b"], CommandMeta::new(), |_: &[Stock]| {
            Ok((vec![vec![], vec![StockEvent::Restocked { n: 1 }]], 0))
        })
        .await
    {
        Err(CommandError::Retired(r)) => assert_eq!(r.actor_id, "a"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        h.retire("a", CommandMeta::new()).await,
        Err(CommandError::Retired(_))
    ));
    // Nothing was written after the final event.
    assert_eq!(s.latest_version_of(stock("a")).await.unwrap(), 2);
    assert_eq!(s.latest_version_of(stock("b")).await.unwrap(), 0);
    // A replay ends at the final event: the state it was retired with.
    let (state, version) = replay::<Shop>(s.as_ref(), h.codec(), "a").await.unwrap();
    assert_eq!((state.available, version), (5, 2));
    let stats = h.stats();
    assert_eq!(stats.retired, 1);
    assert!(stats.retired_refusals >= 4, "{stats:?}");
    // Other actors are untouched.
    assert_eq!(h.send("c", StockCommand::Restock(3)).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_racing_a_retirement_land_before_it_or_are_refused() {
    let s = store();
    let h = Arc::new(host(&s, RuntimeConfig::default()));
    let other = Arc::new(host(&s, RuntimeConfig::default()));
    h.send("a", StockCommand::Restock(1)).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        let host = if w % 2 == 0 { h.clone() } else { other.clone() };
        writers.push(tokio::spawn(async move {
            let mut acked = 0u32;
            for _ in 0..50 {
                match host.send("a", StockCommand::Restock(1)).await {
                    Ok(_) => acked += 1,
                    Err(CommandError::Retired(_)) => return acked,
                    Err(e) => panic!("{e:?}"),
                }
            }
            acked
        }));
    }
    tokio::task::yield_now().await;
    let at = other.retire("a", CommandMeta::new()).await.unwrap();
    let mut acked = 0;
    for w in writers {
        acked += w.await.unwrap();
    }
    let events = s.events_of(stock("a"), 1).await.unwrap();
    // The final event is last, at the version retire returned, and every acknowledged
    // command is before it.
    let last = events.last().unwrap();
    assert!(last.is_retirement());
    assert_eq!(last.version, at);
    assert_eq!(events.len() as u64, at);
    assert_eq!(events.iter().filter(|e| e.is_retirement()).count(), 1);
    assert_eq!(acked as usize, events.len() - 2);
}
