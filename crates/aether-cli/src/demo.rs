//! `aether demo`: bank-account actors on a three-node cluster.
//!
//! The demo opens a few hundred accounts, sends them deposits and withdrawals, shows which node
//! owns which accounts, lets three writers race on one shared ledger (version conflicts,
//! retried), kills one node and shows its accounts answering from the survivors with their
//! balances rebuilt from the stored events, and ends with a summary.
//!
//! Two ways to run it, with the same steps:
//! - **In process** (the default, no server): one [`InMemoryEventStore`], the local
//!   [`EventBus`], and three [`ClusterNode`]s on a [`LocalNetwork`]: the same nodes and
//!   protocol as over NATS (heartbeats, a leader, the assignment table, fencing, failover),
//!   with an in-process network instead of a server.
//! - **Over NATS** (`--nats URL` or `NATS_URL`): three [`ClusterNode`]s on their own
//!   connections, each with a [`JetStreamEventStore`] on the same stream, heartbeats, a leader
//!   and the assignment table in JetStream key-value, and [`NatsEventBus`] notices.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_bus::{EventBus, NatsBusConfig, NatsEventBus};
use aether_cluster::routing::bucket_name;
use aether_cluster::{
    ActorConfig, ClusterConfig, ClusterNode, LocalNetwork, NewEvent, RuntimeMessage, RuntimeModel,
    ShardConfig,
};
use aether_core::{
    Delivery, Error, Event, EventBroadcaster, EventStore, Result, Snapshot, SnapshotStore,
};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore, Notify};
use async_trait::async_trait;
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connect::{connect, AuthArgs};
use crate::error::{CliError, CliResult};
use crate::output::{human_duration, progress, spinner, Painter, Table};

/// The bus namespace the demo's `EventStored` notices go to.
pub const DEMO_NAMESPACE: &str = "demo";
/// The store namespace of the demo over NATS (its stream is `aether_demo_AETHER_EVENTS`).
pub const DEMO_STORE_NAMESPACE: &str = "aether_demo";
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const SHARDS: u32 = 64;
const WRITERS_CREDITS: u64 = 20;

/// Arguments of `aether demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of bank-account actors.
    #[arg(long, value_name = "N", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub actors: u32,
    /// Run over this NATS server (JetStream enabled) instead of in process.
    #[arg(long, env = "NATS_URL", hide_env_values = true, value_name = "URL")]
    pub nats: Option<String>,
    /// Authentication and TLS (with --nats).
    #[command(flatten)]
    pub auth: AuthArgs,
}

// ---- the model ----

/// An account's state, rebuilt from its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    /// Whether `Open` was handled.
    pub open: bool,
    /// The owner's name.
    pub owner: String,
    /// The balance.
    pub balance: i64,
}

/// What can be asked of an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum BankCommand {
    /// Opens the account.
    Open {
        /// The owner's name.
        owner: String,
    },
    /// Adds money.
    Deposit(i64),
    /// Takes money out; refused beyond the balance.
    Withdraw(i64),
    /// Reads the balance.
    Balance,
}

impl RuntimeMessage for BankCommand {}

/// Bank accounts as an actor model: commands decide events, events change the balance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bank;

impl RuntimeModel for Bank {
    type State = Account;
    type Message = BankCommand;
    type Reply = i64;

    fn name(&self) -> &str {
        "bank"
    }

    fn handle(&self, actor_id: &str, s: &Account, c: &BankCommand) -> Result<Vec<NewEvent>> {
        Ok(match c {
            BankCommand::Open { .. } if s.open => {
                return Err(Error::invalid(format!("{actor_id} is already open")))
            }
            BankCommand::Open { owner } => {
                vec![NewEvent::new("AccountOpened").with_field("owner", owner.clone())]
            }
            BankCommand::Balance => Vec::new(),
            _ if !s.open => return Err(Error::invalid(format!("{actor_id} is not open"))),
            BankCommand::Deposit(n) => vec![NewEvent::new("Deposited").with_field("amount", *n)],
            BankCommand::Withdraw(n) if *n > s.balance => {
                return Err(Error::invalid(format!(
                    "insufficient funds in {actor_id}: balance {}, asked {n}",
                    s.balance
                )))
            }
            BankCommand::Withdraw(n) => vec![NewEvent::new("Withdrawn").with_field("amount", *n)],
        })
    }

