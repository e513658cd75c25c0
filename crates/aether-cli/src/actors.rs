//! `aether actors retire --type TYPE ID --yes`: closes an actor for good by appending its
//! final event ([`aether_core::EVENT_TYPE_RETIRED`]) to the event store, as
//! `ActorHost::retire` does. From then on the actor takes no more commands on any node.

use aether_core::{ActorKey, Error, Event, EventStore, METADATA_USER_ID};
use async_nats::jetstream;
use clap::{Args, Subcommand};

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::{find_streams, StreamArgs};
use crate::output::{actor_name, escape};
use crate::store_tail::check_actor_type;

/// Appends tried while other writers keep changing the actor.
const ATTEMPTS: u32 = 5;

/// `aether actors` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ActorsCommand {
    /// Retire an actor for good: its final event is appended, and from then on its commands
    /// are refused on every node. Cannot be undone: asks for --yes.
    Retire(RetireArgs),
}

impl ActorsCommand {
    /// The connection options of the subcommand.
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Retire(a) => &a.connect,
        }
    }
}

/// Arguments of `aether actors retire`.
#[derive(Debug, Clone, Args)]
pub struct RetireArgs {
    /// The actor's id.
    pub actor: String,
    /// The actor's type.
    #[arg(long = "type", visible_alias = "actor-type", value_name = "TYPE")]
    pub actor_type: String,
    /// Who retires it: recorded as the final event's user id.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Confirm: retiring cannot be undone.
    #[arg(long)]
    pub yes: bool,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs an `aether actors` subcommand.
///
/// # Errors
/// No `--yes`, a malformed type or id, an actor with no events or retired already, the
/// store's failures; nothing is written then.
pub async fn run(cmd: ActorsCommand) -> CliResult<()> {
    match cmd {
        ActorsCommand::Retire(args) => retire(args).await,
    }
}

async fn retire(args: RetireArgs) -> CliResult<()> {
    check_actor_type(&args.actor_type)?;
    let actor = ActorKey::new(&args.actor_type, &args.actor);
    actor.validate()?;
    let who = escape(&actor_name(actor)).into_owned();
    if !args.yes {
        return Err(CliError::new(format!(
            "retiring {who} cannot be undone: pass --yes to retire it"
        )));
    }
    let client = args.connect.connect().await?;
    let streams = find_streams(&jetstream::new(client.clone()), &args.stream).await?;
    let store = streams.open_store(&client).await?;
    for _ in 0..ATTEMPTS {
        let latest = store.latest_version_of(actor).await?;
        if latest == 0 {
            return Err(CliError::new(format!(
                "actor {who} has no events: nothing to retire"
            )));
        }
        let last = store.events_of(actor, latest).await?;
        if last.last().is_some_and(Event::is_retirement) {
            return Err(CliError::new(format!(
                "actor {who} is retired already (at version {latest})"
            )));
        }
        let mut event = Event::retirement(&args.actor_type, &args.actor, latest + 1);
        if let Some(user) = &args.by {
            event = event.with_metadata(METADATA_USER_ID, user.as_str());
        }
        match store.save_event(&event).await {
            Ok(()) => {
                println!("retired {who} at version {}", event.version);
                return Ok(());
            }
            // Written meanwhile: look again.
            Err(Error::VersionConflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CliError::new(format!(
        "actor {who} kept changing under {ATTEMPTS} attempts to retire it; try again"
    )))
}
