//! `aether timers`: the durable timers waiting in the timers stream (the earliest due first),
//! how many fired and wait for a dispatcher, and the reactor's backlog (where each of its
//! partitions is in the log, and what it parked).
//!
//! Read-only, through [`aether_reactions::TimersView`]: the stream is never created, and a
//! missing one is a one-line error. Everything read from the stream (actor types, ids, timer
//! names) is escaped before it is printed; messages there that are not timers are counted as
//! unreadable.
//!
//! On a partitioned event store the reactor keeps a checkpoint per log partition
//! (`<reactor>.l<k>`, `<reactor>.l<k>.p<j>` for a worker's partition): each is listed with
//! its lag behind its own partition's head ([`crate::heads`]).

use std::time::Duration;

use aether_core::StorageKind;
use aether_projection::{NatsProjectionStore, ProjectionSummary, DEFAULT_PROJECTION_BUCKET};
use aether_reactions::{
    PendingFilter, PendingTimers, ReactorBacklog, ReactorConfig, TimersConfig, TimersView,
    DEFAULT_PENDING_LIMIT, MAX_PENDING_LIMIT,
};
use aether_store::{DEFAULT_STREAM_NAME, MAX_PARTITIONS};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::StreamArgs;
use crate::heads::LogHeads;
use crate::output::{escape, human_duration, Painter, Table};
use crate::store_tail::check_actor_type;

/// Arguments of `aether timers`.
#[derive(Debug, Clone, Args)]
pub struct TimersArgs {
    /// Only the timers of actors of this type.
    #[arg(long = "actor-type", visible_alias = "type", value_name = "TYPE")]
    pub actor_type: Option<String>,
    /// Only the timers of the actor with this id (of this type with --actor-type, else of
    /// every type).
    #[arg(long, value_name = "ID")]
    pub actor: Option<String>,
    /// How many of the earliest due timers to print (0 to 1000); all are counted.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_PENDING_LIMIT,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_PENDING_LIMIT as u64)
    )]
    pub limit: usize,
    /// The timers stream.
    #[arg(long, value_name = "NAME", default_value_t = TimersConfig::default().stream)]
    pub stream: String,
    /// Subject prefix of the timers stream.
    #[arg(long, value_name = "P", default_value_t = TimersConfig::default().prefix)]
    pub prefix: String,
    /// The reactor's projection name (for its backlog).
    #[arg(long, value_name = "NAME", default_value_t = default_reactor())]
    pub reactor: String,
    /// The key-value bucket holding the projections' state (the reactor's checkpoints).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROJECTION_BUCKET)]
    pub bucket: String,
    /// Namespace of the event store the reactor reads (for its lag).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Base name of the event stream the reactor reads (for its lag).
    #[arg(long = "event-stream", value_name = "NAME", default_value = DEFAULT_STREAM_NAME)]
    pub event_stream: String,
    /// How many partitions the event store's log is spread over; detected when not given.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=u64::from(MAX_PARTITIONS))
    )]
    pub partitions: Option<u32>,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The reactor's projection name unless told otherwise (`aether-reactor`).
pub fn default_reactor() -> String {
    ReactorConfig::new("").name
}

impl TimersArgs {
    /// The timers stream's settings these options describe.
    pub fn timers_config(&self) -> TimersConfig {
        TimersConfig {
            stream: self.stream.clone(),
            prefix: self.prefix.clone(),
            ..TimersConfig::default()
        }
    }

    /// The event stream the reactor reads.
    pub fn event_stream(&self) -> StreamArgs {
        StreamArgs {
            namespace: self.namespace.clone(),
            stream: self.event_stream.clone(),
            partitions: self.partitions,
            ..StreamArgs::default()
        }
    }

    /// The filter these options describe.
    pub fn filter(&self) -> PendingFilter {
        PendingFilter {
            actor_type: self.actor_type.clone(),
            actor_id: self.actor.clone(),
            limit: self.limit,
        }
    }
}

/// The reactor's backlog from the projections' bucket `bucket`, with the lag behind the
/// log's `heads`; `None` when the bucket does not exist (it is never created).
///
/// # Errors
/// The server's failure reading the bucket.
pub async fn reactor_backlog(
    client: &async_nats::Client,
    bucket: &str,
    reactor: &str,
    heads: &LogHeads,
) -> Result<Option<ReactorBacklog>, aether_core::Error> {
    let connection = aether_nats::Connection::from(client.clone());
    if aether_nats::KvBucket::open_existing(&connection, bucket)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let state = NatsProjectionStore::open(client.clone(), bucket, StorageKind::File).await?;
    let summaries = state.summaries().await?;
    Ok(Some(backlog_of(reactor, &summaries, heads)))
}

/// The reactor's backlog from the projections' summaries, each checkpoint's lag behind its
/// own log partition's head ([`ReactorBacklog::from_summaries_per_log_partition`]); a known
/// but empty partition counts from nothing.
pub fn backlog_of(
    reactor: &str,
    summaries: &[ProjectionSummary],
    heads: &LogHeads,
) -> ReactorBacklog {
    let heads: Vec<Option<aether_core::LogPosition>> = heads
        .partitions
        .iter()
        .map(|h| Some(h.unwrap_or(aether_core::LogPosition::new(0, 0))))
        .collect();
    ReactorBacklog::from_summaries_per_log_partition(reactor, summaries, &heads)
}

