//! The read-only cluster observer on a real nats-server: it sees the members, the leader and
//! the table without joining; a missing cluster is `NotFound` and is not created; hostile
//! heartbeats are refused and counted and never grow its table past its bound; a leader
//! change and table changes arrive on its stream; values it cannot decode are reported, not
//! fatal; and the read-only permissions `docs/cluster.md` documents are all it needs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aether_cluster::routing::{bucket_name, encode, Heartbeat, LeaderLease, Subjects};
use aether_cluster::{
    Actors, AssignmentTable, ClusterChange, ClusterConfig, ClusterNode, ClusterObserver,
    ClusterRecord, ClusterSnapshot, GoneReason, ObserverConfig, Presence,
};
use aether_core::Error;
use aether_core::StorageKind;
use aether_nats::{Connection, KvBucket, Operation};
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use crate::support::Bank;

const WAIT: Duration = Duration::from_secs(20);
const SHARDS: u32 = 16;

fn node_config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .shards(ShardConfig::default().shard_count(SHARDS))
        .storage(StorageKind::Memory)
}

async fn start(
    conn: impl Into<Connection>,
    cluster: &str,
    node: &str,
    store: &Arc<InMemoryEventStore>,
) -> ClusterNode {
    let actors = Actors::new(Arc::clone(store) as _).with(Bank);
    ClusterNode::start(conn, node_config(cluster, node), actors)
        .await
        .expect("node starts")
}

async fn client(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("connect")
}

/// Observed as the nodes are configured: the same failure timeout and bounds.
fn observer_config(cluster: &str) -> ObserverConfig {
    ObserverConfig::from(&node_config(cluster, "unused")).forget_after(Duration::from_secs(3))
}

/// Collects changes until `done` says it has seen what it waits for.
async fn changes_until(
    changes: &mut BoxStream<'static, ClusterChange>,
    what: &str,
    mut done: impl FnMut(&[ClusterChange]) -> bool,
) -> Vec<ClusterChange> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(change)) => seen.push(change),
            Ok(None) => panic!("the change stream ended waiting for {what}: {seen:#?}"),
            Err(_) => panic!("no {what} within {WAIT:?}: {seen:#?}"),
        }
    }
    seen
}

