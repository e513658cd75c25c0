//! The cluster's own paths: `ClusterNode::send` to an actor active on another node next to a
//! raw NATS request/reply of the same request size, the responder on a connection of its own
//! as the owner node is (its floor), and to an actor active on the
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

use aether_benches::echo::{raw_responder, request_size, two_nodes, Echo};
use aether_testkit::NatsServer;
use criterion::{criterion_group, criterion_main, Criterion};

fn cluster_send(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let (nodes, remote, local, raw, payload) = rt.block_on(async {
        let (nodes, remote, local) = two_nodes(&server.url()).await.expect("two nodes");
        // The raw floor: a responder on a connection of its own, as the owner node is,
        // echoing a payload as large as the node's request.
        raw_responder(&server.url(), "raw.echo")
            .await
            .expect("raw responder");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let size = request_size(&nodes[0], &remote, "ping").expect("request size");
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