/// Runs `aether timers`.
///
/// # Errors
/// A bad filter, connection failures, a missing timers stream, the server's failures.
pub async fn run(args: TimersArgs) -> CliResult<()> {
    if let Some(t) = &args.actor_type {
        check_actor_type(t)?;
    }
    if args.actor.as_deref() == Some("") {
        return Err(CliError::new("--actor must not be empty"));
    }
    let client = args.connect.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    let view = TimersView::open(js, args.timers_config())
        .await
        .map_err(|e| match e {
            // The library's words, without the variant's "not found:" in front.
            aether_core::Error::NotFound(message) => CliError::new(message),
            other => CliError::from(other),
        })?;
    let pending = view.pending(&args.filter()).await?;
    let heads = crate::projections::heads_of(&client, &args.event_stream()).await?;
    let backlog = reactor_backlog(&client, &args.bucket, &args.reactor, &heads).await?;
    print!(
        "{}",
        render(
            &pending,
            &Reactor {
                name: &args.reactor,
                bucket: &args.bucket,
                backlog: backlog.as_ref(),
            },
            Utc::now(),
            Painter::stdout()
        )
    );
    Ok(())
}

/// The reactor as `render` shows it.
#[derive(Debug, Clone, Copy)]
pub struct Reactor<'a> {
    /// Its projection name.
    pub name: &'a str,
    /// The projections' bucket.
    pub bucket: &'a str,
    /// Its backlog (`None`: the bucket does not exist).
    pub backlog: Option<&'a ReactorBacklog>,
}

/// How far `due` is from `now`, for people: `in 4.2s`, `in 3h 05m`, `late 850ms`,
/// `late 2d 03h`.
pub fn relative(due: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let (late, d) = match (due - now).to_std() {
        Ok(d) => (false, d),
        Err(_) => (true, (now - due).to_std().unwrap_or_default()),
    };
    let secs = d.as_secs();
    let span = if secs >= 48 * 3600 {
        format!("{}d {:02}h", secs / 86_400, (secs % 86_400) / 3600)
    } else if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        human_duration(Duration::from_millis(d.as_millis() as u64))
    };
    if late {
        format!("late {span}")
    } else {
        format!("in {span}")
    }
}

