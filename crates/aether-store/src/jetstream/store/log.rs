//! The store's global order ([`EventLog`]): the events subjects of the stream read in stream
//! order, through a short-lived consumer per page.

use std::time::Duration;

use aether_core::{EventLog, LogPosition, LoggedEvent, Result};
use aether_nats::backend::{classify, ConsumerSpec, StartAt};
use async_trait::async_trait;
use futures::StreamExt;

use super::super::codec;
use super::errors::BoxedCause;
use super::JetStreamEventStore;

/// How long one page may wait for messages the server counted as pending.
const PAGE_EXPIRY: Duration = Duration::from_secs(5);
/// How long the server keeps a page consumer whose reader vanished.
const PAGE_CONSUMER_INACTIVITY: Duration = Duration::from_secs(30);

/// The position of an event is the stream sequence of its message and its index in it (a
/// `save_events` batch is one message). Snapshot messages share the stream but are skipped,
/// so sequences have gaps. A message that does not decode is skipped and counted, as
/// [`get_events`](aether_core::EventStore::get_events) does.
#[async_trait]
impl EventLog for JetStreamEventStore {
    async fn read_after(&self, after: Option<LogPosition>, max: usize) -> Result<Vec<LoggedEvent>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let start = after.map_or(1, |p| p.sequence.max(1));
        let context = || format!("reading stream {} from sequence {start}", self.stream_name);
        let consumer = ConsumerSpec::new(self.subjects.events_filter(), StartAt::Sequence(start))
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
            let mut batch = consumer
                .fetch()
                .max_messages(want)
                .expires(PAGE_EXPIRY)
                .messages()
                .await
                .map_err(|e| classify(context(), e))?;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| classify(context(), BoxedCause(e)))?;
                let info = msg.info().map_err(|e| classify(context(), BoxedCause(e)))?;
                let sequence = info.stream_sequence;
                let Some(actor) = self.subjects.actor_of(msg.subject.as_str()) else {
                    continue;
                };
                match codec::decode_message(self.subjects.owner_of(&actor), sequence, &msg.payload)
                {
                    Ok(events) => {
                        for (i, event) in events.into_iter().enumerate() {
                            let position = LogPosition::new(sequence, i as u32);
                            if after.is_some_and(|a| position <= a) {
                                continue;
                            }
                            out.push(LoggedEvent { position, event });
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
                if out.len() >= max {
                    break;
                }
            }
            Ok(())
        }
        .await;
        let stream = self.stream.clone();
        self.cleanups.spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(error = %e, consumer = %name, "could not delete a page consumer");
            }
        });
        result.map(|()| out)
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
}
