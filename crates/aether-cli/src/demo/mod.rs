//! `aether demo`: bank-account actors on a three-node cluster.
//!
//! The demo opens a few hundred accounts, sends them deposits and withdrawals, shows which node
//! owns which accounts, lets three writers race on one shared ledger (version conflicts,
//! retried), kills one node and shows its accounts answering from the survivors with their
//! balances rebuilt from the stored events, moves money between accounts in transactions
//! (each transfer changes two accounts atomically; the total is conserved), and ends with a
//! summary.
//!
//! Two ways to run it, with the same steps:
//! - **In process** (the default, no server): one [`InMemoryEventStore`], the local
//!   [`EventBus`], and three [`ClusterNode`]s on a [`LocalNetwork`]: the same nodes and
//!   protocol as over NATS (heartbeats, a leader, the assignment table, fencing, failover),
//!   with an in-process network instead of a server.
//! - **Over NATS** (`--nats URL` or `NATS_URL`): three [`ClusterNode`]s on their own
//!   connections, each with a [`JetStreamEventStore`] on the same stream, heartbeats, a leader
//!   and the assignment table in JetStream key-value, and [`NatsEventBus`] notices.
//!
//! The model (accounts and the store wrapper that counts), the cluster (in process or over
//! NATS), and the numbered steps each have their own module; this one holds the arguments, the
//! run that ties them together, and the summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_bus::{EventBus, NatsBusConfig, NatsEventBus};
use aether_core::{Delivery, EventBroadcaster};
use aether_store::{InMemoryEventStore, Notify};
use clap::Args;

use crate::connect::{connect, AuthArgs};
use crate::error::{CliError, CliResult};
use crate::output::{human_duration, spinner, Painter, Table};

// Named only by links in the module documentation.
#[cfg(doc)]
use aether_cluster::{ClusterNode, LocalNetwork};
#[cfg(doc)]
use aether_store::JetStreamEventStore;

mod cluster;
mod model;
mod steps;

use cluster::{start_over_nats, DemoCluster};
pub use model::{
    script, transfer_decision, Account, Bank, BankCommand, BankError, BankEvent, Counters,
    CountingStore,
};
use steps::steps;

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
    /// After the demo, keep its cluster running and serve the dashboard (`aether ui`) on this
    /// address until Ctrl-C (with --nats).
    #[arg(long, value_name = "ADDR", requires = "nats")]
    pub ui: Option<std::net::SocketAddr>,
    /// Who may reach the dashboard (with --ui).
    #[command(flatten)]
    pub ui_access: crate::ui::AccessArgs,
}

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
    /// Transfers committed (each one transaction over two accounts).
    pub transfers: u64,
    /// Transfers refused (the payer short of money).
    pub transfers_refused: u64,
    /// The accounts' total before and after the transfers; `None` when the store cannot
    /// commit transactions (nats-server before 2.12).
    pub totals: Option<(i64, i64)>,
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
    let cluster_name = format!("demo-{run_id}");
    // A dashboard that would be refused is refused before the demo runs.
    let ui_token = match args.ui {
        Some(address) => args.ui_access.token_for(address)?,
        None => None,
    };
    // The dashboard's /metrics shows the nodes' own metrics: the recorder goes in first.
    let metrics = match args.ui {
        Some(_) => Some(
            crate::ui::prometheus_builder()
                .install_recorder()
                .map_err(|e| CliError::new(format!("installing the metrics recorder: {e}")))?,
        ),
        None => None,
    };

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
                "{} over NATS at {}: JetStream store (namespace {DEMO_STORE_NAMESPACE}), NATS bus, 3 cluster nodes",
                painter.bold("Aether demo"),
                aether_nats::redact_url(url),
            );
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
                format!("over NATS at {}", aether_nats::redact_url(url)),
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
    print!(
        "{}",
        render_summary(&summary, &mode, started.elapsed(), painter)
    );
    if let (Some(address), Some(url)) = (args.ui, args.nats.as_deref()) {
        let served =
            serve_dashboard(url, &args.auth, address, &cluster_name, ui_token, metrics).await;
        if let Err(e) = served {
            cluster.shutdown().await;
            return Err(e);
        }
    }
    cluster.shutdown().await;
    for bus in &buses {
        let _ = bus.close().await;
    }
    if args.nats.is_some() {
        println!(
            "look at one: aether events {prefix}-0000 --type {} --namespace {DEMO_STORE_NAMESPACE} --nats {}",
            <Bank as aether_actor::Actor>::TYPE,
            aether_nats::redact_url(args.nats.as_deref().unwrap_or_default())
        );
    }
    if let Some((before, after)) = summary.totals {
        if before != after {
            return Err(CliError::new(format!(
                "the transfers changed the accounts' total from {before} to {after}"
            )));
        }
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

/// Serves the dashboard over the demo's cluster and store until Ctrl-C.
async fn serve_dashboard(
    url: &str,
    auth: &AuthArgs,
    address: std::net::SocketAddr,
    cluster_name: &str,
    token: Option<String>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> CliResult<()> {
    let client =
        crate::connect::connect_with_capacity(url, auth, crate::ui::SUBSCRIPTION_CAPACITY).await?;
    let config = crate::ui::DashboardConfig {
        cluster: cluster_name.to_string(),
        stream: crate::events::StreamArgs {
            namespace: Some(DEMO_STORE_NAMESPACE.into()),
            ..crate::events::StreamArgs::default()
        },
        token,
        metrics,
        ..crate::ui::DashboardConfig::default()
    };
    crate::ui::serve_until_ctrl_c(
        client,
        config,
        address,
        " : the demo's cluster keeps running until Ctrl-C",
    )
    .await
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
            "transfers",
            match s.totals {
                Some((before, after)) => {
                    let text = format!(
                        "{} committed, {} refused; total {before} → {after}",
                        s.transfers, s.transfers_refused
                    );
                    if before == after {
                        painter.green(&text)
                    } else {
                        painter.red(&text)
                    }
                }
                None => "none: the server cannot commit transactions (needs 2.12+)".to_string(),
            },
        ),
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
