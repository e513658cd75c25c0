//! `aether projections`: the projections whose state is in a NATS key-value bucket, where
//! each one is, and its parked events; `reset` makes one start again from the beginning, and
//! `replay-parked` asks it to replay its parked events.
//!
//! Replaying parked events runs the application's handler, so this tool only records the
//! request in the bucket; the running projection replays them the next time it is idle
//! (`Projection::replay_parked`). Each partition of a partitioned projection is listed, and
//! addressed, as `<name>.p<partition>`.
//!
//! A projection whose sink keeps its own position writes no checkpoint; it reports its status
//! to the bucket instead, every few seconds at most, and is listed with that position, marked
//! as kept by the sink, with how old the report is.
//!
//! On a partitioned store (`--partitions`, detected when not given) a projection keeps one
//! checkpoint per log partition, `<name>.l<k>` (`<name>.l<k>.p<j>` for a worker's partition
//! `j`): each is listed, and its lag is measured against partition `k`'s head alone
//! ([`crate::heads`]). The footer gives every partition's head.

use std::time::Duration;

use aether_core::LogPosition;
use aether_projection::{
    NatsProjectionStore, PositionKeeper, ProjectionStore, ProjectionSummary,
    DEFAULT_PROJECTION_BUCKET,
};
use clap::{Args, Subcommand};

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::StreamArgs;
use crate::heads::LogHeads;
use crate::output::{human_duration, Painter, Table};

/// `aether projections ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// List the projections with their position, lag and parked events.
    List(ProjectionsArgs),
    /// One projection's position, lag and parked events.
    Status(NamedArgs),
    /// Forget a projection's checkpoint, so that it handles every event again from the start
    /// (clear its read model first; stop the projection while doing it).
    Reset(NamedArgs),
    /// A projection's parked events: position, actor (`type/id`), version, type, attempts, error.
    Parked(NamedArgs),
    /// Ask the running projection to handle its parked events again (after a fix); those
    /// that succeed leave the parked list.
    ReplayParked(NamedArgs),
}

/// Where the projections' state and events are.
#[derive(Debug, Clone, Args)]
pub struct ProjectionsArgs {
    /// The key-value bucket holding the projections' state.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROJECTION_BUCKET)]
    pub bucket: String,
    /// The event stream the projections read (for their lag).
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A projection by name.
#[derive(Debug, Clone, Args)]
pub struct NamedArgs {
    /// The projection's name.
    pub name: String,
    /// Where its state and events are.
    #[command(flatten)]
    pub at: ProjectionsArgs,
}

impl ProjectionsCommand {
    /// The connection options of the command.
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            Self::List(a) => &a.connect,
            Self::Status(a) | Self::Reset(a) | Self::Parked(a) | Self::ReplayParked(a) => {
                &a.at.connect
            }
        }
    }
}

struct Opened {
    state: NatsProjectionStore,
    client: async_nats::Client,
}

impl Opened {
    /// The log's heads, read now (unknown when the event stream does not exist).
    async fn heads(&self, stream: &StreamArgs) -> CliResult<LogHeads> {
        heads_of(&self.client, stream).await
    }
}

/// The heads of the event log `stream` describes, partition by partition: unknown when the
/// store does not exist (it is never created).
///
/// # Errors
/// `--partitions` disagreeing with the streams; the server's failures.
pub async fn heads_of(client: &async_nats::Client, stream: &StreamArgs) -> CliResult<LogHeads> {
    let context = async_nats::jetstream::new(client.clone());
    match stream.find(&context).await {
        Ok(streams) => {
            let store = streams.open_store(client).await?;
            Ok(LogHeads::read(std::sync::Arc::new(store)).await?)
        }
        Err(aether_core::Error::NotFound(_)) => Ok(LogHeads::unknown()),
        Err(aether_core::Error::InvalidInput(m)) => Err(CliError::new(m)),
        Err(e) => Err(e.into()),
    }
}

async fn open(args: &ProjectionsArgs) -> CliResult<Opened> {
    let client = args.connect.connect().await?;
    // Asking for a missing bucket must not create one.
    let connection = aether_nats::Connection::new(client.clone(), args.connect.monitor.clone());
    if aether_nats::KvBucket::open_existing(&connection, &args.bucket)
        .await?
        .is_none()
    {
        return Err(CliError::new(format!(
            "no projection state: bucket {} does not exist (no projection has run with it)",
            args.bucket
        )));
    }
    let state =
        NatsProjectionStore::open(client.clone(), &args.bucket, aether_core::StorageKind::File)
            .await?;
    Ok(Opened { state, client })
}

fn position(p: Option<LogPosition>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.to_string())
}

/// The columns of `list` and `status`.
const COLUMNS: [&str; 5] = [
    "PROJECTION",
    "POSITION",
    "LAG",
    "PARKED",
    "POSITION KEPT BY",
];

/// How many status intervals a report may be late before it is called stale: the projection
/// has most likely stopped.
const STALE_AFTER_INTERVALS: u32 = 3;

