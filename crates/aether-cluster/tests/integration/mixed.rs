//! A rolling upgrade: a cluster of nodes of two releases. One node is held at the previous
//! release's wire version (2) and refuses anything newer, as a node of that release does; the
//! others speak version 3. Commands are routed between every pair, a transaction across
//! owners commits and its owners reload, a node of the new release is killed and its shards
//! fail over; then the held node is "upgraded" (restarted at the new version). Every request
//! on the wire is watched: none to the held node is newer than it speaks, the new nodes speak
//! version 3 among themselves, and once the last node runs the new release, version 3 is all
//! that is sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_actor::CommandMeta;
use aether_cluster::{Actors, ClusterConfig, ClusterNode, WIRE_VERSION};
use aether_core::EventStore;
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use futures::StreamExt;

use crate::support::{Account, Bank, Command, Moved, Refused};

const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: &str = "mixed";

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(CLUSTER)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .send_timeout(WAIT)
        .shards(ShardConfig::default().shard_count(32))
        .storage(aether_core::StorageKind::Memory)
}

/// The wire versions of the requests seen so far, by receiving node.
type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<u64, usize>>>>;

/// Records the version of every actor request sent in the cluster, by receiving node.
async fn watch_requests(url: &str) -> Seen {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client
        .subscribe(format!("aether.cluster.{CLUSTER}.node.*.actor"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let _client = client;
        while let Some(msg) = sub.next().await {
            let node = msg.subject.split('.').nth(4).unwrap_or("?").to_string();
            let v = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                .ok()
                .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            *record
                .lock()
                .unwrap()
                .entry(node)
                .or_default()
                .entry(v)
                .or_default() += 1;
        }
    });
    seen
}

fn versions_to(seen: &Seen, node: &str) -> BTreeMap<u64, usize> {
    seen.lock().unwrap().get(node).cloned().unwrap_or_default()
}

/// One deposit to each account through each node.
async fn deposit_everywhere(nodes: &[&ClusterNode], accounts: &[String], expected: &mut [i64]) {
    for node in nodes {
        for (i, a) in accounts.iter().enumerate() {
            node.send::<Bank>(a, Command::Deposit { amount: 1 })
                .await
                .unwrap_or_else(|e| panic!("{} -> {a}: {e:?}", node.node_id()));
            expected[i] += 1;
        }
    }
}

async fn balances_are(node: &ClusterNode, accounts: &[String], expected: &[i64]) {
    for (a, want) in accounts.iter().zip(expected) {
        let reply = node.send::<Bank>(a, Command::Balance).await.unwrap();
        assert_eq!(reply.balance, *want, "{a} through {}", node.node_id());
    }
}

