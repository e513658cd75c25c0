//! `aether history compact|remove-retired`: histories that do not grow forever, on a
//! compactable event stream (one a store created with `JetStreamConfig::compactable(true)`).
//!
//! - `compact ID... [--type TYPE] [--dry-run]`: each actor's latest snapshot becomes the start
//!   of its history in the stream; the events before it move to the archive stream
//!   (`<stream>_ARCHIVE`), where every read of the actor's history still finds them
//!   ([`JetStreamEventStore::compact`]).
//! - `remove-retired ID... [--type TYPE] --grace DURATION [--dry-run] --yes`: a retired
//!   actor's events, all but its final one, and its snapshots are deleted for good once the
//!   grace period has passed since its retirement ([`JetStreamEventStore::remove_retired`]).
//!
//! Every id is checked before connecting, and nothing is written for bad input. One line per
//! actor: what was done (or, with `--dry-run`, what would be) on stdout, a refusal on stderr.
//! A refusal that concerns one actor (no snapshot, not retired, within the grace period) does
//! not stop the others; a failure of the server does, since the next actors would fail the
//! same way. The command fails at the end when any actor was refused or left out.

use std::time::Duration;

use aether_core::{ActorKey, Error};
use aether_store::{Compaction, JetStreamEventStore, Removal};
use async_nats::jetstream;
use clap::{Args, Subcommand};

use crate::connect::ConnectArgs;
use crate::error::{chain, with_hint, CliError, CliResult};
use crate::events::{find_streams, StreamArgs};
use crate::output::{actor_name, escape};
use crate::store_tail::check_actor_type;

/// Actors named in a summary line before the rest are only counted.
const NAMED: usize = 5;

/// `aether history` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum HistoryCommand {
    /// Make each actor's latest snapshot the start of its history in the stream: the events
    /// before it move to the archive stream (`<stream>_ARCHIVE`), where reads of the actor's
    /// history still find them. Needs a compactable stream.
    Compact(CompactArgs),
    /// Delete a retired actor's events, all but its final one, and its snapshots, once the
    /// grace period has passed since its retirement. Nothing is archived and it cannot be
    /// undone: asks for --yes. Needs a compactable stream.
    RemoveRetired(RemoveRetiredArgs),
}

impl HistoryCommand {
    /// The connection options of the subcommand.
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Compact(a) => &a.connect,
            Self::RemoveRetired(a) => &a.connect,
        }
    }
}

/// Arguments of `aether history compact`.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// The actors' ids (one or more, all of the same type).
    #[arg(required = true, value_name = "ID")]
    pub actors: Vec<String>,
    /// The actors' type (without it, the untyped actors with these ids).
    #[arg(long = "type", visible_alias = "actor-type", value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// Only count what would be archived and removed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `aether history remove-retired`.
