//! One page of a projection: read after its position, hand each event to the handler (one
//! after the other, or several at once), retry, park, checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use aether_actor::DomainEvent;
use aether_core::{BoxError, Error, Event, LogPosition, LoggedEvent};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::status::export;
use super::{
    lag, CatchUpReport, Lane, OnFailure, Order, Park, Projected, Projection, SinkPosition,
};
use crate::store::ParkedEvent;

/// What became of one event.
enum Outcome {
    Handled,
    Parked,
}

impl<E: DomainEvent> Projection<E> {
    /// One page of one log partition (`lane`): read after its checkpoint, handle,
    /// checkpoint. Says how many events it read (0: nothing new), handled and parked.
    pub(super) async fn step(
        &self,
        lane: &Lane,
        stop: &CancellationToken,
    ) -> std::result::Result<CatchUpReport, StepError> {
        let kept = match self.handler.position(&lane.id).await {
            Ok(p) => p,
            Err(e) => {
                return Err(StepError::Read(Error::backend(
                    format!("reading the position of projection {}'s sink", lane.id),
                    e,
                )))
            }
        };
        if kept != SinkPosition::NotKept && self.config.concurrency > 1 {
            return Err(StepError::Stopped(Error::invalid(format!(
                "projection {}: a sink that keeps its own position needs a concurrency of 1",
                lane.id
            ))));
        }
        let from = match kept {
            SinkPosition::NotKept => self
                .store
                .checkpoint(&lane.id)
                .await
                .map_err(StepError::Read)?,
            SinkPosition::Kept(p) => p,
        };
        let cursor = *lane.lock_cursor();
        let from = from.max(cursor);
        let read = lane
            .log
            .read_filtered(from, self.config.page_size, &self.filter)
            .await
            .map_err(StepError::Read)?;
        let (page, read_to) = (read.events, read.read_to);
        let head = lane.log.head().await.map_err(StepError::Read)?;
        let Some(last) = page.last().map(|l| l.position) else {
            // Nothing this projection reads, but the log moved on: move past it.
            let from = match read_to.filter(|p| Some(*p) > from) {
                Some(to) => {
                    self.advance(lane, kept, to).await?;
                    Some(to)
                }
                None => from,
            };
            let mut status = lane.lock_status();
            status.position = from;
            status.kept_by_sink = kept != SinkPosition::NotKept;
            status.head = head;
            status.lag = Some(lag(from, head));
            status.lag_time = Some(Duration::ZERO);
            export(&status);
            return Ok(CatchUpReport::default());
        };
        {
            // The page is not handled yet: until it is, the lag counts it (a lag of 0 while
            // half of it is applied would tell a reader the read model is complete).
            let mut status = lane.lock_status();
            status.kept_by_sink = kept != SinkPosition::NotKept;
            status.head = head;
            status.lag = Some(lag(from, head));
            if status.lag_time.is_none() {
                status.lag_time = page.first().map(|l| {
                    (Utc::now() - l.event.timestamp)
                        .to_std()
                        .unwrap_or_default()
                });
            }
        }
        let mut newest: Option<DateTime<Utc>> = None;
        let mut handled_to = from;
        let mut report = CatchUpReport::default();
        if self.config.concurrency == 1 {
            for logged in &page {
                // Paused or stopped: checkpoint what was handled and let the caller decide.
                if *self.paused.borrow() || stop.is_cancelled() {
                    break;
                }
                if self.mine(logged) {
                    match self.handle_one(lane, logged).await? {
                        Outcome::Handled => report.handled += 1,
                        Outcome::Parked => report.parked += 1,
                    }
                }
                report.read += 1;
                handled_to = Some(logged.position);
                newest = Some(logged.event.timestamp);
            }
        } else {
            let (handled, parked) = self.handle_page(lane, &page).await?;
            report = CatchUpReport {
                read: page.len() as u64,
                handled,
                parked,
            };
            handled_to = Some(last);
            newest = page.last().map(|l| l.event.timestamp);
        }
        // A page handled to its end moves on to where the read went, past the events of
        // types and shards this projection does not read.
        if handled_to == Some(last) {
            handled_to = handled_to.max(read_to);
        }
        if let Some(position) = handled_to.filter(|p| Some(*p) != from) {
            self.advance(lane, kept, position).await?;
        }
        let mut status = lane.lock_status();
        status.position = handled_to;
        status.head = head;
        let behind = lag(handled_to, head);
        status.lag = Some(behind);
        status.lag_time = Some(match (handled_to == Some(last), behind, newest) {
            (true, 0, _) | (_, _, None) => Duration::ZERO,
            (_, _, Some(t)) => (Utc::now() - t).to_std().unwrap_or_default(),
        });
        export(&status);
        Ok(report)
    }

