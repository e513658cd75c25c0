//! `aether events [--type TYPE] ACTOR`: an actor's history from the JetStream event store, as
//! a table or as JSON lines. An actor is its type and its id: without `--type` the untyped
//! actor is read (raw events, and events written before actor types). Personal fields show
//! as erased when their subject was erased, sealed otherwise ([`ShownKeys`]).
//!
//! Also where every command finds the event store's streams ([`StreamArgs::find`]): one
//! stream, or the streams `<stream>_P0` to `<stream>_P<N-1>` of a partitioned store, whose
//! count is detected from the streams themselves unless `--partitions` gives it.

use aether_core::{ActorKey, Event, EventStore};
use aether_store::DEFAULT_STREAM_NAME;
use aether_store::{
    partition_marker, partition_stream_name, JetStreamConfig, JetStreamEventStore, PartitionKey,
    MAX_PARTITIONS,
};
use async_nats::jetstream::{self, stream::Stream};
use clap::Args;
use futures::{StreamExt, TryStreamExt};

use crate::connect::ConnectArgs;
use crate::erase::ShownKeys;
use crate::error::{CliError, CliResult};
use crate::output::{actor_name, escape, Painter, Table};
use crate::store_tail::check_actor_type;

/// Partition streams looked up at once.
const LOOKUPS_AT_ONCE: usize = 16;

/// Which event stream to read (shared by every command that reads the event store).
///
/// A partitioned store ([`JetStreamConfig::partitions`]) keeps partition `k` in the stream
/// `<stream>_P<k>`. Without `--partitions` the count is detected: when `<stream>` does not
/// exist (or is empty) and `<stream>_P0` does, its description's `partition 0 of N` gives
/// it. A count given that disagrees with the streams is refused, never guessed around.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Namespace of the store (the stream is `<namespace>_<stream>`, sanitised).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Base name of the event stream.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM_NAME)]
    pub stream: String,
    /// How many partitions the store's log is spread over (streams `<stream>_P0` to
    /// `<stream>_P<N-1>`); detected from the streams when not given, refused when it
    /// disagrees with them.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=u64::from(MAX_PARTITIONS))
    )]
    pub partitions: Option<u32>,
    /// What decides an actor's partition, as the application sets it: `id` (the whole actor
    /// id) or `prefix:<char>` (the part of the id before the first `<char>`). Only `events`
    /// and the dashboard's actor page use it, to find an actor's partition.
    #[arg(long, value_name = "KEY", default_value = "id", value_parser = parse_partition_key)]
    pub partition_key: PartitionKey,
}

impl Default for StreamArgs {
    fn default() -> Self {
        Self {
            namespace: None,
            stream: DEFAULT_STREAM_NAME.into(),
            partitions: None,
            partition_key: PartitionKey::ActorId,
        }
    }
}

/// Parses `--partition-key`: `id`, or `prefix:` and one character.
///
/// # Errors
/// Anything else, said in words.
pub fn parse_partition_key(value: &str) -> Result<PartitionKey, String> {
    if value == "id" {
        return Ok(PartitionKey::ActorId);
    }
    if let Some(rest) = value.strip_prefix("prefix:") {
        let mut chars = rest.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Ok(PartitionKey::IdPrefix(c));
        }
    }
    Err(format!(
        "{:?} is no partition key: `id` (the whole actor id) or `prefix:<char>` (the id up to \
         the first <char>, e.g. prefix:/)",
        escape(value)
    ))
}

impl StreamArgs {
    /// The store configuration these options describe (the partition count as given, `None`
    /// when not: [`find`](Self::find) gives the one the server has).
    pub fn config(&self) -> JetStreamConfig {
        let config = JetStreamConfig::default()
            .stream_name(self.stream.clone())
            .partition_key(self.partition_key);
        let config = match self.partitions {
            Some(n) if n > 1 => config.partitions(n),
            _ => config,
        };
        match &self.namespace {
            Some(ns) => config.namespace(ns.clone()),
            None => config,
        }
    }

    /// The JetStream stream name: the unpartitioned stream's, which partitions' names extend.
    pub fn stream_name(&self) -> String {
        JetStreamEventStore::stream_name_for(&self.config())
    }

