//! A read-only view of the timers and of the reactor's backlog, for operators' tools (the
//! `aether timers` command, the dashboard): what is pending, what fired and waits for a
//! dispatcher, and how far behind the log the reactor's partitions are.
//!
//! Everything read from the timers stream is treated as written by anyone allowed on its
//! subjects: a message whose subject or payload is not a timer's is counted as unreadable,
//! never trusted, and a scan holds at most `limit` timers in memory (the earliest due, in a
//! bounded heap), however many the stream has.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use aether_core::{validate_actor_type, Error, LogPosition, Result};
use aether_nats::backend::{classify_api, get_stream, ConsumerSpec, StartAt};
use aether_nats::subject::{decode_actor_id, encode_actor_id, validate_actor_id, validate_prefix};
use aether_projection::{CheckpointName, ProjectionSummary};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream;
use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::timers::older_than;
use crate::TimersConfig;

/// Timers listed unless a [`PendingFilter`] asks for another number.
pub const DEFAULT_PENDING_LIMIT: usize = 50;
/// Most timers listed, whatever a [`PendingFilter`] asks for.
pub const MAX_PENDING_LIMIT: usize = 1000;

/// Messages asked for in one pull while scanning: what a scan holds at once, before it decodes
/// them one by one, is at most this many messages of the server's largest payload (64 MiB
/// with the default 1 MiB; a timer's message is usually a few hundred bytes).
const SCAN_BATCH: usize = 64;
/// How long the server keeps a scan's consumer after its last pull (it is deleted at the end
/// of the scan; this covers a reader that died mid-scan).
const SCAN_INACTIVE: Duration = Duration::from_secs(30);

/// Which pending timers to list.
///
/// ```
/// use aether_reactions::PendingFilter;
///
/// let filter = PendingFilter {
///     actor_type: Some("hold".into()),
///     limit: 10,
///     ..PendingFilter::default()
/// };
/// assert_eq!(filter.actor_id, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFilter {
    /// Only the timers of actors of this type.
    pub actor_type: Option<String>,
    /// Only the timers of the actor with this id (of every type, unless `actor_type` is set).
    pub actor_id: Option<String>,
    /// How many of the earliest due timers to list ([`DEFAULT_PENDING_LIMIT`] by default, at
    /// most [`MAX_PENDING_LIMIT`]; 0 counts without listing). Every matching timer is counted.
    pub limit: usize,
}

impl Default for PendingFilter {
    fn default() -> Self {
        Self {
            actor_type: None,
            actor_id: None,
            limit: DEFAULT_PENDING_LIMIT,
        }
    }
}

impl PendingFilter {
    /// The subject the server selects the schedules of these timers by: one actor type, one
    /// actor (of one type or of any), or every timer.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an actor type that is no type name, or an actor id that is
    /// empty or too long for a subject.
    fn subject(&self, prefix: &str) -> Result<String> {
        let actor_type = match &self.actor_type {
            Some(t) => {
                validate_actor_type(t)?;
                t.as_str()
            }
            None => "*",
        };
        match &self.actor_id {
            Some(id) => {
                validate_actor_id(id)?;
                Ok(format!(
                    "{prefix}.set.{actor_type}.{}.*",
                    encode_actor_id(id)
                ))
            }
            None if self.actor_type.is_some() => Ok(format!("{prefix}.set.{actor_type}.>")),
            None => Ok(format!("{prefix}.set.>")),
        }
    }
}

/// A timer waiting for its due time.
///
/// Ordered by due time, then by actor type, actor id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTimer {
    /// The type of the actor that set it.
    pub actor_type: String,
    /// The id of that actor (decoded from its subject token).
    pub actor_id: String,
    /// The timer's name.
    pub name: String,
    /// When it is due.
    pub due: DateTime<Utc>,
}

