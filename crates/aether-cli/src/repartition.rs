//! `aether repartition`: a namespace's event history copied into a new namespace laid out over
//! another number of partitions. The partition count of a store is fixed when its streams are
//! created ([`JetStreamConfig::partitions`]); this is the way to change it.
//!
//! The source is only read: each of its log partitions in order ([`EventLog::partitions`], or
//! the store itself when unpartitioned), every stored message of events saved again with one
//! [`EventStore::save_events`] into the target, where each actor lands in its new partition.
//! Events keep their type, id, version, data, metadata and timestamp. Snapshots are not copied
//! (they are derived: actors rebuild from their events), and a past transaction's events are
//! saved actor by actor, so each actor's history is whole and in order but the atomicity
//! across actors is not re-created.
//!
//! The source must be quiet: every partition's head is read before the copy and again after
//! it, and a head that moved fails the command. Every refusal happens before anything is
//! written; a failure or Ctrl-C once the target streams exist deletes them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{log_partitions, Event, EventLog, EventStore, LogPosition, StorageKind};
use aether_nats::backend::get_stream;
use aether_store::{
    partition_stream_name, JetStreamConfig, JetStreamEventStore, PartitionKey, DEFAULT_STREAM_NAME,
    MAX_PARTITIONS,
};
use async_nats::jetstream::{self, stream::StorageType, Context};
use clap::Args;

use crate::backup::plural;
use crate::cleanup::{interrupted, remove_streams, Removed};
use crate::connect::{refusals_fail, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::events::{find_streams, parse_partition_key, StreamArgs};
use crate::output::{actor_name, escape, human_duration, progress};

/// Events read from a source partition at once.
const PAGE: usize = 256;

/// Arguments of `aether repartition`.
#[derive(Debug, Clone, Args)]
pub struct RepartitionArgs {
    /// The namespace whose event history is copied (it is only read; its writers must be
    /// stopped).
    #[arg(long, value_name = "SRC")]
    pub namespace: String,
    /// The new namespace to copy into: none of its event streams may exist.
    #[arg(long, value_name = "DST")]
    pub to_namespace: String,
    /// How many partitions the new namespace's log is spread over (1: one stream).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=u64::from(MAX_PARTITIONS))
    )]
    pub partitions: u32,
    /// Base name of the event stream, in both namespaces.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM_NAME)]
    pub stream: String,
    /// What decides an actor's partition in the new namespace, as the application will set
    /// it: `id` (the whole actor id) or `prefix:<char>` (the part of the id before the first
    /// `<char>`).
    #[arg(long, value_name = "KEY", default_value = "id", value_parser = parse_partition_key)]
    pub partition_key: PartitionKey,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What a repartition copied: its one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events copied.
    pub events: u64,
    /// Actors they belong to.
    pub actors: usize,
    /// Streams of the source.
    pub source_streams: usize,
    /// The target's stream names, in partition order.
    pub target_streams: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.target_streams.len();
        let into = match self.target_streams.as_slice() {
            [one] => format!("1 stream ({})", escape(one)),
            [first, ..] => format!("{n} partitions ({}..P{})", escape(first), n - 1),
            [] => "no stream".to_string(),
        };
        write!(
            f,
            "repartitioned {} event{} of {} actor{} from {} stream{} into {into} in {}",
            self.events,
            plural(usize::try_from(self.events).unwrap_or(usize::MAX)),
            self.actors,
            plural(self.actors),
            self.source_streams,
            plural(self.source_streams),
            human_duration(self.elapsed)
        )
    }
}

