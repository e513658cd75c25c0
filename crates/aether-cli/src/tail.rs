//! `aether tail [PATTERN]`: live events, one line each, until Ctrl-C: from the NATS bus
//! (`--source bus`, the default) or straight from the event store's stream (`--source store`,
//! see [`crate::store_tail`]).
//!
//! Events from the store show their personal fields as erased when their subject was erased,
//! sealed otherwise ([`LazyShownKeys`], the namespace's key bucket). Events from the bus are
//! shown as they were published: the bus's namespaces are not the store's, so no key bucket
//! is known for them (personal fields published there are sealed or erased, never clear).

use aether_bus::{NatsBusConfig, NatsEventBus, DEFAULT_SUBJECT_PREFIX};
use aether_core::{validate_pattern, Event, EventBroadcaster, SubscriptionFilter};
use aether_nats::subject::pattern_subject;
use async_nats::connection::State;
use async_nats::jetstream;
use clap::{Args, ValueEnum};
use std::time::Duration;
use tokio::time::Instant;

use crate::connect::ConnectArgs;
use crate::erase::LazyShownKeys;
use crate::error::{CliError, CliResult};
use crate::events::{find_streams, StreamArgs};
use crate::output::{actor_name, escape, Painter};
use crate::store_tail::{check_actor_type, StoreDelivery, StoreFilter, StoreTail, TailFeed};

/// Where a tail takes its events from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TailSource {
    /// The NATS bus: what applications publish (a store wrapped in `Notify`, `publish`).
    #[default]
    Bus,
    /// The event store's stream: every event saved, published or not (a cluster's actors).
    Store,
}

impl TailSource {
    /// The source as the command line and the dashboard name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bus => "bus",
            Self::Store => "store",
        }
    }
}

/// Events a store tail holds for a terminal that does not keep up; beyond, the newest are
/// dropped and counted.
pub const STORE_TAIL_BUFFER: usize = 1024;

/// Arguments of `aether tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Namespace pattern of the bus: a namespace, or one with `*` (one token) and `>` (the
    /// rest), e.g. `orders`, `tenant.*`, `>`. Required with `--source bus`; with
    /// `--source store` the stream is chosen with --namespace and --stream instead.
    pub pattern: Option<String>,
    /// Where to follow events: the bus (what applications publish) or the store's stream
    /// (every event saved, also by a cluster that publishes nothing to the bus).
    #[arg(long, value_enum, default_value_t = TailSource::Bus)]
    pub source: TailSource,
    /// Only events of this event type (repeat for several).
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Only actors matching this pattern (`*` and `>` as for namespaces).
    #[arg(long, value_name = "PATTERN")]
    pub actor: Option<String>,
    /// Only actors of this actor type (with --source store, selected by the server).
    #[arg(long, value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// Give up (exit with an error) after the connection has been down this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub give_up_after: u64,
    /// Subject prefix of the bus.
    #[arg(long, value_name = "P", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub prefix: String,
    /// The event stream followed with --source store.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How long `tail` waits after subscribing before it says it is listening (see `run`).
const LISTENING_GRACE: Duration = Duration::from_millis(500);

/// Runs `aether tail` until Ctrl-C (exit 0) or until the connection is lost (an error).
///
/// # Errors
/// Connection failures, a bad pattern or prefix.
pub async fn run(args: TailArgs) -> CliResult<()> {
    if let Some(actor) = &args.actor {
        validate_pattern(actor)
            .map_err(|e| CliError::new(format!("invalid actor pattern {actor:?}: {e}")))?;
    }
    if let Some(t) = &args.actor_type {
        check_actor_type(t)?;
    }
    check_source(&args)?;
    let client = args.connect.connect().await?;
    let (mut feed, bus, subject, note) = match args.source {
        TailSource::Bus => open_bus(&args, &client).await?,
        TailSource::Store => open_store(&args, &client).await?,
    };
    // Opened when the first personal field comes.
    let keys = (args.source == TailSource::Store).then(|| {
        LazyShownKeys::new(
            aether_nats::Connection::new(client.clone(), args.connect.monitor.clone()),
            args.stream.namespace.clone(),
        )
    });
    let mut keys_warned = false;
    // Say "listening" only once a refusal would have shown: the server sends it before the
    // subscription's confirming round trip, but the client hands it to the connection's event
    // task, which a loaded machine may run a little later. A refusal in the meantime ends the
    // command with its one error line (the caller's `refusals_fail`), not two lines.
    let listening = tokio::time::sleep(LISTENING_GRACE);
    tokio::pin!(listening);
    let mut announced = false;
    let announce = |announced: &mut bool| {
        if !*announced {
            eprintln!("listening on {subject} ({note}; Ctrl-C to stop)");
            *announced = true;
        }
    };
    let painter = Painter::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // The client reconnects on its own; a server gone for good must end the command rather
    // than leave it silent forever.
    let give_up = Duration::from_secs(args.give_up_after.max(1));
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut down_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        tokio::select! {
            () = &mut listening, if !announced => announce(&mut announced),
            _ = check.tick() => {
                if client.connection_state() == State::Connected {
                    if warned {
                        eprintln!("reconnected");
                    }
                    down_since = None;
                    warned = false;
                } else {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if !warned {
                        eprintln!("warning: connection to NATS lost; reconnecting");
                        warned = true;
                    }
                    if since.elapsed() >= give_up {
                        return Err(CliError::new(format!(
                            "lost the connection to NATS at {} and could not reconnect within {}s",
                            aether_nats::redact_url(args.connect.nats.trim()),
                            give_up.as_secs()
                        )));
                    }
                }
            }
            signal = &mut ctrl_c => {
                signal.map_err(|e| CliError::context("waiting for Ctrl-C", &e))?;
                break;
            }
            delivery = feed.recv() => match delivery {
                Some(StoreDelivery::Event(event)) => {
                    announce(&mut announced);
                    let event = match &keys {
                        Some(keys) => match keys.redact_shared(event.clone()).await {
                            Ok(shown) => shown,
                            Err(e) => {
                                if !keys_warned {
                                    eprintln!(
                                        "warning: {}",
                                        CliError::new(format!(
                                            "could not check which data subjects were erased \
                                             (personal fields are shown sealed): {}",
                                            crate::error::chain(&e)
                                        ))
                                    );
                                    keys_warned = true;
                                }
                                event
                            }
                        },
                        None => event,
                    };
                    println!("{}", line(&event, painter));
                }
                Some(StoreDelivery::Lagged(n)) => {
                    eprintln!("warning: {n} events were dropped before reaching this terminal");
                }
                Some(StoreDelivery::Malformed(n)) => {
                    eprintln!(
                        "warning: {n} message(s) on the store's events subjects were not events \
                         the store wrote, and were skipped"
                    );
                }
                None => {
                    return Err(CliError::new(format!(
                        "the subscription to {subject} ended: the connection to NATS was lost"
                    )))
                }
            }
        }
    }
    drop(feed);
    if let Some(bus) = bus {
        let _ = bus.close().await;
    }
    Ok(())
}

