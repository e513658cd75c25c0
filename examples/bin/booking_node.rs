//! A booking node: a cluster node hosting shows, customers and orders over the JetStream
//! store, with its reactor (timers and effects) and the orders' process router
//! (`aether_examples::booking::node`), until it is stopped or killed.
//!
//! Usage: `booking-node <NATS URL> <namespace> <node id>`. It prints `ready` once started.
//! The test `examples/tests/orders.rs` kills one with SIGKILL while its orders' timers are
//! pending.

use aether_examples::booking::node::{BookingNode, NodeTimings};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: booking-node <NATS URL> <namespace> <node id>";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, namespace, node_id] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let client = async_nats::connect(url.as_str()).await?;
    let node = BookingNode::start(client, namespace, node_id, NodeTimings::default()).await?;
    println!("ready");
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    Ok(())
}
