//! A projection over a compacted history (`JetStreamConfig::compactable`, a real
//! `nats-server`): the events compaction moved are gone from the stream's log and are read
//! from the archive's; a projection that needs the full history reads the archive's log, then
//! the stream's, and sees every actor's events once, in version order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{ActorKey, BoxError, Event, EventLog, EventStore, Snapshot, SnapshotStore};
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// Every version seen per actor, in the order handled.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<String, Vec<u64>>>);

#[async_trait::async_trait]
impl Handler<Moved> for Seen {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        self.0
            .lock()
            .map_err(|_| "poisoned")?
            .entry(e.actor_id.clone())
            .or_default()
            .push(e.version);
        Ok(())
    }
}

async fn project(name: &str, log: Arc<dyn EventLog>, seen: Arc<Seen>) -> u64 {
    let projection = Projection::new(
        name,
        log,
        Arc::new(InMemoryProjectionStore::new()),
        seen,
        EventCodec::<Moved>::default(),
        ProjectionConfig::default(),
    )
    .expect("a projection");
    projection.catch_up().await.expect("caught up").handled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_of_the_archive_then_the_stream_sees_every_event_once_in_order() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = Arc::new(
        JetStreamEventStore::new(
            client,
            JetStreamConfig::default()
                .namespace("compacted")
                .compactable(true),
        )
        .await
        .expect("store"),
    );
    let actors: Vec<String> = (0..5).map(|i| format!("acc-{i}")).collect();
    // Interleaved, as real writes are.
    for v in 1..=20u64 {
        for a in &actors {
            let e = Event::new("Deposited", a.as_str(), v).with_field("amount", 1);
            store.save_event(&e).await.expect("save");
        }
    }
    // Four of the five have a snapshot at 12 and are compacted.
    for a in &actors[..4] {
        let state = serde_json::json!({"balance": 12});
        let snapshot = Snapshot::new(
            a.as_str(),
            12,
            state.as_object().cloned().unwrap_or_default(),
        );
        store.save_snapshot(&snapshot).await.expect("snapshot");
        let done = store
            .compact(ActorKey::untyped(a), false)
            .await
            .expect("compact");
        assert_eq!(done.archived_events, 11);
    }

    // The stream's log alone lacks what was moved.
    let hot_only = Arc::new(Seen::default());
    assert_eq!(
        project("hot-only", store.clone(), hot_only.clone()).await,
        4 * 9 + 20
    );
    assert_eq!(
        hot_only.0.lock().unwrap()["acc-0"],
        (12..=20).collect::<Vec<_>>()
    );

    // The archive's log, then the stream's: everything, once, each actor in order.
    let seen = Arc::new(Seen::default());
    let archive = store.archive().await.expect("archive");
    let archived = project("full-archive", archive, seen.clone()).await;
    let hot = project("full-stream", store.clone(), seen.clone()).await;
    assert_eq!((archived, hot), (4 * 11, 4 * 9 + 20));
    let seen = seen.0.lock().unwrap();
    for a in &actors {
        assert_eq!(seen[a], (1..=20).collect::<Vec<_>>(), "{a}");
    }
}
