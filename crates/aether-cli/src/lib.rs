//! The `aether` command: a guided demo of Aether, tools for operators to look at event streams,
//! live events and running clusters on NATS, and the few that change something, each said so
//! in its help (a projection's reset, backup and restore, a standby's promotion).
//!
//! The binary (`src/main.rs`) only parses the command line and prints the error; everything
//! else lives here so tests can call it.
//!
//! # Layout
//! - [`Cli`], [`Command`]: the command line (clap derive).
//! - [`connect`]: the connection options every networked command shares, mapped to
//!   `async_nats::ConnectOptions`, with a short connect timeout and one-line errors.
//! - [`demo`]: `aether demo`, in process or over NATS.
//! - [`events`], [`stats`], [`tail`], [`cluster`], [`projections`]: the inspection commands
//!   (`projections reset` and `replay-parked` are the ones that change something: a
//!   projection's checkpoint, a replay request).
//! - [`leaders`]: `aether leaders`, where a partitioned store's stream leaders are, and
//!   `--spread` to move them over the cluster's servers.
//! - [`heads`]: the event log's heads, one per partition, and which one a projection's
//!   checkpoint lags behind.
//! - [`timers`]: `aether timers`, the pending timers and the reactor's backlog.
//! - [`store_tail`]: following the event store's stream, for `tail --source store` and the
//!   dashboard's live tail.
//! - [`actors`]: `aether actors retire`, an actor closed for good by its final event.
//! - [`history`]: `aether history compact|remove-retired`, histories that do not grow
//!   forever on a compactable stream: old events moved to the archive behind a snapshot, a
//!   retired actor's events removed after a grace period.
//! - [`erase`]: `aether erase`, a data subject's key deleted for good (crypto-shredding), and
//!   how every tool shows personal data: erased subjects as erased, the rest sealed, never
//!   opened.
//! - [`backup`]: `aether backup` and `aether restore`, a namespace's event streams and the
//!   projections bucket copied to a directory and put back on an empty server.
//! - [`repartition`]: `aether repartition`, a namespace's event history copied into a new
//!   namespace over another number of partitions.
//! - [`mirror`]: `aether mirror create|status|promote`, a standby copy of the event streams in
//!   another JetStream domain, for disaster recovery.
//! - [`ui`]: `aether ui`, the read-only web dashboard with `/metrics`.
//! - [`output`]: colours (only on a terminal, never with `NO_COLOR`), tables, progress bars.
//! - [`CliError`]: the one-line error every command fails with.

pub mod actors;
pub mod backup;
mod cleanup;
pub mod cluster;
pub mod connect;
pub mod demo;
pub mod erase;
mod error;
pub mod events;
pub mod heads;
pub mod history;
pub mod leaders;
pub mod mirror;
pub mod output;
pub mod projections;
pub mod repartition;
pub mod stats;
pub mod store_tail;
pub mod tail;
pub mod timers;
pub mod ui;

use clap::{Parser, Subcommand};

pub use error::{CliError, CliResult};

/// Aether: distributed actors with event sourcing on NATS JetStream.
#[derive(Debug, Parser)]
#[command(
    name = "aether",
    version,
    propagate_version = true,
    after_help = "Examples:
  aether demo                                   the demo in process, no server needed
  aether demo --nats nats://127.0.0.1:4222      the same on NATS JetStream
  aether events account-0001 --namespace orders an actor's history
  aether tail 'orders.>' --type Deposited       live events from the bus until Ctrl-C
  aether tail --source store --actor-type show  every saved event of show actors
  aether events --type show s-1                 the history of the show actor s-1
  aether stats --namespace orders               size and settings of a stream
  aether cluster members --cluster aether       live members of a cluster
  aether projections list --namespace orders    projections, their position, lag, parked
  aether timers --actor-type hold --limit 20    the next timers due, and the reactor's backlog
  aether ui --cluster aether                    web dashboard on http://127.0.0.1:8484/
  aether backup --namespace orders --out b1     event streams and checkpoints to ./b1
  aether restore --from b1 --nats nats://b:4222 b1 into a server without those streams
  aether repartition --namespace orders --to-namespace orders2 --partitions 4
                                                orders' history copied over 4 partitions
  aether mirror status --from-domain primary    the standby copy's lag (on the standby)
  aether actors retire a-7 --type acct --yes    close an actor for good (its final event)
  aether history compact a-7 --type acct        archive the events before its snapshot
  aether erase person-42 --namespace shop --yes erase a data subject's personal fields

