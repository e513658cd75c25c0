//! A client allowed to publish on the cluster's subjects floods the heartbeat subject with
//! thousands of made-up node ids (markup, dots, 10 KB ids, and valid-looking ones, some sent
//! twice) while two real nodes run. Every node must keep its shards, the table must not be
//! rewritten, every refusal must be counted by reason, the member table must stay within its
//! bound, and a real node must still join promptly afterwards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_cluster::routing::{encode, Heartbeat, Subjects};
use aether_cluster::{Actors, Assignment, ClusterConfig, ClusterNode};
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;

use crate::recorder::{recorded, Recorded};
use crate::support::{Bank, Command};

const CLUSTER: &str = "flooded";
const MAX_MEMBERS: usize = 32;
const WAIT: Duration = Duration::from_secs(15);
/// Made-up ids sent, each once (a tenth of the valid-looking ones twice in a row).
const FLOOD: u32 = 5000;
/// However slow the machine, the flood stops sending after this long.
const FLOOD_FOR: Duration = Duration::from_secs(5);
const REFUSED: &str = "aether_cluster_heartbeats_refused_total";
const TABLE: &str = "aether_cluster_member_table";

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(CLUSTER)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(64))
        .max_members(MAX_MEMBERS)
        .storage(aether_core::StorageKind::Memory)
}

async fn start(server: &NatsServer, node: &str, store: &Arc<InMemoryEventStore>) -> ClusterNode {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let actors = Actors::new(Arc::clone(store) as _).with(Bank);
    ClusterNode::start(client, config(node), actors)
        .await
        .expect("node starts")
}

/// The made-up id number `i`, and whether it breaks the naming rule.
fn made_up(i: u32) -> (String, bool) {
    match i % 5 {
        0 => (format!("<img src=x onerror=alert({i})>"), true),
        1 if i % 50 == 1 => (format!("{i}{}", "x".repeat(10_000)), true),
        1 => (format!("node-{i}.evil"), true),
        _ => (format!("node-{i:05}"), false),
    }
}

/// What the samples saw go wrong, and the largest member table seen.
struct Samples<'a> {
    recorded: Recorded,
    nodes: Vec<&'a ClusterNode>,
    before: Arc<Assignment>,
    real: BTreeSet<String>,
    wrong: Vec<String>,
    max_table: f64,
    taken: usize,
}

