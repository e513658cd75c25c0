//! Whole nodes on an in-process network and a paused clock: heartbeats, failure detection,
//! leader change, failover, rejoin and fencing, with no server, in milliseconds of real time.
//! (`tests/integration/cluster.rs` runs the same protocol over a real nats-server.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::EventStore;
use aether_store::InMemoryEventStore;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use aether_actor::{Actor, ActorClient, CommandError, CommandMeta, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::assignment::AssignmentTable;
use crate::core::Cas;
use crate::leader::LeaderLease;
use crate::routing::{decode, encode, ActorRequest, ActorResponse};
use crate::transport::{Incoming, MemberMessage, RequestFailure, Transport, Versioned};
use crate::{Actors, ClusterConfig, ClusterNode, LocalNetwork};

mod across;
mod slow;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cmd {
    Deposit(i64),
    Withdraw(i64),
    Balance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum Refused {
    #[error("insufficient funds: balance {balance}")]
    InsufficientFunds { balance: i64 },
}

struct Bank;

impl Actor for Bank {
    type State = Account;
    type Command = Cmd;
    type Event = Moved;
    type Reply = i64;
    type Error = Refused;
    const TYPE: &'static str = "bank";

    async fn decide(&self, _: &str, state: &Account, command: &Cmd) -> Result<Vec<Moved>, Refused> {
        Ok(match *command {
            Cmd::Deposit(amount) => vec![Moved::Deposited { amount }],
            Cmd::Withdraw(amount) if amount > state.balance => {
                return Err(Refused::InsufficientFunds {
                    balance: state.balance,
                })
            }
            Cmd::Withdraw(amount) => vec![Moved::Withdrawn { amount }],
            Cmd::Balance => Vec::new(),
        })
    }

    fn apply(state: &mut Account, event: &Moved) {
        match event {
            Moved::Deposited { amount } => state.balance += amount,
            Moved::Withdrawn { amount } => state.balance -= amount,
        }
    }

    fn reply(state: &Account, _: &Cmd, _: &[Moved]) -> i64 {
        state.balance
    }
}

/// A second actor type on the same nodes.
struct Echo;

impl Actor for Echo {
    type State = Account;
    type Command = String;
    type Event = Moved;
    type Reply = String;
    type Error = Refused;
    const TYPE: &'static str = "echo";

    async fn decide(&self, _: &str, _: &Account, _: &String) -> Result<Vec<Moved>, Refused> {
        Ok(Vec::new())
    }

    fn apply(_: &mut Account, _: &Moved) {}

    fn reply(_: &Account, command: &String, _: &[Moved]) -> String {
        command.to_uppercase()
    }
}

const HEARTBEAT: Duration = Duration::from_millis(100);
const FAILURE: Duration = Duration::from_secs(1);
const REQUEST: Duration = Duration::from_secs(3);
const SEND: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(30);

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("paused")
        .node_id(node)
        .heartbeat_interval(HEARTBEAT)
        .failure_timeout(FAILURE)
        .request_timeout(REQUEST)
        .send_timeout(SEND)
        .shards(aether_placement::ShardConfig::default().shard_count(64))
}

async fn start(net: &LocalNetwork, store: &Arc<InMemoryEventStore>, id: &str) -> ClusterNode {
    let actors = Actors::new(Arc::clone(store) as _).with(Bank).with(Echo);
    ClusterNode::start_local(net, config(id), actors)
        .await
        .expect("node starts")
}

async fn cluster(ids: &[&str]) -> (LocalNetwork, Arc<InMemoryEventStore>, Vec<ClusterNode>) {
    let net = LocalNetwork::new();
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start(&net, &store, id).await);
    }
    for n in &nodes {
        n.wait_for_members(ids, WAIT).await.expect("cluster forms");
    }
    (net, store, nodes)
}

/// The key of the test bank's actor `id`.
fn bank(id: &str) -> aether_core::ActorKey<'_> {
    aether_core::ActorKey::new(Bank::TYPE, id)
}

