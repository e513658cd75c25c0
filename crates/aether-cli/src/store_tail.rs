//! Following the event store's stream directly (`aether tail --source store`, the dashboard's
//! live tail from the store): every event saved through the JetStream store, whether or not
//! anything publishes it to the bus.
//!
//! The store keeps typed actors on `<stream>.events.<type>.<bucket>.<id>` and untyped ones on
//! `<stream>.events.<id>` (`<id>` base64url-encoded, see `aether_store`'s subject layout). A
//! tail is an ordered push consumer on those subjects starting at the messages stored after it
//! opened, filtered by the server where the filter allows:
//!
//! | filter | consumer subject |
//! |---|---|
//! | none | `<stream>.events.>` |
//! | actor type `T` | `<stream>.events.T.*.*` |
//! | actor type `T` and an id without wildcards | `<stream>.events.T.<bucket>.<id>` |
//!
//! Not `<stream>.events.T.>`: servers before 2.10 accept a consumer's filter only when it lies
//! within one of the stream's subjects (`<stream>.events.*.*.*`), or covers one of them.
//! Event types and actor id patterns with wildcards are checked here, after decoding.
//!
//! Every message is treated as hostile: one that is not a store message (a payload that is not
//! an event or a non-empty array of events of the subject's actor, versions not increasing, a
//! subject that does not decode, an `Aether-Version` header that disagrees) is counted and
//! skipped. Events go into a [`Subscription`] of bounded size: a reader that does not keep up
//! loses the newest events and is told how many ([`StoreDelivery::Lagged`]).
//!
//! A partitioned store's log is several streams (`<stream>_P<k>`): the tail then has one
//! consumer per partition's stream, all feeding the one subscription. Events of one actor
//! keep their order (an actor lives in one partition); the order of events of different
//! partitions is the order they reach this process, which is not defined.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{
    is_wildcard_pattern, validate_actor_type, validate_pattern, Delivery, Event, OverflowPolicy,
    SendOutcome, SubscribeOptions, Subscription, SubscriptionFilter, SubscriptionSender,
};
use aether_nats::backend::{ConsumerSpec, StartAt};
use aether_nats::subject::{decode_actor_id, encode_actor_id};
use async_nats::jetstream::consumer::push;
use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::error::{CliError, CliResult};

/// The header in which the store writes the version of a message's last event.
const HEADER_LAST_VERSION: &str = "Aether-Version";

/// The longest wait between two attempts to open the consumer again after a failure.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(5);

/// Which events a store tail delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFilter {
    /// Only actors of this type (`None`: every actor, typed or not).
    pub actor_type: Option<String>,
    /// Only these event types (empty: every type).
    pub event_types: Vec<String>,
    /// Only actors whose id matches this pattern (`*` one token, `>` the rest).
    pub actor_pattern: Option<String>,
}

impl StoreFilter {
    /// Checks the actor type ([`validate_actor_type`]) and the actor pattern.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](aether_core::Error::InvalidInput) naming the bad value.
    pub fn validate(&self) -> aether_core::Result<()> {
        if let Some(t) = &self.actor_type {
            validate_actor_type(t)?;
        }
        if let Some(p) = &self.actor_pattern {
            validate_pattern(p).map_err(|e| {
                aether_core::Error::invalid(format!("invalid actor pattern {p:?}: {e}"))
            })?;
        }
        Ok(())
    }

    /// The consumer's filter subject on the stream `stream_name` (see the module docs).
    pub fn subject(&self, stream_name: &str) -> String {
        let prefix = events_prefix(stream_name);
        match (&self.actor_type, self.actor_pattern.as_deref()) {
            (Some(t), Some(id)) if !id.is_empty() && !is_wildcard_pattern(id) => format!(
                "{prefix}.{t}.{}.{}",
                aether_placement::bucket_for(id),
                encode_actor_id(id)
            ),
            (Some(t), _) => format!("{prefix}.{t}.*.*"),
            (None, _) => format!("{prefix}.>"),
        }
    }

