//! A three-node cluster: placement, routing from any node, typed rejections across nodes, and
//! failover.
//!
//! Three nodes (in this one process, each with its own NATS connection and its own JetStream
//! event store) join the cluster `example`, agree on who owns which shard, and host the typed
//! bank account actor (`aether_examples::bank::Bank`). Commands are routed to the owning node
//! from wherever they are sent, and a refusal comes back from the owner as the actor's typed
//! `BankError`. Then the node owning one account is killed without a goodbye: after the
//! failure timeout its shards move, and the next command to that account is answered by the
//! new owner with the balance rebuilt from the account's events.
//!
//! Run with `cargo run -p aether-examples --example cluster`. It uses the server at `NATS_URL`
//! when set (JetStream enabled), and otherwise starts a throwaway `nats-server` (found through
//! `AETHER_NATS_SERVER`, the project's `.tools/`, or `PATH`).

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aether_actor::CommandError;
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::StorageKind;
use aether_examples::bank::{Bank, BankCommand, BankError};
use aether_placement::ShardConfig;
use aether_store::{JetStreamConfig, JetStreamEventStore};

type BoxError = Box<dyn StdError>;

fn node_config(id: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("example")
        .node_id(id)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_secs(2))
        .shards(ShardConfig::default().shard_count(256))
        .storage(aether_core::StorageKind::Memory)
}

async fn start_node(url: &str, id: &str) -> Result<ClusterNode, BoxError> {
    let client = async_nats::connect(url).await?;
    // Every node has its own store on the same stream: the events are shared through JetStream.
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default()
            .namespace("cluster_example")
            .storage(StorageKind::Memory),
    )
    .await?;
    // Every node hosts the same actor types; which node serves an account is decided by the
    // account's shard alone.
    let actors = Actors::new(Arc::new(store)).with(Bank);
    Ok(ClusterNode::start(client, node_config(id), actors).await?)
}

/// The node currently owning `account`, as `via` sees the assignment.
fn owner(via: &ClusterNode, account: &str) -> Result<String, BoxError> {
    via.owner_of(account)
        .ok_or_else(|| format!("no owner known for {account}").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
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

    // Placement and routing: any node can send to any account. Each account is opened
    // through one node and takes its deposit through the next.
    for (i, account) in accounts.iter().enumerate() {
        let opener = &nodes[i % nodes.len()];
        let depositor = &nodes[(i + 1) % nodes.len()];
        opener
            .send::<Bank>(
                account,
                BankCommand::Open {
                    owner: format!("holder-{i}"),
                },
            )
            .await?;
        let reply = depositor
            .send::<Bank>(account, BankCommand::Deposit { amount: 100 })
            .await?;
        println!(
            "{account}: shard {}, owner {}, opened via {}, deposit via {} -> balance {}",
            depositor.shard_of(account),
            owner(depositor, account)?,
            opener.node_id(),
            depositor.node_id(),
            reply.balance
        );
    }

    // A refusal decided on the owner reaches a sender on another node as the typed error.
    let first = &accounts[0];
    let first_owner = owner(&nodes[0], first)?;
    let asker = nodes
        .iter()
        .find(|n| n.node_id() != first_owner)
        .ok_or("every node owns the account")?;
    match asker
        .send::<Bank>(first, BankCommand::Withdraw { amount: 1_000 })
        .await
    {
        Err(CommandError::Rejected(BankError::InsufficientFunds { balance, asked })) => println!(
            "{} asked {first_owner} to withdraw {asked} from {first}: refused, typed \
             InsufficientFunds (balance {balance})",
            asker.node_id()
        ),
        other => return Err(format!("expected a typed refusal, got {other:?}").into()),
    }
    let reply = asker
        .send::<Bank>(first, BankCommand::Withdraw { amount: 30 })
        .await?;
    println!("withdrawing 30 from {first}: balance {}", reply.balance);

    // Failover: kill the owner of the first account, as a crash would.
    let victim = nodes
        .iter()
        .position(|n| n.node_id() == first_owner)
        .ok_or("owner not found")?;
    let hosted = nodes[victim]
        .host::<Bank>()
        .map(|h| h.active_actors())
        .ok_or("the owner does not host the bank")?;
    println!("killing {first_owner} (it hosts {hosted:?})");
    let started = Instant::now();
    nodes.remove(victim).kill().await;

    let reply = nodes[0]
        .send::<Bank>(first, BankCommand::Deposit { amount: 5 })
        .await?;
    println!(
        "after {:?}: {first} answered by {} with balance {} (rebuilt from its events)",
        started.elapsed(),
        owner(&nodes[0], first)?,
        reply.balance
    );
    if reply.balance != 75 {
        return Err(format!("expected 100 - 30 + 5 = 75, got {}", reply.balance).into());
    }
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
