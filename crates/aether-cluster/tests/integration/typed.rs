//! Typed actors on cluster nodes over a real nats-server and the JetStream store: events an
//! older version of the application wrote (raw JSON put on the stream by the test) are read
//! through upcasters; a snapshot of an older state schema is skipped; an event that does not
//! fit is a typed decoding error from the command handler, across nodes, and from replay.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{replay, Actor, CommandError, DomainEvent, LoadError, Upcasters};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{Event, EventStore, Snapshot, SnapshotStore};
use aether_placement::ShardConfig;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The state as of schema version 2 (version 1 kept whole units in `balance`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Wallet {
    cents: i64,
    deposits: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum WalletCommand {
    Deposit { cents: i64 },
    Read,
}

/// Today's events. The first version of the application called deposits `MoneyIn` and
/// recorded whole units in `amount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum WalletEvent {
    Deposited { cents: i64 },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
    fn schema_version(&self) -> u32 {
        2
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("wallets refuse nothing")]
struct Never;

struct Wallets;

impl Actor for Wallets {
    type State = Wallet;
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Reply = Wallet;
    type Error = Never;
    const TYPE: &'static str = "wallet";
    const STATE_VERSION: u32 = 2;

    async fn decide(
        &self,
        _: &str,
        _: &Wallet,
        c: &WalletCommand,
    ) -> Result<Vec<WalletEvent>, Never> {
        Ok(match *c {
            WalletCommand::Deposit { cents } => vec![WalletEvent::Deposited { cents }],
            WalletCommand::Read => Vec::new(),
        })
    }

    fn apply(state: &mut Wallet, WalletEvent::Deposited { cents }: &WalletEvent) {
        state.cents += cents;
        state.deposits += 1;
    }

    fn reply(state: &Wallet, _: &WalletCommand, _: &[WalletEvent]) -> Wallet {
        state.clone()
    }

    fn upcasters() -> Upcasters {
        Upcasters::new()
            .rename("MoneyIn", 1, "Deposited")
            .upcast("Deposited", 1, |mut data| {
                let units = data
                    .remove("amount")
                    .and_then(|v| v.as_i64())
                    .ok_or("`amount` is missing or not a whole number")?;
                data.insert("cents".into(), json!(units * 100));
                Ok(data)
            })
    }
}

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("typed")
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(32))
        .storage(aether_core::StorageKind::Memory)
}

/// Puts an event on the store's stream as raw JSON, the way the first version of the
/// application wrote it (no schema version in the metadata).
async fn write_raw(
    js: &async_nats::jetstream::Context,
    store: &JetStreamEventStore,
    actor: &str,
    version: u64,
    event_type: &str,
    data: serde_json::Value,
) {
    let raw = json!({
        "id": format!("{actor}-{version}"),
        "eventType": event_type,
        "actorId": actor,
        "version": version,
        "data": data,
        "timestamp": "2024-05-01T12:00:00Z",
    });
    js.publish(
        store.event_subject(actor),
        serde_json::to_vec(&raw).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_schemas_are_upcast_old_snapshots_skipped_and_bad_events_typed_errors() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            // The events below are written as the first version wrote them, before actor
            // types: on id-only subjects, which the declared legacy type reads.
            JetStreamConfig::default()
                .storage(aether_core::StorageKind::Memory)
                .legacy_actor_type("wallet"),
        )
        .await
        .unwrap(),
    );
    // Written by the first version: the old name, whole units, no schema version.
    write_raw(&js, &store, "w-old", 1, "MoneyIn", json!({"amount": 3})).await;
    write_raw(&js, &store, "w-old", 2, "MoneyIn", json!({"amount": 4})).await;
    // A snapshot of the first state schema at version 2: skipped, the actor rebuilt.
    let old_state = json!({"balance": 7}).as_object().cloned().unwrap();
    store
        .save_snapshot(&Snapshot::new("w-old", 2, old_state).with_schema_version(1))
        .await
        .unwrap();
    // An event that fits no version of the type.
    write_raw(&js, &store, "w-bad", 1, "MoneyIn", json!({"amount": "ten"})).await;

    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let client = async_nats::connect(server.url()).await.unwrap();
        let actors = Actors::new(Arc::clone(&store) as _).with(Wallets);
        nodes.push(
            ClusterNode::start(client, config(id), actors)
                .await
                .unwrap(),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b"], Duration::from_secs(15))
            .await
            .unwrap();
    }

    // Read through the upcasters on whichever node owns the actor, from either node.
    for n in &nodes {
        let read = n
            .send::<Wallets>("w-old", WalletCommand::Read)
            .await
            .unwrap();
        assert_eq!(
            read,
            Wallet {
                cents: 700,
                deposits: 2
            }
        );
    }
    let after = nodes[0]
        .send::<Wallets>("w-old", WalletCommand::Deposit { cents: 5 })
        .await
        .unwrap();
    assert_eq!(
        after,
        Wallet {
            cents: 705,
            deposits: 3
        }
    );
    let owner = nodes[0].owner_of("w-old").unwrap();
    let owner_node = nodes.iter().find(|n| n.node_id() == owner).unwrap();
    assert!(owner_node.stats()["wallet"].snapshots_ignored >= 1);
    // The new event is stored in the current schema; old and new replay together.
    let stored = store.get_events("w-old", 3).await.unwrap();
    assert_eq!(stored[0].event_type, "Deposited");
    assert_eq!(stored[0].metadata_value("schemaVersion"), Some("2"));
    let codec = owner_node.host::<Wallets>().unwrap().codec().clone();
    let (state, version) = replay::<Wallets>(store.as_ref(), &codec, "w-old")
        .await
        .unwrap();
    assert_eq!(
        (state, version),
        (
            Wallet {
                cents: 705,
                deposits: 3
            },
            3
        )
    );

    // The bad event: a typed decoding error naming the event, from the owner and across the
    // wire from the other node, and from replay; nothing is written.
    for n in &nodes {
        match n
            .send::<Wallets>("w-bad", WalletCommand::Deposit { cents: 1 })
            .await
        {
            Err(CommandError::Decode(e)) => {
                assert_eq!((e.actor_id.as_str(), e.version), ("w-bad", 1));
                assert_eq!(e.event_type, "MoneyIn");
                assert!(e.reason.contains("amount"), "{e}");
            }
            other => panic!("expected a decoding error, got {other:?}"),
        }
    }
    match replay::<Wallets>(store.as_ref(), &codec, "w-bad").await {
        Err(LoadError::Decode(e)) => assert_eq!(e.version, 1),
        other => panic!("expected a decoding error, got {other:?}"),
    }
    assert_eq!(store.get_latest_version("w-bad").await.unwrap(), 1);
    let raw: Vec<Event> = store.get_events("w-bad", 1).await.unwrap();
    assert_eq!(raw.len(), 1, "the bad event is kept as it is");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