    /// Whether `event` passes (its actor type, type and id).
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(t) = &self.actor_type {
            if event.actor_type.as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        self.subscription_filter().matches(event)
    }

    fn subscription_filter(&self) -> SubscriptionFilter {
        SubscriptionFilter {
            event_types: self.event_types.clone(),
            actor_pattern: self.actor_pattern.clone().filter(|p| !p.is_empty()),
        }
    }
}

/// Checks an actor type given on the command line or in a query, as one clear line.
///
/// # Errors
/// The rule the type breaks ([`validate_actor_type`]).
pub fn check_actor_type(actor_type: &str) -> CliResult<()> {
    validate_actor_type(actor_type).map_err(|e| CliError::new(e.to_string()))
}

/// The prefix of every events subject of the stream `stream_name`.
pub fn events_prefix(stream_name: &str) -> String {
    format!("{stream_name}.events")
}

/// What a store tail delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreDelivery {
    /// An event that passed the filter.
    Event(Arc<Event>),
    /// This many events were dropped because the reader did not keep up.
    Lagged(u64),
    /// This many messages on the events subjects were not store messages and were skipped.
    Malformed(u64),
}

/// A live tail from either source: a bus subscription (narrowed to an actor type here, since
/// the bus cannot select one) or a [`StoreTail`].
#[derive(Debug)]
pub enum TailFeed {
    /// Events from the bus.
    Bus {
        /// The bus subscription (namespace pattern, event types and actor pattern applied).
        subscription: Subscription,
        /// Only events of actors of this type.
        actor_type: Option<String>,
    },
    /// Events from the store's stream.
    Store(StoreTail),
}

impl TailFeed {
    /// The next delivery; `None` once the feed has ended.
    pub async fn recv(&mut self) -> Option<StoreDelivery> {
        match self {
            Self::Bus {
                subscription,
                actor_type,
            } => loop {
                match subscription.recv().await? {
                    Delivery::Event(e) => {
                        if let Some(t) = actor_type {
                            if e.actor_type.as_deref() != Some(t.as_str()) {
                                continue;
                            }
                        }
                        return Some(StoreDelivery::Event(e));
                    }
                    Delivery::Lagged(n) => return Some(StoreDelivery::Lagged(n)),
                }
            },
            Self::Store(tail) => tail.recv().await,
        }
    }
}

/// Messages skipped as malformed, and a wake-up for the reader when one is.
#[derive(Debug, Default)]
struct Malformed {
    count: AtomicU64,
    notify: Notify,
}

/// Aborts the reading tasks when the tail is dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A live tail of the store's stream (or a partitioned store's streams): [`recv`](Self::recv)
/// until it ends.
pub struct StoreTail {
    subscription: Subscription,
    malformed: Arc<Malformed>,
    reported: u64,
    subjects: Vec<String>,
}

impl std::fmt::Debug for StoreTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTail")
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

impl StoreTail {
    /// Opens a tail of `stream` (whose name is `stream_name`) over `client` (the client of the
    /// stream's context): the events saved from now on that pass `filter`, at most `buffer`
    /// of them held for a reader that does not keep up. Returns once the consumer exists.
    ///
    /// # Errors
    /// A bad filter ([`Error::InvalidInput`](aether_core::Error::InvalidInput)), or the
    /// server refusing the consumer (as [`aether_nats::backend::consumer_error`] sorts it).
    pub async fn open(
        client: &async_nats::Client,
        stream: Stream,
        stream_name: &str,
        filter: StoreFilter,
        buffer: usize,
    ) -> aether_core::Result<Self> {
        Self::open_all(
            client,
            vec![(stream, stream_name.to_string())],
            filter,
            buffer,
        )
        .await
    }