Networked commands read NATS_URL (default nats://127.0.0.1:4222); colours only on a
terminal, never with NO_COLOR set."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a demo: bank-account actors on a three-node cluster, one node killed and its
    /// actors rebuilt elsewhere (in process by default; on NATS with --nats or NATS_URL).
    Demo(demo::DemoArgs),
    /// Print an actor's history from the JetStream event store.
    Events(events::EventsArgs),
    /// Print live events from the NATS bus (or, with --source store, the event store's
    /// stream), one line each, until Ctrl-C.
    Tail(tail::TailArgs),
    /// Print the size and settings of an event stream.
    Stats(stats::StatsArgs),
    /// Where each partition's stream leader is on a NATS cluster; with --spread, move
    /// leaders so that no server leads more than its share.
    Leaders(leaders::LeadersArgs),
    /// Look at a running cluster (read-only: never joins it).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Projections whose state is in a NATS key-value bucket: list, status, parked, reset,
    /// replay-parked.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// The durable timers pending (the earliest due first), those fired awaiting delivery,
    /// and the reactor's backlog (read-only).
    Timers(timers::TimersArgs),
    /// Serve a read-only web dashboard: cluster, stream, live tail, actors, projections,
    /// and /metrics for Prometheus.
    Ui(ui::UiArgs),
    /// Copy a namespace's event streams (every partition) and the projections bucket to a
    /// new directory, consistent as of the start of each stream's copy.
    Backup(backup::BackupArgs),
    /// Put a backup back on a server that has none of its streams and buckets, at the same
    /// sequences.
    Restore(backup::RestoreArgs),
    /// Copy a namespace's event history into a new namespace spread over N partitions (the
    /// way to change a store's partition count); the source must not be written meanwhile.
    Repartition(repartition::RepartitionArgs),
    /// A standby copy of the event streams in another JetStream domain (run on the
    /// standby): create, status, promote.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// Change an actor's life: retire (close it for good).
    #[command(subcommand)]
    Actors(actors::ActorsCommand),
    /// Keep histories from growing forever on a compactable stream: compact (events before
    /// an actor's snapshot moved to the archive), remove-retired (a retired actor's events
    /// deleted after a grace period).
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// Erase a data subject for good: its key is deleted, so its personal fields in every
    /// event read as erased from then on. Cannot be undone: asks for --yes.
    Erase(erase::EraseArgs),
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with, as one line.
pub async fn run(cli: Cli) -> CliResult<()> {
    // Commands that connect with the shared options fail at once, with the refused subject,
    // when the server's permissions refuse them something.
    let permissions = match &cli.command {
        Command::Demo(_) => None,
        Command::Events(args) => Some(args.connect.permissions().clone()),
        Command::Tail(args) => Some(args.connect.permissions().clone()),
        Command::Stats(args) => Some(args.connect.permissions().clone()),
        Command::Leaders(args) => Some(args.connect.permissions().clone()),
        Command::Cluster(
            cluster::ClusterCommand::Members(cluster::MembersArgs { cluster, .. })
            | cluster::ClusterCommand::Shards(cluster::ShardsArgs { cluster, .. }),
        ) => Some(cluster.connect.permissions().clone()),
        Command::Projections(cmd) => Some(cmd.connect().permissions().clone()),
        Command::Timers(args) => Some(args.connect.permissions().clone()),
        Command::Backup(args) => Some(args.connect.permissions().clone()),
        Command::Mirror(cmd) => Some(cmd.connect().permissions().clone()),
        Command::Actors(cmd) => Some(cmd.connect().permissions().clone()),
        Command::History(cmd) => Some(cmd.connect().permissions().clone()),
        Command::Erase(args) => Some(args.connect.permissions().clone()),
        // Watches for refusals itself, so that it can delete what it created before failing.
        Command::Restore(_) | Command::Repartition(_) => None,
        // A long-running server: a refused subject shows on the page that needs it.
        Command::Ui(_) => None,
    };
    let work = async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Events(args) => events::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Leaders(args) => leaders::run(args).await,
            Command::Cluster(cmd) => cluster::run(cmd).await,
            Command::Projections(cmd) => projections::run(cmd).await,
            Command::Timers(args) => timers::run(args).await,
            Command::Ui(args) => ui::run(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
            Command::Repartition(args) => repartition::run(args).await,
            Command::Mirror(cmd) => mirror::run(cmd).await,
            Command::Actors(cmd) => actors::run(cmd).await,
            Command::History(cmd) => history::run(cmd).await,
            Command::Erase(args) => erase::run(args).await,
        }
    };
    match permissions {
        Some(watch) => connect::refusals_fail(&watch, work).await,
        None => work.await,
    }
}
