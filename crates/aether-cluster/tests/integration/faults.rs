//! The cluster layer under faults, with one node's NATS connection running through a proxy the
//! test controls: the connection is cut and restored, then frozen (bytes held back, sockets
//! kept open, like a stalled machine) for longer than the failure timeout and thawed. The other
//! nodes declare the node failed and take its shards; when it comes back it must give them up,
//! never leaving two nodes serving one shard, and no deposit may be lost or applied twice.
//! While cut off, the node itself serves nothing (it fences itself when its own heartbeats stop
//! coming back).
//! Also: arbitrary bytes given to every cluster message decoder never panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_cluster::routing::{
    decode, ActorRequest, ActorResponse, Heartbeat, LeaderLease, Leave, RemoteError,
};
use aether_cluster::{Actors, AssignmentTable, ClusterConfig, ClusterNode};
use aether_core::{ActorKey, Error, EventStore};
use aether_placement::ShardConfig;

use crate::support::{Bank, Command};
use aether_store::InMemoryEventStore;
use aether_testkit::{NatsServer, TcpProxy};

/// How the proxy in front of node `c` fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every connection closed, new ones dropped.
    Cut,
    /// Connections kept open, nothing forwarded.
    Frozen,
}

const WAIT: Duration = Duration::from_secs(20);
const FAILURE_TIMEOUT: Duration = Duration::from_secs(1);

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("faults")
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(FAILURE_TIMEOUT)
        .request_timeout(Duration::from_secs(2))
        .send_timeout(Duration::from_secs(8))
        .shards(ShardConfig::default().shard_count(64))
        .storage(aether_core::StorageKind::Memory)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every node holds the same table, every shard has exactly one primary, and each node's
/// active actors are all of shards it owns.
async fn one_owner_per_shard(nodes: &[&ClusterNode], members: &[&str]) {
    eventually("all nodes to agree on a table of all members", || {
        let first = nodes[0].assignment();
        nodes.iter().all(|n| {
            let a = n.assignment();
            a.epoch == first.epoch && a.table == first.table && n.members() == members
        }) && members.iter().all(|m| !first.primaries_of(m).is_empty())
    })
    .await;
    let table = nodes[0].assignment();
    let total: usize = members.iter().map(|m| table.primaries_of(m).len()).sum();
    assert_eq!(total, 64, "every shard has exactly one primary");
    eventually("each node to host only actors of its own shards", || {
        nodes.iter().all(|n| {
            let view = n.assignment();
            n.host::<Bank>()
                .expect("hosts the bank")
                .active_actors()
                .iter()
                .all(|a| view.serves(n.node_id(), a))
        })
    })
    .await;
}

