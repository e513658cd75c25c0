//! The cluster's own paths: `ClusterNode::send` to an actor active on another node next to a
//! raw NATS request/reply of the same request size (its floor), and to an actor active on the
//! same node (no NATS hop; the goal is an absolute time) next to a raw round trip through a
//! task's channel and a oneshot reply (the floor of two task hops, measured the same way).
//!
//! The command reads the actor's state and writes nothing, so the figures are the routing's
//! and the runtime's own cost, not the store's.
//!
//! The local sends run in a task of the runtime, one after another (`iter_custom`), as an
//! application's tasks send: driven from criterion's own thread instead, every send would
//! cross between that thread and the runtime's workers twice, and that crossing (about 10 µs
//! here) would be most of what is measured. The remote sends are driven from criterion's
//! thread, as their floor is: both pay the crossing, next to a NATS round trip.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aether_actor::{Actor, DomainEvent};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::StorageKind;
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Never {}

impl DomainEvent for Never {
    fn event_type(&self) -> &'static str {
        match *self {}
    }
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("refused")]
struct Refused;

/// An actor that answers with its name: a read, no events.
struct Echo;

impl Actor for Echo {
    type State = ();
    type Command = String;
    type Event = Never;
    type Reply = String;
    type Error = Refused;
    const TYPE: &'static str = "echo";

    async fn decide(&self, _: &str, _: &(), _: &String) -> Result<Vec<Never>, Refused> {
        Ok(Vec::new())
    }

    fn apply(_: &mut (), event: &Never) {
        match *event {}
    }

    fn reply(_: &(), command: &String, _: &[Never]) -> String {
        command.clone()
    }
}

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("bench")
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_secs(5))
        .shards(ShardConfig::default().shard_count(64))
        .storage(StorageKind::Memory)
}

fn cluster_send(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let (nodes, remote, local, raw, payload) = rt.block_on(async {
        let store = Arc::new(InMemoryEventStore::new());
        let mut nodes = Vec::new();
        for id in ["a", "b"] {
            let client = async_nats::connect(server.url()).await.expect("connect");
            let actors = Actors::new(store.clone() as _).with(Echo);
            nodes.push(Arc::new(
                ClusterNode::start(client, config(id), actors)
                    .await
                    .expect("node"),
            ));
        }
        for n in &nodes {
            n.wait_for_members(&["a", "b"], Duration::from_secs(30))
                .await
                .expect("members");
        }
        let owned_by = |node: &str| {
            (0..10_000)
                .map(|i| format!("echo-{i}"))
                .find(|a| nodes[0].owner_of(a).as_deref() == Some(node))
                .expect("an actor")
        };
        let (remote, local) = (owned_by("b"), owned_by("a"));
        // Activate both before measuring.
        for actor in [&remote, &local] {
            nodes[0]
                .send::<Echo>(actor, "warm".into())
                .await
                .expect("send");
        }
        // The raw floor: a responder echoing a payload as large as the node's request.
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut sub = client.subscribe("raw.echo").await.expect("subscribe");
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = responder.publish(reply, msg.payload).await;
                }
            }
        });
        client.flush().await.expect("flush");
        // As large as a routed request for this actor and command (the ActorRequest's JSON,
        // with the command id every send carries).
        let request = aether_cluster::routing::ActorRequest {
            actor_type: Echo::TYPE.into(),
            actor_id: remote.clone(),
            shard: Some(nodes[0].shard_of(&remote)),
            epoch: nodes[0].assignment().epoch,
            meta: aether_actor::CommandMeta::new()
                .command_id(uuid::Uuid::new_v4().simple().to_string()),
            command: serde_json::json!("ping"),
            refresh: false,
        };
        let size = aether_cluster::routing::encode(&request)
            .expect("encode")
            .len();
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        (nodes, remote, local, client, payload)
    });

    let mut g = c.benchmark_group("cluster_send_remote");
    g.bench_function("aether", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                nodes[0]
                    .send::<Echo>(&remote, "ping".into())
                    .await
                    .expect("send"),
            )
        })
    });
    g.bench_function("raw_request_reply", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                raw.request("raw.echo", payload.clone())
                    .await
                    .expect("request"),
            )
        })
    });
    g.finish();

    // The floor of a local send measured this way: a command handed to a task through a
    // channel and answered through a oneshot, the two hops every actor runtime makes.
    let mailbox = rt.block_on(async {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(String, tokio::sync::oneshot::Sender<String>)>(64);
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                let _ = reply.send(command);
            }
        });
        tx
    });
    let mut g = c.benchmark_group("cluster_send_local");
    g.bench_function("aether", |b| {
        b.iter_custom(|iters| {
            let node = Arc::clone(&nodes[0]);
            let local = local.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    for _ in 0..iters {
                        black_box(
                            node.send::<Echo>(&local, "ping".into())
                                .await
                                .expect("send"),
                        );
                    }
                    started.elapsed()
                })
                .await
                .expect("the sending task")
            })
        })
    });
    g.bench_function("raw_task_round_trip", |b| {
        b.iter_custom(|iters| {
            let mailbox = mailbox.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    for _ in 0..iters {
                        let (reply, answer) = tokio::sync::oneshot::channel();
                        mailbox
                            .send(("ping".to_string(), reply))
                            .await
                            .expect("mailbox");
                        black_box(answer.await.expect("answer"));
                    }
                    started.elapsed()
                })
                .await
                .expect("the sending task")
            })
        })
    });
    g.finish();
    rt.block_on(async {
        for n in nodes {
            if let Ok(n) = Arc::try_unwrap(n) {
                let _ = n.shutdown().await;
            }
        }
    });
}

criterion_group!(benches, cluster_send);
criterion_main!(benches);
