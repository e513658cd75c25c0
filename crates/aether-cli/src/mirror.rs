//! `aether mirror create|status|promote`: a standby copy of a store's event streams in another
//! JetStream domain, for disaster recovery (`aether_store::mirror`). Run against the standby's
//! server; `--from-domain` names the primary's JetStream domain, reached over the leafnode
//! connection between the two.

use async_nats::jetstream;
use clap::{Args, Subcommand};

use aether_store::mirror::{
    create_mirrors, mirror_status, promote_mirrors, validate_domain, MirrorStatus, PromoteOptions,
};

use crate::connect::ConnectArgs;
use crate::error::CliResult;
use crate::events::{find_streams, StreamArgs};
use crate::output::{escape, Painter, Table};

/// `aether mirror` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MirrorCommand {
    /// Create, on the standby's server, a mirror of each of the store's streams (every
    /// partition's) read from the primary's JetStream domain; mirrors that exist are kept.
    Create(CreateArgs),
    /// What each mirror holds, how many messages it knows it lacks, and when it last heard
    /// from the primary.
    Status(StatusArgs),
    /// Make the mirrors the store's writable streams once the primary is gone (nats-server
    /// 2.12+). Refused while the primary still answers, unless --even-if-primary-answers.
    Promote(PromoteArgs),
}

impl MirrorCommand {
    /// The connection options of the subcommand.
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Create(a) => &a.connect,
            Self::Status(a) => &a.connect,
            Self::Promote(a) => &a.connect,
        }
    }
}

/// Arguments of `aether mirror create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The primary's JetStream domain.
    #[arg(long, value_name = "DOMAIN")]
    pub from_domain: String,
    /// Replicas of each mirror on the standby's cluster.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5))]
    pub replicas: usize,
    /// The store (its namespace, stream and partitions, as on the primary).
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection to the standby's server.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `aether mirror status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The primary's JetStream domain: asked for its last sequences too (a dash when it does
    /// not answer).
    #[arg(long, value_name = "DOMAIN")]
    pub from_domain: Option<String>,
    /// The store.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection to the standby's server.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `aether mirror promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The primary's JetStream domain, checked not to answer any more.
    #[arg(long, value_name = "DOMAIN")]
    pub from_domain: String,
    /// Promote even though the primary still answers (it is fenced some other way): two
    /// writable copies of one history would diverge.
    #[arg(long)]
    pub even_if_primary_answers: bool,
    /// The store.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection to the standby's server.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs an `aether mirror` subcommand.
///
/// # Errors
/// Bad input (a malformed domain, a store the primary does not have), a stream on the standby
/// that is not a mirror, a promotion refused (the primary answers, or the server is older than
/// 2.12), the servers' failures.
pub async fn run(cmd: MirrorCommand) -> CliResult<()> {
    match cmd {
        MirrorCommand::Create(args) => {
            validate_domain(&args.from_domain)?;
            let client = args.connect.connect().await?;
            // The layout (partitions) as the primary has it.
            let primary = jetstream::with_domain(client.clone(), &args.from_domain);
            let found = find_streams(&primary, &args.stream).await?;
            let config = found.config.replicas(args.replicas);
            let statuses = create_mirrors(&client, &config, &args.from_domain).await?;
            for s in &statuses {
                println!(
                    "mirror {} of domain {}: {} messages, {} behind",
                    escape(&s.stream),
                    escape(&args.from_domain),
                    s.messages,
                    s.lag
                );
            }
            Ok(())
        }
        MirrorCommand::Status(args) => {
            if let Some(d) = &args.from_domain {
                validate_domain(d)?;
            }
            let client = args.connect.connect().await?;
            let found = find_streams(&jetstream::new(client.clone()), &args.stream).await?;
            let statuses =
                mirror_status(&client, &found.config, args.from_domain.as_deref()).await?;
            print!("{}", status_table(&statuses).render(Painter::stdout()));
            Ok(())
        }
        MirrorCommand::Promote(args) => {
            validate_domain(&args.from_domain)?;
            let client = args.connect.connect().await?;
            let found = find_streams(&jetstream::new(client.clone()), &args.stream).await?;
            let before = mirror_status(&client, &found.config, None).await?;
            let options = PromoteOptions {
                origin_domain: Some(args.from_domain.clone()),
                even_if_primary_answers: args.even_if_primary_answers,
            };
            promote_mirrors(&client, &found.config, &options).await?;
            for s in &before {
                if s.mirroring {
                    println!(
                        "promoted {}: {} messages, up to sequence {}; {} known missing",
                        escape(&s.stream),
                        s.messages,
                        s.last_sequence,
                        s.lag
                    );
                } else {
                    println!("{} was already promoted", escape(&s.stream));
                }
            }
            Ok(())
        }
    }
}

/// The status of each mirror as a table.
pub fn status_table(statuses: &[MirrorStatus]) -> Table {
    let mut table = Table::new(&[
        "STREAM",
        "MIRRORING",
        "LAST SEQ",
        "MESSAGES",
        "BEHIND",
        "LAST CONTACT",
        "PRIMARY LAST SEQ",
    ]);
    for s in statuses {
        table.row(vec![
            escape(&s.stream).into_owned(),
            if s.mirroring { "yes" } else { "no (promoted)" }.to_string(),
            s.last_sequence.to_string(),
            s.messages.to_string(),
            s.lag.to_string(),
            s.since_contact.map_or_else(
                || "-".to_string(),
                |d| format!("{:.1}s ago", d.as_secs_f64()),
            ),
            s.primary_last_sequence
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        ]);
    }
    table
}