/// Adds 1 to each actor through `via`, counting acknowledged and uncertain additions.
async fn add_all(via: &ClusterNode, actors: &[String], ok: &mut [i64], unsure: &mut [i64]) {
    for (i, a) in actors.iter().enumerate() {
        match via.send::<Bank>(a, Command::Deposit { amount: 1 }).await {
            Ok(_) => ok[i] += 1,
            Err(e) => {
                assert!(e.is_retryable(), "{a}: {e:?}");
                unsure[i] += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_or_frozen_gives_up_its_shards_when_it_returns() {
    let server = NatsServer::start().unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let proxy = TcpProxy::start(server.port()).unwrap();
    let mut nodes = Vec::new();
    for (id, url) in [
        ("a", server.url()),
        ("b", server.url()),
        ("c", proxy.nats_url()),
    ] {
        let client = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(url)
            .await
            .unwrap();
        nodes.push(
            ClusterNode::start(
                client,
                config(id),
                Actors::new(Arc::clone(&store) as _).with(Bank),
            )
            .await
            .unwrap(),
        );
    }
    let all = ["a", "b", "c"];
    for n in &nodes {
        n.wait_for_members(&all, WAIT).await.unwrap();
    }
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    one_owner_per_shard(&refs, &all).await;

    let actors: Vec<String> = (0..30).map(|i| format!("counter-{i}")).collect();
    let mut ok = vec![0i64; actors.len()];
    let mut unsure = vec![0i64; actors.len()];
    // Activate every actor on its owner, c included.
    add_all(&nodes[0], &actors, &mut ok, &mut unsure).await;
    let on_c: Vec<&String> = actors
        .iter()
        .filter(|a| nodes[2].host::<Bank>().unwrap().is_active(a))
        .collect();
    assert!(!on_c.is_empty(), "c hosts none of the test actors");

    for fault in [Fault::Cut, Fault::Frozen] {
        match fault {
            Fault::Cut => proxy.cut(),
            Fault::Frozen => proxy.freeze(),
        }
        // a and b declare c failed and take its shards.
        eventually("a and b to reassign c's shards", || {
            nodes[..2].iter().all(|n| {
                let view = n.assignment();
                view.primaries_of("c").is_empty() && !view.primaries_of("a").is_empty()
            })
        })
        .await;
        // The actors c hosted are served by a or b meanwhile. c stopped serving on its own
        // (its heartbeats no longer come back to it) before a and b could move its shards:
        // asked directly, it answers nothing from its now stale state.
        add_all(&nodes[1], &actors, &mut ok, &mut unsure).await;
        for a in on_c.iter().take(3) {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                nodes[2].send::<Bank>(a, Command::Balance),
            )
            .await;
            assert!(
                !matches!(answer, Ok(Ok(_))),
                "{fault:?}: c served {a} from stale state while cut off"
            );
        }
        match fault {
            Fault::Cut => proxy.heal(),
            Fault::Frozen => proxy.thaw(),
        }
        // c comes back: it must see the newer table, drop what it no longer owns, and rejoin.
        one_owner_per_shard(&refs, &all).await;
        add_all(&nodes[2], &actors, &mut ok, &mut unsure).await;
        eprintln!("{fault:?}: one owner per shard after c returned");
    }

    // No deposit lost or applied twice: each total is the acknowledged additions plus at most
    // the uncertain ones, and the store holds one event per version.
    for (i, a) in actors.iter().enumerate() {
        let total = nodes[0]
            .send::<Bank>(a, Command::Balance)
            .await
            .unwrap()
            .balance;
        assert!(
            total >= ok[i] && total <= ok[i] + unsure[i],
            "{a}: total {total}, {} acknowledged, {} uncertain",
            ok[i],
            unsure[i]
        );
        let events = store.events_of(ActorKey::new("bank", a), 0).await.unwrap();
        assert_eq!(events.len() as i64, total, "{a}");
        assert!(events.windows(2).all(|w| w[0].version < w[1].version));
    }
    for n in nodes {
        n.kill().await;
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn cluster_decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        check_all(&bytes);
    }

    #[test]
    fn cluster_decoders_never_panic_on_near_envelopes(
        v in proptest::prelude::any::<i64>(),
        body in "[\\[\\]{}\",:0-9a-zA-Z -]{0,80}",
    ) {
        check_all(format!("{{\"v\":{v},\"body\":{body}}}").as_bytes());
        check_all(format!("{{\"v\":2,\"body\":{body}}}").as_bytes());
    }
}

fn check_all(bytes: &[u8]) {
    let errs = [
        decode::<Heartbeat>(bytes).err(),
        decode::<Leave>(bytes).err(),
        decode::<ActorRequest>(bytes).err(),
        decode::<ActorResponse>(bytes).err(),
        decode::<RemoteError>(bytes).err(),
    ];
    for e in errs.into_iter().flatten() {
        // Typed, and convertible to the workspace error.
        assert!(matches!(Error::from(e), Error::Decoding(_)));
    }
    let _ = serde_json::from_slice::<AssignmentTable>(bytes);
    let _ = serde_json::from_slice::<LeaderLease>(bytes);
}