impl Samples<'_> {
    fn take(&mut self) {
        self.taken += 1;
        for node in &self.nodes {
            let id = node.node_id();
            let view = node.assignment();
            let foreign: BTreeSet<&str> = (0..view.table.shard_count)
                .filter_map(|s| view.primary(s))
                .filter(|n| !self.real.contains(*n))
                .collect();
            if !foreign.is_empty() {
                self.wrong.push(format!(
                    "{id}: shards assigned to nodes that do not exist at epoch {}: {}",
                    view.epoch,
                    few(foreign.into_iter())
                ));
            } else if view.table.shards != self.before.table.shards {
                self.wrong
                    .push(format!("{id}: shards moved at epoch {}", view.epoch));
            }
            if view.epoch > self.before.epoch + 2 {
                self.wrong.push(format!(
                    "{id}: epoch went from {} to {}",
                    self.before.epoch, view.epoch
                ));
            }
            let members: BTreeSet<String> = node.members().into_iter().collect();
            if members != self.real {
                self.wrong.push(format!(
                    "{id}: members {}",
                    few(members.iter().map(String::as_str))
                ));
            }
            let table = self
                .recorded
                .gauge(TABLE, &[("cluster", CLUSTER), ("node", id)])
                .unwrap_or(0.0);
            self.max_table = self.max_table.max(table);
        }
        self.wrong.truncate(20);
    }

    /// Samples until `cond` holds; fails at the first sample that finds something wrong, or
    /// after `WAIT`.
    async fn until(&mut self, what: &str, cond: impl Fn(&Recorded) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.take();
            assert!(self.wrong.is_empty(), "{:#?}", self.wrong);
            if cond(&self.recorded) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; wrong so far: {:#?}",
                self.wrong
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A few of `ids`, each cut short, and how many there are: readable whatever the ids are.
fn few<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = ids.len();
    let shown: Vec<String> = ids
        .take(4)
        .map(|id| format!("{:?}", id.chars().take(32).collect::<String>()))
        .collect();
    format!(
        "{n} nodes: {}{}",
        shown.join(", "),
        if n > 4 { ", ..." } else { "" }
    )
}

fn refused(recorded: &Recorded, node: &str, reason: &str) -> u64 {
    recorded.counter(
        REFUSED,
        &[("cluster", CLUSTER), ("node", node), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_heartbeats_moves_no_shard_and_a_real_node_still_joins() {
    let recorded = recorded();
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let a = start(&server, "a", &store).await;
    let b = start(&server, "b", &store).await;
    for n in [&a, &b] {
        n.wait_for_members(&["a", "b"], WAIT)
            .await
            .expect("cluster forms");
    }
    // Both nodes hold the same table, and see each other, before the flood starts.
    let deadline = Instant::now() + WAIT;
    while a.assignment() != b.assignment() || a.members() != b.members() {
        assert!(Instant::now() < deadline, "the nodes never agreed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = a.assignment();
    let account = "acc-under-flood";
    let owner = before.owner_of(account).expect("owned").to_string();
    a.send::<Bank>(account, Command::Deposit { amount: 5 })
        .await
        .expect("served before the flood");

    let mut samples = Samples {
        recorded: recorded.clone(),
        nodes: vec![&a, &b],
        before: Arc::clone(&before),
        real: ["a", "b"].map(String::from).into(),
        wrong: Vec::new(),
        max_table: 0.0,
        taken: 0,
    };
    let hostile = async_nats::connect(server.url()).await.expect("connect");
    let subject = Subjects::new(CLUSTER).heartbeat();
    let started = Instant::now();
    let mut invalid = 0u64;
    let mut sent = 0u32;
    for i in 0..FLOOD {
        if started.elapsed() > FLOOD_FOR {
            break;
        }
        let (node_id, bad) = made_up(i);
        invalid += u64::from(bad);
        let hb = Heartbeat {
            node_id,
            incarnation: format!("{i:08x}-0000-4000-8000-000000000000"),
            seq: 0,
            wire: None,
        };
        let payload = bytes::Bytes::from(encode(&hb).expect("encodes"));
        let copies = if !bad && i % 10 == 2 { 2 } else { 1 };
        for _ in 0..copies {
            hostile
                .publish(subject.clone(), payload.clone())
                .await
                .expect("the server takes the flood");
        }
        sent += 1;
        if i % 200 == 0 {
            hostile.flush().await.expect("flush");
            samples.take();
        }
    }
    hostile.flush().await.expect("flush");
    let flood_took = started.elapsed();

    // Every invalid id reaches both nodes and is refused as such; then the valid-looking ids,
    // never heard again, are dropped and the tables shrink back to the one real peer.
    samples
        .until("both nodes to refuse every invalid id", |r| {
            ["a", "b"]
                .iter()
                .all(|n| refused(r, n, "invalid") == invalid)
        })
        .await;
    samples
        .until("the made-up ids to be dropped", |r| {
            ["a", "b"]
                .iter()
                .all(|n| r.gauge(TABLE, &[("cluster", CLUSTER), ("node", n)]) == Some(1.0))
        })
        .await;
    // And some more samples over a failure timeout, in case anything moves late.
    let quiet = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet {
        samples.take();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(samples.wrong.is_empty(), "{:#?}", samples.wrong);
    assert!(
        samples.max_table <= MAX_MEMBERS as f64,
        "member table of {} above the bound",
        samples.max_table
    );
    for n in ["a", "b"] {
        assert!(
            refused(&recorded, n, "member_limit") > 0,
            "{n}: none refused as over the bound"
        );
        assert!(
            refused(&recorded, n, "unconfirmed") > 0,
            "{n}: none dropped unconfirmed"
        );
        assert_eq!(
            refused(&recorded, n, "join_rate"),
            0,
            "{n}: nobody got that far"
        );
    }
    let reasons = recorded.label_values(REFUSED, "reason");
    assert!(
        reasons.iter().all(|r| [
            "invalid",
            "member_limit",
            "unconfirmed",
            "join_rate",
            "undecodable"
        ]
        .contains(&r.as_str())),
        "only the fixed reasons are labels: {reasons:?}"
    );
    assert_eq!(a.assignment().epoch, before.epoch, "no table was written");
    let reply = b
        .send::<Bank>(account, Command::Deposit { amount: 1 })
        .await
        .expect("served after the flood");
    assert_eq!(reply.balance, 6);
    assert_eq!(a.owner_of(account).as_deref(), Some(owner.as_str()));

    // A real node joins as promptly as ever: on its second heartbeat.
    let joining = Instant::now();
    let c = start(&server, "c", &store).await;
    for n in [&a, &b, &c] {
        n.wait_for_members(&["a", "b", "c"], WAIT)
            .await
            .expect("c joins");
    }
    let join_took = joining.elapsed();
    assert!(
        join_took < Duration::from_secs(3),
        "c joined after {join_took:?}"
    );
    eprintln!(
        "flood: {sent} ids ({invalid} invalid) in {flood_took:?}, {} samples; \
         refused by a: {} invalid, {} over the bound, {} unconfirmed; largest table {}; \
         epoch {} throughout; a new node joined in {join_took:?}",
        samples.taken,
        refused(&recorded, "a", "invalid"),
        refused(&recorded, "a", "member_limit"),
        refused(&recorded, "a", "unconfirmed"),
        samples.max_table,
        before.epoch,
    );
    drop(samples);
    for n in [a, b, c] {
        n.shutdown().await.expect("leaves");
    }
}