    /// Opens a tail of several streams at once, each given with its name: the partitions'
    /// streams of a partitioned store, one consumer each, merged into one subscription (the
    /// order across streams is not defined; see the module docs). Returns once every consumer
    /// exists.
    ///
    /// # Errors
    /// No stream, a bad filter ([`Error::InvalidInput`](aether_core::Error::InvalidInput)),
    /// or the server refusing a consumer.
    pub async fn open_all(
        client: &async_nats::Client,
        streams: Vec<(Stream, String)>,
        filter: StoreFilter,
        buffer: usize,
    ) -> aether_core::Result<Self> {
        filter.validate()?;
        if streams.is_empty() {
            return Err(aether_core::Error::invalid("a store tail needs a stream"));
        }
        let subjects: Vec<String> = streams.iter().map(|(_, n)| filter.subject(n)).collect();
        // Every consumer first: a refusal of any fails the tail before anything runs.
        let opened = futures::future::try_join_all(streams.iter().zip(&subjects).map(
            |((stream, _), subject)| async move {
                ConsumerSpec::new(subject.clone(), StartAt::New)
                    .description("aether tail --source store")
                    .open_ordered_push(stream, client, &format!("following {subject}"))
                    .await
            },
        ))
        .await?;
        let options = SubscribeOptions::default()
            .filter(filter.subscription_filter())
            .buffer_size(buffer.max(1))
            .overflow(OverflowPolicy::DropNewest);
        let (sender, subscription) = Subscription::channel(&subjects[0], options);
        let malformed = Arc::new(Malformed::default());
        let tasks = streams
            .into_iter()
            .zip(&subjects)
            .zip(opened)
            .map(|(((stream, name), subject), messages)| {
                let pump = Pump {
                    client: client.clone(),
                    stream,
                    subject: subject.clone(),
                    prefix: events_prefix(&name),
                    filter: filter.clone(),
                    sender: sender.clone(),
                    malformed: malformed.clone(),
                };
                tokio::spawn(pump.run(messages))
            })
            .collect();
        Ok(Self {
            subscription: subscription.with_guard(AbortOnDrop(tasks)),
            malformed,
            reported: 0,
            subjects,
        })
    }

    /// The subject the tail's (first) consumer reads.
    pub fn subject(&self) -> &str {
        self.subjects.first().map_or("", String::as_str)
    }

    /// The subjects the tail's consumers read, one per stream.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// The subjects as people read them: the one subject, or the list of them.
    pub fn describe_subjects(&self) -> String {
        self.subjects.join(", ")
    }

    /// The next delivery; `None` once the tail has ended.
    pub async fn recv(&mut self) -> Option<StoreDelivery> {
        loop {
            let count = self.malformed.count.load(Ordering::Acquire);
            if count > self.reported {
                let n = count - self.reported;
                self.reported = count;
                return Some(StoreDelivery::Malformed(n));
            }
            tokio::select! {
                () = self.malformed.notify.notified() => continue,
                delivery = self.subscription.recv() => {
                    return delivery.map(|d| match d {
                        Delivery::Event(e) => StoreDelivery::Event(e),
                        Delivery::Lagged(n) => StoreDelivery::Lagged(n),
                    })
                }
            }
        }
    }
}

/// The task reading the consumer into the subscription.
struct Pump {
    client: async_nats::Client,
    stream: Stream,
    subject: String,
    prefix: String,
    filter: StoreFilter,
    sender: SubscriptionSender,
    malformed: Arc<Malformed>,
}