fn transfer(amount: i64) -> impl FnMut(&[Account]) -> aether_actor::Decision<Bank, i64> + Send {
    move |states: &[Account]| {
        if states[0].balance < amount {
            return Err(Refused::InsufficientFunds {
                balance: states[0].balance,
                asked: amount,
            });
        }
        Ok((
            vec![
                vec![Moved::Withdrawn { amount }],
                vec![Moved::Deposited { amount }],
            ],
            states[0].balance - amount,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_two_releases_routes_transacts_and_fails_over() {
    let started = Instant::now();
    let server = NatsServer::start().unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let actors = || Actors::new(Arc::clone(&store) as _).with(Bank);
    let seen = watch_requests(&server.url()).await;
    let start = |config: ClusterConfig| {
        let actors = actors();
        let url = server.url();
        async move {
            let client = async_nats::connect(url).await.unwrap();
            ClusterNode::start(client, config, actors).await.unwrap()
        }
    };
    let old = start(config("old").wire_version(2)).await;
    let new1 = start(config("new1")).await;
    let new2 = start(config("new2")).await;
    let all = ["new1", "new2", "old"];
    for n in [&old, &new1, &new2] {
        n.wait_for_members(&all, WAIT).await.unwrap();
    }

    // Commands between every pair: the held node is spoken to in version 2 only.
    let accounts: Vec<String> = (0..24).map(|i| format!("acc-{i}")).collect();
    let mut expected = vec![0i64; accounts.len()];
    deposit_everywhere(&[&old, &new1, &new2], &accounts, &mut expected).await;
    balances_are(&old, &accounts, &expected).await;

    // A transaction run on the held node across accounts owned elsewhere, and one run on a
    // new node: both commit, and the owners reload (a refresh request to each).
    let owned_by = |node: &str| {
        accounts
            .iter()
            .position(|a| new1.owner_of(a).as_deref() == Some(node))
            .unwrap_or_else(|| panic!("no account on {node}"))
    };
    let (x, y, z) = (owned_by("new1"), owned_by("new2"), owned_by("old"));
    let ids = |i: usize, j: usize| [accounts[i].clone(), accounts[j].clone()];
    let [from, to] = ids(x, y);
    old.transact::<Bank, _, _>(&[&from, &to], CommandMeta::new(), transfer(1))
        .await
        .unwrap();
    expected[x] -= 1;
    expected[y] += 1;
    let [from, to] = ids(y, z);
    new1.transact::<Bank, _, _>(&[&from, &to], CommandMeta::new(), transfer(2))
        .await
        .unwrap();
    expected[y] -= 2;
    expected[z] += 2;
    balances_are(&new2, &accounts, &expected).await;
    balances_are(&old, &accounts, &expected).await;

    // A node speaks the new version to another once it has admitted it from its heartbeats
    // (two of them, an interval apart): until then it speaks the version every node reads.
    let v3 = u64::from(WIRE_VERSION);
    let deadline = Instant::now() + WAIT;
    while !["new1", "new2"]
        .iter()
        .all(|n| versions_to(&seen, n).contains_key(&v3))
    {
        assert!(
            Instant::now() < deadline,
            "the new nodes never spoke the new version among themselves: {:?}",
            seen.lock().unwrap()
        );
        balances_are(&new1, &accounts, &expected).await;
        balances_are(&new2, &accounts, &expected).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_old = versions_to(&seen, "old");
    assert_eq!(to_old.keys().copied().max(), Some(2), "{to_old:?}");

    // A new node dies; its shards fail over to the others, the held node among them.
    new2.kill().await;
    for n in [&old, &new1] {
        n.wait_for_members(&["new1", "old"], WAIT).await.unwrap();
    }
    deposit_everywhere(&[&old, &new1], &accounts, &mut expected).await;
    balances_are(&old, &accounts, &expected).await;
    let to_old = versions_to(&seen, "old");
    assert_eq!(to_old.keys().copied().max(), Some(2), "{to_old:?}");

    // The held node is upgraded: restarted on the new release. From then on only the new
    // version is sent to it.
    old.shutdown().await.unwrap();
    let upgraded = start(config("old")).await;
    for n in [&upgraded, &new1] {
        n.wait_for_members(&["new1", "old"], WAIT).await.unwrap();
    }
    // Its heartbeats announce the new range, and the others speak it to it from then on.
    let before = versions_to(&seen, "old").get(&2).copied().unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    while !versions_to(&seen, "old").contains_key(&v3) {
        assert!(
            Instant::now() < deadline,
            "requests to the upgraded node stayed at version 2: {:?}",
            versions_to(&seen, "old")
        );
        deposit_everywhere(&[&new1], &accounts, &mut expected).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    balances_are(&upgraded, &accounts, &expected).await;
    // Every event was stored once: the histories hold exactly the acknowledged changes.
    let mut total = 0;
    for a in &accounts {
        total += store
            .events_of(aether_core::ActorKey::new("bank", a), 0)
            .await
            .unwrap()
            .len();
    }
    assert!(total > accounts.len() * 4, "{total} events");
    eprintln!(
        "mixed releases: {before} requests in version 2 to the held node; {:?}",
        started.elapsed()
    );
    for n in [upgraded, new1] {
        n.shutdown().await.unwrap();
    }
}
