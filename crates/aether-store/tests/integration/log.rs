//! The global order (`EventLog`) on both stores: a reader that follows it from its last
//! position while writers save single events, batches and transactions sees every event
//! exactly once, in an order that keeps each actor's versions, with no gap at the point where
//! catching up turns into following live writes.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Event, EventLog, EventStore, LogPosition, SnapshotStore, Transaction};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;

const WRITERS: usize = 4;
const PER_WRITER: u64 = 60;

/// Each writer owns two actors: single saves and two-event batches on one, and (when the
/// store can) transactions over both.
async fn write<S: EventStore>(store: &S, w: usize, transactions: bool) {
    let (a, b) = (format!("w{w}-a"), format!("w{w}-b"));
    let (mut va, mut vb) = (0u64, 0u64);
    for i in 0..PER_WRITER {
        match i % 3 {
            0 => {
                va += 1;
                store.save_event(&Event::new("One", &a, va)).await.unwrap();
            }
            1 => {
                let batch = [Event::new("Two", &a, va + 1), Event::new("Two", &a, va + 2)];
                store.save_events(&a, &batch).await.unwrap();
                va += 2;
            }
            _ if transactions => {
                let txn = Transaction::new()
                    .append(&a, va, vec![Event::new("Txn", &a, va + 1)])
                    .append(&b, vb, vec![Event::new("Txn", &b, vb + 1)]);
                store.commit(&txn).await.unwrap();
                va += 1;
                vb += 1;
            }
            _ => {
                vb += 1;
                store.save_event(&Event::new("One", &b, vb)).await.unwrap();
            }
        }
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

async fn follow_while_writing<S>(store: Arc<S>, transactions: bool)
where
    S: EventStore + EventLog + 'static,
{
    // A few events before the reader starts, to catch up on.
    store
        .save_event(&Event::new("Early", "early", 1))
        .await
        .unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { write(store.as_ref(), w, transactions).await })
        })
        .collect();
    let mut seen = Vec::new();
    let mut last: Option<LogPosition> = None;
    let mut idle_after_done = 0;
    loop {
        let page = store.read_after(last, 25).await.unwrap();
        if page.is_empty() {
            if writers.iter().all(|w| w.is_finished()) {
                idle_after_done += 1;
                if idle_after_done > 2 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        for logged in page {
            if let Some(prev) = last {
                assert!(logged.position > prev, "{} after {prev}", logged.position);
            }
            last = Some(logged.position);
            seen.push(logged.event);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    // Exactly the stored events, each once, and each actor's in version order.
    let ids: HashSet<&str> = seen.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "an event was delivered twice");
    let mut per_actor: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &seen {
        per_actor
            .entry(e.actor_id.as_str())
            .or_default()
            .push(e.version);
    }
    let mut total = 0;
    for (actor, versions) in &per_actor {
        let stored: Vec<u64> = store
            .get_events(actor, 1)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, &stored, "actor {actor}");
        total += stored.len();
    }
    assert_eq!(seen.len(), total);
    let head = store.head().await.unwrap().expect("a head");
    assert!(
        Some(head) >= last,
        "head {head} is behind the last event read"
    );
    // Reading after the last position gives nothing more.
    assert!(store.read_after(last, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_log_follows_writes_without_gap_or_duplicate() {
    follow_while_writing(Arc::new(InMemoryEventStore::new()), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_log_follows_writes_without_gap_or_duplicate() {
    let server = NatsServer::start().unwrap();
    let transactions = server.version().at_least(2, 12);
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("log"))
        .await
        .unwrap();
    // Snapshots share the stream and are not events.
    store
        .save_snapshot(&aether_core::Snapshot::new("early", 1, Default::default()))
        .await
        .unwrap();
    follow_while_writing(Arc::new(store), transactions).await;
}

#[tokio::test]
async fn positions_inside_a_batch_resume_where_they_left_off() {
    let store = InMemoryEventStore::new();
    let batch: Vec<Event> = (1..=5).map(|v| Event::new("T", "a", v)).collect();
    store.save_events("a", &batch).await.unwrap();
    let first = store.read_after(None, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.read_after(Some(first[1].position), 10).await.unwrap();
    let versions: Vec<u64> = rest.iter().map(|l| l.event.version).collect();
    assert_eq!(versions, [3, 4, 5]);
    assert_eq!(store.head().await.unwrap(), Some(rest[2].position));
}