impl Pump {
    async fn run(self, mut messages: push::Ordered) {
        // The last stream sequence handled: a consumer opened again resumes after it.
        let mut last: Option<u64> = None;
        loop {
            match messages.next().await {
                Some(Ok(message)) => {
                    if let Ok(info) = message.info() {
                        last = Some(info.stream_sequence);
                    }
                    let subject = message.subject.as_str();
                    match decode_message(
                        &self.prefix,
                        subject,
                        message.headers.as_ref(),
                        &message.payload,
                    ) {
                        Ok(events) => {
                            for event in events {
                                if !self.filter.matches(&event) {
                                    continue;
                                }
                                if self.sender.try_send(Arc::new(event)) == SendOutcome::Closed {
                                    return;
                                }
                            }
                        }
                        Err(why) => {
                            tracing::debug!(
                                subject = ?subject.chars().take(200).collect::<String>(),
                                ?why,
                                "store tail: skipped a message that is not a store message"
                            );
                            self.malformed.count.fetch_add(1, Ordering::AcqRel);
                            self.malformed.notify.notify_one();
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, subject = %self.subject, "store tail: the consumer failed; opening it again");
                    match self.reopen(last).await {
                        Some(m) => messages = m,
                        None => return,
                    }
                }
                None => match self.reopen(last).await {
                    Some(m) => messages = m,
                    None => return,
                },
            }
        }
    }

    /// Opens the consumer again after `last`, waiting longer after each failure, until it
    /// opens (`Some`) or the reader is gone (`None`).
    async fn reopen(&self, last: Option<u64>) -> Option<push::Ordered> {
        let mut delay = Duration::from_millis(250);
        loop {
            tokio::time::sleep(delay).await;
            if self.sender.is_closed() {
                return None;
            }
            let opened = ConsumerSpec::new(self.subject.clone(), StartAt::New.resume_after(last))
                .description("aether tail --source store")
                .open_ordered_push(&self.stream, &self.client, "following the store")
                .await;
            match opened {
                Ok(m) => return Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "store tail: opening the consumer failed");
                    delay = (delay * 2).min(MAX_REOPEN_DELAY);
                }
            }
        }
    }
}

/// Decodes one message of the store's events subjects (`prefix` is `<stream>.events`) the way
/// the store writes them: the subject names the actor, the payload is one event's JSON object
/// or a non-empty JSON array of the actor's events with increasing versions, and the
/// `Aether-Version` header, when present, is the last event's version. Events that carry no
/// actor type get the subject's.
///
/// # Errors
/// Why the message is not a store message, for logs (it may quote the payload: log it with
/// `Debug`, which escapes).
pub fn decode_message(
    prefix: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Vec<Event>, String> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or("not an events subject")?;
    let mut tokens = rest.split('.');
    let (subject_type, actor_id) =
        match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
            (Some(id), None, None, None) => (None, decode_id(id)?),
            (Some(t), Some(bucket), Some(id), None) => {
                validate_actor_type(t)
                    .map_err(|_| "the subject's actor type is not a type name")?;
                let actor_id = decode_id(id)?;
                if bucket != aether_placement::bucket_for(&actor_id).to_string() {
                    return Err("the subject's bucket does not match its actor id".into());
                }
                (Some(t), actor_id)
            }
            _ => return Err("the subject has too many or too few tokens".into()),
        };
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    let mut events: Vec<Event> = if first == Some(&b'[') {
        serde_json::from_slice(payload).map_err(|e| format!("not an array of events: {e}"))?
    } else {
        vec![Event::from_json_bytes(payload).map_err(|e| format!("not an event: {e}"))?]
    };
    if events.is_empty() {
        return Err("an empty batch".into());
    }
    let mut prev = 0;
    for e in &mut events {
        if e.actor_id != actor_id {
            return Err("an event of another actor than the subject's".into());
        }
        match (subject_type, e.actor_type.as_deref()) {
            (Some(t), Some(u)) if t != u => {
                return Err("an event of another actor type than the subject's".into())
            }
            (Some(t), None) => e.actor_type = Some(t.to_string()),
            _ => {}
        }
        e.validate()
            .map_err(|err| format!("an invalid event: {err}"))?;
        if e.version <= prev {
            return Err("versions do not increase within the message".into());
        }
        prev = e.version;
    }
    let header = headers
        .and_then(|h| h.get(HEADER_LAST_VERSION))
        .map(|v| v.as_str().trim().parse::<u64>());
    match header {
        Some(Ok(v)) if v == prev => {}
        None => {}
        Some(_) => return Err("the Aether-Version header does not match the last event".into()),
    }
    Ok(events)
}