    fn apply(&self, s: &mut Account, e: &Event) {
        let amount = e.data.get("amount").and_then(Value::as_i64).unwrap_or(0);
        match e.event_type.as_str() {
            "AccountOpened" => {
                s.open = true;
                s.owner = e
                    .data
                    .get("owner")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            "Deposited" => s.balance += amount,
            "Withdrawn" => s.balance -= amount,
            _ => {}
        }
    }

    fn reply(&self, s: &Account, _: &BankCommand) -> i64 {
        s.balance
    }
}

/// The commands account `i` receives after `Open`, and the balance they leave.
pub fn script(i: u32) -> (Vec<BankCommand>, i64) {
    let first = 100 + i64::from(i % 7) * 10;
    let second = if i % 3 == 0 {
        BankCommand::Withdraw(30)
    } else {
        BankCommand::Deposit(5)
    };
    let third = 1 + i64::from(i % 11);
    let expected = first + if i % 3 == 0 { -30 } else { 5 } + third;
    (
        vec![
            BankCommand::Deposit(first),
            second,
            BankCommand::Deposit(third),
        ],
        expected,
    )
}

// ---- counting what the stores see ----

/// What the demo's stores did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored.
    pub events_written: AtomicU64,
    /// Saves refused with a version conflict (each one then retried by its writer).
    pub conflicts: AtomicU64,
}

/// A store that counts stored events and version conflicts on the way through.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }

    fn record(&self, result: &Result<()>, n: usize) {
        match result {
            Ok(()) => {
                self.counters
                    .events_written
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.is_version_conflict() => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for CountingStore<S> {
    async fn save_event(&self, event: &Event) -> Result<()> {
        let r = self.inner.save_event(event).await;
        self.record(&r, 1);
        r
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        let r = self.inner.save_events(actor_id, events).await;
        self.record(&r, events.len());
        r
    }
    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        self.inner.get_events(actor_id, from_version).await
    }
    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        self.inner.get_latest_version(actor_id).await
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for CountingStore<S> {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        self.inner.get_latest_snapshot(actor_id).await
    }
}

// ---- the cluster ----

/// Three cluster nodes, in process (over a [`LocalNetwork`]) or over NATS: the same
/// [`ClusterNode`]s, the same protocol.
struct DemoCluster {
    nodes: Vec<ClusterNode<Bank>>,
    /// One store per node, for writers that bypass the actors.
    stores: Vec<Arc<dyn EventStore>>,
    /// Over NATS: the connection and name of the cluster whose bucket is removed at the end.
    bucket: Option<(async_nats::Client, String)>,
}

fn actor_config() -> ActorConfig {
    // No snapshots and no idle passivation: every rebuild in the demo replays events.
    ActorConfig::default()
        .snapshot_every(None)
        .snapshot_on_passivate(false)
        .idle_timeout(None)
        .max_conflict_retries(20)
}

impl DemoCluster {
    /// Three nodes in this process sharing `store`.
    async fn in_process(store: Arc<CountingStore<Notify<InMemoryEventStore>>>) -> CliResult<Self> {
        let network = LocalNetwork::new();
        let mut nodes = Vec::new();
        for id in NODES {
            // Quicker failure detection than over a network: nothing here is slow.
            let config = cluster_config("demo", id)
                .heartbeat_interval(Duration::from_millis(50))
                .failure_timeout(Duration::from_millis(400));
            let store = Arc::clone(&store) as Arc<dyn SnapshotStore>;
            nodes.push(ClusterNode::start_local(&network, config, Bank, store).await?);
        }
        for node in &nodes {
            node.wait_for_members(&NODES, Duration::from_secs(20))
                .await?;
        }
        Ok(Self {
            stores: nodes
                .iter()
                .map(|_| Arc::clone(&store) as Arc<dyn EventStore>)
                .collect(),
            nodes,
            bucket: None,
        })
    }

    /// The live nodes.
    fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.node_id().to_string()).collect()
    }

    /// The owner of `actor` under the current table.
    fn owner_of(&self, actor: &str) -> Option<String> {
        self.nodes.first().and_then(|n| n.owner_of(actor))
    }

    /// Sends a command from one of the nodes: the cluster routes it to the owner.
    async fn send(&self, actor: &str, command: BankCommand) -> Result<i64> {
        let via = (aether_cluster::stable_hash64(actor.as_bytes()) % self.nodes.len().max(1) as u64)
            as usize;
        match self.nodes.get(via) {
            Some(node) => node.send(actor, command).await,
            None => Err(Error::Closed("no node is running".into())),
        }
    }

    /// The actors active on `node`.
    fn active_on(&self, node: &str) -> Vec<String> {
        self.nodes
            .iter()
            .find(|n| n.node_id() == node)
            .map(|n| n.host().active_actors())
            .unwrap_or_default()
    }

    /// One store per live node.
    fn stores(&self) -> Vec<Arc<dyn EventStore>> {
        self.stores.clone()
    }

    /// Kills `node` without a goodbye and returns once the survivors own all shards.
    async fn kill(&mut self, node: &str) -> CliResult<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.node_id() == node)
            .ok_or_else(|| CliError::new(format!("no node {node}")))?;
        self.nodes.remove(i).kill().await;
        self.stores.remove(i);
        for survivor in &self.nodes {
            survivor
                .wait_for_assignment(Duration::from_secs(30), |a| {
                    a.is_complete() && !a.table.members.iter().any(|m| m == node)
                })
                .await?;
        }
        Ok(())
    }

    /// Stops what is left.
    async fn shutdown(&mut self) {
        for node in self.nodes.drain(..) {
            if let Err(e) = node.shutdown().await {
                tracing::warn!(error = %e, "node shutdown");
            }
        }
        // The cluster's bucket was only for this run.
        if let Some((admin, cluster_name)) = self.bucket.take() {
            let js = async_nats::jetstream::new(admin);
            if let Err(e) = js.delete_key_value(bucket_name(&cluster_name)).await {
                tracing::debug!(error = %e, "removing the demo cluster bucket");
            }
        }
    }
}

