//! `aether stats`: an event stream's size and settings.
//!
//! Events are counted exactly, not estimated from the message count: a batch saved with
//! `save_events` is one message holding several events. Counting reads the headers of every
//! event message (never the payloads) through a short-lived ordered consumer; `--fast` skips
//! it on very large streams.
//!
//! Actors are counted per actor type from the stream's subjects (typed actors on
//! `<stream>.events.<type>.<bucket>.<id>`, untyped ones on `<stream>.events.<id>`); `--type`
//! narrows actors and events to one type.
//!
//! A partitioned store (streams `<stream>_P0` to `<stream>_P<N-1>`, the count detected or
//! given with `--partitions`) is counted partition by partition: the totals first, then one
//! line per partition's stream.

use std::collections::BTreeMap;
use std::time::Duration;

use aether_nats::backend::{ConsumerSpec, StartAt};
use async_nats::jetstream::stream::{Info, StorageType};
use async_nats::jetstream::{self, stream::Stream};
use clap::Args;
use futures::{StreamExt, TryStreamExt};

use crate::connect::{jetstream_hint, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::events::{find_streams, StreamArgs};
use crate::output::{human_bytes, human_duration, Painter, Table};
use crate::store_tail::{check_actor_type, events_prefix};

/// The header the store writes with the number of events in a message.
const HEADER_COUNT: &str = "Aether-Count";
/// How long counting waits for the next message before giving up.
const COUNT_STALL: Duration = Duration::from_secs(5);
/// Actor types counted one by one; a stream with more (a hostile writer can make up types)
/// has the rest counted together.
const MAX_TYPES: usize = 1000;
/// Actor types named on the `actor types` line; the rest are summed up.
const TYPES_SHOWN: usize = 12;

/// Arguments of `aether stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Count only the actors (and events) of this actor type.
    #[arg(long = "type", visible_alias = "actor-type", value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// Do not count events (reading every message's headers); show messages only.
    #[arg(long)]
    pub fast: bool,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What `aether stats` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream's name.
    pub stream: String,
    /// All messages (event and snapshot messages).
    pub messages: u64,
    /// The actor type counted (`None`: every actor).
    pub actor_type: Option<String>,
    /// Messages on event subjects (of the actor type, when one was given).
    pub event_messages: u64,
    /// Events in them (`None` when not counted).
    pub events: Option<u64>,
    /// Distinct actors with events (of the actor type, when one was given).
    pub actors: u64,
    /// Actors with events per actor type (`None`: untyped actors), by type name; beyond
    /// 1 000 types the rest are counted under the last entry's name `"..."`.
    pub actors_by_type: Vec<(Option<String>, u64)>,
    /// Messages on snapshot subjects.
    pub snapshot_messages: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// Partitions counted at once.
const COUNTS_AT_ONCE: usize = 4;

/// Runs `aether stats`.
///
/// # Errors
/// Connection failures, a missing stream, a failed count.
pub async fn run(args: StatsArgs) -> CliResult<()> {
    if let Some(t) = &args.actor_type {
        check_actor_type(t)?;
    }
    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    let streams = find_streams(&context, &args.stream).await?;
    let client = &client;
    let actor_type = args.actor_type.as_deref();
    let parts: Vec<(StreamStats, Info)> = futures::stream::iter(streams.streams.iter().cloned())
        .map(|mut stream| async move {
            let name = stream.cached_info().config.name.clone();
            let info = stream
                .info()
                .await
                .map_err(|e| jetstream_hint(&format!("reading info of stream {name}"), &e))?
                .clone();
            let stats = collect(client, &stream, &info, !args.fast, actor_type).await?;
            Ok::<_, CliError>((stats, info))
        })
        .buffered(COUNTS_AT_ONCE)
        .try_collect()
        .await?;
    let painter = Painter::stdout();
    match parts.as_slice() {
        [(stats, info)] => print!("{}", render(stats, info, painter)),
        _ => print!("{}", render_partitioned(&streams.base, &parts, painter)),
    }
    Ok(())
}

/// Counts actors, messages and (when `count_events`) events of the stream: of every actor, or
/// of the actors of `actor_type`.
///
/// # Errors
/// The server's failures, or a count that stalled.
pub async fn collect(
    client: &async_nats::Client,
    stream: &Stream,
    info: &Info,
    count_events: bool,
    actor_type: Option<&str>,
) -> CliResult<StreamStats> {
    let name = info.config.name.clone();
    let prefix = events_prefix(&name);
    let all_events = format!("{prefix}.>");
    let mut subjects = stream
        .info_with_subjects(&all_events)
        .await
        .map_err(|e| jetstream_hint(&format!("listing the actors of stream {name}"), &e))?;
    // Per type: actors and event messages.
    let mut by_type: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
    let mut all_event_messages = 0u64;
    while let Some((subject, count)) = subjects
        .try_next()
        .await
        .map_err(|e| jetstream_hint(&format!("listing the actors of stream {name}"), &e))?
    {
        all_event_messages += count as u64;
        let Some(rest) = subject
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        let tokens: Vec<&str> = rest.splitn(4, '.').collect();
        let key = match tokens[..] {
            [_] => None,
            [t, _, _] => Some(t.to_string()),
            // Not a subject the store writes.
            _ => continue,
        };
        let key = if by_type.len() >= MAX_TYPES && !by_type.contains_key(&key) {
            Some("...".to_string())
        } else {
            key
        };
        let entry = by_type.entry(key).or_default();
        entry.0 += 1;
        entry.1 += count as u64;
    }
    let (actors, event_messages) = match actor_type {
        Some(t) => by_type
            .get(&Some(t.to_string()))
            .copied()
            .unwrap_or_default(),
        None => (
            by_type.values().map(|v| v.0).sum(),
            by_type.values().map(|v| v.1).sum(),
        ),
    };
    let filter = match actor_type {
        Some(t) => format!("{prefix}.{t}.*.*"),
        None => all_events,
    };
    let events = if !count_events {
        None
    } else if event_messages == 0 {
        Some(0)
    } else {
        Some(count(client, stream, &filter, &name).await?)
    };
    Ok(StreamStats {
        stream: name,
        messages: info.state.messages,
        actor_type: actor_type.map(str::to_string),
        event_messages,
        events,
        actors,
        actors_by_type: by_type.into_iter().map(|(t, (a, _))| (t, a)).collect(),
        snapshot_messages: info.state.messages.saturating_sub(all_event_messages),
        bytes: info.state.bytes,
    })
}

/// The `actor types` line: the types with the most actors first, `-` for untyped actors.
fn actor_types_line(by_type: &[(Option<String>, u64)]) -> String {
    if by_type.is_empty() {
        return "-".into();
    }
    let mut sorted: Vec<&(Option<String>, u64)> = by_type.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut parts: Vec<String> = sorted
        .iter()
        .take(TYPES_SHOWN)
        .map(|(t, n)| format!("{} {n}", t.as_deref().unwrap_or("(untyped)")))
        .collect();
    if sorted.len() > TYPES_SHOWN {
        let rest: u64 = sorted[TYPES_SHOWN..].iter().map(|(_, n)| n).sum();
        parts.push(format!(
            "and {rest} in {} more types",
            sorted.len() - TYPES_SHOWN
        ));
    }
    parts.join(", ")
}

/// Reads the headers of every event message and adds up their event counts.
async fn count(
    client: &async_nats::Client,
    stream: &Stream,
    filter: &str,
    name: &str,
) -> CliResult<u64> {
    let mut messages = ConsumerSpec::new(filter, StartAt::First)
        .headers_only(true)
        .open_ordered_push(
            stream,
            client,
            &format!("counting the events of stream {name}"),
        )
        .await?;
    let mut events = 0u64;
    loop {
        let next = tokio::time::timeout(COUNT_STALL, messages.next())
            .await
            .map_err(|_| {
                CliError::new(format!(
                    "counting the events of stream {name}: no message for {}s (use --fast to skip counting)",
                    COUNT_STALL.as_secs()
                ))
            })?;
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Err(jetstream_hint(
                    &format!("counting the events of stream {name}"),
                    &e,
                ))
            }
            None => break,
        };
        events += message
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_COUNT))
            .and_then(|v| v.as_str().trim().parse::<u64>().ok())
            .unwrap_or(1);
        match message.info() {
            Ok(i) if i.pending == 0 => break,
            Ok(_) => {}
            Err(e) => {
                return Err(CliError::new(format!(
                    "counting the events of stream {name}: {e}"
                )))
            }
        }
    }
    Ok(events)
}