impl Ord for PendingTimer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.due
            .cmp(&other.due)
            .then_with(|| self.actor_type.cmp(&other.actor_type))
            .then_with(|| self.actor_id.cmp(&other.actor_id))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for PendingTimer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What [`TimersView::pending`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTimers {
    /// Timers pending that match the filter.
    pub total: u64,
    /// The earliest due of them, at most the filter's limit, in due order.
    pub next: Vec<PendingTimer>,
    /// Timers that fired and wait for a dispatcher to deliver them (or for its
    /// acknowledgement), of every actor whatever the filter: the dispatchers' consumer's
    /// pending and unacknowledged messages, or every fired message while no dispatcher has
    /// run.
    pub fired_awaiting_delivery: u64,
    /// Messages among the schedules read whose subject or payload is not a timer's (not
    /// written by a reactor, or corrupted); not in `total`.
    pub unreadable: u64,
}

/// A read-only view of the timers stream (see the module docs): it never creates the stream
/// nor changes it. Each call reads the stream anew.
#[derive(Clone)]
pub struct TimersView {
    stream: stream::Stream,
    config: TimersConfig,
}

impl std::fmt::Debug for TimersView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimersView")
            .field("stream", &self.config.stream)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl TimersView {
    /// Opens the view on the existing timers stream `config.stream`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the stream does not exist (no reactor with timers ran on this
    /// account; on a server before 2.12, there are no timers at all: the message says so);
    /// [`Error::InvalidInput`] for a bad prefix, or a stream of that name without message
    /// schedules (not a timers stream); the server's failure otherwise ([`Error::Unavailable`]
    /// when it does not answer, [`Error::PermissionDenied`]).
    pub async fn open(js: Context, config: TimersConfig) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        let Some(stream) = get_stream(&js, &config.stream).await? else {
            let version = js.client().server_info().version;
            let why = if older_than(&version, 2, 12) {
                format!(
                    "nats-server {version} has no message schedules, so no timers (they need \
                     2.12 or later)"
                )
            } else {
                "no reactor with timers has run on this account, or it uses another stream \
                 name"
                    .to_string()
            };
            return Err(Error::NotFound(format!(
                "timers stream {} does not exist: {why}",
                config.stream
            )));
        };
        if !stream.cached_info().config.allow_message_schedules {
            return Err(Error::invalid(format!(
                "stream {} has no message schedules: it holds no timers",
                config.stream
            )));
        }
        Ok(Self { stream, config })
    }

    /// The settings the view reads with.
    pub fn config(&self) -> &TimersConfig {
        &self.config
    }

    /// Counts the pending timers `filter` selects (selected by the server, by subject) and
    /// lists the earliest due of them, up to its limit; counts the fired timers awaiting
    /// delivery. Every schedule selected is read once, one batch at a time; at most `limit`
    /// timers are held.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad filter; the server's failure (creating the read's
    /// consumer needs `$JS.API.CONSUMER.CREATE.<stream>` and the subjects below it).
    pub async fn pending(&self, filter: &PendingFilter) -> Result<PendingTimers> {
        let subject = filter.subject(&self.config.prefix)?;
        let limit = filter.limit.min(MAX_PENDING_LIMIT);
        let scan = self.scan(&subject, limit).await?;
        let fired_awaiting_delivery = self.fired_awaiting_delivery().await?;
        Ok(PendingTimers {
            total: scan.total,
            next: scan.earliest.into_sorted(),
            fired_awaiting_delivery,
            unreadable: scan.unreadable,
        })
    }

    /// Reads every message on `subject` once, keeping the `limit` earliest timers.
    async fn scan(&self, subject: &str, limit: usize) -> Result<Scan> {
        let context = format!(
            "reading the pending timers of stream {}",
            self.config.stream
        );
        let consumer = ConsumerSpec::new(subject, StartAt::First)
            .description("aether timers: pending timers, read-only")
            .create_pull(&self.stream, SCAN_INACTIVE, &context)
            .await?;
        let name = consumer.cached_info().name.clone();
        // What was stored when the read began: messages stored during it are not waited for,
        // so a writer that keeps writing cannot keep the read going.
        let stored = consumer.cached_info().num_pending;
        let mut scan = Scan {
            earliest: Earliest::new(limit),
            total: 0,
            unreadable: 0,
        };
        let mut read = 0u64;
        let result: Result<()> = async {
            while read < stored {
                let want = usize::try_from(stored - read)
                    .unwrap_or(SCAN_BATCH)
                    .min(SCAN_BATCH);
                let mut batch = consumer
                    .fetch()
                    .max_messages(want)
                    .messages()
                    .await
                    .map_err(|e| classify_batch(&context, e))?;
                let mut got = 0u64;
                let mut drained = false;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| Error::unavailable(&context, e))?;
                    got += 1;
                    match timer_of(&self.config.prefix, &message.subject, &message.payload) {
                        Some(timer) => {
                            scan.total += 1;
                            scan.earliest.offer(timer);
                        }
                        None => scan.unreadable += 1,
                    }
                    drained = message.info().is_ok_and(|i| i.pending == 0);
                }
                read += got;
                // Nothing more to read (messages removed since the count: fired, cancelled).
                if got == 0 || drained {
                    break;
                }
            }
            Ok(())
        }
        .await;
        // The consumer would go by itself after `SCAN_INACTIVE`; removing it now keeps the
        // stream's consumer list short for a dashboard that reads every second.
        if let Err(e) = self.stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, consumer = %name, "removing a timers scan's consumer failed");
        }
        result.map(|()| scan)
    }

    /// Fired timers not delivered yet: the dispatchers' durable consumer's pending and
    /// unacknowledged messages when it exists, else every message on `<prefix>.due.>` (no
    /// dispatcher ever ran, so none was delivered).
    async fn fired_awaiting_delivery(&self) -> Result<u64> {
        let context = format!(
            "reading consumer {} of stream {}",
            self.config.consumer, self.config.stream
        );
        match self.stream.consumer_info(&self.config.consumer).await {
            Ok(info) => Ok(info
                .num_pending
                .saturating_add(u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX))),
            Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
                let consumer =
                    ConsumerSpec::new(format!("{}.due.>", self.config.prefix), StartAt::First)
                        .headers_only(true)
                        .description("aether timers: counting fired timers, read-only")
                        .create_pull(&self.stream, SCAN_INACTIVE, "counting the fired timers")
                        .await?;
                let info = consumer.cached_info();
                let count = info.num_pending;
                if let Err(e) = self.stream.delete_consumer(&info.name).await {
                    tracing::debug!(error = %e, "removing a timers count's consumer failed");
                }
                Ok(count)
            }
            Err(e) => {
                let api = match e.kind() {
                    ConsumerInfoErrorKind::JetStream(api) => Some(api),
                    _ => None,
                };
                Err(classify_api(context, api.as_ref(), e))
            }
        }
    }
}

