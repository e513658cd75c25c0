//! Cluster integration tests against a real `nats-server`: nodes in one process, each on its
//! own connection, sharing one event store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{CommandError, CommandMeta, PassivationPolicy, RuntimeConfig, SnapshotPolicy};
use aether_cluster::routing::{decode, encode, ActorRequest, ActorResponse, RemoteError};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{ActorKey, Error, EventStore};
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;

use crate::support::{Bank, Command, Refused, Reply};

const WAIT: Duration = Duration::from_secs(15);

fn config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(128))
        .storage(aether_core::StorageKind::Memory)
}

async fn start(
    server: &NatsServer,
    config: ClusterConfig,
    store: &Arc<InMemoryEventStore>,
) -> ClusterNode {
    start_with(server, config, store, RuntimeConfig::default()).await
}

async fn start_with(
    server: &NatsServer,
    config: ClusterConfig,
    store: &Arc<InMemoryEventStore>,
    runtime: RuntimeConfig,
) -> ClusterNode {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let actors = Actors::new(Arc::clone(store) as _).with_config(Bank, runtime);
    ClusterNode::start(client, config, actors)
        .await
        .expect("node starts")
}

async fn three_nodes(cluster: &str) -> (NatsServer, Arc<InMemoryEventStore>, Vec<ClusterNode>) {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start(&server, config(cluster, id), &store).await);
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b", "c"], WAIT)
            .await
            .expect("cluster forms");
    }
    (server, store, nodes)
}