fn alive(s: &ClusterSnapshot) -> Vec<&str> {
    s.members
        .iter()
        .filter(|m| m.presence == Presence::Alive)
        .map(|m| m.node_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_sees_members_leader_and_table_and_joins_nothing() {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let a = start(client(&server).await, "seen", "node-a", &store).await;
    let b = start(client(&server).await, "seen", "node-b", &store).await;
    let table = a
        .wait_for_members(&["node-a", "node-b"], WAIT)
        .await
        .expect("the cluster forms");

    let observer = ClusterObserver::open(client(&server).await, observer_config("seen"))
        .await
        .expect("the observer opens");
    assert_eq!(observer.bucket_name(), bucket_name("seen"));
    let snap = observer
        .wait_for(WAIT, |s| alive(s) == ["node-a", "node-b"])
        .await
        .expect("both members heard");
    let assignment = snap.assignment.as_ref().expect("the table, read at open");
    assert!(assignment.epoch >= table.epoch);
    assert_eq!(assignment.table.members, ["node-a", "node-b"]);
    let leader = snap.leader.as_ref().expect("a leader");
    assert_eq!(Some(leader.node_id.clone()), a.leader());
    assert!(leader.term >= 1 && !leader.expired, "{leader:?}");
    for m in &snap.members {
        assert!(m.listed, "{m:?}");
        assert_eq!(m.leader, m.node_id == leader.node_id);
        assert_eq!(m.primaries, assignment.primaries_of(&m.node_id).len());
        assert!(m.incarnation.is_some() && m.seq.is_some(), "{m:?}");
    }
    assert_eq!(
        snap.members.iter().map(|m| m.primaries).sum::<usize>(),
        SHARDS as usize
    );
    assert_eq!(snap.counts.invalid + snap.counts.undecodable, 0);

    // The lease is renewed every heartbeat interval: the observer follows the revisions.
    let first = leader.revision;
    observer
        .wait_for(WAIT, |s| {
            s.leader.as_ref().is_some_and(|l| l.revision > first)
        })
        .await
        .expect("the lease is seen renewed");

    // It never joined: the nodes see each other only, and the table is the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in [&a, &b] {
        assert_eq!(n.members(), ["node-a", "node-b"]);
        assert_eq!(n.assignment().table.members, ["node-a", "node-b"]);
    }
    a.shutdown().await.expect("leaves");
    b.shutdown().await.expect("leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cluster_is_not_found_and_is_not_created() {
    let server = NatsServer::start().expect("nats-server");
    let c = client(&server).await;
    match ClusterObserver::open(c.clone(), ObserverConfig::default().cluster_name("nobody")).await {
        Err(Error::NotFound(message)) => {
            assert!(message.contains("cluster nobody not found"), "{message}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let js = async_nats::jetstream::new(c.clone());
    let stream = format!("KV_{}", bucket_name("nobody"));
    assert!(
        aether_nats::backend::get_stream(&js, &stream)
            .await
            .expect("looked up")
            .is_none(),
        "looking created the bucket"
    );
    for bad in [
        ObserverConfig::default().cluster_name("a.b"),
        ObserverConfig::default().cluster_name("<b>"),
        ObserverConfig::default().max_members(0),
        ObserverConfig::default()
            .failure_timeout(Duration::from_secs(5))
            .forget_after(Duration::from_secs(1)),
    ] {
        let e = ClusterObserver::open(c.clone(), bad.clone()).await;
        assert!(matches!(e, Err(Error::InvalidInput(_))), "{bad:?}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_heartbeats_are_refused_counted_and_never_grow_the_table_past_its_bound() {
    const MAX: usize = 16;
    const FLOOD: usize = 2000;
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let real = start(client(&server).await, "hostile", "real", &store).await;
    real.wait_for_members(&["real"], WAIT)
        .await
        .expect("the cluster forms");
    let observer = ClusterObserver::open(
        client(&server).await,
        observer_config("hostile").max_members(MAX),
    )
    .await
    .expect("the observer opens");
    observer
        .wait_for(WAIT, |s| alive(s) == ["real"])
        .await
        .expect("the real node is heard");
    let mut changes = observer.changes();

    let attacker = client(&server).await;
    let subjects = Subjects::new("hostile");
    let heartbeat = |node: &str, incarnation: &str| {
        encode(&Heartbeat {
            node_id: node.into(),
            incarnation: incarnation.into(),
            seq: 0,
            wire: None,
        })
        .expect("encodes")
    };
    let long = "x".repeat(10_000);
    let invalid = [
        heartbeat("<img src=x onerror=alert(1)>", "i"),
        heartbeat("a.b", "i"),
        heartbeat("", "i"),
        heartbeat(&long, "i"),
        heartbeat("fine", "<b>i</b>"),
        heartbeat("fine", "i.1"),
    ];
    let undecodable: [&[u8]; 4] = [
        b"\xff\x00garbage",
        br#"{"v":1,"body":{"nodeId":"old","incarnation":"i","seq":0}}"#,
        br#"{"v":2,"body":{"nodeId":1}}"#,
        b"",
    ];
    let mut sent = 0u64;
    for bytes in &invalid {
        for subject in [subjects.heartbeat(), subjects.leave()] {
            attacker
                .publish(subject, bytes.clone().into())
                .await
                .expect("published");
            sent += 1;
        }
    }
    for bytes in undecodable {
        attacker
            .publish(subjects.heartbeat(), bytes.to_vec().into())
            .await
            .expect("published");
        sent += 1;
    }
    // Not a membership subject: ignored, not even counted.
    attacker
        .publish(
            format!("{}.members.other", subjects.prefix()),
            heartbeat("elsewhere", "i").into(),
        )
        .await
        .expect("published");
    for i in 0..FLOOD {
        attacker
            .publish(
                subjects.heartbeat(),
                heartbeat(&format!("ghost-{i:05}"), "x").into(),
            )
            .await
            .expect("published");
        sent += 1;
    }
    attacker
        .publish(subjects.heartbeat(), heartbeat("marker", "x").into())
        .await
        .expect("published");
    attacker.flush().await.expect("flush");

    let snap = observer
        .wait_for(WAIT, |s| s.member("marker").is_some())
        .await
        .expect("the marker, sent last, is heard");
    let counts = snap.counts;
    assert_eq!(counts.invalid, invalid.len() as u64 * 2, "{counts:?}");
    assert_eq!(counts.undecodable, undecodable.len() as u64, "{counts:?}");
    // The real node's heartbeats are counted too.
    assert!(counts.received > sent, "{counts:?} for {sent} sent");
    assert!(
        counts.evicted as usize >= FLOOD + 1 - MAX,
        "{counts:?}: the flood should have pushed ghosts out"
    );
    assert_eq!(counts.refused, 0, "{counts:?}");
    // At most MAX nodes heard, plus the table's members (all heard here).
    assert!(snap.members.len() <= MAX, "{} members", snap.members.len());
    for m in &snap.members {
        assert!(
            aether_placement::validate_name("node id", &m.node_id).is_ok(),
            "{m:?}"
        );
    }
    assert!(snap.member("elsewhere").is_none());
    // The table's member was never pushed out, and is still heard after the flood.
    let seq = snap.member("real").and_then(|m| m.seq).expect("real kept");
    observer
        .wait_for(WAIT, |s| {
            s.member("real")
                .is_some_and(|m| m.presence == Presence::Alive && m.seq > Some(seq))
        })
        .await
        .expect("the real node is still heard");
    // What the flood pushed out while alive was told on the stream.
    let seen = changes_until(&mut changes, "an eviction", |c| {
        c.iter().any(|c| {
            matches!(c, ClusterChange::MemberGone { reason: GoneReason::Evicted, node_id } if node_id.starts_with("ghost-"))
        })
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|c| matches!(c, ClusterChange::MemberGone { node_id, .. } if node_id == "real")),
        "{seen:?}"
    );
    // Nothing the flood did reached the cluster: the same single member.
    assert_eq!(real.assignment().table.members, ["real"]);
    real.shutdown().await.expect("leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_and_table_changes_are_seen_on_the_stream() {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b"] {
        nodes.push(start(client(&server).await, "moving", id, &store).await);
    }
    nodes[0]
        .wait_for_members(&["node-a", "node-b"], WAIT)
        .await
        .expect("the cluster forms");
    let observer = ClusterObserver::open(client(&server).await, observer_config("moving"))
        .await
        .expect("the observer opens");
    let before = observer
        .wait_for(WAIT, |s| {
            alive(s) == ["node-a", "node-b"]
                && s.assignment
                    .as_ref()
                    .is_some_and(|a| a.table.members == ["node-a", "node-b"])
        })
        .await
        .expect("the cluster seen");
    let mut changes = observer.changes();
    let old = before.leader.clone().expect("a leader");
    let epoch = before.assignment.as_ref().map_or(0, |a| a.epoch);

    // The leader leaves cleanly: the other takes the lease with a higher term and balances
    // the table over itself alone.
    let i = nodes
        .iter()
        .position(|n| n.node_id() == old.node_id)
        .expect("the leader is one of ours");
    let survivor = nodes[1 - i].node_id().to_string();
    nodes.remove(i).shutdown().await.expect("leaves");
    let seen = changes_until(&mut changes, "the new leader and its table", |c| {
        c.iter().any(|c| matches!(c, ClusterChange::LeaderChanged { leader: Some(l) } if l.node_id == survivor))
            && c.iter().any(|c| matches!(c, ClusterChange::TableChanged { assignment: Some(a) } if a.table.members == [survivor.clone()]))
    })
    .await;
    assert!(
        seen.iter().any(|c| *c
            == ClusterChange::MemberGone {
                node_id: old.node_id.clone(),
                reason: GoneReason::Left
            }),
        "{seen:#?}"
    );
    for c in &seen {
        match c {
            ClusterChange::LeaderChanged { leader: Some(l) } => {
                assert_eq!(l.node_id, survivor);
                assert!(l.term > old.term, "{l:?} after {old:?}");
            }
            ClusterChange::TableChanged {
                assignment: Some(a),
            } => assert!(a.epoch > epoch),
            _ => {}
        }
    }

    // A node joins: heard, then in the table.
    nodes.push(start(client(&server).await, "moving", "node-c", &store).await);
    let seen = changes_until(&mut changes, "node-c in the table", |c| {
        c.iter().any(|c| matches!(c, ClusterChange::TableChanged { assignment: Some(a) } if a.table.members.iter().any(|m| m == "node-c")))
    })
    .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, ClusterChange::MemberSeen { node_id, .. } if node_id == "node-c")),
        "{seen:#?}"
    );

    // It dies without a word: silent after the failure timeout, then out of the table.
    let c = nodes.pop().expect("node-c");
    c.kill().await;
    let silent = ClusterChange::MemberGone {
        node_id: "node-c".into(),
        reason: GoneReason::Silent,
    };
    // The leader and the observer each time node-c out on their own: in either order.
    changes_until(&mut changes, "node-c silent and out of the table", |c| {
        c.contains(&silent)
            && c.iter().any(|c| matches!(c, ClusterChange::TableChanged { assignment: Some(a) } if a.table.members == [survivor.clone()]))
    })
    .await;
    let snap = observer.snapshot();
    assert_eq!(
        snap.member("node-c").map(|m| m.presence),
        Some(Presence::Silent)
    );
    assert_eq!(
        snap.leader.map(|l| l.node_id),
        Some(survivor),
        "the leader stayed"
    );
    for n in nodes {
        n.shutdown().await.expect("leaves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_it_cannot_decode_are_reported_and_later_ones_are_read() {
    let server = NatsServer::start().expect("nats-server");
    let conn = Connection::from(client(&server).await);
    // A bucket whose values no node of this version wrote.
    let kv = KvBucket::open(&conn, &bucket_name("garbled"), "test", StorageKind::Memory)
        .await
        .expect("bucket");
    let lease_rev = kv.put("leader", "not json".into()).await.expect("put");
    let table_rev = kv
        .put("assignment", r#"{"v":9,"body":{}}"#.into())
        .await
        .expect("put");
    let observer = ClusterObserver::open(conn.clone(), observer_config("garbled"))
        .await
        .expect("opens all the same");
    let snap = observer.snapshot();
    assert!(
        snap.leader.is_none() && snap.assignment.is_none(),
        "{snap:?}"
    );
    let unreadable: BTreeSet<(ClusterRecord, u64)> = snap
        .unreadable
        .iter()
        .map(|u| (u.record, u.revision))
        .collect();
    assert_eq!(
        unreadable,
        BTreeSet::from([
            (ClusterRecord::LeaderLease, lease_rev),
            (ClusterRecord::AssignmentTable, table_rev)
        ])
    );
    let mut changes = observer.changes();

    // A table and a lease as a node writes them: seen through the watches.
    let table = AssignmentTable {
        term: 4,
        leader: "n".into(),
        members: vec!["n".into()],
        shards: vec![vec!["n".into()]; 2],
        ..AssignmentTable::empty(2, 1)
    };
    let epoch = kv
        .put("assignment", encode(&table).expect("encodes").into())
        .await
        .expect("put");
    let lease = LeaderLease {
        node_id: "n".into(),
        incarnation: "n-1".into(),
        term: 4,
    };
    kv.put("leader", encode(&lease).expect("encodes").into())
        .await
        .expect("put");
    changes_until(&mut changes, "the table and the lease", |c| {
        c.iter().any(|c| matches!(c, ClusterChange::TableChanged { assignment: Some(a) } if a.epoch == epoch && a.table == table))
            && c.iter().any(|c| matches!(c, ClusterChange::LeaderChanged { leader: Some(l) } if l.node_id == "n" && l.term == 4))
    })
    .await;
    let snap = observer.snapshot();
    assert!(snap.unreadable.is_empty(), "{:?}", snap.unreadable);
    assert_eq!(
        snap.member("n")
            .map(|m| (m.presence, m.listed, m.leader, m.primaries)),
        Some((Presence::Unheard, true, true, 2))
    );
    let deleted = kv.delete("leader", None).await.expect("delete");
    assert!(deleted.written().is_some(), "{deleted:?}");
    changes_until(&mut changes, "the lease gone", |c| {
        c.iter()
            .any(|c| matches!(c, ClusterChange::LeaderChanged { leader: None }))
    })
    .await;
}

/// The user entry under "## Observing a cluster" in `docs/cluster.md`.
fn documented_observer_user() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cluster.md");
    let text = std::fs::read_to_string(path).expect("docs/cluster.md");
    let (_, section) = text
        .split_once("## Observing a cluster")
        .expect("the observer section");
    let (_, from_fence) = section.split_once("```\n").expect("a fenced block");
    let (block, _) = from_fence.split_once("```").expect("the block ends");
    assert!(block.contains("orders-observer"), "{block}");
    block.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_read_only_permissions_are_all_an_observer_needs() {
    let config = format!(
        "authorization {{\n  users = [\n    {{ user: orders-node, password: node-secret }}\n{}  ]\n}}\n",
        documented_observer_user()
    );
    let server = NatsServer::builder()
        .extra_config(config)
        .start()
        .expect("nats-server takes the documented user");
    let login = |user: &'static str, password: &'static str| {
        let url = server.url();
        async move {
            Connection::connect(
                &url,
                async_nats::ConnectOptions::with_user_and_password(user.into(), password.into()),
            )
            .await
            .expect("logs in")
        }
    };
    let store = Arc::new(InMemoryEventStore::new());
    let node = start(
        login("orders-node", "node-secret").await,
        "orders",
        "node-a",
        &store,
    )
    .await;
    node.wait_for_members(&["node-a"], WAIT)
        .await
        .expect("the cluster forms");

    let conn = login("orders-observer", "observer-secret").await;
    let observer = ClusterObserver::open(conn.clone(), observer_config("orders"))
        .await
        .expect("the observer opens with the documented permissions");
    let first = observer
        .wait_for(WAIT, |s| alive(s) == ["node-a"] && s.leader.is_some())
        .await
        .expect("the cluster seen")
        .leader
        .map_or(0, |l| l.revision);
    // The watch follows the lease's renewals, under load of nothing but itself.
    observer
        .wait_for(WAIT, |s| {
            s.leader.as_ref().is_some_and(|l| l.revision > first + 5)
        })
        .await
        .expect("renewals seen through the watch");
    conn.round_trip(Duration::from_secs(5))
        .await
        .expect("round trip");
    assert_eq!(
        conn.monitor().permission_violations(),
        0,
        "the observer was refused something"
    );
    // And the user can write nothing of the cluster's.
    let since = Instant::now();
    let subject = Subjects::new("orders").heartbeat();
    conn.client()
        .publish(subject.clone(), b"x".to_vec().into())
        .await
        .expect("handed to the client");
    conn.client().flush().await.expect("flush");
    tokio::time::timeout(
        WAIT,
        conn.permissions()
            .wait_for(since, |op, s| op == Operation::Publish && s == subject),
    )
    .await
    .expect("publishing a heartbeat is refused");
    drop(observer);
    node.shutdown().await.expect("leaves");
}