fn classify_batch(context: &str, e: async_nats::jetstream::consumer::pull::BatchError) -> Error {
    aether_nats::backend::classify(context, e)
}

/// What a scan found.
struct Scan {
    earliest: Earliest<PendingTimer>,
    total: u64,
    unreadable: u64,
}

/// The head of a fired timer's payload: the command is skipped, not decoded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FiredHead {
    actor_type: String,
    actor_id: String,
    name: String,
    due: DateTime<Utc>,
}

/// The timer a schedule message on `subject` with `payload` holds, when both are a timer's
/// and agree on whose it is.
fn timer_of(prefix: &str, subject: &str, payload: &[u8]) -> Option<PendingTimer> {
    let (actor_type, actor_id, name) = parse_set_subject(prefix, subject)?;
    let head: FiredHead = serde_json::from_slice(payload).ok()?;
    if head.actor_type != actor_type || head.actor_id != actor_id || head.name != name {
        return None;
    }
    Some(PendingTimer {
        actor_type,
        actor_id,
        name,
        due: head.due,
    })
}

/// The actor type, actor id (decoded) and timer name of a schedule subject
/// `<prefix>.set.<type>.<encoded id>.<name>`, or `None` when `subject` is not one.
pub(crate) fn parse_set_subject(prefix: &str, subject: &str) -> Option<(String, String, String)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".set.")?;
    let mut tokens = rest.split('.');
    let (actor_type, id, name) = (tokens.next()?, tokens.next()?, tokens.next()?);
    if tokens.next().is_some()
        || validate_actor_type(actor_type).is_err()
        || aether_core::validate_timer_name(name).is_err()
    {
        return None;
    }
    let actor_id = decode_actor_id(id).ok()?;
    Some((actor_type.to_string(), actor_id, name.to_string()))
}

/// The `limit` smallest items offered, kept in a max-heap of at most `limit` items: each offer
/// costs `O(log limit)` and memory stays bounded, however many are offered.
#[derive(Debug)]
pub(crate) struct Earliest<T> {
    limit: usize,
    heap: BinaryHeap<T>,
}