    /// Finds the store's streams on the server without creating any, and the partition count
    /// (see the type's docs).
    ///
    /// # Errors
    /// [`Error::NotFound`](aether_core::Error::NotFound) when there is no such store (or a
    /// partition's stream is missing), [`Error::InvalidInput`](aether_core::Error::InvalidInput)
    /// when `--partitions` disagrees with the streams or a stream's partition marker is not
    /// one a store writes; the server's failures.
    pub async fn find(&self, context: &jetstream::Context) -> aether_core::Result<EventStreams> {
        use aether_core::Error;
        let base = self.stream_name();
        let p0 = partition_stream_name(&base, 0);
        let (base_stream, first) = futures::try_join!(
            aether_nats::backend::get_stream(context, &base),
            aether_nats::backend::get_stream(context, &p0)
        )?;
        let marked = first
            .as_ref()
            .and_then(|s| partition_marker(&description(s)))
            .filter(|(index, _)| *index == 0)
            .map(|(_, count)| count);
        let base_holds_events = base_stream
            .as_ref()
            .is_some_and(|s| s.cached_info().state.messages > 0);
        let no_store = |name: &str| {
            Error::NotFound(match &self.namespace {
                Some(ns) => {
                    format!("stream {name} not found (namespace {ns:?} has no event store)")
                }
                None => format!("stream {name} not found (no event store with this name)"),
            })
        };
        let spread = |n: u32| {
            format!(
                "the store {base} is spread over {n} partitions (streams {base}_P0 to {base}_P{})",
                n.saturating_sub(1)
            )
        };
        let count = match (self.partitions, marked, &base_stream) {
            (Some(1), _, Some(_)) => 1,
            (Some(1), Some(n), None) => {
                return Err(Error::invalid(format!(
                    "--partitions 1 disagrees with the streams: {}; leave --partitions out to \
                     detect it",
                    spread(n)
                )))
            }
            (Some(1) | None, None, None) => return Err(no_store(&base)),
            (Some(n), Some(m), _) if n == m => n,
            (Some(n), Some(m), _) => {
                return Err(Error::invalid(format!(
                    "--partitions {n} disagrees with the streams: {}; leave --partitions out \
                     to detect it",
                    spread(m)
                )))
            }
            (Some(n), None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--partitions {n} disagrees with the streams: {base} is the one stream of \
                     an unpartitioned store (no stream {p0}); leave --partitions out to detect it"
                )))
            }
            (Some(_), None, None) => return Err(no_store(&p0)),
            // An unpartitioned stream holding events is what a partitioned store refuses to
            // start next to: it is the store.
            (None, Some(_), Some(_)) if base_holds_events => 1,
            (None, Some(m), _) => m,
            (None, None, Some(_)) => 1,
        };
        if count == 0 || count > MAX_PARTITIONS {
            return Err(Error::invalid(format!(
                "stream {p0} says it is partition 0 of {count}: not a count a store has (1 to \
                 {MAX_PARTITIONS})"
            )));
        }
        let streams = if count == 1 {
            // Checked above: the unpartitioned stream exists.
            base_stream.into_iter().collect()
        } else {
            let mut streams: Vec<Stream> = first.into_iter().collect();
            let (base, spread) = (&base, &spread);
            let rest: Vec<Stream> = futures::stream::iter(1..count)
                .map(|k| {
                    let name = partition_stream_name(base, k);
                    async move {
                        let stream = aether_nats::backend::get_stream(context, &name)
                            .await?
                            .ok_or_else(|| {
                                Error::NotFound(format!(
                                    "stream {name} not found: {} but this one is missing",
                                    spread(count)
                                ))
                            })?;
                        if partition_marker(&description(&stream)) != Some((k, count)) {
                            return Err(Error::invalid(format!(
                                "stream {name} does not say it is partition {k} of {count}, as \
                                 {base}_P0 says the store has: not the streams of one store"
                            )));
                        }
                        Ok(stream)
                    }
                })
                .buffered(LOOKUPS_AT_ONCE)
                .try_collect()
                .await?;
            streams.extend(rest);
            streams
        };
        let mut config = self.config();
        config.partitions = (count > 1).then_some(count);
        Ok(EventStreams {
            config,
            base,
            streams,
            detected: self.partitions.is_none(),
        })
    }
}

/// A stream's description as the server last reported it.
fn description(stream: &Stream) -> String {
    stream
        .cached_info()
        .config
        .description
        .clone()
        .unwrap_or_default()
}

/// A store's streams as the server has them: what [`StreamArgs::find`] found.
#[derive(Debug, Clone)]
pub struct EventStreams {
    /// The configuration to open the store with (the partition count found).
    pub config: JetStreamConfig,
    /// The unpartitioned stream's name, which partitions' names extend.
    pub base: String,
    /// Each partition's stream in partition order (one when unpartitioned), with the info
    /// read when it was looked up.
    pub streams: Vec<Stream>,
    /// Whether the partition count was detected (not given with `--partitions`).
    pub detected: bool,
}

