//! `aether cluster members` and `aether cluster shards`: a running cluster seen from outside.
//!
//! Read-only: the command never joins the cluster. It reads the leader lease and the
//! assignment table from the cluster's key-value bucket and listens to the members'
//! heartbeats for a moment.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use aether_cluster::routing::{bucket_name, decode, Heartbeat, Subjects};
use aether_cluster::{
    Assignment, AssignmentTable, LeaderLease, ASSIGNMENT_KEY, DEFAULT_CLUSTER_NAME, LEADER_KEY,
};
use async_nats::jetstream::{self, kv};
use clap::{Args, Subcommand};
use futures::StreamExt;
use tokio::time::Instant;

use crate::connect::{jetstream_hint, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::output::{escape, ranges, Painter, Table};

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
/// Connection failures, an unknown cluster, undecodable bucket contents.
pub async fn run(cmd: ClusterCommand) -> CliResult<()> {
    match cmd {
        ClusterCommand::Members(args) => members(args).await,
        ClusterCommand::Shards(args) => shards(args).await,
    }
}

/// What the cluster's bucket says.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// The assignment table, if one was written.
    pub assignment: Option<Assignment>,
    /// The leader lease, if held.
    pub leader: Option<LeaderLease>,
}

fn check_name(name: &str) -> CliResult<()> {
    Ok(aether_cluster::validate_name("cluster name", name)?)
}

/// Reads the leader lease and assignment table of cluster `name`.
///
/// # Errors
/// An unknown cluster (no bucket), server failures, undecodable values.
pub async fn read_state(client: &async_nats::Client, name: &str) -> CliResult<ClusterState> {
    check_name(name)?;
    let js = jetstream::new(client.clone());
    let bucket = bucket_name(name);
    let kv = open(&js, &bucket, name).await?;
    let assignment = match entry(&kv, ASSIGNMENT_KEY, &bucket).await? {
        Some((value, revision)) => {
            let table: AssignmentTable = decode(&value).map_err(|e| {
                CliError::new(format!(
                    "the assignment table in {bucket} is unreadable: {e}"
                ))
            })?;
            Some(Assignment {
                epoch: revision,
                table,
            })
        }
        None => None,
    };
    let leader = match entry(&kv, LEADER_KEY, &bucket).await? {
        Some((value, _)) => decode::<LeaderLease>(&value).ok(),
        None => None,
    };
    Ok(ClusterState { assignment, leader })
}

async fn open(js: &jetstream::Context, bucket: &str, name: &str) -> CliResult<kv::Store> {
    // Look for the bucket's stream first: asking for a missing bucket must not create one.
    match js.get_stream(format!("KV_{bucket}")).await {
        Ok(_) => {}
        Err(e) => {
            let text = e.to_string().to_lowercase();
            if text.contains("not found") {
                return Err(CliError::new(format!(
                    "cluster {name} not found (no bucket {bucket}; has a node of it ever started?)"
                )));
            }
            return Err(jetstream_hint(&format!("looking up cluster {name}"), &e));
        }
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| jetstream_hint(&format!("opening bucket {bucket}"), &e))
}

async fn entry(kv: &kv::Store, key: &str, bucket: &str) -> CliResult<Option<(bytes::Bytes, u64)>> {
    match kv.entry(key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some((e.value, e.revision))),
        Ok(_) => Ok(None),
        Err(e) => Err(jetstream_hint(&format!("reading {key} from {bucket}"), &e)),
    }
}

/// A member as heard over a listening window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardMember {
    /// The node.
    pub node_id: String,
    /// Its incarnation.
    pub incarnation: String,
    /// Its last heartbeat sequence number.
    pub seq: u64,
    /// Milliseconds between the start of listening and its last heartbeat.
    pub last_heard_ms: u64,
}

/// The most distinct nodes [`listen`] keeps: anyone allowed to publish on the heartbeat
/// subject can make up ids, and a listing must stay bounded.
pub const MAX_HEARD: usize = 1024;

/// Listens to the heartbeats of cluster `name` for at most `window`, stopping early once
/// every node in `expected` has been heard (plus a short grace for others). Heartbeats whose
/// node id breaks the naming rule are ignored, as the nodes themselves ignore them, and at
/// most [`MAX_HEARD`] nodes are kept.
///
/// # Errors
/// The subscription failing.
pub async fn listen(
    client: &async_nats::Client,
    name: &str,
    expected: &[String],
    window: Duration,
) -> CliResult<BTreeMap<String, HeardMember>> {
    let subject = Subjects::new(name).heartbeat();
    let mut sub = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| CliError::context(format!("subscribing to {subject}"), &e))?;
    let started = Instant::now();
    let mut deadline = started + window;
    let mut heard: BTreeMap<String, HeardMember> = BTreeMap::new();
    let mut grace_set = false;
    loop {
        let msg = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let Ok(hb) = decode::<Heartbeat>(&msg.payload) else {
            continue;
        };
        hear(&mut heard, hb, started.elapsed().as_millis() as u64);
        if !grace_set && !expected.is_empty() && expected.iter().all(|n| heard.contains_key(n)) {
            grace_set = true;
            deadline = deadline.min(Instant::now() + Duration::from_millis(300));
        }
    }
    Ok(heard)
}

