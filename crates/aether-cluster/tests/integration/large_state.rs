//! What a command with an id stores, and how long a send can take, over a real nats-server
//! and the JetStream store: an actor whose state (and reply) nears the server's 1 MiB payload
//! limit still takes commands with ids on its owner and from another node, retries included;
//! and a send whose store's server is gone returns within its send timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{Actor, CommandError, DomainEvent, Envelope, Handled};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{ActorKey, Error, EventStore};
use aether_placement::ShardConfig;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};

/// A show's bookings; every reply is the whole state, as in many applications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Bookings {
    names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Booked {
    Reserved { name: String },
}

impl DomainEvent for Booked {
    fn event_type(&self) -> &'static str {
        "Reserved"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("shows refuse nothing")]
struct Never;

struct Shows;

impl Actor for Shows {
    type State = Bookings;
    type Command = String;
    type Event = Booked;
    type Reply = Bookings;
    type Error = Never;
    const TYPE: &'static str = "show";

    async fn decide(&self, _: &str, _: &Bookings, name: &String) -> Result<Vec<Booked>, Never> {
        Ok(vec![Booked::Reserved { name: name.clone() }])
    }

    fn apply(state: &mut Bookings, Booked::Reserved { name }: &Booked) {
        state.names.push(name.clone());
    }

    fn reply(state: &Bookings, _: &String, _: &[Booked]) -> Bookings {
        state.clone()
    }
}

fn config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(5))
        .send_timeout(Duration::from_secs(15))
        .shards(ShardConfig::default().shard_count(16))
        .storage(aether_core::StorageKind::Memory)
}

async fn store(server: &NatsServer) -> Arc<JetStreamEventStore> {
    let client = async_nats::connect(server.url()).await.expect("connect");
    Arc::new(
        JetStreamEventStore::new(client, JetStreamConfig::default())
            .await
            .expect("store"),
    )
}

async fn node(
    server: &NatsServer,
    config: ClusterConfig,
    store: &Arc<JetStreamEventStore>,
) -> ClusterNode {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let actors = Actors::new(Arc::clone(store) as _).with(Shows);
    ClusterNode::start(client, config, actors)
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_with_a_900_kb_state_takes_commands_with_ids_on_every_node() {
    let server = NatsServer::start().expect("nats-server");
    let store = store(&server).await;
    let nodes = [
        node(&server, config("large", "a"), &store).await,
        node(&server, config("large", "b"), &store).await,
    ];
    for n in &nodes {
        n.wait_for_members(&["a", "b"], Duration::from_secs(15))
            .await
            .expect("cluster forms");
    }
    let show = "show-1";
    let owner = nodes[0].owner_of(show).expect("an owner");
    let (local, remote) = if owner == "a" {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    // Fifteen bookings with 60 KB names: a 900 KB state. Before events stopped carrying the
    // reply, the seventeenth such command no longer fit in a message.
    let long_name = |i: usize| format!("{i:02}{}", "n".repeat(60 * 1024));
    for i in 0..15 {
        let state = local.send::<Shows>(show, long_name(i)).await.unwrap();
        assert_eq!(state.names.len(), i + 1);
    }
    // Then more, with ids, from the owner and from the other node, each sent twice.
    for i in 15..21 {
        let from = if i % 2 == 0 { local } else { remote };
        let envelope = Envelope::new(format!("guest-{i}")).with_id(format!("booking-{i}"));
        let first = from
            .dispatch::<Shows>(show, envelope.clone())
            .await
            .unwrap_or_else(|e| panic!("booking {i}: {e}"));
        let first = first.into_reply().expect("a reply");
        assert_eq!(first.names.len(), i + 1);
        // The retry is not applied again. Its 900 KB reply is too large to keep, so it is
        // answered as already applied, with the state as it is now.
        match from.dispatch::<Shows>(show, envelope).await {
            Ok(Handled::AlreadyApplied { reply, version }) => {
                assert_eq!((reply.names.len(), version), (i + 1, (i + 1) as u64));
            }
            other => panic!("retry of booking {i}: {other:?}"),
        }
    }
    let events = store
        .events_of(ActorKey::new("show", show), 1)
        .await
        .unwrap();
    assert_eq!(events.len(), 21);
    // Each small booking's stored form is small: nothing of the 900 KB state rides along.
    for e in &events[15..] {
        let bytes = serde_json::to_vec(e).unwrap().len();
        assert!(bytes < 1024, "event {} is {bytes} bytes", e.version);
    }
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_an_actor_on_the_senders_node_returns_within_its_send_timeout_when_the_server_is_gone(
) {
    let mut server = NatsServer::start().expect("nats-server");
    let store = store(&server).await;
    let send_timeout = Duration::from_secs(2);
    let node = node(
        &server,
        config("gone", "solo").send_timeout(send_timeout),
        &store,
    )
    .await;
    node.wait_for_members(&["solo"], Duration::from_secs(15))
        .await
        .expect("cluster forms");
    node.send::<Shows>("show-2", "ada".to_string())
        .await
        .expect("a booking while the server runs");

    server.stop().expect("server stops");
    let started = Instant::now();
    let outcome = node.send::<Shows>("show-2", "bob".to_string()).await;
    let took = started.elapsed();
    match outcome {
        Err(CommandError::Infrastructure(Error::Unavailable { .. })) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The deadline is the send timeout; the margin allows for a loaded machine's scheduling
    // (before, this send took the store's own timeouts: 25 s with a 3 s send timeout).
    assert!(
        took < send_timeout + Duration::from_secs(2),
        "the send took {took:?} with a send timeout of {send_timeout:?}"
    );
    node.kill().await;
}