impl<T: Ord> Earliest<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            // Grown as items come: a large limit over a small stream allocates little.
            heap: BinaryHeap::with_capacity(limit.min(64)),
        }
    }

    /// Keeps `item` if it is among the `limit` smallest so far.
    pub(crate) fn offer(&mut self, item: T) {
        if self.heap.len() < self.limit {
            self.heap.push(item);
        } else if let Some(mut largest) = self.heap.peek_mut() {
            if item < *largest {
                *largest = item;
            }
        }
    }

    /// The items kept, smallest first.
    pub(crate) fn into_sorted(self) -> Vec<T> {
        self.heap.into_sorted_vec()
    }
}

/// One partition of the reactor (or the whole reactor, when it is not partitioned), as the
/// projection store shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactorPartition {
    /// Its name in the projection store (`<reactor>.p<partition>`, or
    /// `<reactor>.l<log partition>.p<partition>` on a partitioned log: see
    /// [`CheckpointName`]).
    pub name: String,
    /// The log partition it reads, on a partitioned log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_partition: Option<u32>,
    /// The partition (`None`: the reactor's own, unpartitioned, checkpoint).
    pub partition: Option<u32>,
    /// The position of the last event it handled (`None`: none yet).
    pub position: Option<LogPosition>,
    /// Stored messages after its position (of every partition's actors: each partition reads
    /// the whole log and skips the others'); `None` when the log's head is not known.
    pub lag: Option<u64>,
    /// Events it set aside after their reactions kept failing (see `aether projections
    /// parked`).
    pub parked: usize,
}

/// The reactor's backlog: where each of its partitions is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactorBacklog {
    /// The reactor's projection name.
    pub name: String,
    /// Its partitions, in partition order; empty when it never recorded anything.
    pub partitions: Vec<ReactorPartition>,
}

impl ReactorBacklog {
    /// The backlog of reactor `name` (the projection name of its
    /// [`ReactorConfig`](crate::ReactorConfig), `aether-reactor` by default) among
    /// `summaries` (a projection store's, e.g. `NatsProjectionStore::summaries`), with the
    /// lag behind `head` (the log's last position, `LogPosition::new(0, 0)` for an empty log;
    /// `None` when unknown).
    ///
    /// ```
    /// use aether_core::LogPosition;
    /// use aether_projection::{PositionKeeper, ProjectionSummary};
    /// use aether_reactions::ReactorBacklog;
    ///
    /// let summary = |name: &str, at: u64, parked| ProjectionSummary {
    ///     name: name.into(),
    ///     kept_by: PositionKeeper::Store,
    ///     position: Some(LogPosition::new(at, 0)),
    ///     parked,
    ///     reported: None,
    /// };
    /// let all = [summary("aether-reactor.p1", 7, 1), summary("orders", 2, 0), summary("aether-reactor.p0", 9, 0)];
    /// let backlog = ReactorBacklog::from_summaries("aether-reactor", &all, Some(LogPosition::new(10, 0)));
    /// assert_eq!(backlog.partitions.len(), 2);
    /// assert_eq!(backlog.partitions[0].partition, Some(0));
    /// assert_eq!((backlog.max_lag(), backlog.parked()), (Some(3), 1));
    /// ```
    pub fn from_summaries(
        name: &str,
        summaries: &[ProjectionSummary],
        head: Option<LogPosition>,
    ) -> Self {
        Self::from_summaries_per_log_partition(name, summaries, &[head])
    }