#[derive(Debug, Clone, Args)]
pub struct RemoveRetiredArgs {
    /// The retired actors' ids (one or more, all of the same type).
    #[arg(required = true, value_name = "ID")]
    pub actors: Vec<String>,
    /// The actors' type (without it, the untyped actors with these ids).
    #[arg(long = "type", visible_alias = "actor-type", value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// How long after its retirement an actor's events are kept: a number and a unit (s, m,
    /// h, d, w), or several, e.g. 30d, 12h, 90m, 1d12h, 0s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Duration,
    /// Only count what would be removed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm: removed events cannot be brought back.
    #[arg(long)]
    pub yes: bool,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs an `aether history` subcommand.
///
/// # Errors
/// A malformed type or id, `remove-retired` without `--yes` (nothing is connected to then),
/// a store that is missing or not compactable, and each actor the store refused (no snapshot,
/// not retired, within the grace period) or the server failed on, after the other actors are
/// done.
pub async fn run(cmd: HistoryCommand) -> CliResult<()> {
    match cmd {
        HistoryCommand::Compact(args) => compact(args).await,
        HistoryCommand::RemoveRetired(args) => remove_retired(args).await,
    }
}

async fn compact(args: CompactArgs) -> CliResult<()> {
    let ids = checked_ids(args.actor_type.as_deref(), &args.actors)?;
    let keys = keys(args.actor_type.as_deref(), &ids);
    let store = open_compactable(&args.connect, &args.stream, "compacted").await?;
    let mut outcome = Outcome::new("compact", "compacted", keys.len());
    for actor in &keys {
        let done = store.compact(*actor, args.dry_run).await;
        if !outcome.record(*actor, done.map(|c| compaction_line(&who(*actor), &c))) {
            break;
        }
    }
    outcome.finish()
}

async fn remove_retired(args: RemoveRetiredArgs) -> CliResult<()> {
    let ids = checked_ids(args.actor_type.as_deref(), &args.actors)?;
    let keys = keys(args.actor_type.as_deref(), &ids);
    if !args.yes && !args.dry_run {
        let names: Vec<String> = keys.iter().map(|k| who(*k)).collect();
        let (whose, them) = if names.len() == 1 {
            ("retired actor", "it")
        } else {
            ("retired actors", "them")
        };
        return Err(CliError::new(format!(
            "removing the history of {whose} {} cannot be undone: every event before the \
             final one, and every snapshot, would be deleted from stream {} for good (nothing \
             is archived), for each actor retired more than {} ago. Pass --yes to remove \
             {them}, or --dry-run to see the counts",
            listed(&names),
            args.stream.stream_name(),
            format_duration(args.grace)
        )));
    }
    let store = open_compactable(&args.connect, &args.stream, "removed").await?;
    let mut outcome = Outcome::new("remove the history of", "removed", keys.len());
    for actor in &keys {
        let done = store.remove_retired(*actor, args.grace, args.dry_run).await;
        if !outcome.record(*actor, done.map(|r| removal_line(&who(*actor), &r))) {
            break;
        }
    }
    outcome.finish()
}

/// The ids given, each checked with the type (an empty id, a malformed type), in the order
/// given and without repeats.
fn checked_ids(actor_type: Option<&str>, ids: &[String]) -> CliResult<Vec<String>> {
    if let Some(t) = actor_type {
        check_actor_type(t)?;
    }
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let key = ActorKey {
            actor_type,
            actor_id: id,
        };
        key.validate().map_err(|e| {
            CliError::new(format!(
                "invalid actor {:?}: {}",
                actor_name(key),
                reason(&e)
            ))
        })?;
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    Ok(unique)
}

fn keys<'a>(actor_type: Option<&'a str>, ids: &'a [String]) -> Vec<ActorKey<'a>> {
    ids.iter()
        .map(|id| ActorKey {
            actor_type,
            actor_id: id,
        })
        .collect()
}

/// Finds the store's stream and opens the store on it, refusing (before any actor) a stream
/// whose history cannot be compacted: a partitioned store, or a stream that denies purges.
/// `done` says what would have happened to the events ("compacted", "removed").
async fn open_compactable(
    connect: &ConnectArgs,
    stream: &StreamArgs,
    done: &str,
) -> CliResult<JetStreamEventStore> {
    let client = connect.connect().await?;
    let mut streams = find_streams(&jetstream::new(client.clone()), stream).await?;
    if streams.partitions() > 1 {
        return Err(CliError::new(format!(
            "the events of store {} cannot be {done}: a compactable history is not available \
             on a partitioned store; nothing was changed",
            streams.describe()
        )));
    }
    let denies_purge = streams
        .streams
        .iter()
        .any(|s| s.cached_info().config.deny_purge);
    if denies_purge {
        return Err(CliError::new(format!(
            "the events of stream {} cannot be {done}: the stream is not compactable (it was \
             created denying purges, which it can never be changed to allow; a store opened \
             with JetStreamConfig::compactable(true) creates its stream compactable); nothing \
             was changed",
            streams.base
        )));
    }
    // Opened as what it is, so that the store's check of an existing stream finds no
    // difference to warn about.
    streams.config.compactable = true;
    streams.open_store(&client).await
}

/// What became of the actors of one command: the refusals, and where it stopped.
struct Outcome {
    /// What was being done, for error lines ("compact").
    verb: &'static str,
    /// What the actors not done were not, for the summary ("compacted").
    done: &'static str,
    /// Actors to do.
    total: usize,
    /// Actors tried so far.
    tried: usize,
    /// The refused actors (escaped) and why.
    refused: Vec<(String, CliError)>,
    /// Whether a failure that is not the actor's own stopped the command.
    stopped: bool,
}

impl Outcome {
    fn new(verb: &'static str, done: &'static str, total: usize) -> Self {
        Self {
            verb,
            done,
            total,
            tried: 0,
            refused: Vec::new(),
            stopped: false,
        }
    }

    /// Prints what was done to `actor` (its line), or records and prints its refusal (unless
    /// it is the only actor: the command's error says it then). Returns whether to go on: a
    /// failure that is not the actor's own (the server's, a permission) would fail the next
    /// actors the same way.
    fn record(&mut self, actor: ActorKey<'_>, result: aether_core::Result<String>) -> bool {
        self.tried += 1;
        let e = match result {
            Ok(line) => {
                println!("{line}");
                return true;
            }
            Err(e) => e,
        };
        let who = who(actor);
        self.stopped = !matches!(
            e,
            Error::InvalidInput(_)
                | Error::NotFound(_)
                | Error::Decoding(_)
                | Error::VersionConflict(_)
        );
        let error = CliError::new(format!("cannot {} {who}: {}", self.verb, reason(&e)));
        if self.total > 1 {
            eprintln!("error: {error}");
        }
        self.refused.push((who, error));
        !self.stopped
    }

