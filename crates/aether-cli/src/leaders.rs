//! `aether leaders [--spread]`: where each partition's stream leader is on a NATS cluster,
//! and, with `--spread`, moving leaders so that no server leads more than its share
//! (`JetStreamEventStore::spread_leaders`).

use async_nats::jetstream;
use clap::Args;

use crate::connect::ConnectArgs;
use crate::error::CliResult;
use crate::events::{find_streams, StreamArgs};
use crate::output::{escape, Painter, Table};

/// Arguments of `aether leaders`.
#[derive(Debug, Clone, Args)]
pub struct LeadersArgs {
    /// Ask leaders over their server's share to hand over to the least loaded server holding
    /// a current replica (one line per move); the server elects them in the next moments, so
    /// run it again to see the result.
    #[arg(long)]
    pub spread: bool,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `aether leaders`.
///
/// # Errors
/// No store's streams, the server's failures, or a step-down the server refused.
pub async fn run(args: LeadersArgs) -> CliResult<()> {
    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    let streams = find_streams(&context, &args.stream).await?;
    let store = streams.open_store(&client).await?;
    if args.spread {
        let moves = store.spread_leaders().await?;
        if moves.is_empty() {
            println!("leaders already spread: nothing to move");
        }
        for m in moves {
            // Server names come from the server: escaped before they reach the terminal.
            println!(
                "partition {}: {} asked to hand over from {} to {}",
                m.partition,
                escape(&m.stream),
                escape(&m.from),
                escape(&m.to)
            );
        }
        return Ok(());
    }
    let mut table = Table::new(&["PARTITION", "STREAM", "LEADER", "FOLLOWERS"]);
    for p in store.partition_leaders().await? {
        table.row(vec![
            p.partition.to_string(),
            escape(&p.stream).into_owned(),
            p.leader
                .as_deref()
                .map_or_else(|| "-".to_string(), |l| escape(l).into_owned()),
            if p.followers.is_empty() {
                "-".to_string()
            } else {
                escape(&p.followers.join(", ")).into_owned()
            },
        ]);
    }
    print!("{}", table.render(Painter::stdout()));
    Ok(())
}