/// A server timestamp (nanoseconds since the epoch) as RFC 3339 with milliseconds.
fn rfc3339(nanos: i128) -> Option<String> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn format_time(t: &Info, first: bool) -> String {
    let (ts, seq) = if first {
        (t.state.first_timestamp, t.state.first_sequence)
    } else {
        (t.state.last_timestamp, t.state.last_sequence)
    };
    if t.state.messages == 0 {
        return "-".into();
    }
    let when = rfc3339(ts.unix_timestamp_nanos()).unwrap_or_else(|| ts.to_string());
    format!("{when} (sequence {seq})")
}

/// The `events` line.
fn events_line(stats: &StreamStats) -> String {
    match stats.events {
        Some(n) => format!(
            "{n} in {} messages (a batch is one message; counted from message headers)",
            stats.event_messages
        ),
        None => format!(
            "not counted (--fast); {} event messages, a batch being one message",
            stats.event_messages
        ),
    }
}

/// The settings lines, from a stream's configuration.
fn settings(info: &Info) -> Vec<(&'static str, String)> {
    let c = &info.config;
    let retention = if c.max_age.is_zero() {
        "forever (no max age)".to_string()
    } else if c.max_age.as_secs() >= 86_400 && c.max_age.as_secs() % 86_400 == 0 {
        format!("max age {} days", c.max_age.as_secs() / 86_400)
    } else {
        format!("max age {}", human_duration(c.max_age))
    };
    let storage = match c.storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    };
    vec![
        ("retention", retention),
        ("replicas", c.num_replicas.to_string()),
        ("storage", storage.to_string()),
        ("deny delete", c.deny_delete.to_string()),
        ("deny purge", c.deny_purge.to_string()),
    ]
}

