//! A three-node cluster: placement, routing from any node, and failover.
//!
//! Three nodes (in this one process, each with its own NATS connection and its own JetStream
//! event store) join the cluster `example`, agree on who owns which shard, and route bank
//! account commands to the owning node from wherever they are sent. Then the node owning one
//! account is killed without a goodbye: after the failure timeout its shards move, and the next
//! command to that account is answered by the new owner with the balance rebuilt from the
//! account's events.
//!
//! Run with `cargo run -p aether-examples --example cluster`. It uses the server at `NATS_URL`
//! when set (JetStream enabled), and otherwise starts a throwaway `nats-server`.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aether_cluster::{
    ClusterConfig, ClusterNode, NewEvent, RuntimeMessage, RuntimeModel, ShardConfig,
};
use aether_core::{Error, Event, Result};
use aether_store::{JetStreamConfig, JetStreamEventStore, StorageKind};
use serde::{Deserialize, Serialize};

/// An account's state, rebuilt from its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

/// What can be asked of an account. Crosses the wire as this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Command {
    Deposit(i64),
    Withdraw(i64),
    Balance,
}

impl RuntimeMessage for Command {}

struct Bank;

impl RuntimeModel for Bank {
    type State = Account;
    type Message = Command;
    type Reply = i64;

    fn name(&self) -> &str {
        "bank"
    }

    fn handle(&self, _: &str, state: &Account, command: &Command) -> Result<Vec<NewEvent>> {
        Ok(match command {
            Command::Deposit(n) => vec![NewEvent::new("Deposited").with_field("amount", *n)],
            Command::Withdraw(n) if *n > state.balance => {
                return Err(Error::invalid("insufficient funds"))
            }
            Command::Withdraw(n) => vec![NewEvent::new("Withdrawn").with_field("amount", *n)],
            Command::Balance => Vec::new(),
        })
    }

    fn apply(&self, state: &mut Account, event: &Event) {
        let amount = event
            .data
            .get("amount")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        match event.event_type.as_str() {
            "Deposited" => state.balance += amount,
            "Withdrawn" => state.balance -= amount,
            _ => {}
        }
    }

    fn reply(&self, state: &Account, _: &Command) -> i64 {
        state.balance
    }
}

fn node_config(id: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("example")
        .node_id(id)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_secs(2))
        .shards(ShardConfig::default().shard_count(256))
        .storage(aether_cluster::StorageKind::Memory)
}

async fn start_node(
    url: &str,
    id: &str,
) -> std::result::Result<ClusterNode<Bank>, Box<dyn StdError>> {
    let client = async_nats::connect(url).await?;
    // Every node has its own store on the same stream: the events are shared through JetStream.
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default()
            .namespace("cluster_example")
            .storage(StorageKind::Memory),
    )
    .await?;
    Ok(ClusterNode::start(client, node_config(id), Bank, Arc::new(store)).await?)
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn StdError>> {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = aether_testkit::NatsServer::start()?;
            let url = server.url();
            println!("started nats-server {} at {url}", server.version());
            (Some(server), url)
        }
    };

    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(start_node(&url, id).await?);
    }
    for node in &nodes {
        node.wait_for_members(&["node-a", "node-b", "node-c"], Duration::from_secs(15))
            .await?;
    }
    let table = nodes[0].assignment();
    println!(
        "cluster formed: leader {}, epoch {}, members {:?}",
        table.table.leader, table.epoch, table.table.members
    );
    for node in &nodes {
        println!(
            "  {} owns {} of {} shards",
            node.node_id(),
            table.primaries_of(node.node_id()).len(),
            table.table.shard_count
        );
    }

    // Fresh account ids per run, so the example can run again against the same server.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let accounts: Vec<String> = (0..6).map(|i| format!("account-{run}-{i}")).collect();

    // Placement and routing: any node can send to any account.
    for (i, account) in accounts.iter().enumerate() {
        let via = &nodes[i % nodes.len()];
        let balance = via.send(account, Command::Deposit(100)).await?;
        println!(
            "{account}: shard {}, owner {}, deposit via {} -> balance {balance}",
            via.shard_of(account),
            via.owner_of(account).unwrap_or_default(),
            via.node_id()
        );
    }
    let refused = nodes[1].send(&accounts[0], Command::Withdraw(1_000)).await;
    println!("withdrawing 1000 from {}: {refused:?}", accounts[0]);
    let balance = nodes[2].send(&accounts[0], Command::Withdraw(30)).await?;
    println!("withdrawing 30 from {}: balance {balance}", accounts[0]);

    // Failover: kill the owner of the first account, as a crash would.
    let victim_id = nodes[0].owner_of(&accounts[0]).unwrap_or_default();
    let victim = nodes
        .iter()
        .position(|n| n.node_id() == victim_id)
        .ok_or("owner not found")?;
    println!(
        "killing {victim_id} (it hosts {:?})",
        nodes[victim].host().active_actors()
    );
    let started = Instant::now();
    nodes.remove(victim).kill().await;

    let balance = nodes[0].send(&accounts[0], Command::Deposit(5)).await?;
    println!(
        "after {:?}: {} answered by {} with balance {balance} (rebuilt from its events)",
        started.elapsed(),
        accounts[0],
        nodes[0].owner_of(&accounts[0]).unwrap_or_default()
    );
    let table = nodes[0].assignment();
    println!(
        "new table: leader {}, epoch {}, members {:?}",
        table.table.leader, table.epoch, table.table.members
    );

    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}