/// Runs `aether repartition`, printing its summary.
///
/// # Errors
/// The same namespace on both sides, connection failures, a missing or compactable source, a
/// target namespace with event streams already, a failed read or save, a source written to
/// during the copy, Ctrl-C; once the target streams exist, they are deleted (and named when
/// they could not be).
pub async fn run(args: RepartitionArgs) -> CliResult<()> {
    let started = Instant::now();
    let source_args = StreamArgs {
        namespace: Some(args.namespace.clone()),
        stream: args.stream.clone(),
        partitions: None,
        partition_key: args.partition_key,
    };
    let mut target_config = JetStreamConfig::default()
        .stream_name(args.stream.clone())
        .namespace(args.to_namespace.clone())
        .partition_key(args.partition_key);
    target_config.partitions = (args.partitions > 1).then_some(args.partitions);
    let source_base = source_args.stream_name();
    let target_base = JetStreamEventStore::stream_name_for(&target_config);
    if source_base == target_base {
        return Err(CliError::new(format!(
            "namespaces {:?} and {:?} are the same store (stream {}): repartition into a new \
             namespace (nothing was written)",
            args.namespace, args.to_namespace, source_base
        )));
    }

    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    // Watched here rather than around the whole command, so that a refusal while writing is
    // cleaned up like any failure.
    let watch = args.connect.permissions().clone();
    let prepared = refusals_fail(
        &watch,
        prepare(&client, &context, &source_args, target_config),
    )
    .await?;
    let target_names = JetStreamEventStore::stream_names_for(&prepared.target);
    let outcome = tokio::select! {
        biased;
        () = interrupted() => Err(CliError::new("interrupted")),
        r = refusals_fail(&watch, copy(&client, &prepared, &args.namespace, started)) => r,
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        Err(cause) => Err(CliError::new(format!(
            "{cause}; {}",
            remove(&context, &target_names).await
        ))),
    }
}

/// What the copy needs, found before anything is written.
struct Prepared {
    /// The source store (for its count of messages that did not decode).
    source: Arc<JetStreamEventStore>,
    /// The source's log partitions, in order.
    parts: Vec<Arc<dyn EventLog>>,
    /// Their streams' names.
    source_names: Vec<String>,
    /// Their heads before the copy.
    heads: Vec<Option<LogPosition>>,
    /// The target store's configuration.
    target: JetStreamConfig,
}

/// Finds and opens the source, checks it can be copied and the target is free, and reads the
/// source's heads; writes nothing.
async fn prepare(
    client: &async_nats::Client,
    context: &Context,
    source_args: &StreamArgs,
    mut target: JetStreamConfig,
) -> CliResult<Prepared> {
    let streams = find_streams(context, source_args).await?;
    let source_names = streams.names();

    // The target's streams in the layout asked for, and its unpartitioned stream either way:
    // a store of any layout in that namespace has one of them.
    let target_base = JetStreamEventStore::stream_name_for(&target);
    let mut wanted = vec![target_base.clone()];
    if target.partition_count() > 1 {
        wanted
            .extend((0..target.partition_count()).map(|k| partition_stream_name(&target_base, k)));
    }
    let mut existing = Vec::new();
    for name in &wanted {
        if get_stream(context, name).await?.is_some() {
            existing.push(escape(name).into_owned());
        }
    }
    if !existing.is_empty() {
        return Err(CliError::new(format!(
            "the target namespace already has event stream{} {}: repartition into a namespace \
             without an event store (nothing was written)",
            plural(existing.len()),
            existing.join(", ")
        )));
    }

    // The source's settings, carried over to the target where the configuration has them.
    let mut source = streams.config.clone();
    if let Some(first) = streams.streams.first() {
        let info = &first.cached_info().config;
        source.replicas = Some(info.num_replicas.max(1));
        source.storage = match info.storage {
            StorageType::Memory => StorageKind::Memory,
            StorageType::File => StorageKind::File,
        };
        source.max_age = (!info.max_age.is_zero()).then_some(info.max_age);
    }
    target.replicas = source.replicas;
    target.storage = source.storage;
    target.max_age = source.max_age;

    let store = JetStreamEventStore::new(client.clone(), source).await?;
    if store.compactable() {
        return Err(CliError::new(format!(
            "the store {} is compactable: its histories may have been moved in part to its \
             archive, which a repartition does not copy (nothing was written)",
            streams.describe()
        )));
    }
    let store = Arc::new(store);
    let log: Arc<dyn EventLog> = store.clone();
    let parts = log_partitions(&log);
    let heads = heads(&parts).await?;
    Ok(Prepared {
        source: store,
        parts,
        source_names,
        heads,
        target,
    })
}

