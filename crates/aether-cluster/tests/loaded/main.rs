//! Failover on a machine whose cores are kept busy, in a test binary of its own.
//!
//! The test starts two busy loops that take both cores of a small machine for its whole run.
//! In the `integration` binary it shared the machine with tests that assert one-second failure
//! timeouts and bounds on how long a step takes, which then failed now and then for lack of
//! CPU rather than for a fault of their own. Cargo runs test binaries one after another, so
//! here the load meets only this test. `scripts/test` runs it once (`--skip
//! on_a_loaded_machine` on the second server version): it checks the node's own retry logic,
//! which does not depend on the server's version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::RuntimeConfig;
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::EventStore;
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;

// The model every cluster integration test runs.
#[path = "../integration/support.rs"]
#[allow(dead_code)]
mod support;

use support::{Bank, Command, Reply};

const WAIT: Duration = Duration::from_secs(15);

fn config(cluster: &str, node: &str) -> ClusterConfig {
    // Short timings keep twenty rounds quick; under the load they also make heartbeats late
    // and requests time out now and then, which is what this test is about: every send must
    // still be answered, and applied once.
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(50))
        .failure_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_millis(700))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(128))
        .storage(aether_core::StorageKind::Memory)
}

async fn start(
    server: &NatsServer,
    config: ClusterConfig,
    store: &Arc<InMemoryEventStore>,
) -> ClusterNode {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let actors = Actors::new(Arc::clone(store) as _).with_config(Bank, RuntimeConfig::default());
    ClusterNode::start(client, config, actors)
        .await
        .expect("node starts")
}

/// Polls `cond` until it holds or `WAIT` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU-bound processes that keep the cores of a small machine busy while they live.
struct CpuLoad(Vec<std::process::Child>);

impl CpuLoad {
    fn start(processes: usize) -> Self {
        Self(
            (0..processes)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh starts")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_during_failover_is_answered_by_the_new_owner_on_a_loaded_machine_twenty_times() {
    let server = NatsServer::start().expect("nats-server");
    let _load = CpuLoad::start(2);
    for round in 0..20 {
        let cluster = format!("loaded-{round}");
        let store = Arc::new(InMemoryEventStore::new());
        let mut nodes = Vec::new();
        for id in ["a", "b", "c"] {
            nodes.push(start(&server, config(&cluster, id), &store).await);
        }
        for n in &nodes {
            n.wait_for_members(&["a", "b", "c"], WAIT)
                .await
                .expect("cluster forms");
        }
        // Alternate between killing the leader and killing a follower.
        eventually("a leader", || nodes.iter().any(|n| n.is_leader())).await;
        let victim_idx = match nodes.iter().position(|n| n.is_leader()) {
            Some(l) if round % 2 == 0 => l,
            Some(l) => (l + 1) % 3,
            None => 0,
        };
        let victim_id = nodes[victim_idx].node_id().to_string();
        let actor = (0..)
            .map(|i| format!("acct-{round}-{i}"))
            .find(|a| nodes[0].owner_of(a).as_deref() == Some(victim_id.as_str()))
            .unwrap();
        let sender = (victim_idx + 1) % 3;
        for amount in [1, 2] {
            nodes[sender]
                .send::<Bank>(&actor, Command::Deposit { amount })
                .await
                .unwrap();
        }
        nodes.remove(victim_idx).kill().await;
        // In half the rounds the dead owner's subject still has a listener that never
        // answers, as when a process hangs instead of exiting: the request times out.
        let zombie = if round >= 10 {
            let raw = async_nats::connect(server.url()).await.unwrap();
            let subject = format!("aether.cluster.{cluster}.node.{victim_id}.actor");
            let sub = raw.subscribe(subject).await.unwrap();
            raw.flush().await.unwrap();
            // A request round trip proves the server has registered the subscription.
            let _ = raw.request("no-such-subject-ping", "".into()).await;
            Some((raw, sub))
        } else {
            None
        };
        // Sent at once to the dead owner: answered by the new one within the send timeout,
        // and applied exactly once.
        let r = nodes[0]
            .send::<Bank>(&actor, Command::Deposit { amount: 4 })
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            r,
            Reply {
                balance: 7,
                deposits: 3
            },
            "round {round}"
        );
        assert_eq!(
            store
                .latest_version_of(aether_core::ActorKey::new("bank", &actor))
                .await
                .unwrap(),
            3
        );
        drop(zombie);
        for n in nodes {
            n.shutdown().await.unwrap();
        }
    }
}