fn cluster_config(cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(200))
        .failure_timeout(Duration::from_millis(1500))
        .shards(ShardConfig::default().shard_count(SHARDS))
        .actors(actor_config())
        .storage(aether_nats::StorageKind::Memory)
}

async fn start_over_nats(
    url: &str,
    auth: &AuthArgs,
    counters: &Arc<Counters>,
    cluster_name: &str,
    painter: Painter,
) -> CliResult<(DemoCluster, NatsEventBus)> {
    let admin = connect(url, auth).await?;
    let bus = NatsEventBus::new(admin.clone(), NatsBusConfig::default()).await?;
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    let wait = spinner("starting three cluster nodes");
    for id in NODES {
        let client = connect(url, auth).await?;
        let js_store = Notify::new(
            JetStreamEventStore::new(
                client.clone(),
                JetStreamConfig::default().namespace(DEMO_STORE_NAMESPACE),
            )
            .await?,
            Arc::new(bus.clone()),
            DEMO_NAMESPACE,
        );
        let store: Arc<dyn SnapshotStore> =
            Arc::new(CountingStore::new(js_store, Arc::clone(counters)));
        let node = ClusterNode::start(
            client,
            cluster_config(cluster_name, id),
            Bank,
            Arc::clone(&store),
        )
        .await?;
        nodes.push(node);
        stores.push(store as Arc<dyn EventStore>);
    }
    for node in &nodes {
        node.wait_for_members(&NODES, Duration::from_secs(20))
            .await?;
    }
    wait.finish_and_clear();
    let a = nodes[0].assignment();
    println!(
        "cluster {} formed: leader {}, assignment epoch {}, {} shards",
        painter.cyan(cluster_name),
        a.table.leader,
        a.epoch,
        a.table.shard_count
    );
    Ok((
        DemoCluster {
            nodes,
            stores,
            bucket: Some((admin, cluster_name.to_string())),
        },
        bus,
    ))
}

// ---- the run ----

/// What the demo did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Accounts.
    pub actors: u32,
    /// Commands sent to accounts.
    pub commands: u64,
    /// Commands refused as the model says they must be.
    pub rejected: u64,
    /// Events stored.
    pub events_written: u64,
    /// Version conflicts, each retried.
    pub conflicts_retried: u64,
    /// Accounts per node before the kill.
    pub before: BTreeMap<String, usize>,
    /// Accounts per node after.
    pub after: BTreeMap<String, usize>,
    /// The killed node.
    pub killed: String,
    /// Its accounts, rebuilt elsewhere.
    pub moved: usize,
    /// Of them, those whose balance matched.
    pub verified: usize,
    /// `EventStored` notices seen on the bus.
    pub notices: u64,
}