/// Every partition's head, in order.
async fn heads(parts: &[Arc<dyn EventLog>]) -> CliResult<Vec<Option<LogPosition>>> {
    let mut heads = Vec::with_capacity(parts.len());
    for part in parts {
        heads.push(part.head().await?);
    }
    Ok(heads)
}

/// Creates the target store and copies every source partition into it, up to the heads read
/// before; then checks the heads did not move.
async fn copy(
    client: &async_nats::Client,
    prepared: &Prepared,
    source_namespace: &str,
    started: Instant,
) -> CliResult<Summary> {
    let target = JetStreamEventStore::new(client.clone(), prepared.target.clone()).await?;
    let mut events = 0u64;
    let mut actors: HashSet<(Option<String>, String)> = HashSet::new();
    for ((part, head), name) in prepared
        .parts
        .iter()
        .zip(&prepared.heads)
        .zip(&prepared.source_names)
    {
        let Some(head) = head else {
            continue;
        };
        let bar = progress(head.sequence, name);
        let mut batches = Batches::default();
        let mut after = None;
        'pages: loop {
            let page = part.read_after(after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for logged in page {
                // Written after the heads were read: the check below fails the command.
                if logged.position.sequence > head.sequence {
                    break 'pages;
                }
                after = Some(logged.position);
                bar.set_position(logged.position.sequence);
                if let Some(batch) = batches.push(logged.position.sequence, logged.event) {
                    events += save(&target, &batch, &mut actors).await?;
                }
            }
        }
        if let Some(batch) = batches.finish() {
            events += save(&target, &batch, &mut actors).await?;
        }
        bar.finish_and_clear();
    }
    // A read of the log skips a message that does not decode; a copy must not lose it.
    let malformed = prepared.source.malformed_events();
    if malformed > 0 {
        return Err(CliError::new(format!(
            "{malformed} stored message{} of namespace {source_namespace:?} did not decode as \
             events and would be missing from the copy (`aether events` shows where): repair \
             them and run the command again",
            if malformed == 1 { "" } else { "s" }
        )));
    }
    let after = heads(&prepared.parts).await?;
    if let Some(moved) = moved(&prepared.source_names, &prepared.heads, &after) {
        return Err(CliError::new(format!(
            "the source was written to during the copy ({moved}): stop every writer of \
             namespace {:?} (actors, snapshots, transactions) and run the command again",
            source_namespace
        )));
    }
    Ok(Summary {
        events,
        actors: actors.len(),
        source_streams: prepared.parts.len(),
        target_streams: target
            .stream_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        elapsed: started.elapsed(),
    })
}

/// Saves one stored message's events of one actor into the target, counting them.
async fn save(
    target: &JetStreamEventStore,
    batch: &[Event],
    actors: &mut HashSet<(Option<String>, String)>,
) -> CliResult<u64> {
    let Some(first) = batch.first() else {
        return Ok(0);
    };
    target
        .save_events(&first.actor_id, batch)
        .await
        .map_err(|e| {
            CliError::new(format!(
                "saving {} (from version {}) into {}: {}",
                actor_name(first.actor_key()),
                first.version,
                target.stream_name(),
                CliError::from(e)
            ))
        })?;
    actors.insert((first.actor_type.clone(), first.actor_id.clone()));
    Ok(batch.len() as u64)
}

/// Groups a log's events, as they are read, into the saves that wrote them: consecutive
/// events of one stored message (one sequence) and one actor.
#[derive(Debug, Default)]
struct Batches {
    sequence: u64,
    events: Vec<Event>,
}

impl Batches {
    /// Adds the next event, stored in message `sequence`; returns the batch it closes.
    fn push(&mut self, sequence: u64, event: Event) -> Option<Vec<Event>> {
        let closes = self.events.first().is_some_and(|first| {
            self.sequence != sequence || first.actor_key() != event.actor_key()
        });
        let closed = closes.then(|| std::mem::take(&mut self.events));
        self.sequence = sequence;
        self.events.push(event);
        closed
    }