/// Checks the options fit the source, before connecting.
fn check_source(args: &TailArgs) -> CliResult<()> {
    match (args.source, &args.pattern) {
        (TailSource::Bus, None) => Err(CliError::new(
            "a namespace pattern is required with --source bus (e.g. 'orders.>' or '>'); \
             --source store follows the store's stream instead",
        )),
        (TailSource::Bus, Some(pattern)) => {
            if args.stream.namespace.is_some() {
                return Err(CliError::new(
                    "--namespace chooses the store's stream, which only --source store \
                     follows; the bus is chosen by the namespace pattern",
                ));
            }
            if args.stream.partitions.is_some() {
                return Err(CliError::new(
                    "--partitions describes the store's streams, which only --source store \
                     follows",
                ));
            }
            validate_pattern(pattern)
                .map_err(|e| CliError::new(format!("invalid namespace pattern {pattern:?}: {e}")))
        }
        (TailSource::Store, Some(pattern)) => Err(CliError::new(format!(
            "--source store follows one event stream, chosen with --namespace and --stream; \
             the namespace pattern {pattern:?} is for --source bus"
        ))),
        (TailSource::Store, None) => Ok(()),
    }
}

/// Subscribes to the bus: what `aether tail` always did.
async fn open_bus(
    args: &TailArgs,
    client: &async_nats::Client,
) -> CliResult<(TailFeed, Option<NatsEventBus>, String, String)> {
    // Checked by `check_source`.
    let pattern = args.pattern.as_deref().unwrap_or(">");
    let subject = pattern_subject(&args.prefix, pattern)?;
    let bus = NatsEventBus::new(
        client.clone(),
        NatsBusConfig::default().subject_prefix(args.prefix.clone()),
    )
    .await?;
    let mut filter = SubscriptionFilter::new();
    for t in &args.types {
        filter = filter.event_type(t.clone());
    }
    if let Some(actor) = &args.actor {
        filter = filter.actor_pattern(actor.clone());
    }
    // Returns once the server has the subscription (the bus confirms it with a round trip).
    let subscription = bus.subscribe_with_filter(pattern, filter).await?;
    let feed = TailFeed::Bus {
        subscription,
        actor_type: args.actor_type.clone(),
    };
    // An application whose store does not publish (a cluster's actors) leaves the bus silent.
    Ok((
        feed,
        Some(bus),
        subject,
        "the bus; --source store follows every saved event".into(),
    ))
}

/// Opens a consumer on the store's events subjects: one per partition's stream of a
/// partitioned store, merged (the order across partitions is not defined).
async fn open_store(
    args: &TailArgs,
    client: &async_nats::Client,
) -> CliResult<(TailFeed, Option<NatsEventBus>, String, String)> {
    let context = jetstream::new(client.clone());
    let streams = find_streams(&context, &args.stream).await?;
    let names = streams.names();
    let filter = StoreFilter {
        actor_type: args.actor_type.clone(),
        event_types: args.types.clone(),
        actor_pattern: args.actor.clone(),
    };
    let tail = StoreTail::open_all(
        client,
        streams.streams.iter().cloned().zip(names).collect(),
        filter,
        STORE_TAIL_BUFFER,
    )
    .await?;
    let subject = tail.describe_subjects();
    let note = match streams.partitions() {
        1 => format!("the store's stream {}", streams.base),
        n => format!(
            "the store's {n} partition streams {base}_P0 to {base}_P{last}, merged: events of \
             one actor in order, of different partitions in no defined order",
            base = streams.base,
            last = n - 1
        ),
    };
    Ok((TailFeed::Store(tail), None, subject, note))
}

/// One event as one line: time, actor (`type/id`, or the id of an untyped actor), version, type, data, each escaped ([`escape`]: the
/// painter escapes what it styles).
pub fn line(event: &Event, painter: Painter) -> String {
    format!(
        "{} {} v{} {} {}",
        painter.dim(
            &event
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        painter.cyan(&actor_name(event.actor_key())),
        event.version,
        painter.bold(&event.event_type),
        // JSON escapes C0 controls in strings, not DEL, C1 or bidirectional overrides.
        escape(&serde_json::Value::Object(event.data.clone()).to_string())
    )
}
