//! `aether projections`: the projections whose state is in a NATS key-value bucket, where
//! each one is, and its parked events; `reset` makes one start again from the beginning, and
//! `replay-parked` asks it to replay its parked events.
//!
//! Replaying parked events runs the application's handler, so this tool only records the
//! request in the bucket; the running projection replays them the next time it is idle
//! (`Projection::replay_parked`). Each partition of a partitioned projection is listed, and
//! addressed, as `<name>.p<partition>`.

use std::sync::Arc;

use aether_core::{EventLog, LogPosition};
use aether_projection::{NatsProjectionStore, ProjectionStore, DEFAULT_PROJECTION_BUCKET};
use aether_store::JetStreamEventStore;
use clap::{Args, Subcommand};

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::StreamArgs;
use crate::output::{Painter, Table};

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
    /// A projection's parked events: position, actor, version, type, attempts, error.
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
    log: Arc<JetStreamEventStore>,
}

async fn open(args: &ProjectionsArgs) -> CliResult<Opened> {
    let client = args.connect.connect().await?;
    let context = async_nats::jetstream::new(client.clone());
    if context.get_key_value(&args.bucket).await.is_err() {
        return Err(CliError::new(format!(
            "no projection state: bucket {} does not exist (no projection has run with it)",
            args.bucket
        )));
    }
    let state =
        NatsProjectionStore::open(client.clone(), &args.bucket, aether_nats::StorageKind::File)
            .await?;
    let log = JetStreamEventStore::new(client, args.stream.config()).await?;
    Ok(Opened {
        state,
        log: Arc::new(log),
    })
}

fn position(p: Option<LogPosition>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.to_string())
}

async fn row(o: &Opened, name: &str, head: Option<LogPosition>) -> CliResult<Vec<String>> {
    let checkpoint = o.state.checkpoint(name).await?;
    let parked = o.state.parked(name).await?.len();
    let lag = aether_projection::lag(checkpoint, head);
    Ok(vec![
        name.to_string(),
        position(checkpoint),
        lag.to_string(),
        parked.to_string(),
    ])
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
            let head = o.log.head().await?;
            let mut t = Table::new(&["PROJECTION", "POSITION", "LAG", "PARKED"]);
            for name in o.state.projections().await? {
                t.row(row(&o, &name, head).await?);
            }
            if t.is_empty() {
                println!("no projections in bucket {}", args.bucket);
            } else {
                print!("{}", t.render(painter));
                println!("head of the stream: {}", position(head));
            }
        }
        ProjectionsCommand::Status(args) => {
            let o = open(&args.at).await?;
            known(&o, &args.name).await?;
            let head = o.log.head().await?;
            let mut t = Table::new(&["PROJECTION", "POSITION", "LAG", "PARKED"]);
            t.row(row(&o, &args.name, head).await?);
            print!("{}", t.render(painter));
            println!("head of the stream: {}", position(head));
        }
        ProjectionsCommand::Reset(args) => {
            let o = open(&args.at).await?;
            known(&o, &args.name).await?;
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
                    p.event.actor_id,
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

async fn known(o: &Opened, name: &str) -> CliResult<()> {
    if o.state.projections().await?.iter().any(|n| n == name) {
        return Ok(());
    }
    Err(CliError::new(format!("no projection named {name:?}")))
}