    /// Whether the event belongs to this projection (always, unless it is a partition).
    /// Records that everything up to `position` is handled: in this run's cursor, and in the
    /// checkpoint unless the sink keeps the position (it stores it with each event).
    async fn advance(
        &self,
        lane: &Lane,
        kept: SinkPosition,
        position: LogPosition,
    ) -> std::result::Result<(), StepError> {
        *lane.lock_cursor() = Some(position);
        if kept == SinkPosition::NotKept {
            self.store
                .save_checkpoint(&lane.id, position)
                .await
                .map_err(StepError::Read)?;
        }
        Ok(())
    }

    fn mine(&self, logged: &LoggedEvent) -> bool {
        match self.partition {
            None => true,
            Some((p, n)) => aether_placement::shard_for(&logged.event.actor_id, n) == p,
        }
    }

    /// Handles a page's events at once, up to the configured concurrency: each actor's events
    /// in order ([`Order::PerActor`]) or all at once ([`Order::Any`]). Returns once every
    /// event is handled or parked, with how many of each; the first error that stops the
    /// projection wins.
    async fn handle_page(
        &self,
        lane: &Lane,
        page: &[LoggedEvent],
    ) -> std::result::Result<(u64, u64), StepError> {
        // Chains of indices into the page (owned, so the futures borrow only `page`).
        let mine = (0..page.len()).filter(|&i| self.mine(&page[i]));
        let chains: Vec<Vec<usize>> = match self.config.order {
            Order::Any => mine.map(|i| vec![i]).collect(),
            Order::PerActor => {
                let mut by_actor: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for i in mine {
                    by_actor.entry(&page[i].event.actor_id).or_default().push(i);
                }
                by_actor.into_values().collect()
            }
        };
        let outcomes: Vec<std::result::Result<(u64, u64), StepError>> =
            futures::stream::iter(chains)
                .map(|chain| async move {
                    let (mut handled, mut parked) = (0, 0);
                    for i in chain {
                        match self.handle_one(lane, &page[i]).await? {
                            Outcome::Handled => handled += 1,
                            Outcome::Parked => parked += 1,
                        }
                    }
                    Ok((handled, parked))
                })
                .buffer_unordered(self.config.concurrency)
                .collect()
                .await;
        let mut total = (0, 0);
        for outcome in outcomes {
            let (handled, parked) = outcome?;
            total = (total.0 + handled, total.1 + parked);
        }
        Ok(total)
    }

    pub(super) fn decode(
        &self,
        lane: &Lane,
        event: &Event,
        position: LogPosition,
    ) -> std::result::Result<Projected<E>, String> {
        let typed = match &self.by_type {
            Some(by_type) => by_type.decode(event),
            None => self.codec.decode(event),
        }
        .map_err(|e| e.to_string())?;
        Ok(Projected {
            projection: lane.id.clone(),
            position,
            actor_type: event.actor_type.clone(),
            actor_id: event.actor_id.clone(),
            version: event.version,
            event_id: event.id.clone(),
            timestamp: event.timestamp,
            metadata: event.metadata.clone(),
            event: typed,
        })
    }

    async fn handle_one(
        &self,
        lane: &Lane,
        logged: &LoggedEvent,
    ) -> std::result::Result<Outcome, StepError> {
        let (error, attempts) = match self.decode(lane, &logged.event, logged.position) {
            // A payload that does not decode fails the same way every time: no retries.
            Err(e) => (e, 1),
            Ok(projected) => {
                let mut attempts = 0;
                let outcome = self
                    .config
                    .retry
                    .run(
                        |_| {
                            attempts += 1;
                            self.handler.handle(&projected)
                        },
                        // A handler that says "park" is not retried.
                        |e: &BoxError| !e.is::<Park>(),
                    )
                    .await;
                match outcome {
                    Ok(()) => {
                        lane.lock_status().handled += 1;
                        metrics::counter!("aether_projection_handled_total", "projection" => lane.id.to_string())
                            .increment(1);
                        return Ok(Outcome::Handled);
                    }
                    Err(e) => (e.to_string(), attempts),
                }
            }
        };
        tracing::warn!(
            projection = %lane.id,
            position = %logged.position,
            actor_id = %logged.event.actor_id,
            version = logged.event.version,
            error = %error,
            "projection could not handle an event"
        );
        lane.lock_status().last_error = Some(error.clone());
        match self.config.on_failure {
            OnFailure::Stop => Err(StepError::Stopped(Error::backend(
                format!(
                    "projection {} stopped at {} (actor {:?}, version {})",
                    lane.id, logged.position, logged.event.actor_id, logged.event.version
                ),
                error,
            ))),
            OnFailure::Park => {
                let parked = ParkedEvent {
                    position: logged.position,
                    event: logged.event.clone(),
                    error,
                    attempts,
                };
                self.store
                    .park(&lane.id, &parked)
                    .await
                    .map_err(StepError::Read)?;
                lane.lock_status().parked += 1;
                metrics::counter!("aether_projection_parked_total", "projection" => lane.id.to_string())
                    .increment(1);
                Ok(Outcome::Parked)
            }
        }
    }
}

/// How one page (`step`) failed.
pub(super) enum StepError {
    /// Reading the log or the store failed: retried.
    Read(Error),
    /// The handler failed and the projection is configured to stop.
    Stopped(Error),
}
