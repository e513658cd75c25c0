//! `aether events [--type TYPE] ACTOR`: an actor's history from the JetStream event store, as
//! a table or as JSON lines. An actor is its type and its id: without `--type` the untyped
//! actor is read (raw events, and events written before actor types).

use aether_core::{ActorKey, Event, EventStore};
use aether_store::DEFAULT_STREAM_NAME;
use aether_store::{JetStreamConfig, JetStreamEventStore};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, stream::Stream, ErrorCode};
use clap::Args;

use crate::connect::{jetstream_hint, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::output::{actor_name, escape, Painter, Table};
use crate::store_tail::check_actor_type;

/// Which event stream to read (shared by `events` and `stats`).
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Namespace of the store (the stream is `<namespace>_<stream>`, sanitised).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Base name of the event stream.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM_NAME)]
    pub stream: String,
}

impl StreamArgs {
    /// The store configuration these options describe.
    pub fn config(&self) -> JetStreamConfig {
        let config = JetStreamConfig::default().stream_name(self.stream.clone());
        match &self.namespace {
            Some(ns) => config.namespace(ns.clone()),
            None => config,
        }
    }

    /// The JetStream stream name.
    pub fn stream_name(&self) -> String {
        JetStreamEventStore::stream_name_for(&self.config())
    }
}

/// Arguments of `aether events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// The actor whose history to print (its id).
    pub actor: String,
    /// The actor's type (without it, the untyped actor with this id).
    #[arg(long = "type", visible_alias = "actor-type", value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// First version to print.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub from: u64,
    /// Print one JSON event per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Looks the stream up without creating it.
///
/// # Errors
/// "stream not found" (naming the namespace when one was given), or the server's failure.
pub(crate) async fn find_stream(
    context: &jetstream::Context,
    args: &StreamArgs,
) -> CliResult<Stream> {
    let name = args.stream_name();
    match context.get_stream(&name).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            Err(CliError::new(match &args.namespace {
                Some(ns) => {
                    format!("stream {name} not found (namespace {ns:?} has no event store)")
                }
                None => format!("stream {name} not found (no event store with this name)"),
            }))
        }
        Err(e) => Err(jetstream_hint(&format!("looking up stream {name}"), &e)),
    }
}

/// Runs `aether events`.
///
/// # Errors
/// Connection failures, a missing stream, an actor with no events.
pub async fn run(args: EventsArgs) -> CliResult<()> {
    if let Some(t) = &args.actor_type {
        check_actor_type(t)?;
    }
    let actor = ActorKey {
        actor_type: args.actor_type.as_deref(),
        actor_id: &args.actor,
    };
    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    find_stream(&context, &args.stream).await?;
    let store = JetStreamEventStore::new(client, args.stream.config()).await?;
    let name = store.stream_name().to_string();
    let events = store.events_of(actor, args.from).await?;
    let malformed = store.malformed_events();
    // Escaped here: error lines are printed as they are.
    let who = escape(&actor_name(actor)).into_owned();
    if malformed > 0 {
        eprintln!("warning: {malformed} message(s) of {who} could not be decoded and were skipped");
    }
    if events.is_empty() {
        let latest = store.latest_version_of(actor).await?;
        let untyped = if actor.actor_type.is_none() {
            " (an untyped actor: give --type for a typed one)"
        } else {
            ""
        };
        return Err(CliError::new(if latest > 0 {
            format!(
                "actor {who} has no events from version {} in stream {name} (latest version {latest})",
                args.from
            )
        } else {
            format!("actor {who} has no events in stream {name}{untyped}")
        }));
    }
    if args.json {
        let mut out = String::new();
        for e in &events {
            let line = serde_json::to_string(e)
                .map_err(|err| CliError::new(format!("encoding event {}: {err}", e.id)))?;
            out.push_str(&line);
            out.push('\n');
        }
        print!("{out}");
    } else {
        print!("{}", render_table(&events, Painter::stdout()));
    }
    Ok(())
}

/// The events as a table: version, actor type (`-` for an untyped actor), event type,
/// timestamp, data, escaped ([`escape`]).
pub fn render_table(events: &[Event], painter: Painter) -> String {
    let mut table = Table::new(&["VERSION", "ACTOR TYPE", "TYPE", "TIMESTAMP", "DATA"]);
    for e in events {
        table.row(vec![
            e.version.to_string(),
            e.actor_type.clone().unwrap_or_else(|| "-".into()),
            escape(&e.event_type).into_owned(),
            e.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            // JSON escapes C0 controls in strings, not DEL, C1 or bidirectional overrides.
            escape(&serde_json::Value::Object(e.data.clone()).to_string()).into_owned(),
        ]);
    }
    table.render(painter)
}
