//! `aether cluster members` and `aether cluster shards`: a running cluster seen from outside.
//!
//! Read-only: the command never joins the cluster. It reads it through
//! [`aether_cluster::ClusterObserver`]: the leader lease and the assignment table, and the
//! members' heartbeats for a moment.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use aether_cluster::{
    Assignment, ClusterObserver, ClusterRecord, ClusterSnapshot, ObservedMember, ObserverConfig,
    Presence, DEFAULT_CLUSTER_NAME,
};
use aether_core::Error;
use clap::{Args, Subcommand};
use tokio::time::Instant;

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{escape, human_duration, ranges, Painter, Table};

/// `aether cluster ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Live members (from their heartbeats), the leader, and the shards each one owns.
    Members(MembersArgs),
    /// The shard table: epoch, leader, and which node owns which shards.
    Shards(ShardsArgs),
}

/// Which cluster (shared).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Name of the cluster.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster: String,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `aether cluster members`.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to listen for heartbeats at most, in milliseconds (it stops earlier once every
    /// member of the table has been heard).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub listen: u64,
}

/// Arguments of `aether cluster shards`.
#[derive(Debug, Clone, Args)]
pub struct ShardsArgs {
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print every shard on its own line.
    #[arg(long)]
    pub all: bool,
}

/// Runs a `cluster` subcommand.
///
/// # Errors
/// Connection failures, an unknown cluster, an unreadable shard table.
pub async fn run(cmd: ClusterCommand) -> CliResult<()> {
    match cmd {
        ClusterCommand::Members(args) => members(args).await,
        ClusterCommand::Shards(args) => shards(args).await,
    }
}

/// Connects as `args` say and opens an observer of the cluster they name.
///
/// # Errors
/// Connection failures; the observer's errors as one line: a cluster name that breaks the
/// naming rule, an unknown cluster (no node of it ever started on this server), refusals.
pub async fn observe(args: &ClusterArgs) -> CliResult<ClusterObserver> {
    let client = args.connect.connect().await?;
    let connection = aether_nats::Connection::new(client, args.connect.monitor.clone());
    ClusterObserver::open(
        connection,
        ObserverConfig::default().cluster_name(args.cluster.clone()),
    )
    .await
    .map_err(|e| match e {
        // Already a sentence about the cluster: "cluster x not found (...)".
        Error::NotFound(message) => CliError::new(message),
        other => CliError::from(other),
    })
}

/// After every member of the table has been heard: how long to wait for nodes the table does
/// not list (yet).
const GRACE: Duration = Duration::from_millis(300);

/// Listens for at most `window` and returns what is known then; stops early, after a short
/// grace for nodes the table does not list, once every member of the table has been heard.
pub async fn listen(observer: &ClusterObserver, window: Duration) -> ClusterSnapshot {
    let deadline = Instant::now() + window;
    let all_listed_heard = |s: &ClusterSnapshot| {
        let mut listed = s.members.iter().filter(|m| m.listed).peekable();
        listed.peek().is_some() && listed.all(|m| m.presence == Presence::Alive)
    };
    if observer.wait_for(window, all_listed_heard).await.is_ok() {
        tokio::time::sleep_until(deadline.min(Instant::now() + GRACE)).await;
    }
    observer.snapshot()
}

/// The error for a snapshot whose assignment table cannot be decoded, if it has one.
fn unreadable_table(snapshot: &ClusterSnapshot) -> Option<CliError> {
    snapshot
        .unreadable
        .iter()
        .find(|u| u.record == ClusterRecord::AssignmentTable)
        .map(|u| {
            CliError::new(format!(
                "the assignment table of cluster {} is unreadable (revision {}): {}",
                snapshot.cluster, u.revision, u.reason
            ))
        })
}

async fn members(args: MembersArgs) -> CliResult<()> {
    let observer = observe(&args.cluster).await?;
    let snapshot = listen(&observer, Duration::from_millis(args.listen.max(1))).await;
    if let Some(e) = unreadable_table(&snapshot) {
        eprintln!("warning: {e}");
    }
    if let Some(u) = snapshot
        .unreadable
        .iter()
        .find(|u| u.record == ClusterRecord::LeaderLease)
    {
        eprintln!(
            "warning: the leader lease of cluster {} is unreadable (revision {}): {}",
            escape(&snapshot.cluster),
            u.revision,
            escape(&u.reason)
        );
    }
    print!("{}", render_members(&snapshot, Painter::stdout()));
    Ok(())
}

/// The members as a table: node, status, leader, shards owned, incarnation, last heartbeat.
/// Node ids from heartbeats follow the naming rule, but those of the assignment table and
/// the lease are what the bucket says: everything is escaped ([`escape`]).
pub fn render_members(snapshot: &ClusterSnapshot, painter: Painter) -> String {
    let leader = snapshot.leader.as_ref().map(|l| l.node_id.as_str());
    let mut out = format!(
        "cluster {}: {} alive, leader {}\n",
        painter.cyan(&escape(&snapshot.cluster)),
        snapshot.alive(),
        escape(leader.unwrap_or("none"))
    );
    let mut table = Table::new(&[
        "NODE",
        "STATUS",
        "LEADER",
        "SHARDS",
        "INCARNATION",
        "WIRE",
        "LAST HEARTBEAT",
    ]);
    for m in &snapshot.members {
        table.row(vec![
            escape(&m.node_id).into_owned(),
            status(m, painter),
            if m.leader {
                "yes".into()
            } else {
                String::new()
            },
            if snapshot.assignment.is_some() {
                m.primaries.to_string()
            } else {
                "-".into()
            },
            m.incarnation
                .as_deref()
                .map_or_else(|| "-".into(), |i| escape(i).into_owned()),
            m.speaks.map_or_else(|| "-".into(), |v| format!("v{v}")),
            match (m.seq, m.since_heard) {
                (Some(seq), Some(ago)) => format!("seq {seq}, {} ago", human_duration(ago)),
                _ => "not heard".into(),
            },
        ]);
    }
    if snapshot.members.is_empty() {
        out.push_str("no members heard and no assignment table\n");
    } else {
        out.push_str(&table.render(painter));
    }
    out
}