/// Records one heartbeat, unless its node id breaks the naming rule or the listing is full.
fn hear(heard: &mut BTreeMap<String, HeardMember>, hb: Heartbeat, at_ms: u64) {
    if aether_cluster::validate_name("node id", &hb.node_id).is_err()
        || (heard.len() >= MAX_HEARD && !heard.contains_key(&hb.node_id))
    {
        return;
    }
    heard.insert(
        hb.node_id.clone(),
        HeardMember {
            node_id: hb.node_id,
            incarnation: hb.incarnation,
            seq: hb.seq,
            last_heard_ms: at_ms,
        },
    );
}

async fn members(args: MembersArgs) -> CliResult<()> {
    let name = &args.cluster.cluster;
    let client = args.cluster.connect.connect().await?;
    let state = read_state(&client, name).await?;
    let expected: Vec<String> = state
        .assignment
        .as_ref()
        .map(|a| a.table.members.clone())
        .unwrap_or_default();
    let heard = listen(
        &client,
        name,
        &expected,
        Duration::from_millis(args.listen.max(1)),
    )
    .await?;
    print!(
        "{}",
        render_members(name, &state, &heard, Painter::stdout())
    );
    Ok(())
}

/// The members as a table: node, status, leader, shards owned, incarnation. Node ids and
/// incarnations come from the members' heartbeats and the bucket: they are escaped
/// ([`escape`]).
pub fn render_members(
    name: &str,
    state: &ClusterState,
    heard: &BTreeMap<String, HeardMember>,
    painter: Painter,
) -> String {
    let mut nodes: Vec<String> = heard.keys().cloned().collect();
    if let Some(a) = &state.assignment {
        nodes.extend(a.table.members.iter().cloned());
    }
    nodes.sort();
    nodes.dedup();
    let leader = state.leader.as_ref().map(|l| l.node_id.as_str());
    let mut out = format!(
        "cluster {}: {} alive, leader {}\n",
        painter.cyan(name),
        heard.len(),
        escape(leader.unwrap_or("none"))
    );
    let mut table = Table::new(&[
        "NODE",
        "STATUS",
        "LEADER",
        "SHARDS",
        "INCARNATION",
        "LAST HEARTBEAT",
    ]);
    for node in &nodes {
        let h = heard.get(node);
        let status = if h.is_some() {
            painter.green("alive")
        } else {
            painter.red("silent")
        };
        let shards = state
            .assignment
            .as_ref()
            .map(|a| a.primaries_of(node).len().to_string())
            .unwrap_or_else(|| "-".into());
        table.row(vec![
            escape(node).into_owned(),
            status,
            if leader == Some(node.as_str()) {
                "yes".into()
            } else {
                String::new()
            },
            shards,
            h.map(|h| escape(&h.incarnation).into_owned())
                .unwrap_or_else(|| "-".into()),
            h.map(|h| format!("seq {}", h.seq))
                .unwrap_or_else(|| "not heard".into()),
        ]);
    }
    if nodes.is_empty() {
        out.push_str("no members heard and no assignment table\n");
    } else {
        out.push_str(&table.render(painter));
    }
    out
}

async fn shards(args: ShardsArgs) -> CliResult<()> {
    let name = &args.cluster.cluster;
    let client = args.cluster.connect.connect().await?;
    let state = read_state(&client, name).await?;
    let Some(assignment) = &state.assignment else {
        return Err(CliError::new(format!(
            "cluster {name} has no shard table yet (no leader has written one)"
        )));
    };
    print!(
        "{}",
        render_shards(name, assignment, args.all, Painter::stdout())
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

    #[test]
    fn heard_nodes_follow_the_naming_rule_and_stay_bounded() {
        let sample = Heartbeat {
            node_id: "n".into(),
            incarnation: "i".into(),
            seq: 1,
        };
        let mut heard = BTreeMap::new();
        for id in ["<img src=x>", "", "a.b", &"x".repeat(65)] {
            hear(
                &mut heard,
                Heartbeat {
                    node_id: id.to_string(),
                    ..sample.clone()
                },
                1,
            );
        }
        assert!(heard.is_empty(), "{heard:?}");
        for i in 0..MAX_HEARD + 50 {
            hear(
                &mut heard,
                Heartbeat {
                    node_id: format!("n-{i}"),
                    ..sample.clone()
                },
                1,
            );
        }
        assert_eq!(heard.len(), MAX_HEARD);
        // Nodes already listed are still updated when the listing is full.
        hear(
            &mut heard,
            Heartbeat {
                node_id: "n-0".into(),
                seq: 9,
                ..sample
            },
            2,
        );
        assert_eq!(heard["n-0"].seq, 9);
    }

    #[test]
    fn node_ids_from_heartbeats_are_escaped() {
        let evil = "node\u{1b}]0;owned\u{7}\u{9b}2J\u{202e}".to_string();
        let heard = BTreeMap::from([(
            evil.clone(),
            HeardMember {
                node_id: evil.clone(),
                incarnation: format!("inc{evil}"),
                seq: 3,
                last_heard_ms: 10,
            },
        )]);
        let state = ClusterState {
            assignment: None,
            leader: Some(LeaderLease {
                node_id: evil.clone(),
                incarnation: "i".into(),
                term: 1,
            }),
        };
        let text = render_members("c", &state, &heard, Painter::plain());
        for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(!text.contains(bad), "{text:?}");
        }
        assert!(text.contains("node\\x1b]0;owned\\x07"), "{text}");
    }
}
