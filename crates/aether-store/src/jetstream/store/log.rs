//! The store's global order ([`EventLog`]): the events subjects of the stream read in stream
//! order, through a short-lived consumer per page. A filtered read asks the server for the
//! subjects of the wanted types and buckets only.

use std::time::Duration;

use aether_core::{EventLog, LogFilter, LogPage, LogPosition, LoggedEvent, Result};
use aether_nats::backend::{classify, ConsumerSpec, StartAt};
use aether_placement::{buckets_of_shard, ACTOR_BUCKETS};
use async_trait::async_trait;
use futures::StreamExt;

use super::super::codec;
use super::errors::BoxedCause;
use super::{server_older_than, StreamStore};

/// How long one page may wait for messages the server counted as pending.
const PAGE_EXPIRY: Duration = Duration::from_secs(5);
/// How long the server keeps a page consumer whose reader vanished.
const PAGE_CONSUMER_INACTIVITY: Duration = Duration::from_secs(30);

/// What one page read found.
struct Page {
    events: Vec<LoggedEvent>,
    /// The position of the last event of the last message looked at.
    examined: Option<LogPosition>,
    /// Whether every message the consumer had pending was looked at.
    complete: bool,
}

impl StreamStore {
    /// Reads up to `max` events after `after` from the stream's messages on `filters`,
    /// keeping those `keep` accepts.
    async fn read_page(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filters: Vec<String>,
        keep: impl Fn(&aether_core::Event) -> bool,
    ) -> Result<Page> {
        let mut page = Page {
            events: Vec::new(),
            examined: None,
            complete: true,
        };
        if max == 0 {
            return Ok(page);
        }
        let start = after.map_or(1, |p| p.sequence.max(1));
        let context = || format!("reading stream {} from sequence {start}", self.stream_name);
        let consumer = ConsumerSpec::with_filters(filters, StartAt::Sequence(start))
            .create_pull(&self.stream, PAGE_CONSUMER_INACTIVITY, &context())
            .await?;
        let name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let result = async {
            if pending == 0 {
                return Ok(());
            }
            // Messages hold one event or more: ask for at most `max` messages.
            let want = pending.min(max as u64) as usize;
            page.complete = pending <= max as u64;
            let mut batch = consumer
                .fetch()
                .max_messages(want)
                .expires(PAGE_EXPIRY)
                .messages()
                .await
                .map_err(|e| classify(context(), e))?;
            let mut received = 0;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| classify(context(), BoxedCause(e)))?;
                let info = msg.info().map_err(|e| classify(context(), BoxedCause(e)))?;
                let sequence = info.stream_sequence;
                received += 1;
                self.log_messages
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                page.examined = Some(LogPosition::new(sequence, 0));
                let Some(actor) = self.subjects.actor_of(msg.subject.as_str()) else {
                    continue;
                };
                match codec::decode_message(self.subjects.owner_of(&actor), sequence, &msg.payload)
                {
                    Ok(events) => {
                        page.examined = Some(LogPosition::new(
                            sequence,
                            events.len().saturating_sub(1) as u32,
                        ));
                        for (i, event) in events.into_iter().enumerate() {
                            let position = LogPosition::new(sequence, i as u32);
                            if after.is_some_and(|a| position <= a) || !keep(&event) {
                                continue;
                            }
                            page.events.push(LoggedEvent { position, event });
                        }
                    }
                    Err(bad) => {
                        self.malformed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            sequence = bad.sequence,
                            error = %bad.error,
                            "skipping a malformed event message in the global order"
                        );
                    }
                }
                if page.events.len() >= max {
                    page.complete &= received >= want;
                    break;
                }
            }
            page.complete &= received >= want;
            Ok(())
        }
        .await;
        let stream = self.stream.clone();
        self.cleanups.spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(error = %e, consumer = %name, "could not delete a page consumer");
            }
        });
        result.map(|()| page)
    }

    /// Whether the server takes consumers with several filter subjects (2.10 and later).
    fn multi_filter(&self) -> bool {
        !server_older_than(&self.client.server_info().version, 2, 10)
    }
}

/// The position of an event is the stream sequence of its message and its index in it (a
/// `save_events` batch is one message). Snapshot messages share the stream but are skipped,
/// so sequences have gaps. A message that does not decode is skipped and counted, as
/// [`get_events`](aether_core::EventStore::get_events) does.
#[async_trait]
impl EventLog for StreamStore {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        let page = self
            .read_page(after, max, vec![self.subjects.events_filter()], |_| true)
            .await?;
        Ok(page.events)
    }

    async fn head(&self) -> Result<Option<LogPosition>> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| classify(format!("reading stream {}", self.stream_name), e))?;
        let last = info.state.last_sequence;
        Ok((last > 0).then(|| LogPosition::new(last, 0)))
    }

    /// The server delivers only the messages of the filter's types and of the buckets that
    /// can hold its shard's actors ([`aether_placement::buckets_of_shard`]); servers before
    /// 2.10 take one filter subject per consumer, so there a filter needing several reads
    /// every event and keeps the wanted types here. Untyped subjects carry no type or bucket:
    /// a read of every type, or of the declared legacy type, gets all of them.
    async fn read_filtered(
        &self,
        after: Option<LogPosition>,
        max: usize,
        filter: &LogFilter,
    ) -> Result<LogPage> {
        if max == 0 {
            return Ok(LogPage::default());
        }
        let buckets = filter
            .shard
            .map(|(index, count)| buckets_of_shard(index, count))
            .filter(|b| b.len() < ACTOR_BUCKETS as usize);
        let mut filters = self
            .subjects
            .events_filters(&filter.actor_types, buckets.as_deref());
        if filters.len() > 1 && !self.multi_filter() {
            // One subject per consumer: the types alone if they fit in one, else everything
            // (the shard is checked by the reader either way).
            filters = self.subjects.events_filters(&filter.actor_types, None);
            if filters.len() > 1 {
                filters = vec![self.subjects.events_filter()];
            }
        }
        // Where the log ended before the read: once the consumer has delivered all it had,
        // nothing up to here that the filter wants is left unread.
        let head = self.head().await?;
        let page = self
            .read_page(after, max, filters, |e| filter.matches_type(e))
            .await?;
        let read_to = if page.complete {
            page.examined.max(head).max(after)
        } else {
            page.examined.max(after)
        };
        Ok(LogPage {
            events: page.events,
            read_to: read_to.filter(|p| Some(*p) != after),
        })
    }
}
