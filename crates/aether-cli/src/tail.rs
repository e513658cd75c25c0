//! `aether tail PATTERN`: live events from the NATS bus, one line each, until Ctrl-C.

use aether_bus::{NatsBusConfig, NatsEventBus, DEFAULT_SUBJECT_PREFIX};
use aether_core::{validate_pattern, Delivery, Event, EventBroadcaster, SubscriptionFilter};
use aether_nats::subject::pattern_subject;
use async_nats::connection::State;
use clap::Args;
use std::time::Duration;
use tokio::time::Instant;

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{escape, Painter};

/// Arguments of `aether tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Namespace pattern: a namespace, or one with `*` (one token) and `>` (the rest), e.g.
    /// `orders`, `tenant.*`, `>`.
    pub pattern: String,
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Only actors matching this pattern (`*` and `>` as for namespaces).
    #[arg(long, value_name = "PATTERN")]
    pub actor: Option<String>,
    /// Give up (exit with an error) after the connection has been down this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub give_up_after: u64,
    /// Subject prefix of the bus.
    #[arg(long, value_name = "P", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub prefix: String,
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
    validate_pattern(&args.pattern)
        .map_err(|e| CliError::new(format!("invalid namespace pattern {:?}: {e}", args.pattern)))?;
    if let Some(actor) = &args.actor {
        validate_pattern(actor)
            .map_err(|e| CliError::new(format!("invalid actor pattern {actor:?}: {e}")))?;
    }
    let subject = pattern_subject(&args.prefix, &args.pattern)?;
    let client = args.connect.connect().await?;
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
    let mut subscription = bus.subscribe_with_filter(&args.pattern, filter).await?;
    // Say "listening" only once a refusal would have shown: the server sends it before the
    // subscription's confirming round trip, but the client hands it to the connection's event
    // task, which a loaded machine may run a little later. A refusal in the meantime ends the
    // command with its one error line (the caller's `refusals_fail`), not two lines.
    let listening = tokio::time::sleep(LISTENING_GRACE);
    tokio::pin!(listening);
    let mut announced = false;
    let announce = |announced: &mut bool| {
        if !*announced {
            eprintln!("listening on {subject} (Ctrl-C to stop)");
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
            delivery = subscription.recv() => match delivery {
                Some(Delivery::Event(event)) => {
                    announce(&mut announced);
                    println!("{}", line(&event, painter));
                }
                Some(Delivery::Lagged(n)) => {
                    eprintln!("warning: {n} events were dropped before reaching this terminal");
                }
                None => {
                    return Err(CliError::new(format!(
                        "the subscription to {subject} ended: the connection to NATS was lost"
                    )))
                }
            }
        }
    }
    drop(subscription);
    let _ = bus.close().await;
    Ok(())
}

/// One event as one line: time, actor, version, type, data, each escaped ([`escape`]: the
/// painter escapes what it styles).
pub fn line(event: &Event, painter: Painter) -> String {
    format!(
        "{} {} v{} {} {}",
        painter.dim(
            &event
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        painter.cyan(&event.actor_id),
        event.version,
        painter.bold(&event.event_type),
        // JSON escapes C0 controls in strings, not DEL, C1 or bidirectional overrides.
        escape(&serde_json::Value::Object(event.data.clone()).to_string())
    )
}