    /// The backlog of reactor `name` on a log of `heads.len()` partitions (`heads[l]`: log
    /// partition `l`'s last position, `LogPosition::new(0, 0)` when empty, `None` when
    /// unknown): each checkpoint's lag is behind its own log partition's head. With one head
    /// this is [`from_summaries`](Self::from_summaries); with none, every lag is unknown.
    ///
    /// ```
    /// use aether_core::LogPosition;
    /// use aether_projection::{PositionKeeper, ProjectionSummary};
    /// use aether_reactions::ReactorBacklog;
    ///
    /// let summary = |name: &str, at: u64| ProjectionSummary {
    ///     name: name.into(),
    ///     kept_by: PositionKeeper::Store,
    ///     position: Some(LogPosition::new(at, 0)),
    ///     parked: 0,
    ///     reported: None,
    /// };
    /// let all = [summary("aether-reactor.l1.p0", 4), summary("aether-reactor.l0.p0", 9)];
    /// let heads = [Some(LogPosition::new(10, 0)), Some(LogPosition::new(4, 0))];
    /// let backlog = ReactorBacklog::from_summaries_per_log_partition("aether-reactor", &all, &heads);
    /// assert_eq!(backlog.partitions[0].log_partition, Some(0));
    /// assert_eq!(backlog.partitions[0].lag, Some(1));
    /// assert_eq!(backlog.partitions[1].lag, Some(0));
    /// ```
    pub fn from_summaries_per_log_partition(
        name: &str,
        summaries: &[ProjectionSummary],
        heads: &[Option<LogPosition>],
    ) -> Self {
        let partitioned = heads.len() > 1;
        let mut partitions: Vec<ReactorPartition> = summaries
            .iter()
            .filter_map(|s| {
                let parsed = CheckpointName::parse(&s.name)?;
                if parsed.projection != name || parsed.log_partition.is_some() != partitioned {
                    return None;
                }
                // A log partition the log does not have keeps its row, with no lag.
                let head = match parsed.log_partition {
                    Some(l) => heads.get(l as usize).copied().flatten(),
                    None => heads.first().copied().flatten(),
                };
                Some(ReactorPartition {
                    name: s.name.clone(),
                    log_partition: parsed.log_partition,
                    partition: parsed.shard,
                    position: s.position,
                    lag: head.map(|h| s.lag(Some(h))),
                    parked: s.parked,
                })
            })
            .collect();
        partitions.sort_by_key(|p| (p.log_partition, p.partition));
        Self {
            name: name.to_string(),
            partitions,
        }
    }

    /// The largest lag of its partitions (`None`: no partition, or the head is not known).
    pub fn max_lag(&self) -> Option<u64> {
        self.partitions.iter().filter_map(|p| p.lag).max()
    }