/// An actor whose shard `owner` serves under `node`'s table.
fn actor_of(node: &ClusterNode, owner: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|a| node.owner_of(a).as_deref() == Some(owner))
        .expect("some actor lands on every node")
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(HEARTBEAT / 4).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_killed_leader_is_replaced_and_its_actors_answer_from_the_new_owner() {
    let (_net, store, mut nodes) = cluster(&["a", "b", "c"]).await;
    eventually("one leader", || {
        nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    let victim = nodes.iter().position(|n| n.is_leader()).unwrap();
    let victim_id = nodes[victim].node_id().to_string();
    let actor = actor_of(&nodes[0], &victim_id, "acct");
    let sender = (victim + 1) % 3;
    assert_eq!(
        nodes[sender]
            .send::<Bank>(&actor, Cmd::Deposit(5))
            .await
            .unwrap(),
        5
    );
    assert!(nodes[victim].host::<Bank>().unwrap().is_active(&actor));

    let killed = Instant::now();
    nodes.remove(victim).kill().await;
    // Sent at once: waits for the failover and is answered by the new owner.
    assert_eq!(
        nodes[0]
            .send::<Bank>(&actor, Cmd::Deposit(2))
            .await
            .unwrap(),
        7
    );
    let answered = killed.elapsed();
    assert!(
        answered >= FAILURE,
        "no failover before the failure timeout: {answered:?}"
    );
    assert!(answered <= FAILURE + HEARTBEAT * 10, "{answered:?}");
    let survivors: Vec<&str> = nodes.iter().map(|n| n.node_id()).collect();
    for n in &nodes {
        n.wait_for_members(&survivors, WAIT).await.unwrap();
    }
    eventually("a new leader", || {
        nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    assert!(nodes[0].assignment().table.term >= 2);
    let owner = nodes[0].owner_of(&actor).unwrap();
    assert_ne!(owner, victim_id);
    assert_eq!(nodes[1].owner_of(&actor).as_deref(), Some(owner.as_str()));
    assert_eq!(store.latest_version_of(bank(&actor)).await.unwrap(), 2);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_send_to_a_hung_owner_times_out_then_reroutes_to_the_new_owner_within_the_send_timeout() {
    let (net, store, mut nodes) = cluster(&["a", "b", "c"]).await;
    let victim_id = "c".to_string();
    let victim = nodes.iter().position(|n| n.node_id() == victim_id).unwrap();
    let actor = actor_of(&nodes[0], &victim_id, "hung");
    assert_eq!(
        nodes[0]
            .send::<Bank>(&actor, Cmd::Deposit(1))
            .await
            .unwrap(),
        1
    );
    // The owner hangs: it stops working, but its request subject still takes requests that
    // nobody answers.
    nodes.remove(victim).kill().await;
    let _hung = net.serve(&victim_id).await.unwrap();
    let sent = Instant::now();
    assert_eq!(
        nodes[0]
            .send::<Bank>(&actor, Cmd::Deposit(1))
            .await
            .unwrap(),
        2
    );
    let took = sent.elapsed();
    assert!(
        took >= REQUEST,
        "the first request waited for its timeout: {took:?}"
    );
    assert!(took < SEND, "{took:?}");
    assert_eq!(store.latest_version_of(bank(&actor)).await.unwrap(), 2);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_send_gives_up_with_unavailable_only_when_its_send_timeout_runs_out() {
    let (net, _store, nodes) = cluster(&["a", "b"]).await;
    let actor = actor_of(&nodes[0], "b", "lost");
    // b hangs, and nothing replaces it: a's table still says b (a single survivor does
    // rebalance, but here b keeps heartbeating through a stand-in).
    let mut nodes = nodes;
    let b = nodes.pop().unwrap();
    b.kill().await;
    let _hung = net.serve("b").await.unwrap();
    let beats = tokio::spawn({
        let net = net.clone();
        async move {
            for seq in 0.. {
                let hb = crate::routing::Heartbeat {
                    node_id: "b".into(),
                    incarnation: "stand-in".into(),
                    seq,
                    wire: None,
                };
                net.publish(crate::transport::MemberMessage::Heartbeat(hb))
                    .await
                    .unwrap();
                tokio::time::sleep(HEARTBEAT).await;
            }
        }
    });
    let sent = Instant::now();
    let err = nodes[0]
        .send::<Bank>(&actor, Cmd::Deposit(1))
        .await
        .unwrap_err();
    let took = sent.elapsed();
    assert!(
        matches!(
            err,
            CommandError::Infrastructure(aether_core::Error::Unavailable { .. })
        ),
        "{err:?}"
    );
    assert!(took >= SEND && took < SEND + REQUEST, "{took:?}");
    beats.abort();
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_rejoins_and_gets_shards_again() {
    let (net, store, mut nodes) = cluster(&["a", "b", "c"]).await;
    let c = nodes.pop().unwrap();
    c.kill().await;
    for n in &nodes {
        n.wait_for_members(&["a", "b"], WAIT).await.unwrap();
    }
    // Same id, new incarnation.
    nodes.push(start(&net, &store, "c").await);
    for n in &nodes {
        n.wait_for_members(&["a", "b", "c"], WAIT).await.unwrap();
    }
    let table = nodes[0].assignment();
    assert!(!table.primaries_of("c").is_empty());
    let actor = actor_of(&nodes[0], "c", "back");
    assert_eq!(
        nodes[0]
            .send::<Bank>(&actor, Cmd::Deposit(3))
            .await
            .unwrap(),
        3
    );
    assert!(nodes[2].host::<Bank>().unwrap().is_active(&actor));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_leave_hands_over_without_waiting_for_the_failure_timeout() {
    let (_net, _store, mut nodes) = cluster(&["a", "b"]).await;
    eventually("one leader", || {
        nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    let leader = nodes.iter().position(|n| n.is_leader()).unwrap();
    let left = Instant::now();
    nodes.remove(leader).shutdown().await.unwrap();
    let survivor = nodes[0].node_id().to_string();
    nodes[0].wait_for_members(&[&survivor], WAIT).await.unwrap();
    eventually("the survivor to lead", || nodes[0].is_leader()).await;
    assert!(left.elapsed() < FAILURE, "{:?}", left.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_node_refuses_an_actor_it_does_not_own_and_writes_nothing() {
    let (net, store, nodes) = cluster(&["a", "b"]).await;
    let actor = actor_of(&nodes[0], "a", "fenced");
    let view = nodes[1].assignment();
    let request = ActorRequest {
        actor_type: "bank".into(),
        actor_id: actor.clone(),
        shard: Some(view.shard_of(&actor)),
        epoch: view.epoch,
        meta: CommandMeta::default(),
        command: serde_json::to_value(Cmd::Deposit(1)).unwrap(),
        refresh: false,
    };
    let reply = net
        .request("b", Bytes::from(encode(&request).unwrap()), None, REQUEST)
        .await
        .unwrap();
    match decode::<ActorResponse>(&reply).unwrap() {
        ActorResponse::NotOwner { epoch, owner } => {
            assert_eq!(epoch, view.epoch);
            assert_eq!(owner.as_deref(), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!nodes[1].host::<Bank>().unwrap().is_active(&actor));
    assert_eq!(store.latest_version_of(bank(&actor)).await.unwrap(), 0);
    // Nobody serves a node that never joined.
    assert!(matches!(
        net.request("x", Bytes::new(), None, REQUEST).await,
        Err(RequestFailure::NoResponders)
    ));
}

#[tokio::test(start_paused = true)]
async fn rejections_arrive_typed_and_several_actor_types_share_the_nodes() {
    let (_net, store, nodes) = cluster(&["a", "b"]).await;
    let remote = actor_of(&nodes[0], "b", "typed");
    assert_eq!(
        nodes[0]
            .send::<Bank>(&remote, Cmd::Deposit(4))
            .await
            .unwrap(),
        4
    );
    // Refused on node b, it reaches node a as the actor's own error type.
    match nodes[0].send::<Bank>(&remote, Cmd::Withdraw(10)).await {
        Err(CommandError::Rejected(Refused::InsufficientFunds { balance })) => {
            assert_eq!(balance, 4)
        }
        other => panic!("{other:?}"),
    }
    // The same through the client trait, and a second actor type on the same nodes.
    let client: Arc<dyn ActorClient<Bank>> = Arc::new(nodes[0].client::<Bank>());
    assert_eq!(client.send(&remote, Cmd::Withdraw(1)).await.unwrap(), 3);
    let echo = nodes[0]
        .send::<Echo>(&remote, "hi".to_string())
        .await
        .unwrap();
    assert_eq!(echo, "HI");
    assert_eq!(store.latest_version_of(bank(&remote)).await.unwrap(), 2);
    let stats = nodes[1].stats();
    assert_eq!(stats["bank"].rejections, 1);
    assert_eq!(stats["echo"].commands, 1);
    // A command id sent twice is applied once, across nodes.
    let env = aether_actor::Envelope::new(Cmd::Deposit(10)).with_id("once");
    assert_eq!(
        nodes[0]
            .send_envelope::<Bank>(&remote, env.clone())
            .await
            .unwrap(),
        13
    );
    assert_eq!(
        nodes[1].send_envelope::<Bank>(&remote, env).await.unwrap(),
        13
    );
    assert_eq!(store.latest_version_of(bank(&remote)).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_node_refuses_to_start_with_a_type_registered_twice_or_badly_named() {
    let net = LocalNetwork::new();
    let store = Arc::new(InMemoryEventStore::new());
    let twice = Actors::new(Arc::clone(&store) as _).with(Bank).with(Bank);
    let err = ClusterNode::start_local(&net, config("a"), twice)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("registered twice"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_transfer_between_actors_on_two_nodes_is_atomic_and_both_owners_see_it() {
    let (_net, store, nodes) = cluster(&["a", "b"]).await;
    let on_a = actor_of(&nodes[0], "a", "from");
    let on_b = actor_of(&nodes[0], "b", "to");
    nodes[0]
        .send::<Bank>(&on_a, Cmd::Deposit(10))
        .await
        .unwrap();
    // Both owners have the actors active with their current state.
    assert_eq!(nodes[1].send::<Bank>(&on_b, Cmd::Balance).await.unwrap(), 0);
    let transfer = |amount: i64| {
        move |states: &[Account]| -> aether_actor::Decision<Bank, i64> {
            if states[0].balance < amount {
                return Err(Refused::InsufficientFunds {
                    balance: states[0].balance,
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
    };
    // Run on node b, though node a owns the source.
    let left = nodes[1]
        .transact::<Bank, _, _>(&[&on_a, &on_b], CommandMeta::new(), transfer(4))
        .await
        .unwrap();
    assert_eq!(left, 6);
    // Both owners answer with the committed state, reads included.
    assert_eq!(nodes[0].send::<Bank>(&on_a, Cmd::Balance).await.unwrap(), 6);
    assert_eq!(nodes[0].send::<Bank>(&on_b, Cmd::Balance).await.unwrap(), 4);
    match nodes[0]
        .transact::<Bank, _, _>(&[&on_a, &on_b], CommandMeta::new(), transfer(7))
        .await
    {
        Err(CommandError::Rejected(Refused::InsufficientFunds { balance: 6 })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.latest_version_of(bank(&on_a)).await.unwrap(), 2);
    assert_eq!(store.latest_version_of(bank(&on_b)).await.unwrap(), 1);
    // A type the node does not host.
    struct Unknown;
    impl Actor for Unknown {
        type State = Account;
        type Command = Cmd;
        type Event = Moved;
        type Reply = i64;
        type Error = Refused;
        const TYPE: &'static str = "unknown";
        async fn decide(&self, _: &str, _: &Account, _: &Cmd) -> Result<Vec<Moved>, Refused> {
            Ok(Vec::new())
        }
        fn apply(_: &mut Account, _: &Moved) {}
        fn reply(_: &Account, _: &Cmd, _: &[Moved]) -> i64 {
            0
        }
    }
    let none = |_: &[Account]| -> aether_actor::Decision<Unknown, ()> { Ok((vec![], ())) };
    assert!(matches!(
        nodes[0]
            .transact::<Unknown, _, _>(&[&on_a], CommandMeta::new(), none)
            .await,
        Err(CommandError::Infrastructure(aether_core::Error::NotFound(
            _
        )))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_retired_actor_refuses_commands_through_every_node_and_after_its_owner_fails() {
    let (_net, store, mut nodes) = cluster(&["a", "b", "c"]).await;
    let actor = actor_of(&nodes[0], "b", "closing");
    // Active on its owner, b.
    assert_eq!(
        nodes[0]
            .send::<Bank>(&actor, Cmd::Deposit(5))
            .await
            .unwrap(),
        5
    );
    assert!(nodes[1].host::<Bank>().unwrap().is_active(&actor));
    // Retired through c, which does not own it.
    let at = nodes[2]
        .retire::<Bank>(&actor, CommandMeta::new().user_id("ops"))
        .await
        .unwrap();
    assert_eq!(at, 2);
    let refused = |outcome: std::result::Result<i64, CommandError<Refused>>| match outcome {
        Err(CommandError::Retired(r)) => {
            assert_eq!((r.actor_id.as_str(), r.version), (actor.as_str(), 2))
        }
        other => panic!("{other:?}"),
    };
    // Read-only or not, through every node: the owner was told to drop its activation.
    for n in &nodes {
        refused(n.send::<Bank>(&actor, Cmd::Balance).await);
        refused(n.send::<Bank>(&actor, Cmd::Deposit(1)).await);
    }
    // The owner fails; the new owner loads the actor from the store and refuses too.
    nodes.remove(1).kill().await;
    refused(nodes[0].send::<Bank>(&actor, Cmd::Deposit(1)).await);
    assert_ne!(nodes[0].owner_of(&actor).as_deref(), Some("b"));
    assert!(matches!(
        nodes[1].retire::<Bank>(&actor, CommandMeta::new()).await,
        Err(CommandError::Retired(_))
    ));
    assert_eq!(store.latest_version_of(bank(&actor)).await.unwrap(), 2);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