/// What `aether timers` prints: one line per timer listed, a summary line, and the
/// reactor's backlog. Everything from the stream is escaped ([`escape`]).
pub fn render(
    pending: &PendingTimers,
    reactor: &Reactor<'_>,
    now: DateTime<Utc>,
    painter: Painter,
) -> String {
    let mut out = String::new();
    if pending.next.is_empty() {
        if pending.total == 0 {
            out.push_str("no pending timers\n");
        }
    } else {
        let mut t = Table::new(&["DUE", "ACTOR TYPE", "ACTOR", "TIMER", "WHEN"]);
        for timer in &pending.next {
            t.row(vec![
                timer.due.to_rfc3339_opts(SecondsFormat::Millis, true),
                escape(&timer.actor_type).into_owned(),
                escape(&timer.actor_id).into_owned(),
                escape(&timer.name).into_owned(),
                relative(timer.due, now),
            ]);
        }
        out.push_str(&t.render(painter));
    }
    let shown = if (pending.next.len() as u64) < pending.total {
        format!(" ({} due first shown)", pending.next.len())
    } else {
        String::new()
    };
    let unreadable = if pending.unreadable > 0 {
        painter.yellow(&format!("{} unreadable", pending.unreadable))
    } else {
        "0 unreadable".to_string()
    };
    out.push_str(&format!(
        "{} pending{shown}, {} fired awaiting delivery, {unreadable}\n",
        pending.total, pending.fired_awaiting_delivery
    ));
    let name = escape(reactor.name);
    let bucket = escape(reactor.bucket);
    match reactor.backlog {
        None => out.push_str(&format!(
            "reactor {name}: no projection state (bucket {bucket} does not exist)\n"
        )),
        Some(b) if b.partitions.is_empty() => out.push_str(&format!(
            "reactor {name}: nothing recorded in bucket {bucket} (has it run?)\n"
        )),
        Some(b) => {
            let lag = b
                .max_lag()
                .map_or_else(|| "unknown".to_string(), |l| l.to_string());
            let parked = if b.parked() > 0 {
                painter.yellow(&format!("{} parked", b.parked()))
            } else {
                "0 parked".to_string()
            };
            out.push_str(&format!(
                "reactor {name}: {} partition(s), lag at most {lag}, {parked}\n",
                b.partitions.len()
            ));
            let mut t = Table::new(&["PARTITION", "POSITION", "LAG", "PARKED"]);
            for p in &b.partitions {
                t.row(vec![
                    escape(&p.name).into_owned(),
                    p.position.map_or_else(|| "-".into(), |p| p.to_string()),
                    p.lag.map_or_else(|| "-".into(), |l| l.to_string()),
                    p.parked.to_string(),
                ]);
            }
            out.push_str(&t.render(painter));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_core::LogPosition;
    use aether_projection::PositionKeeper;
    use aether_reactions::PendingTimer;

    fn summary(name: &str, at: Option<u64>, parked: usize) -> ProjectionSummary {
        ProjectionSummary {
            name: name.into(),
            kept_by: PositionKeeper::Store,
            position: at.map(|s| LogPosition::new(s, 0)),
            parked,
            reported: None,
        }
    }

    #[test]
    fn a_partitioned_logs_backlog_measures_each_checkpoint_against_its_partition() {
        let summaries = [
            summary("aether-reactor.l1.p0", Some(5), 0),
            summary("aether-reactor.l0", Some(2), 1),
            summary("aether-reactor.l1", None, 0),
            summary("aether-reactor.l9", Some(1), 0),
            summary("aether-reactor.l01", Some(1), 0),
            summary("aether-reactor.l1.px", Some(1), 0),
            summary("aether-reactor-2.l0", Some(1), 0),
            summary("other.l0", Some(1), 0),
        ];
        let heads = LogHeads {
            partitions: vec![Some(LogPosition::new(10, 0)), Some(LogPosition::new(7, 0))],
        };
        let b = backlog_of("aether-reactor", &summaries, &heads);
        let rows: Vec<(&str, Option<u32>, Option<u64>)> = b
            .partitions
            .iter()
            .map(|p| (p.name.as_str(), p.partition, p.lag))
            .collect();
        assert_eq!(
            rows,
            [
                ("aether-reactor.l0", None, Some(8)),
                ("aether-reactor.l1", None, Some(7)),
                ("aether-reactor.l1.p0", Some(0), Some(2)),
                // A partition the log does not have: no head applies.
                ("aether-reactor.l9", None, None),
            ]
        );
        assert_eq!((b.max_lag(), b.parked()), (Some(8), 1));
        // Unpartitioned: as the reactions crate reads it, an empty log counting from 0.
        let one = LogHeads::whole(None);
        let b = backlog_of(
            "aether-reactor",
            &[summary("aether-reactor.p3", Some(4), 0)],
            &one,
        );
        assert_eq!(b.partitions[0].lag, Some(0));
        let b = backlog_of(
            "aether-reactor",
            &[summary("aether-reactor", None, 0)],
            &LogHeads::unknown(),
        );
        assert_eq!(b.partitions[0].lag, None);
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn how_long_until_due_or_how_late() {
        let now = at(1_000_000);
        assert_eq!(relative(at(1_000_004), now), "in 4.0s");
        assert_eq!(relative(now, now), "in 0ms");
        assert_eq!(relative(at(1_000_000 - 65), now), "late 1m 05s");
        assert_eq!(relative(at(1_000_000 + 3 * 3600 + 300), now), "in 3h 05m");
        assert_eq!(relative(at(1_000_000 - 50 * 3600), now), "late 2d 02h");
    }

    #[test]
    fn timers_and_the_backlog_are_printed_escaped() {
        let hostile = "h\u{1b}]0;owned\u{7}\u{202e}";
        let pending = PendingTimers {
            total: 3,
            next: vec![
                PendingTimer {
                    actor_type: "hold".into(),
                    actor_id: hostile.into(),
                    name: "expire".into(),
                    due: at(1_000_010),
                },
                PendingTimer {
                    actor_type: "hold".into(),
                    actor_id: "h-2".into(),
                    name: "expire".into(),
                    due: at(999_990),
                },
            ],
            fired_awaiting_delivery: 1,
            unreadable: 2,
        };
        let backlog = ReactorBacklog {
            name: "aether-reactor".into(),
            partitions: vec![aether_reactions::ReactorPartition {
                name: "aether-reactor.p0".into(),
                log_partition: None,
                partition: Some(0),
                position: Some(LogPosition::new(7, 0)),
                lag: Some(3),
                parked: 1,
            }],
        };
        let reactor = Reactor {
            name: "aether-reactor",
            bucket: "AETHER_PROJECTIONS",
            backlog: Some(&backlog),
        };
        let text = render(&pending, &reactor, at(1_000_000), Painter::plain());
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(text.contains("h\\x1b]0;owned\\x07\\u{202e}"), "{text}");
        assert!(
            text.contains("in 10.0s") && text.contains("late 10.0s"),
            "{text}"
        );
        assert!(
            text.contains("3 pending (2 due first shown), 1 fired awaiting delivery, 2 unreadable"),
            "{text}"
        );
        assert!(
            text.contains("reactor aether-reactor: 1 partition(s), lag at most 3, 1 parked"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("aether-reactor.p0"))
            .unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["aether-reactor.p0", "7.0", "3", "1"]
        );

        let empty = render(
            &PendingTimers::default(),
            &Reactor {
                backlog: None,
                ..reactor
            },
            at(0),
            Painter::plain(),
        );
        assert_eq!(
            empty,
            "no pending timers\n0 pending, 0 fired awaiting delivery, 0 unreadable\n\
             reactor aether-reactor: no projection state (bucket AETHER_PROJECTIONS does not exist)\n"
        );
    }
}