/// Runs `aether demo`.
///
/// # Errors
/// Connection failures, or a balance that does not match after the failover.
pub async fn run(args: DemoArgs) -> CliResult<()> {
    let painter = Painter::stdout();
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let notices = Arc::new(AtomicU64::new(0));
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // The NATS buses must outlive the steps: dropping one ends its subscriptions.
    let mut buses: Vec<NatsEventBus> = Vec::new();
    let (mut cluster, prefix, mode): (DemoCluster, String, String) = match &args.nats {
        None => {
            let bus = Arc::new(EventBus::new());
            count_notices(bus.subscribe(DEMO_NAMESPACE).await?, &notices);
            let store = Arc::new(CountingStore::new(
                Notify::new(
                    InMemoryEventStore::new(),
                    Arc::clone(&bus) as Arc<dyn EventBroadcaster>,
                    DEMO_NAMESPACE,
                ),
                Arc::clone(&counters),
            ));
            println!(
                "{} in process: in-memory event store, local bus, 3 nodes ({}), {SHARDS} shards",
                painter.bold("Aether demo"),
                NODES.join(", ")
            );
            let wait = spinner("starting three cluster nodes");
            let cluster = DemoCluster::in_process(store).await?;
            wait.finish_and_clear();
            (cluster, "account".to_string(), "in process".to_string())
        }
        Some(url) => {
            println!(
                "{} over NATS at {url}: JetStream store (namespace {DEMO_STORE_NAMESPACE}), NATS bus, 3 cluster nodes",
                painter.bold("Aether demo"),
            );
            let cluster_name = format!("demo-{run_id}");
            let (c, bus) =
                start_over_nats(url, &args.auth, &counters, &cluster_name, painter).await?;
            // A separate connection listens, as another process would.
            let listener =
                NatsEventBus::new(connect(url, &args.auth).await?, NatsBusConfig::default())
                    .await?;
            // Live once `subscribe` returns: the bus confirms it with a round trip.
            count_notices(listener.subscribe(DEMO_NAMESPACE).await?, &notices);
            buses.push(bus);
            buses.push(listener);
            (
                c,
                format!("account-{run_id}"),
                format!("over NATS at {url}"),
            )
        }
    };

    let result = steps(&mut cluster, &args, &prefix, &counters, painter).await;
    let mut summary = match result {
        Ok(s) => s,
        Err(e) => {
            cluster.shutdown().await;
            return Err(e);
        }
    };

    // Notices travel asynchronously; give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while notices.load(Ordering::Relaxed) < summary.events_written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    summary.notices = notices.load(Ordering::Relaxed);
    cluster.shutdown().await;
    for bus in &buses {
        let _ = bus.close().await;
    }
    print!(
        "{}",
        render_summary(&summary, &mode, started.elapsed(), painter)
    );
    if args.nats.is_some() {
        println!(
            "look at one: aether events {prefix}-0000 --namespace {DEMO_STORE_NAMESPACE} --nats {}",
            args.nats.as_deref().unwrap_or_default()
        );
    }
    if summary.verified != summary.moved {
        return Err(CliError::new(format!(
            "{} of {} accounts of {} had a wrong balance after the failover",
            summary.moved - summary.verified,
            summary.moved,
            summary.killed
        )));
    }
    Ok(())
}