    /// Its parked events, over every partition.
    pub fn parked(&self) -> usize {
        self.partitions.iter().map(|p| p.parked).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_projection::PositionKeeper;

    const P: &str = "aether.timers";

    #[test]
    fn schedule_subjects_parse_back_into_the_actor_and_timer() {
        let id = "orders.>*\u{1b}]0;x\u{7} é";
        let subject = format!("{P}.set.hold.{}.expire", encode_actor_id(id));
        assert_eq!(
            parse_set_subject(P, &subject),
            Some(("hold".into(), id.into(), "expire".into()))
        );
        let token = encode_actor_id("a");
        for bad in [
            format!("{P}.due.hold.{token}.expire"),
            format!("{P}.set.hold.{token}"),
            format!("{P}.set.hold.{token}.expire.extra"),
            format!("{P}.set.ho*ld.{token}.expire"),
            format!("{P}.set.hold.{token}.ex*pire"),
            format!("{P}.set.hold.not=base64.expire"),
            format!("{P}.set.hold.{token}="),
            format!("other.set.hold.{token}.expire"),
            format!("{P}x.set.hold.{token}.expire"),
            format!("{P}.set..{token}.expire"),
            String::new(),
        ] {
            assert_eq!(parse_set_subject(P, &bad), None, "{bad}");
        }
    }

    #[test]
    fn payloads_that_are_not_the_subjects_timer_are_unreadable() {
        let subject = format!("{P}.set.hold.{}.expire", encode_actor_id("h-1"));
        let good = br#"{"actorType":"hold","actorId":"h-1","name":"expire","due":"2030-01-01T00:00:00Z","command":{"Expire":null}}"#;
        let timer = timer_of(P, &subject, good).expect("a timer");
        assert_eq!(timer.due.to_rfc3339(), "2030-01-01T00:00:00+00:00");
        for bad in [
            &b"not json"[..],
            br#"{"actorType":"hold"}"#,
            br#"{"actorType":"hold","actorId":"h-2","name":"expire","due":"2030-01-01T00:00:00Z"}"#,
            br#"{"actorType":"hold","actorId":"h-1","name":"expire","due":"yesterday"}"#,
            &[0xff, 0xfe][..],
        ] {
            assert_eq!(timer_of(P, &subject, bad), None);
        }
    }

    #[test]
    fn filters_select_by_subject() {
        let f = |t: Option<&str>, id: Option<&str>| PendingFilter {
            actor_type: t.map(str::to_string),
            actor_id: id.map(str::to_string),
            ..PendingFilter::default()
        };
        let token = encode_actor_id("h.1");
        assert_eq!(f(None, None).subject(P).unwrap(), format!("{P}.set.>"));
        assert_eq!(
            f(Some("hold"), None).subject(P).unwrap(),
            format!("{P}.set.hold.>")
        );
        assert_eq!(
            f(Some("hold"), Some("h.1")).subject(P).unwrap(),
            format!("{P}.set.hold.{token}.*")
        );
        assert_eq!(
            f(None, Some("h.1")).subject(P).unwrap(),
            format!("{P}.set.*.{token}.*")
        );
        assert!(matches!(
            f(Some("a.>"), None).subject(P),
            Err(Error::InvalidInput(_))
        ));
        for bad in [String::new(), "x".repeat(100_000)] {
            assert!(matches!(
                f(None, Some(&bad)).subject(P),
                Err(Error::InvalidInput(_))
            ));
        }
        assert_eq!(PendingFilter::default().limit, DEFAULT_PENDING_LIMIT);
    }

    #[test]
    fn the_earliest_are_kept_and_no_more() {
        // Against a full sort, for several limits and orders of arrival.
        let mut items: Vec<u64> = (0..500).map(|i| (i * 7919) % 1009).collect();
        for limit in [0, 1, 3, 50, 499, 500, 800] {
            for round in 0..3 {
                if round == 1 {
                    items.reverse();
                } else if round == 2 {
                    items.sort_unstable();
                }
                let mut earliest = Earliest::new(limit);
                for &i in &items {
                    earliest.offer(i);
                    assert!(earliest.heap.len() <= limit);
                }
                let mut sorted = items.clone();
                sorted.sort_unstable();
                sorted.truncate(limit);
                assert_eq!(earliest.into_sorted(), sorted, "limit {limit}");
            }
        }
    }

    #[test]
    fn timers_sort_by_due_then_identity() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let t = |ty: &str, id: &str, due| PendingTimer {
            actor_type: ty.into(),
            actor_id: id.into(),
            name: "n".into(),
            due,
        };
        let mut earliest = Earliest::new(3);
        for timer in [
            t("b", "1", at(20)),
            t("a", "9", at(30)),
            t("a", "2", at(20)),
            t("a", "1", at(10)),
        ] {
            earliest.offer(timer);
        }
        let kept: Vec<(String, i64)> = earliest
            .into_sorted()
            .into_iter()
            .map(|t| {
                (
                    format!("{}/{}", t.actor_type, t.actor_id),
                    t.due.timestamp(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [("a/1".into(), 10), ("a/2".into(), 20), ("b/1".into(), 20)]
        );
    }

    #[test]
    fn the_backlog_holds_the_reactors_partitions_only() {
        let s = |name: &str, at: Option<u64>, parked| ProjectionSummary {
            name: name.into(),
            kept_by: PositionKeeper::Store,
            position: at.map(|a| LogPosition::new(a, 0)),
            parked,
            reported: None,
        };
        let all = [
            s("aether-reactor.p10", Some(5), 2),
            s("aether-reactor.p2", None, 0),
            s("aether-reactor-other.p0", Some(1), 9),
            s("aether-reactor.p01", Some(1), 9),
            s("aether-reactor.px", Some(1), 9),
            s("aether-reactor.p", Some(1), 9),
            s("orders", Some(1), 9),
        ];
        let backlog =
            ReactorBacklog::from_summaries("aether-reactor", &all, Some(LogPosition::new(8, 0)));
        let names: Vec<&str> = backlog.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["aether-reactor.p2", "aether-reactor.p10"]);
        assert_eq!(backlog.partitions[0].lag, Some(8));
        assert_eq!(backlog.partitions[1].lag, Some(3));
        assert_eq!((backlog.max_lag(), backlog.parked()), (Some(8), 2));
        let unknown = ReactorBacklog::from_summaries("aether-reactor", &all, None);
        assert_eq!(unknown.max_lag(), None);
        assert!(ReactorBacklog::from_summaries("none", &all, None)
            .partitions
            .is_empty());
    }
}