fn status(m: &ObservedMember, painter: Painter) -> String {
    match m.presence {
        Presence::Alive => painter.green("alive"),
        Presence::Left => painter.yellow("left"),
        Presence::Silent | Presence::Unheard => painter.red("silent"),
    }
}

async fn shards(args: ShardsArgs) -> CliResult<()> {
    let observer = observe(&args.cluster).await?;
    let snapshot = observer.snapshot();
    if let Some(e) = unreadable_table(&snapshot) {
        return Err(e);
    }
    let Some(assignment) = &snapshot.assignment else {
        return Err(CliError::new(format!(
            "cluster {} has no shard table yet (no leader has written one)",
            args.cluster.cluster
        )));
    };
    print!(
        "{}",
        render_shards(
            &args.cluster.cluster,
            assignment,
            args.all,
            Painter::stdout()
        )
    );
    Ok(())
}

/// The shard table: a header, one line per node with its shard count and ranges, and with
/// `all` one line per shard. Node ids are escaped ([`escape`]).
pub fn render_shards(name: &str, a: &Assignment, all: bool, painter: Painter) -> String {
    let t = &a.table;
    let mut out = format!(
        "cluster {}: epoch {}, term {}, leader {}, {} shards, replication {}, members {}\n",
        painter.cyan(name),
        a.epoch,
        t.term,
        if t.leader.is_empty() {
            Cow::Borrowed("none")
        } else {
            escape(&t.leader)
        },
        t.shard_count,
        t.replication_factor,
        escape(&t.members.join(", "))
    );
    let mut owners: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut unassigned = Vec::new();
    for (i, nodes) in t.shards.iter().enumerate() {
        match nodes.first() {
            Some(n) => owners.entry(n.clone()).or_default().push(i as u32),
            None => unassigned.push(i as u32),
        }
    }
    let mut table = Table::new(&["NODE", "SHARDS", "OWNED (PRIMARY)"]);
    for (node, shards) in &owners {
        table.row(vec![
            escape(node).into_owned(),
            shards.len().to_string(),
            ranges(shards),
        ]);
    }
    if !unassigned.is_empty() {
        table.row(vec![
            painter.yellow("(unassigned)"),
            unassigned.len().to_string(),
            ranges(&unassigned),
        ]);
    }
    out.push_str(&table.render(painter));
    if all {
        let mut rows = Table::new(&["SHARD", "NODES (PRIMARY FIRST)"]);
        for (i, nodes) in t.shards.iter().enumerate() {
            rows.row(vec![i.to_string(), escape(&nodes.join(", ")).into_owned()]);
        }
        out.push('\n');
        out.push_str(&rows.render(painter));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_cluster::{AssignmentTable, ObservedLeader};
    use std::sync::Arc;

    #[test]
    fn node_ids_from_the_bucket_are_escaped() {
        // Heartbeats with such ids are refused by the observer, but the table and the lease
        // say what whoever wrote the bucket wrote.
        let evil = "node\u{1b}]0;owned\u{7}\u{9b}2J\u{202e}".to_string();
        let snapshot = ClusterSnapshot {
            cluster: "c".into(),
            leader: Some(ObservedLeader {
                node_id: evil.clone(),
                incarnation: "i".into(),
                term: 1,
                revision: 2,
                since_renewal: Duration::ZERO,
                expired: false,
            }),
            assignment: Some(Arc::new(Assignment {
                epoch: 3,
                table: AssignmentTable {
                    members: vec![evil.clone()],
                    shards: vec![vec![evil.clone()]],
                    ..AssignmentTable::empty(1, 1)
                },
            })),
            members: vec![ObservedMember {
                node_id: evil.clone(),
                presence: Presence::Alive,
                incarnation: Some(format!("inc{evil}")),
                seq: Some(3),
                speaks: Some(3),
                since_heard: Some(Duration::from_millis(10)),
                listed: true,
                leader: true,
                primaries: 1,
            }],
            ..ClusterSnapshot::default()
        };
        let text = render_members(&snapshot, Painter::plain());
        let shards = render_shards(
            "c",
            snapshot.assignment.as_ref().unwrap(),
            true,
            Painter::plain(),
        );
        for out in [&text, &shards] {
            for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
                assert!(!out.contains(bad), "{out:?}");
            }
            assert!(out.contains("node\\x1b]0;owned\\x07"), "{out}");
        }
        assert!(text.contains("1 alive"), "{text}");
        assert!(text.contains("seq 3, 10ms ago"), "{text}");
    }

    #[test]
    fn members_not_heard_are_shown_silent_and_without_a_table_shards_are_unknown() {
        let snapshot = ClusterSnapshot {
            cluster: "c".into(),
            members: vec![ObservedMember {
                node_id: "a".into(),
                ..ObservedMember::default()
            }],
            ..ClusterSnapshot::default()
        };
        let text = render_members(&snapshot, Painter::plain());
        let row = text.lines().find(|l| l.starts_with("a ")).expect(&text);
        assert!(
            row.contains("silent") && row.contains("not heard") && row.contains(" - "),
            "{row}"
        );
        assert!(
            text.starts_with("cluster c: 0 alive, leader none"),
            "{text}"
        );
        let empty = render_members(&ClusterSnapshot::default(), Painter::plain());
        assert!(empty.contains("no members heard"), "{empty}");
    }
}