fn decode_id(token: &str) -> Result<String, String> {
    decode_actor_id(token).map_err(|_| "the subject's actor id does not decode".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "S.events";

    fn typed_subject(t: &str, id: &str) -> String {
        format!(
            "{PREFIX}.{t}.{}.{}",
            aether_placement::bucket_for(id),
            encode_actor_id(id)
        )
    }

    fn version_header(v: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LAST_VERSION, v.to_string().as_str());
        h
    }

    #[test]
    fn filters_become_subjects_the_server_accepts() {
        let mut f = StoreFilter::default();
        assert_eq!(f.subject("S"), "S.events.>");
        f.actor_type = Some("show".into());
        assert_eq!(f.subject("S"), "S.events.show.*.*");
        f.actor_pattern = Some("s.*".into());
        assert_eq!(f.subject("S"), "S.events.show.*.*");
        f.actor_pattern = Some("s-1".into());
        assert_eq!(
            f.subject("S"),
            typed_subject("show", "s-1").replace(PREFIX, "S.events")
        );
        f.actor_type = Some("a.b".into());
        assert!(f.validate().is_err());
        f.actor_type = None;
        f.actor_pattern = Some("a..b".into());
        assert!(f.validate().is_err());
    }

    #[test]
    fn store_messages_decode_with_the_subjects_type() {
        let one = Event::new("Booked", "s-1", 3);
        let payload = one.to_json_bytes().unwrap();
        let got = decode_message(
            PREFIX,
            &typed_subject("show", "s-1"),
            Some(&version_header(3)),
            &payload,
        )
        .unwrap();
        assert_eq!(got[0].actor_type.as_deref(), Some("show"));
        let batch =
            serde_json::to_vec(&[Event::new("A", "x.y", 1), Event::new("B", "x.y", 2)]).unwrap();
        let untyped = format!("{PREFIX}.{}", encode_actor_id("x.y"));
        let got = decode_message(PREFIX, &untyped, None, &batch).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].actor_type, None);
    }

    #[test]
    fn hostile_messages_are_refused_never_a_panic() {
        let good = Event::new("T", "a", 1).to_json_bytes().unwrap();
        let sub = typed_subject("show", "a");
        let other_type = Event::new("T", "a", 1)
            .with_actor_type("customer")
            .to_json_bytes()
            .unwrap();
        let cases: Vec<(String, Option<HeaderMap>, Vec<u8>)> = vec![
            (sub.clone(), None, b"not json".to_vec()),
            (sub.clone(), None, b"[]".to_vec()),
            (sub.clone(), None, b"{}".to_vec()),
            (sub.clone(), None, b"\xff\xfe".to_vec()),
            (sub.clone(), None, other_type),
            (sub.clone(), Some(version_header(9)), good.clone()),
            (
                format!(
                    "{PREFIX}.show.{}.{}",
                    aether_placement::bucket_for("a") + 1,
                    encode_actor_id("a")
                ),
                None,
                good.clone(),
            ),
            (format!("{PREFIX}.sh*w.0.YQ"), None, good.clone()),
            (format!("{PREFIX}.!!!"), None, good.clone()),
            (format!("{PREFIX}.a.b"), None, good.clone()),
            (
                format!("{PREFIX}.{}", encode_actor_id("b")),
                None,
                good.clone(),
            ),
            ("elsewhere.x".into(), None, good.clone()),
            (
                sub.clone(),
                None,
                serde_json::to_vec(&[Event::new("T", "a", 2), Event::new("T", "a", 2)]).unwrap(),
            ),
        ];
        for (subject, headers, payload) in cases {
            assert!(
                decode_message(PREFIX, &subject, headers.as_ref(), &payload).is_err(),
                "{subject}"
            );
        }
        assert!(decode_message(PREFIX, &sub, None, &good).is_ok());
    }
}