    /// The command's result: the one actor's error, or a summary of the refused ones and of
    /// those left out.
    fn finish(mut self) -> CliResult<()> {
        if self.refused.is_empty() {
            return Ok(());
        }
        if self.total == 1 {
            return Err(self.refused.remove(0).1);
        }
        let names: Vec<String> = self.refused.iter().map(|(who, _)| who.clone()).collect();
        let mut message = format!(
            "{} of {} actors not {}: {}",
            self.refused.len(),
            self.total,
            self.done,
            listed(&names)
        );
        let left = self.total - self.tried;
        if self.stopped && left > 0 {
            message.push_str(&format!(
                "; stopped on a failure of the server, {} not tried",
                count(left as u64, "more actor")
            ));
        }
        Err(CliError::new(message))
    }
}

/// An actor as lines name it, escaped.
fn who(actor: ActorKey<'_>) -> String {
    escape(&actor_name(actor)).into_owned()
}

/// Why the store refused, without the error kind in front of the messages it words for
/// people.
fn reason(e: &Error) -> String {
    match e {
        Error::InvalidInput(m) | Error::NotFound(m) => m.clone(),
        other => with_hint(chain(other)),
    }
}

/// `a, b, c`, with the names past the first few counted.
fn listed(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// `1 event`, `4 events`.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The line saying what a compaction did, or would do on a dry run (`who` escaped).
pub fn compaction_line(who: &str, c: &Compaction) -> String {
    let at = c.snapshot_version;
    if c.dry_run {
        return format!(
            "would compact {who}: history would start at snapshot version {at}; would archive \
             {}, remove {} and any older snapshots",
            count(c.archived_events, "event"),
            count(c.removed_messages, "message")
        );
    }
    if c.archived_events == 0 && c.removed_messages == 0 && c.removed_snapshots == 0 {
        return format!(
            "nothing to compact for {who}: its history starts at snapshot version {at} already"
        );
    }
    format!(
        "compacted {who}: history starts at snapshot version {at}; {} archived, {} removed, {} \
         removed",
        count(c.archived_events, "event"),
        count(c.removed_messages, "message"),
        count(c.removed_snapshots, "old snapshot")
    )
}

/// The line saying what a removal did, or would do on a dry run (`who` escaped).
pub fn removal_line(who: &str, r: &Removal) -> String {
    let at = r.retired_version;
    if r.dry_run {
        return format!(
            "would remove the history of retired {who}: {} before its final event (version \
             {at}), and its snapshots",
            count(r.removed_messages, "message")
        );
    }
    if r.removed_messages == 0 && r.removed_snapshots == 0 {
        return format!(
            "nothing to remove for retired {who}: only its final event (version {at}) is left"
        );
    }
    format!(
        "removed the history of retired {who}: {} before its final event (version {at}) \
         removed, {} removed",
        count(r.removed_messages, "message"),
        count(r.removed_snapshots, "snapshot")
    )
}

/// Seconds in each unit [`parse_duration`] takes, the largest first.
const UNITS: [(&str, u64); 5] = [
    ("w", 7 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// Parses a duration for people: a number and a unit (`s`, `m`, `h`, `d`, `w`), or several
/// added up (`1d12h`); `0` alone is zero too.
///
/// # Errors
/// Anything else (no unit, an unknown one, a sign, spaces, a fraction), or more seconds than
/// fit in 64 bits, said in words.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{:?} is no duration: a number and a unit (s, m, h, d, w), or several, e.g. 30d, \
             12h, 90m, 1d12h, 0s",
            escape(text)
        )
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        let seconds = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, seconds)| *seconds);
        let (Some(seconds), false) = (seconds, number.is_empty()) else {
            return Err(bad());
        };
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds))
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{:?} is too long a duration", escape(text)))?;
        rest = tail;
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds as [`parse_duration`] reads them, in days, hours, minutes and
/// seconds: `30d`, `1d12h`, `90s` as `1m30s`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, seconds) in UNITS.iter().skip(1) {
        let n = left / seconds;
        if n > 0 {
            out.push_str(&format!("{n}{name}"));
            left %= seconds;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_from_their_units() {
        for (text, seconds) in [
            ("0s", 0),
            ("0", 0),
            ("45s", 45),
            ("90m", 5_400),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            ("1d12h", 129_600),
            ("1h30m15s", 5_415),
            ("007m", 420),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for text in [
            "", "12", "h", "3x", "1.5h", "-1h", "+1h", " 1h", "1h ", "1 h", "1H", "1d12", "d1",
            "1ms", "1é", "١h",
        ] {
            let e = parse_duration(text).expect_err(text);
            assert!(e.contains("is no duration"), "{text}: {e}");
        }
        let e = parse_duration("99999999999999999999w").expect_err("overflow");
        assert!(e.contains("too long"), "{e}");
        let e = parse_duration("40000000000000w").expect_err("overflow");
        assert!(e.contains("too long"), "{e}");
        // Quoted and escaped: a control character cannot reach the terminal.
        let e = parse_duration("1\u{1b}[2J").expect_err("escape");
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn durations_format_as_they_parse() {
        for (seconds, text) in [
            (0, "0s"),
            (45, "45s"),
            (90, "1m30s"),
            (3_600, "1h"),
            (2_592_000, "30d"),
            (129_600, "1d12h"),
            (1_209_601, "14d1s"),
        ] {
            let d = Duration::from_secs(seconds);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn ids_are_checked_with_their_type_and_repeats_dropped() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            checked_ids(Some("account"), &ids(&["a-1", "a-2", "a-1"])),
            Ok(ids(&["a-1", "a-2"]))
        );
        assert_eq!(checked_ids(None, &ids(&["u"])), Ok(ids(&["u"])));
        let e = checked_ids(Some("account"), &ids(&["a-1", ""])).expect_err("empty id");
        assert!(e.message().contains("must not be empty"), "{e}");
        let e = checked_ids(Some("no such"), &ids(&["a-1"])).expect_err("bad type");
        assert!(e.message().contains("actor type"), "{e}");
    }

    #[test]
    fn lines_count_in_words() {
        let c = Compaction {
            actor: "account/a-1".into(),
            snapshot_version: 6,
            archived_events: 4,
            removed_messages: 4,
            removed_snapshots: 1,
            dry_run: false,
        };
        assert_eq!(
            compaction_line("account/a-1", &c),
            "compacted account/a-1: history starts at snapshot version 6; 4 events archived, \
             4 messages removed, 1 old snapshot removed"
        );
        let dry = Compaction {
            dry_run: true,
            removed_snapshots: 0,
            ..c.clone()
        };
        assert_eq!(
            compaction_line("account/a-1", &dry),
            "would compact account/a-1: history would start at snapshot version 6; would \
             archive 4 events, remove 4 messages and any older snapshots"
        );
        let none = Compaction {
            archived_events: 0,
            removed_messages: 0,
            removed_snapshots: 0,
            ..c
        };
        assert_eq!(
            compaction_line("account/a-1", &none),
            "nothing to compact for account/a-1: its history starts at snapshot version 6 \
             already"
        );
        let r = Removal {
            actor: "account/r-1".into(),
            retired_version: 6,
            removed_messages: 5,
            removed_snapshots: 1,
            dry_run: false,
        };
        assert_eq!(
            removal_line("account/r-1", &r),
            "removed the history of retired account/r-1: 5 messages before its final event \
             (version 6) removed, 1 snapshot removed"
        );
        assert_eq!(
            listed(&ids7()),
            "a0, a1, a2, a3, a4 and 2 more",
            "long lists are cut"
        );
    }

    #[test]
    fn a_failure_of_the_server_stops_the_actors_after_it() {
        let keys = [
            ActorKey::new("account", "a-1"),
            ActorKey::new("account", "a-2"),
            ActorKey::new("account", "a-3"),
            ActorKey::new("account", "a-4"),
        ];
        let mut outcome = Outcome::new("compact", "compacted", keys.len());
        assert!(outcome.record(keys[0], Err(Error::invalid("actor a-1 has no snapshot"))));
        let down = Error::unavailable("compacting", std::io::Error::other("gone"));
        assert!(!outcome.record(keys[1], Err(down)));
        let e = outcome.finish().expect_err("refused");
        assert_eq!(
            e.message(),
            "2 of 4 actors not compacted: account/a-1, account/a-2; stopped on a failure of \
             the server, 2 more actors not tried"
        );
        // One actor: its own refusal is the error.
        let mut outcome = Outcome::new("compact", "compacted", 1);
        assert!(outcome.record(keys[0], Err(Error::invalid("actor a-1 has no snapshot"))));
        let e = outcome.finish().expect_err("refused");
        assert_eq!(
            e.message(),
            "cannot compact account/a-1: actor a-1 has no snapshot"
        );
        let mut outcome = Outcome::new("compact", "compacted", 2);
        assert!(outcome.record(keys[0], Ok("compacted".into())));
        assert!(outcome.record(keys[1], Ok("compacted".into())));
        assert_eq!(outcome.finish(), Ok(()));
    }

    fn ids7() -> Vec<String> {
        (0..7).map(|i| format!("a{i}")).collect()
    }
}
