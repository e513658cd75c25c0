//! The cluster's key-value bucket on a three-server NATS cluster: created with three replicas
//! by default, it outlives the server that leads it. The nodes keep their assignments and
//! route commands while the bucket elects a new leader, and a membership change (a node
//! leaving) is written to it afterwards: with one replica on the dead server, that write would
//! never happen. Before nats-server 2.11, replicas are refused with a typed error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_cluster::{Actors, ClusterConfig, ClusterNode, ObserverConfig};
use aether_core::Error;
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsCluster;
use async_nats::jetstream::stream::ClusterInfo;

use crate::support::{Bank, Command};

/// Longest a step may take on a loaded machine (an election included).
const WAIT: Duration = Duration::from_secs(30);
const SHARDS: u32 = 32;

fn config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(2))
        .send_timeout(WAIT)
        .shards(ShardConfig::default().shard_count(SHARDS))
}

/// A client of the servers `urls` only (the servers it hears of are not added).
async fn connect(urls: &[String]) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(
            urls.iter()
                .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                .collect::<Vec<_>>(),
        )
        .await
        .expect("connecting to the NATS cluster")
}

/// The bucket stream's replica count and cluster info as server `url` reports them, or `None`
/// while it cannot say.
async fn bucket_stream(url: &str, stream: &str) -> Option<(usize, ClusterInfo)> {
    let client = tokio::time::timeout(Duration::from_secs(2), connect(&[url.to_string()]))
        .await
        .ok()?;
    let context = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client);
    let mut s = context.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    Some((info.config.num_replicas, info.cluster.clone()?))
}

/// Waits until the bucket's stream is led by server `n<want>`, asking it to move there (a
/// leader step-down with a preferred server, nats-server 2.11+) while it is elsewhere.
async fn move_leader(urls: &[String], stream: &str, want: usize) {
    let client = connect(urls).await;
    let deadline = Instant::now() + WAIT;
    let want_name = format!("n{want}");
    loop {
        let leader = bucket_stream(&urls[want], stream)
            .await
            .and_then(|(_, c)| c.leader);
        if leader.as_deref() == Some(want_name.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the leader of {stream} did not move to {want_name} (last seen: {leader:?})"
        );
        if leader.is_some() {
            let request = serde_json::json!({ "placement": { "preferred": want_name } });
            let _ = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    request.to_string().into(),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_bucket_outlives_the_server_that_leads_it() {
    let started = Instant::now();
    let mut nats = NatsCluster::start(3).unwrap();
    let urls = nats.url_list();
    let version = nats.server(0).version();
    let cluster = "replicated";
    let stream = format!(
        "KV_{}",
        ObserverConfig::default()
            .cluster_name(cluster)
            .bucket_name()
    );
    let store = Arc::new(InMemoryEventStore::new());
    let actors = || Actors::new(Arc::clone(&store) as _).with(Bank);

    if !version.at_least(2, 11) {
        // Replicas asked for are refused, typed, and nothing is created; by default the
        // bucket gets one replica.
        let refused = ClusterNode::start(
            connect(&urls).await,
            config(cluster, "a").bucket_replicas(3),
            actors(),
        )
        .await;
        assert!(
            matches!(refused, Err(Error::Unsupported { .. })),
            "{:?}",
            refused.err()
        );
        let node = ClusterNode::start(connect(&urls).await, config(cluster, "a"), actors())
            .await
            .unwrap();
        let (replicas, _) = bucket_stream(&urls[0], &stream).await.unwrap();
        assert_eq!(replicas, 1);
        node.shutdown().await.unwrap();
        return;
    }

    // Every node talks to servers 0 and 1 only, so the death of server 2 costs no node its
    // connection: what is tested is the bucket, not the client's reconnection.
    let reachable = &urls[..2];
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(
            ClusterNode::start(connect(reachable).await, config(cluster, id), actors())
                .await
                .unwrap(),
        );
    }
    let all = ["a", "b", "c"];
    for n in &nodes {
        n.wait_for_members(&all, WAIT).await.unwrap();
    }
    let (replicas, _) = bucket_stream(&urls[0], &stream).await.unwrap();
    assert_eq!(
        replicas, 3,
        "the bucket of a clustered server has three replicas"
    );

    let accounts: Vec<String> = (0..20).map(|i| format!("acc-{i}")).collect();
    for (i, a) in accounts.iter().enumerate() {
        nodes[i % 3]
            .send::<Bank>(a, Command::Deposit { amount: 1 })
            .await
            .unwrap();
    }
    let before = nodes[0].assignment();

    // The server leading the bucket dies.
    move_leader(&urls, &stream, 2).await;
    nats.server(2).kill().unwrap();

    // Commands keep being routed, and no shard moves: the table did not change hands.
    for (i, a) in accounts.iter().enumerate() {
        let reply = nodes[(i + 1) % 3]
            .send::<Bank>(a, Command::Deposit { amount: 1 })
            .await
            .unwrap();
        assert_eq!(reply.balance, 2, "{a}");
    }
    for n in &nodes {
        let now = n.assignment();
        assert_eq!(
            now.table,
            before.table,
            "node {} saw shards move",
            n.node_id()
        );
        assert_eq!(n.members(), all, "node {}", n.node_id());
    }

    // A membership change needs a write to the bucket: it happens with two of three replicas.
    let c = nodes.pop().unwrap();
    c.shutdown().await.unwrap();
    for n in &nodes {
        let after = n.wait_for_members(&["a", "b"], WAIT).await.unwrap();
        assert!(after.epoch > before.epoch);
    }
    for a in &accounts {
        let reply = nodes[0].send::<Bank>(a, Command::Balance).await.unwrap();
        assert_eq!(reply.balance, 2, "{a}");
    }
    for n in nodes {
        n.shutdown().await.unwrap();
    }
    eprintln!(
        "bucket leader killed, cluster carried on: {:?}",
        started.elapsed()
    );
}
