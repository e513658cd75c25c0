//! Decisions over several actors, committed all or nothing.

use super::*;

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
    let moved = s.events_of(stock("b"), 1).await.unwrap();
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
    assert_eq!(s.latest_version_of(stock("a")).await.unwrap(), 2);
    assert_eq!(s.latest_version_of(stock("b")).await.unwrap(), 1);
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
