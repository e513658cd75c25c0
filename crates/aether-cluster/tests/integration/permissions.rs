//! The NATS permissions `docs/operations.md` recommends ("Security: NATS permissions for the
//! cluster"), read from that file so the documented text is the tested one: nodes logged in
//! as the node user form the cluster and serve commands without a single refusal; the
//! application user gets a command answered but may not publish a heartbeat or write the
//! bucket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::CommandMeta;
use aether_cluster::routing::{
    bucket_name, decode, encode, ActorRequest, ActorResponse, Heartbeat, Subjects,
};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_nats::{Connection, Operation};
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;

use crate::support::{Bank, Command, Reply};

/// The cluster the documented configuration is written for.
const CLUSTER: &str = "orders";
const HEADING: &str = "## Security: NATS permissions for the cluster";
const WAIT: Duration = Duration::from_secs(15);

/// The first fenced block under [`HEADING`] in `docs/operations.md`.
fn documented_config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    let text = std::fs::read_to_string(path).expect("docs/operations.md");
    let section = text
        .split_once(HEADING)
        .map(|(_, rest)| rest)
        .expect("the security section");
    let (_, from_fence) = section.split_once("```\n").expect("a fenced block");
    let (block, _) = from_fence.split_once("```").expect("the block ends");
    assert!(block.contains("authorization"), "{block}");
    block.to_string()
}

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(CLUSTER)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(32))
        .storage(aether_core::StorageKind::Memory)
}

async fn login(server: &NatsServer, user: &str, password: &str) -> Connection {
    Connection::connect(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into()),
    )
    .await
    .expect("the documented user logs in")
}

/// Publishes `payload` on `subject` as `conn` and waits for the server to report refusing it.
async fn refused(conn: &Connection, subject: &str, payload: Vec<u8>) {
    let since = tokio::time::Instant::now();
    conn.client()
        .publish(subject.to_string(), payload.into())
        .await
        .expect("handed to the client");
    conn.client().flush().await.expect("flush");
    let watch = conn.permissions();
    tokio::time::timeout(
        WAIT,
        watch.wait_for(since, |op, s| op == Operation::Publish && s == subject),
    )
    .await
    .unwrap_or_else(|_| panic!("the server never refused a publish to {subject}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_permissions_let_nodes_work_and_applications_only_send_commands() {
    let server = NatsServer::builder()
        .extra_config(documented_config())
        .start()
        .expect("nats-server takes the documented configuration");
    let store = Arc::new(InMemoryEventStore::new());

    // Nodes logged in as the node user: start (creating the bucket), elect, assign, watch.
    let mut node_conns = Vec::new();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b"] {
        let conn = login(&server, "orders-node", "node-secret").await;
        node_conns.push(conn.clone());
        let actors = Actors::new(Arc::clone(&store) as _).with(Bank);
        nodes.push(
            ClusterNode::start(conn, config(id), actors)
                .await
                .expect("a node starts as the node user"),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["node-a", "node-b"], WAIT)
            .await
            .expect("the nodes form the cluster");
    }
    // The table lists both once the leader admitted the other; the other's own view admits
    // the leader on one of its heartbeats too.
    let deadline = Instant::now() + WAIT;
    while !nodes.iter().all(|n| n.members() == ["node-a", "node-b"]) {
        assert!(Instant::now() < deadline, "the views never agreed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A command routed from one node to the other's actor.
    let actor = (0..)
        .map(|i| format!("acc-{i}"))
        .find(|a| nodes[0].owner_of(a).as_deref() == Some("node-b"))
        .expect("node-b owns some actor");
    let reply = nodes[0]
        .send::<Bank>(&actor, Command::Deposit { amount: 7 })
        .await
        .expect("served across nodes");
    assert_eq!(reply.balance, 7);

    // The application sends a command to the owner directly.
    let app = login(&server, "orders-app", "app-secret").await;
    let view = nodes[0].assignment();
    let request = ActorRequest {
        actor_type: "bank".into(),
        actor_id: actor.clone(),
        shard: Some(view.shard_of(&actor)),
        epoch: view.epoch,
        meta: CommandMeta::default(),
        command: serde_json::to_value(Command::Deposit { amount: 3 }).expect("encodes"),
        refresh: false,
    };
    let subjects = Subjects::new(CLUSTER);
    let answer = app
        .client()
        .request(
            subjects.node_requests("node-b"),
            encode(&request).expect("encodes").into(),
        )
        .await
        .expect("the application's command is answered");
    match decode::<ActorResponse>(&answer.payload).expect("a cluster reply") {
        ActorResponse::Reply { reply, .. } => {
            let reply: Reply = serde_json::from_value(reply).expect("a bank reply");
            assert_eq!(reply.balance, 10);
        }
        other => panic!("expected a reply, got {other:?}"),
    }

    // It may not claim to be a node, nor write the cluster's bucket.
    let fake = Heartbeat {
        node_id: "app-pretending".into(),
        incarnation: "1".into(),
        seq: 0,
        wire: None,
    };
    refused(&app, &subjects.heartbeat(), encode(&fake).expect("encodes")).await;
    let table_key = format!("$KV.{}.assignment", bucket_name(CLUSTER));
    refused(&app, &table_key, b"{}".to_vec()).await;
    // Well past two heartbeat intervals: a heartbeat that got through would have been heard.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        for n in &nodes {
            assert_eq!(n.members(), ["node-a", "node-b"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        nodes[0].assignment().epoch,
        view.epoch,
        "the table is untouched"
    );

    for n in nodes {
        n.shutdown().await.expect("leaves, releasing the lease");
    }
    for conn in &node_conns {
        conn.round_trip(Duration::from_secs(5))
            .await
            .expect("round trip");
        assert_eq!(
            conn.monitor().permission_violations(),
            0,
            "the node user is refused nothing a node does"
        );
    }
}