impl EventStreams {
    /// How many partitions: 1 when unpartitioned.
    pub fn partitions(&self) -> u32 {
        self.streams.len() as u32
    }

    /// The streams' names, in partition order.
    pub fn names(&self) -> Vec<String> {
        self.streams
            .iter()
            .map(|s| s.cached_info().config.name.clone())
            .collect()
    }

    /// How the store is named in messages: its stream, or `<base> (N partitions)`.
    pub fn describe(&self) -> String {
        match self.partitions() {
            1 => self.base.clone(),
            n => format!("{} ({n} partitions)", self.base),
        }
    }

    /// Opens the store on the streams found (they all exist: nothing is created).
    ///
    /// # Errors
    /// The store's refusals (a stream of another layout), the server's failures.
    pub async fn open_store(&self, client: &async_nats::Client) -> CliResult<JetStreamEventStore> {
        Ok(JetStreamEventStore::new(client.clone(), self.config.clone()).await?)
    }
}

/// Finds the store's streams for a command: [`StreamArgs::find`] with its messages as they
/// are (one line, without the error kind in front).
///
/// # Errors
/// As [`StreamArgs::find`].
pub(crate) async fn find_streams(
    context: &jetstream::Context,
    args: &StreamArgs,
) -> CliResult<EventStreams> {
    args.find(context).await.map_err(|e| match e {
        aether_core::Error::NotFound(m) | aether_core::Error::InvalidInput(m) => CliError::new(m),
        other => CliError::from(other),
    })
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

/// Runs `aether events`.
///
/// # Errors
/// Connection failures, a missing stream, an actor with no events, a key bucket that cannot
/// be read.
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
    let streams = find_streams(&context, &args.stream).await?;
    // The store routes the actor to its partition's stream.
    let store = streams.open_store(&client).await?;
    let partition = store.partition_of(actor);
    let name = store
        .stream_names()
        .get(partition as usize)
        .map_or_else(|| store.stream_name().to_string(), |n| n.to_string());
    let mut events = store.events_of(actor, args.from).await?;
    // Personal fields of erased subjects show as erased, the others sealed (never opened).
    if events
        .iter()
        .any(|e| aether_core::personal::holds_personal(&e.data))
    {
        let connection = aether_nats::Connection::new(client.clone(), args.connect.monitor.clone());
        if let Some(keys) = ShownKeys::open(&connection, args.stream.namespace.as_deref()).await? {
            keys.redact_all(&mut events).await?;
        }
    }
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
        if latest > 0 {
            return Err(CliError::new(format!(
                "actor {who} has no events from version {} in stream {name} (latest version {latest})",
                args.from
            )));
        }
        // On a partitioned store, an actor found in another partition than the key puts it
        // in means the application spreads actors by another key.
        if let Some(elsewhere) = other_partition_holding(&streams, &store, actor, partition).await {
            return Err(CliError::new(format!(
                "actor {who} has no events in stream {name}, its partition by --partition-key {}, \
                 but stream {elsewhere} has some: give the --partition-key the application uses",
                key_name(args.stream.partition_key)
            )));
        }
        return Err(CliError::new(format!(
            "actor {who} has no events in stream {name}{untyped}"
        )));
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

/// `--partition-key` as it is written on the command line.
pub fn key_name(key: PartitionKey) -> String {
    match key {
        PartitionKey::IdPrefix(c) => format!("prefix:{c}"),
        _ => "id".into(),
    }
}

/// The stream of another partition than `partition` holding messages on `actor`'s events
/// subject, if any (a partitioned store only; failures count as none).
async fn other_partition_holding(
    streams: &EventStreams,
    store: &JetStreamEventStore,
    actor: ActorKey<'_>,
    partition: u32,
) -> Option<String> {
    if streams.partitions() <= 1 {
        return None;
    }
    let subject = store.event_subject(actor);
    let own = streams.streams.get(partition as usize)?;
    // The subject within its stream: `<stream>.events...` with the stream's name in front.
    let tail = subject.strip_prefix(own.cached_info().config.name.as_str())?;
    for (k, stream) in streams.streams.iter().enumerate() {
        if k == partition as usize {
            continue;
        }
        let name = &stream.cached_info().config.name;
        if stream
            .get_last_raw_message_by_subject(&format!("{name}{tail}"))
            .await
            .is_ok()
        {
            return Some(name.clone());
        }
    }
    None
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