fn count_notices(mut sub: aether_core::Subscription, notices: &Arc<AtomicU64>) {
    let notices = Arc::clone(notices);
    tokio::spawn(async move {
        while let Some(d) = sub.recv().await {
            if let Delivery::Event(_) = d {
                notices.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

fn account(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i:04}")
}

fn placement(cluster: &DemoCluster, ids: &[String]) -> BTreeMap<String, usize> {
    let mut per_node: BTreeMap<String, usize> =
        cluster.nodes().into_iter().map(|n| (n, 0)).collect();
    for id in ids {
        if let Some(owner) = cluster.owner_of(id) {
            *per_node.entry(owner).or_default() += 1;
        }
    }
    per_node
}

async fn steps(
    cluster: &mut DemoCluster,
    args: &DemoArgs,
    prefix: &str,
    counters: &Arc<Counters>,
    painter: Painter,
) -> CliResult<Summary> {
    let n = args.actors;
    let ids: Vec<String> = (0..n).map(|i| account(prefix, i)).collect();
    let concurrency = 32;
    let mut summary = Summary {
        actors: n,
        ..Summary::default()
    };

    // 1. Open the accounts and run each one's script (its commands in order, accounts in
    //    parallel).
    println!(
        "\n{} opening {n} accounts and sending them deposits and withdrawals",
        painter.bold("1.")
    );
    let bar = progress(u64::from(n), "accounts");
    let shared: &DemoCluster = cluster;
    let results: Vec<Result<(u64, u64)>> = futures::stream::iter(0..n)
        .map(|i| {
            let id = &ids[i as usize];
            let bar = &bar;
            async move {
                let mut sent = 1u64;
                shared
                    .send(
                        id,
                        BankCommand::Open {
                            owner: format!("owner {i}"),
                        },
                    )
                    .await?;
                let (commands, _) = script(i);
                for c in commands {
                    sent += 1;
                    shared.send(id, c).await?;
                }
                // Every tenth account tries to overdraw, which the model refuses.
                let mut rejected = 0;
                if i % 10 == 0 {
                    sent += 1;
                    match shared.send(id, BankCommand::Withdraw(1_000_000)).await {
                        Err(Error::InvalidInput(_)) => rejected += 1,
                        Err(e) => return Err(e),
                        Ok(_) => return Err(Error::invalid(format!("{id} allowed an overdraft"))),
                    }
                }
                bar.inc(1);
                Ok((sent, rejected))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    for r in results {
        let (sent, rejected) = r?;
        summary.commands += sent;
        summary.rejected += rejected;
    }
    println!(
        "   {} commands handled, {} overdrafts refused by the accounts",
        summary.commands, summary.rejected
    );

    // 2. Placement.
    summary.before = placement(cluster, &ids);
    println!(
        "\n{} placement (by shard, {SHARDS} shards)",
        painter.bold("2.")
    );
    let mut t = Table::new(&["NODE", "ACCOUNTS", "ACTIVE ACTORS", "SAMPLE"]);
    for (node, count) in &summary.before {
        let active = cluster.active_on(node);
        let sample: Vec<&String> = ids
            .iter()
            .filter(|id| cluster.owner_of(id).as_deref() == Some(node))
            .take(2)
            .collect();
        t.row(vec![
            node.clone(),
            count.to_string(),
            active.len().to_string(),
            sample
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    print!("{}", indent(&t.render(painter)));

    // 3. Contention: one writer per node credits a shared ledger at the same time, retrying
    //    each version conflict.
    let ledger = format!("{prefix}-ledger");
    let stores = cluster.stores();
    println!(
        "\n{} {} writers credit {ledger} {WRITERS_CREDITS} times each, concurrently",
        painter.bold("3."),
        stores.len()
    );
    let conflicts_before = counters.conflicts.load(Ordering::Relaxed);
    let writers = stores.len() as u64;
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            let ledger = ledger.clone();
            tokio::spawn(async move { credit(store, &ledger, w).await })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| CliError::new(format!("a ledger writer failed: {e}")))??;
    }
    let ledger_version = cluster_version(cluster, &ledger).await?;
    println!(
        "   ledger at version {ledger_version} (expected {}), {} conflicts retried",
        writers * WRITERS_CREDITS,
        counters.conflicts.load(Ordering::Relaxed) - conflicts_before
    );

    // 4. Kill the node with the most accounts, so the failover has the most to show.
    let victim = summary
        .before
        .iter()
        .max_by_key(|(node, count)| (**count, std::cmp::Reverse((*node).clone())))
        .map(|(node, _)| node.clone())
        .unwrap_or_else(|| NODES[1].to_string());
    let victims: Vec<(u32, String)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| cluster.owner_of(id).as_deref() == Some(victim.as_str()))
        .map(|(i, id)| (i as u32, id.clone()))
        .collect();
    println!(
        "\n{} killing {} (it owns {} accounts, {} active)",
        painter.bold("4."),
        painter.red(&victim),
        victims.len(),
        cluster.active_on(&victim).len()
    );
    let wait = spinner("waiting for the survivors to take over its shards");
    let kill_started = Instant::now();
    cluster.kill(&victim).await?;
    wait.finish_and_clear();
    println!(
        "   shards moved to {} in {}",
        cluster.nodes().join(" and "),
        human_duration(kill_started.elapsed())
    );
    summary.killed = victim.clone();
    summary.after = placement(cluster, &ids);

    // 5. Its accounts answer from the survivors, rebuilt from their events.
    println!(
        "\n{} asking {}'s accounts for their balance",
        painter.bold("5."),
        victim
    );
    let bar = progress(victims.len() as u64, "rebuilding");
    let shared: &DemoCluster = cluster;
    let checks: Vec<Result<(u32, String, i64, i64)>> = futures::stream::iter(victims.iter())
        .map(|(i, id)| {
            let bar = &bar;
            async move {
                let balance = shared.send(id, BankCommand::Balance).await?;
                bar.inc(1);
                Ok((*i, id.clone(), balance, script(*i).1))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut checks: Vec<(u32, String, i64, i64)> =
        checks.into_iter().collect::<Result<Vec<_>>>()?;
    checks.sort();
    summary.moved = checks.len();
    summary.verified = checks.iter().filter(|c| c.2 == c.3).count();
    let mut t = Table::new(&["ACCOUNT", "WAS ON", "NOW ON", "BALANCE", "EXPECTED", ""]);
    for (_, id, balance, expected) in checks.iter().take(5) {
        t.row(vec![
            id.clone(),
            victim.clone(),
            cluster.owner_of(id).unwrap_or_default(),
            balance.to_string(),
            expected.to_string(),
            if balance == expected {
                painter.green("ok")
            } else {
                painter.red("WRONG")
            },
        ]);
    }
    print!("{}", indent(&t.render(painter)));
    println!(
        "   {} of {} balances match what was sent before the kill",
        summary.verified, summary.moved
    );

    summary.events_written = counters.events_written.load(Ordering::Relaxed);
    summary.conflicts_retried = counters.conflicts.load(Ordering::Relaxed);
    Ok(summary)
}

/// The ledger's version as the cluster's first store sees it.
async fn cluster_version(cluster: &DemoCluster, actor: &str) -> CliResult<u64> {
    match cluster.stores().first() {
        Some(s) => Ok(s.get_latest_version(actor).await?),
        None => Err(CliError::new("no store left")),
    }
}

/// Appends [`WRITERS_CREDITS`] credits to `ledger`, re-reading the version after each conflict.
async fn credit(store: Arc<dyn EventStore>, ledger: &str, writer: usize) -> CliResult<()> {
    for _ in 0..WRITERS_CREDITS {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let version = store.get_latest_version(ledger).await?;
            // Let the other writers in between the read and the write, as on a real network.
            tokio::task::yield_now().await;
            let event = Event::new("Credited", ledger, version + 1)
                .with_field("amount", 1)
                .with_field("writer", writer as u64);
            match store.save_event(&event).await {
                Ok(()) => break,
                Err(e) if e.is_version_conflict() && attempts < 1000 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

/// The final summary table.
pub fn render_summary(s: &Summary, mode: &str, took: Duration, painter: Painter) -> String {
    let per_node = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = Table::new::<&str>(&[]);
    let verified = format!("{} of {}", s.verified, s.moved);
    for (k, v) in [
        ("mode", mode.to_string()),
        ("accounts", s.actors.to_string()),
        ("commands sent", s.commands.to_string()),
        ("commands refused", s.rejected.to_string()),
        ("events written", s.events_written.to_string()),
        ("conflicts retried", s.conflicts_retried.to_string()),
        ("EventStored notices", s.notices.to_string()),
        ("accounts per node before", per_node(&s.before)),
        ("killed node", s.killed.clone()),
        ("accounts per node after", per_node(&s.after)),
        (
            "balances verified",
            if s.verified == s.moved {
                painter.green(&verified)
            } else {
                painter.red(&verified)
            },
        ),
        ("time taken", human_duration(took)),
    ] {
        t.row(vec![format!("{k}:"), v]);
    }
    format!("\n{}\n{}", painter.bold("Summary"), t.render(painter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_end_at_their_expected_balance() {
        for i in 0..50 {
            let (commands, expected) = script(i);
            let mut s = Account {
                open: true,
                ..Account::default()
            };
            for c in commands {
                for e in Bank.handle("a", &s, &c).unwrap() {
                    let ev = Event::new(e.event_type, "a", 1).with_data(e.data);
                    Bank.apply(&mut s, &ev);
                }
            }
            assert_eq!(s.balance, expected, "account {i}");
        }
        let closed = Account::default();
        assert!(Bank.handle("a", &closed, &BankCommand::Deposit(1)).is_err());
        assert!(Bank
            .handle(
                "a",
                &Account {
                    open: true,
                    ..closed
                },
                &BankCommand::Withdraw(1)
            )
            .is_err());
    }
}