/// One projection's row. The lag of a position kept by the sink is counted from its last
/// report to the head now: at most one status interval's events more than the truth. On a
/// partitioned log the head is that of the checkpoint's log partition; `-` when none applies.
fn row(s: &ProjectionSummary, heads: &LogHeads) -> Vec<String> {
    let kept_by = match (&s.kept_by, &s.reported) {
        (PositionKeeper::Sink, Some(r)) => {
            let age = (chrono::Utc::now() - r.reported_at)
                .to_std()
                .unwrap_or_default();
            let interval = Duration::from_millis(r.interval_ms.max(1));
            let stale = if age > interval * STALE_AFTER_INTERVALS {
                ", stale: not running?"
            } else {
                ""
            };
            let when = if age < Duration::from_secs(1) {
                "just now".to_string()
            } else {
                format!("{} ago", human_duration(Duration::from_secs(age.as_secs())))
            };
            format!("sink (reported {when}{stale})")
        }
        (PositionKeeper::Sink, None) => "sink".to_string(),
        (PositionKeeper::Store, _) => "checkpoint".to_string(),
    };
    vec![
        s.name.clone(),
        position(s.position),
        heads
            .lag_of(&s.name, s.position)
            .map_or_else(|| "-".to_string(), |l| l.to_string()),
        s.parked.to_string(),
        kept_by,
    ]
}

/// The closing lines under a table: the head (every partition's), and what "sink" means
/// when a row says it.
fn footer(summaries: &[ProjectionSummary], heads: &LogHeads) -> String {
    let mut out = if !heads.known() {
        "head of the stream: - (no event stream)\n".to_string()
    } else if heads.partitioned() {
        let each: Vec<String> = heads
            .partitions
            .iter()
            .enumerate()
            .map(|(k, h)| format!("l{k} {}", position(*h)))
            .collect();
        format!(
            "heads of the {} log partitions: {} (a checkpoint <name>.l<k> lags behind partition k's)\n",
            heads.partitions.len(),
            each.join(", ")
        )
    } else {
        format!("head of the stream: {}\n", position(heads.single()))
    };
    if summaries.iter().any(|s| s.kept_by == PositionKeeper::Sink) {
        out.push_str(
            "sink: the position is kept by the projection's sink, with its updates; shown as \
             the projection last reported it\n",
        );
    }
    out
}

/// Runs `aether projections ...`.
///
/// # Errors
/// Connection failures, a missing bucket or stream, an unknown projection.
pub async fn run(cmd: ProjectionsCommand) -> CliResult<()> {
    let painter = Painter::stdout();
    match cmd {
        ProjectionsCommand::List(args) => {
            let o = open(&args).await?;
            let heads = o.heads(&args.stream).await?;
            let summaries = o.state.summaries().await?;
            let mut t = Table::new(&COLUMNS);
            for s in &summaries {
                t.row(row(s, &heads));
            }
            if t.is_empty() {
                println!("no projections in bucket {}", args.bucket);
            } else {
                print!("{}", t.render(painter));
                print!("{}", footer(&summaries, &heads));
            }
        }
        ProjectionsCommand::Status(args) => {
            let o = open(&args.at).await?;
            let summary = known(&o, &args.name).await?;
            let heads = o.heads(&args.at.stream).await?;
            let mut t = Table::new(&COLUMNS);
            t.row(row(&summary, &heads));
            print!("{}", t.render(painter));
            print!("{}", footer(std::slice::from_ref(&summary), &heads));
            if let Some(r) = &summary.reported {
                if let Some(e) = &r.last_error {
                    println!("last error: {}", crate::output::escape(e));
                }
                if r.paused {
                    println!("paused");
                }
            }
        }
        ProjectionsCommand::Reset(args) => {
            let o = open(&args.at).await?;
            if known(&o, &args.name).await?.kept_by == PositionKeeper::Sink {
                return Err(CliError::new(format!(
                    "{}: its position is kept by its sink, not in bucket {}: reset it there \
                     (clear the read model and its position)",
                    args.name, args.at.bucket
                )));
            }
            o.state.clear_checkpoint(&args.name).await?;
            println!(
                "{}: checkpoint cleared; it handles every event again when it next runs",
                args.name
            );
        }
        ProjectionsCommand::Parked(args) => {
            let o = open(&args.at).await?;
            known(&o, &args.name).await?;
            let parked = o.state.parked(&args.name).await?;
            if parked.is_empty() {
                println!("{}: no parked events", args.name);
                return Ok(());
            }
            let mut t = Table::new(&["POSITION", "ACTOR", "VERSION", "TYPE", "ATTEMPTS", "ERROR"]);
            for p in parked {
                t.row(vec![
                    p.position.to_string(),
                    crate::output::actor_name(p.event.actor_key()),
                    p.event.version.to_string(),
                    p.event.event_type,
                    p.attempts.to_string(),
                    p.error,
                ]);
            }
            print!("{}", t.render(painter));
        }
        ProjectionsCommand::ReplayParked(args) => {
            let o = open(&args.at).await?;
            known(&o, &args.name).await?;
            let parked = o.state.parked(&args.name).await?.len();
            o.state.request_replay(&args.name).await?;
            println!(
                "{}: replay of {parked} parked event(s) requested; the running projection replays them when next idle",
                args.name
            );
        }
    }
    Ok(())
}

/// The projection named `name`, or a "no projection named" error.
async fn known(o: &Opened, name: &str) -> CliResult<ProjectionSummary> {
    // Names are letters, digits, '-' and '_' (and ".p<k>" for a partition): anything else
    // is no key of the bucket.
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(CliError::new(format!("no projection named {name:?}")));
    }
    o.state
        .summary(name)
        .await?
        .ok_or_else(|| CliError::new(format!("no projection named {name:?}")))
}