/// Polls `cond` until it holds or `WAIT` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn same_epoch_everywhere(nodes: &[&ClusterNode]) {
    eventually("every node to hold the same assignment", || {
        let first = nodes[0].assignment();
        nodes
            .iter()
            .all(|n| n.assignment().epoch == first.epoch && n.assignment().table == first.table)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_agree_on_assignments_and_route_from_anywhere() {
    let (_server, store, nodes) = three_nodes("form").await;
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    same_epoch_everywhere(&refs).await;
    eventually("exactly one leader", || {
        nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    let leader = nodes
        .iter()
        .find(|n| n.is_leader())
        .unwrap()
        .node_id()
        .to_string();
    for n in &nodes {
        // A node's own view may lag the leader's by a heartbeat.
        eventually("every node to see all members", || {
            n.members() == ["a", "b", "c"]
        })
        .await;
        eventually("every node to know the leader", || {
            n.leader().as_deref() == Some(leader.as_str())
        })
        .await;
    }

    // Balanced: 128 shards over 3 nodes.
    let table = nodes[0].assignment();
    let mut per_node = BTreeMap::new();
    for id in ["a", "b", "c"] {
        per_node.insert(id, table.primaries_of(id).len());
    }
    assert!(
        per_node.values().all(|&c| c == 42 || c == 43),
        "{per_node:?}"
    );

    // Route 30 actors from every node.
    for i in 0..30 {
        let actor = format!("account-{i}");
        let from = &nodes[i % 3];
        let r = from
            .send::<Bank>(&actor, Command::Deposit { amount: 10 })
            .await
            .unwrap();
        assert_eq!(
            r,
            Reply {
                balance: 10,
                deposits: 1
            }
        );
        let r = nodes[(i + 1) % 3]
            .send::<Bank>(&actor, Command::Deposit { amount: 5 })
            .await
            .unwrap();
        assert_eq!(r.balance, 15);
        let r = nodes[(i + 2) % 3]
            .send::<Bank>(&actor, Command::Balance)
            .await
            .unwrap();
        assert_eq!(
            r,
            Reply {
                balance: 15,
                deposits: 2
            }
        );
        // Only the owner hosts it, and every node knows where.
        let owner = from.owner_of(&actor).unwrap();
        for n in &nodes {
            assert_eq!(
                n.host::<Bank>().unwrap().is_active(&actor),
                n.node_id() == owner,
                "{actor} on {}",
                n.node_id()
            );
            assert_eq!(n.owner_of(&actor).as_deref(), Some(owner.as_str()));
        }
        assert_eq!(
            store
                .latest_version_of(ActorKey::new("bank", &actor))
                .await
                .unwrap(),
            2
        );
    }

    // The actor's rejection crosses the wire as a typed error.
    let err = nodes[0]
        .send::<Bank>("account-0", Command::Withdraw { amount: 1000 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Rejected(Refused::InsufficientFunds { asked: 1000, .. })
        ),
        "{err:?}"
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_over_and_its_actors_are_rebuilt_on_the_new_owner() {
    let (_server, store, mut nodes) = three_nodes("failover").await;
    eventually("a leader", || nodes.iter().any(|n| n.is_leader())).await;
    // Kill the leader, the hardest case: the lease and the shards both have to move.
    let victim_idx = nodes.iter().position(|n| n.is_leader()).unwrap();
    let victim_id = nodes[victim_idx].node_id().to_string();

    // Actors owned by the victim, with some history.
    let mut theirs = Vec::new();
    for i in 0.. {
        let actor = format!("acct-{i}");
        if nodes[0].owner_of(&actor).as_deref() == Some(victim_id.as_str()) {
            theirs.push(actor);
            if theirs.len() == 5 {
                break;
            }
        }
    }
    for actor in &theirs {
        for amount in [1, 2, 3] {
            nodes[(victim_idx + 1) % 3]
                .send::<Bank>(actor, Command::Deposit { amount })
                .await
                .unwrap();
        }
        assert!(nodes[victim_idx].host::<Bank>().unwrap().is_active(actor));
    }

    let killed_at = Instant::now();
    nodes.remove(victim_idx).kill().await;
    let survivors: Vec<String> = nodes.iter().map(|n| n.node_id().to_string()).collect();
    let survivor_refs: Vec<&str> = survivors.iter().map(String::as_str).collect();

    // A message sent right away waits for the failover and is answered by the new owner,
    // with the state rebuilt from the store.
    let r = nodes[0]
        .send::<Bank>(&theirs[0], Command::Deposit { amount: 4 })
        .await
        .unwrap();
    assert_eq!(
        r,
        Reply {
            balance: 10,
            deposits: 4
        }
    );
    let answered_after = killed_at.elapsed();

    for n in &nodes {
        n.wait_for_members(&survivor_refs, WAIT).await.unwrap();
    }
    let reassigned_after = killed_at.elapsed();
    eprintln!(
        "failover: first reply after {answered_after:?}, all survivors on the new table after {reassigned_after:?} (failure timeout 1s)"
    );
    same_epoch_everywhere(&nodes.iter().collect::<Vec<_>>()).await;
    eventually("a new leader among the survivors", || {
        nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    assert!(nodes[0].assignment().table.term >= 2);

    for actor in &theirs[1..] {
        let new_owner = nodes[1].owner_of(actor).unwrap();
        assert_ne!(new_owner, victim_id);
        let r = nodes[1]
            .send::<Bank>(actor, Command::Balance)
            .await
            .unwrap();
        assert_eq!(
            r,
            Reply {
                balance: 6,
                deposits: 3
            }
        );
        let owner_node = nodes.iter().find(|n| n.node_id() == new_owner).unwrap();
        assert!(owner_node.host::<Bank>().unwrap().is_active(actor));
    }
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("bank", &theirs[0]))
            .await
            .unwrap(),
        4
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_later_takes_its_share_and_the_old_owners_let_go() {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let a = start(&server, config("join", "a"), &store).await;
    let b = start(&server, config("join", "b"), &store).await;
    for n in [&a, &b] {
        n.wait_for_members(&["a", "b"], WAIT).await.unwrap();
    }
    let actors: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
    for actor in &actors {
        a.send::<Bank>(actor, Command::Deposit { amount: 7 })
            .await
            .unwrap();
    }

    let c = start(&server, config("join", "c"), &store).await;
    for n in [&a, &b, &c] {
        n.wait_for_members(&["a", "b", "c"], WAIT).await.unwrap();
    }
    same_epoch_everywhere(&[&a, &b, &c]).await;
    let moved: Vec<&String> = actors
        .iter()
        .filter(|id| c.owner_of(id).as_deref() == Some("c"))
        .collect();
    assert!(!moved.is_empty(), "the newcomer owns some of 40 actors");
    let share = c.assignment().primaries_of("c").len();
    assert!(
        (42..=43).contains(&share),
        "newcomer holds {share} of 128 shards"
    );

    // The previous owners gave those actors up (fencing) ...
    eventually("old owners to passivate moved actors", || {
        moved.iter().all(|id| {
            !a.host::<Bank>().unwrap().is_active(id) && !b.host::<Bank>().unwrap().is_active(id)
        })
    })
    .await;
    // ... and the newcomer serves them with rebuilt state, whoever sends.
    for id in &moved {
        let r = b
            .send::<Bank>(id, Command::Deposit { amount: 1 })
            .await
            .unwrap();
        assert_eq!(
            r,
            Reply {
                balance: 8,
                deposits: 2
            }
        );
        assert!(c.host::<Bank>().unwrap().is_active(id));
    }
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_leave_hands_over_without_waiting_for_the_failure_timeout() {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    // A long failure timeout: only the leave notice can make the handover fast.
    let slow = |id: &str| config("leave", id).failure_timeout(Duration::from_secs(30));
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start(&server, slow(id), &store).await);
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b", "c"], WAIT).await.unwrap();
    }
    eventually("a leader", || nodes.iter().any(|n| n.is_leader())).await;
    // The leader leaves: both the lease and its shards move on.
    let idx = nodes.iter().position(|n| n.is_leader()).unwrap();
    let leaving = nodes.remove(idx);
    let gone = leaving.node_id().to_string();
    let started = Instant::now();
    leaving.shutdown().await.unwrap();
    let rest: Vec<String> = nodes.iter().map(|n| n.node_id().to_string()).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    for n in &nodes {
        n.wait_for_members(&rest, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(!n.members().contains(&gone));
    }
    let took = started.elapsed();
    eprintln!("clean leave of the leader handed over in {took:?} (failure timeout 30s)");
    assert!(took < Duration::from_secs(15));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_actors_they_do_not_own_and_survive_garbage() {
    let (server, store, nodes) = three_nodes("fence").await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let actor = "fenced-1";
    let owner = nodes[0].owner_of(actor).unwrap();
    let other = nodes.iter().find(|n| n.node_id() != owner).unwrap();
    let epoch = other.assignment().epoch;
    let subject = format!("aether.cluster.fence.node.{}.actor", other.node_id());

    // A request routed with a stale idea of ownership is refused, and nothing is written.
    let request = ActorRequest {
        actor_type: "bank".into(),
        actor_id: actor.to_string(),
        shard: Some(other.shard_of(actor)),
        epoch,
        meta: CommandMeta::default(),
        command: serde_json::to_value(Command::Deposit { amount: 1 }).unwrap(),
        refresh: false,
    };
    let msg = raw
        .request(subject.clone(), encode(&request).unwrap().into())
        .await
        .unwrap();
    match decode::<ActorResponse>(&msg.payload).unwrap() {
        ActorResponse::NotOwner { epoch: e, owner: o } => {
            assert!(e >= epoch);
            assert_eq!(o.as_deref(), Some(owner.as_str()));
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("bank", actor))
            .await
            .unwrap(),
        0
    );
    assert!(!other.host::<Bank>().unwrap().is_active(actor));

    // Garbage and future versions get typed errors back, and the node keeps serving.
    for payload in [
        b"\xff\x00not json".to_vec(),
        br#"{"v":99,"body":{}}"#.to_vec(),
        br#"{"v":1,"body":{"actorId":5}}"#.to_vec(),
        br#"{"v":2,"body":{"actorId":5}}"#.to_vec(),
    ] {
        let msg = raw.request(subject.clone(), payload.into()).await.unwrap();
        match decode::<ActorResponse>(&msg.payload).unwrap() {
            ActorResponse::Error {
                error: RemoteError::Decoding { .. },
            } => {}
            other => panic!("expected a decoding error, got {other:?}"),
        }
    }
    let r = other
        .send::<Bank>(actor, Command::Deposit { amount: 3 })
        .await
        .unwrap();
    assert_eq!(r.balance, 3);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_and_come_back_from_a_snapshot() {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let runtime = RuntimeConfig::default()
        .passivation(PassivationPolicy::never().idle_timeout(Duration::from_millis(200)))
        .snapshot(SnapshotPolicy::on_passivation());
    let node = start_with(&server, config("passivate", "solo"), &store, runtime).await;
    node.wait_for_members(&["solo"], WAIT).await.unwrap();
    for _ in 0..3 {
        node.send::<Bank>("p-1", Command::Deposit { amount: 2 })
            .await
            .unwrap();
    }
    assert_eq!(node.host::<Bank>().unwrap().active_actors(), ["p-1"]);
    eventually("passivation", || {
        !node.host::<Bank>().unwrap().is_active("p-1")
    })
    .await;
    assert_eq!(node.host::<Bank>().unwrap().active_count(), 0);
    use aether_core::SnapshotStore;
    eventually("a snapshot", || {
        futures::executor::block_on(store.latest_snapshot_of(ActorKey::new("bank", "p-1")))
            .unwrap()
            .is_some_and(|s| s.version == 3)
    })
    .await;
    let r = node.send::<Bank>("p-1", Command::Balance).await.unwrap();
    assert_eq!(
        r,
        Reply {
            balance: 6,
            deposits: 3
        }
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_user_may_not_use_the_cluster_bucket_fails_to_start_with_permission_denied() {
    let bucket = aether_cluster::routing::bucket_name("guarded");
    let server = NatsServer::builder()
        .extra_config(format!(
            r#"
authorization {{
  users = [
    {{ user: admin, password: admin }}
    {{ user: outsider, password: outsider, permissions: {{
        publish: {{ deny: ["$KV.{bucket}.>", "$JS.API.*.*.KV_{bucket}", "$JS.API.*.*.KV_{bucket}.>", "$JS.API.DIRECT.GET.KV_{bucket}", "$JS.API.DIRECT.GET.KV_{bucket}.>"] }}
    }} }}
  ]
}}
"#
        ))
        .start()
        .expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let connect = |user: &'static str| {
        let url = server.url();
        async move {
            aether_nats::Connection::connect(
                &url,
                async_nats::ConnectOptions::with_user_and_password(user.into(), user.into()),
            )
            .await
            .expect("connects")
        }
    };
    // The admin forms the cluster; the outsider may connect but not use its bucket.
    let admin = ClusterNode::start(
        connect("admin").await,
        config("guarded", "a"),
        Actors::new(Arc::clone(&store) as _).with(Bank),
    )
    .await
    .expect("admin starts");
    let started = Instant::now();
    let err = ClusterNode::start(
        connect("outsider").await,
        config("guarded", "b"),
        Actors::new(Arc::clone(&store) as _).with(Bank),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::PermissionDenied { .. }) && !err.is_retryable(),
        "{err:?}"
    );
    assert!(
        format!("{err:?}").contains(&bucket),
        "names the refused subject: {err:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "reported at once, not at a timeout: {took:?}"
    );
    admin.shutdown().await.unwrap();
}