    /// The last batch, if any.
    fn finish(&mut self) -> Option<Vec<Event>> {
        (!self.events.is_empty()).then(|| std::mem::take(&mut self.events))
    }
}

/// Which partitions' heads moved between `before` and `after` (`names` in the same order), in
/// words; `None` when none did.
fn moved(
    names: &[String],
    before: &[Option<LogPosition>],
    after: &[Option<LogPosition>],
) -> Option<String> {
    let seq = |h: Option<&Option<LogPosition>>| h.copied().flatten().map_or(0, |p| p.sequence);
    let count = before.len().max(after.len());
    let changes: Vec<String> = (0..count)
        .filter_map(|k| {
            let (b, a) = (seq(before.get(k)), seq(after.get(k)));
            (b != a).then(|| {
                let name = names.get(k).map_or("?", String::as_str);
                format!("stream {} went from sequence {b} to {a}", escape(name))
            })
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// Deletes the target streams after a failure or Ctrl-C, and says how that went.
async fn remove(context: &Context, names: &[String]) -> String {
    let Removed { deleted, left } = remove_streams(context, names).await;
    match (deleted.is_empty(), left.is_empty()) {
        (true, true) => "no target stream had been created".to_string(),
        (false, true) => format!(
            "deleted the target stream{} this run had created ({})",
            plural(deleted.len()),
            deleted.join(", ")
        ),
        (_, false) => format!(
            "could not delete the target stream{} {} this run created: delete {} by hand \
             (nats stream rm) before running it again",
            plural(left.len()),
            left.join(", "),
            if left.len() == 1 { "it" } else { "them" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(sequence: u64) -> Option<LogPosition> {
        Some(LogPosition::new(sequence, 0))
    }

    #[test]
    fn a_head_that_moved_is_named() {
        let names = vec!["s_P0".to_string(), "s_P1".to_string()];
        assert_eq!(moved(&names, &[pos(5), None], &[pos(5), None]), None);
        assert_eq!(
            moved(&names, &[pos(5), None], &[pos(5), pos(1)]).as_deref(),
            Some("stream s_P1 went from sequence 0 to 1")
        );
        assert_eq!(
            moved(&names, &[pos(5), pos(2)], &[pos(7), pos(3)]).as_deref(),
            Some("stream s_P0 went from sequence 5 to 7, stream s_P1 went from sequence 2 to 3")
        );
    }

    #[test]
    fn batches_follow_messages_and_actors() {
        let mut b = Batches::default();
        assert!(b.push(1, Event::new("A", "a", 1)).is_none());
        assert!(b.push(1, Event::new("A", "a", 2)).is_none());
        let first = b.push(2, Event::new("A", "b", 1)).unwrap();
        assert_eq!(first.len(), 2);
        // Same message, another actor (a transaction's message): a batch of its own.
        let second = b
            .push(2, Event::new("A", "b", 1).with_actor_type("t"))
            .unwrap();
        assert_eq!(second.len(), 1);
        let third = b.push(3, Event::new("A", "b", 2)).unwrap();
        assert_eq!(third[0].actor_type.as_deref(), Some("t"));
        assert_eq!(b.finish().map(|e| e.len()), Some(1));
        assert!(b.finish().is_none());
    }

    #[test]
    fn the_summary_names_the_target_streams() {
        let mut s = Summary {
            events: 1234,
            actors: 56,
            source_streams: 1,
            target_streams: (0..4).map(|k| format!("dst_AETHER_EVENTS_P{k}")).collect(),
            elapsed: Duration::from_millis(1200),
        };
        assert_eq!(
            s.to_string(),
            "repartitioned 1234 events of 56 actors from 1 stream into 4 partitions \
             (dst_AETHER_EVENTS_P0..P3) in 1.2s"
        );
        s.target_streams = vec!["dst_AETHER_EVENTS".into()];
        s.source_streams = 4;
        s.events = 1;
        s.actors = 1;
        assert_eq!(
            s.to_string(),
            "repartitioned 1 event of 1 actor from 4 streams into 1 stream (dst_AETHER_EVENTS) \
             in 1.2s"
        );
    }
}