/// The counted lines, from `actors` to `bytes`.
fn counts(stats: &StreamStats) -> Vec<(&'static str, String)> {
    vec![
        ("messages", stats.messages.to_string()),
        ("events", events_line(stats)),
        ("actors", stats.actors.to_string()),
        ("actor types", actor_types_line(&stats.actors_by_type)),
        ("snapshots", stats.snapshot_messages.to_string()),
        (
            "bytes",
            format!("{} ({})", stats.bytes, human_bytes(stats.bytes)),
        ),
    ]
}

fn key_values(rows: Vec<(&'static str, String)>, painter: Painter) -> String {
    let mut t = Table::new::<&str>(&[]);
    for (k, v) in rows {
        t.row(vec![format!("{k}:"), v]);
    }
    t.render(painter)
}

/// The stats and settings as `key  value` lines.
pub fn render(stats: &StreamStats, info: &Info, painter: Painter) -> String {
    let stream = match &stats.actor_type {
        Some(ty) => format!("{} (actor type {ty})", painter.cyan(&stats.stream)),
        None => painter.cyan(&stats.stream),
    };
    let mut rows = vec![
        ("stream", stream),
        ("subjects", info.config.subjects.join(", ")),
    ];
    rows.extend(counts(stats));
    rows.push(("first", format_time(info, true)));
    rows.push(("last", format_time(info, false)));
    rows.extend(settings(info));
    key_values(rows, painter)
}

/// The totals of a partitioned store's partitions (named `base`): sums, and the actors per
/// type added up (an actor lives in one partition).
pub fn total(base: &str, parts: &[StreamStats]) -> StreamStats {
    let mut by_type: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for p in parts {
        for (t, n) in &p.actors_by_type {
            *by_type.entry(t.clone()).or_default() += n;
        }
    }
    StreamStats {
        stream: base.to_string(),
        messages: parts.iter().map(|p| p.messages).sum(),
        actor_type: parts.first().and_then(|p| p.actor_type.clone()),
        event_messages: parts.iter().map(|p| p.event_messages).sum(),
        events: parts.iter().map(|p| p.events).sum(),
        actors: parts.iter().map(|p| p.actors).sum(),
        actors_by_type: by_type.into_iter().collect(),
        snapshot_messages: parts.iter().map(|p| p.snapshot_messages).sum(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
    }
}

/// A partitioned store's stats (its partitions' streams, in partition order, with their
/// info): the totals and settings as `key  value` lines, then one row per partition. The
/// settings are partition 0's (the store gives every partition the same).
pub fn render_partitioned(base: &str, parts: &[(StreamStats, Info)], painter: Painter) -> String {
    let stats: Vec<StreamStats> = parts.iter().map(|(s, _)| s.clone()).collect();
    let all = total(base, &stats);
    let n = parts.len();
    let named = format!(
        "{} ({n} partitions: streams {base}_P0 to {base}_P{})",
        painter.cyan(base),
        n.saturating_sub(1)
    );
    let stream = match &all.actor_type {
        Some(ty) => format!("{named} (actor type {ty})"),
        None => named,
    };
    let mut rows = vec![
        ("stream", stream),
        (
            "partitions",
            format!("{n} (events are ordered within a partition, not across partitions)"),
        ),
    ];
    if let Some((_, info)) = parts.first() {
        let own = &info.config.name;
        let subjects: Vec<String> = info
            .config
            .subjects
            .iter()
            .map(|s| s.replacen(own.as_str(), &format!("{base}_P<k>"), 1))
            .collect();
        rows.push(("subjects", subjects.join(", ")));
    }
    rows.extend(counts(&all));
    let stored = || {
        parts
            .iter()
            .map(|(_, i)| i)
            .filter(|i| i.state.messages > 0)
    };
    let first = stored()
        .map(|i| i.state.first_timestamp.unix_timestamp_nanos())
        .min()
        .and_then(rfc3339);
    let last = stored()
        .map(|i| i.state.last_timestamp.unix_timestamp_nanos())
        .max()
        .and_then(rfc3339);
    rows.push(("first", first.unwrap_or_else(|| "-".into())));
    rows.push(("last", last.unwrap_or_else(|| "-".into())));
    if let Some((_, info)) = parts.first() {
        rows.extend(settings(info));
    }
    let mut out = key_values(rows, painter);
    out.push('\n');
    let mut t = Table::new(&[
        "PARTITION",
        "STREAM",
        "MESSAGES",
        "EVENTS",
        "ACTORS",
        "SNAPSHOTS",
        "BYTES",
        "FIRST SEQ",
        "LAST SEQ",
    ]);
    for (k, (s, info)) in parts.iter().enumerate() {
        t.row(vec![
            k.to_string(),
            s.stream.clone(),
            s.messages.to_string(),
            s.events.map_or_else(|| "-".into(), |e| e.to_string()),
            s.actors.to_string(),
            s.snapshot_messages.to_string(),
            human_bytes(s.bytes),
            info.state.first_sequence.to_string(),
            info.state.last_sequence.to_string(),
        ]);
    }
    out.push_str(&t.render(painter));
    out
}
