//! Durable timers on NATS message schedules (ADR-51, nats-server 2.12 and later), in a stream
//! of their own.
//!
//! The event stream never has schedules: enabling them on a stream gives up its purge
//! protection (measured on 2.15.1), and the event stream must stay immutable. So a timer is one
//! schedule message in the timers stream, on a subject derived from its actor and name:
//!
//! - `<prefix>.set.<type>.<id>.<name>`: the schedule (`Nats-Schedule: @at <time>`); publishing
//!   on it again replaces the timer, purging it cancels it.
//! - `<prefix>.due.<type>.<id>.<name>`: where the server stores the message when it is due;
//!   a durable consumer shared by every dispatcher delivers it to the actor and acknowledges
//!   it once the actor answered, so a dispatcher killed mid-delivery leaves it to another.
//!
//! The stream keeps one message per subject, so it holds at most one schedule and one fired
//! message per pending timer.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::CommandMeta;
use aether_core::{ActorKey, Error, Result, StorageKind, TimerFire, TimerRecord};
use aether_nats::backend::{classify, ensure_stream, storage_type};
use aether_nats::subject::encode_actor_id;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::target::{Delivered, Targets};

/// Settings of the timers stream and its dispatchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimersConfig {
    /// The stream's name.
    pub stream: String,
    /// The subject prefix of its subjects (`<prefix>.set.>`, `<prefix>.due.>`).
    pub prefix: String,
    /// Replicas of the stream (3 on a three-server cluster).
    pub replicas: usize,
    /// File (the default: timers outlive a restart of the servers) or memory.
    pub storage: StorageKind,
    /// The durable consumer the dispatchers share.
    pub consumer: String,
    /// How long a dispatcher may take to deliver one fired timer before the server gives it
    /// to another (a dispatcher killed mid-delivery is noticed after this). Keep it above the
    /// runtime's send timeout.
    pub ack_wait: Duration,
    /// Fired timers one dispatcher delivers at once.
    pub concurrency: usize,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self {
            stream: "AETHER_TIMERS".into(),
            prefix: "aether.timers".into(),
            replicas: 1,
            storage: StorageKind::File,
            consumer: "aether-timers".into(),
            ack_wait: Duration::from_secs(30),
            concurrency: 64,
        }
    }
}

/// What a fired timer's message holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fired {
    actor_type: String,
    actor_id: String,
    #[serde(flatten)]
    timer: TimerRecord,
}

/// Timers kept as NATS message schedules (see the module docs).
#[derive(Clone)]
pub struct JetStreamTimers {
    js: Context,
    stream: stream::Stream,
    config: Arc<TimersConfig>,
}

impl std::fmt::Debug for JetStreamTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamTimers")
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

/// Whether the server `version` (`major.minor.patch...`) is older than `major.minor`.
pub(crate) fn older_than(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) < (major, minor)
}

impl JetStreamTimers {
    /// Opens the timers stream, creating it if needed.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a server older than 2.12 (no message schedules);
    /// [`Error::InvalidInput`] when a stream of that name exists without schedules; the
    /// server's refusal otherwise.
    pub async fn open(js: Context, config: TimersConfig) -> Result<Self> {
        let version = js.client().server_info().version;
        if older_than(&version, 2, 12) {
            return Err(Error::Unsupported {
                operation: "durable timers".into(),
                reason: format!(
                    "nats-server {version} has no message schedules; they need 2.12 or later"
                ),
            });
        }
        aether_nats::subject::validate_prefix(&config.prefix)?;
        let desired = stream::Config {
            name: config.stream.clone(),
            description: Some("Aether durable timers (message schedules)".into()),
            subjects: vec![format!("{}.>", config.prefix)],
            allow_message_schedules: true,
            max_messages_per_subject: 1,
            deny_delete: true,
            discard: DiscardPolicy::Old,
            storage: storage_type(config.storage),
            num_replicas: config.replicas.max(1),
            ..Default::default()
        };
        let stream = ensure_stream(&js, desired).await?;
        if !stream.cached_info().config.allow_message_schedules {
            return Err(Error::invalid(format!(
                "stream {} exists without message schedules; it cannot hold timers",
                config.stream
            )));
        }
        Ok(Self {
            js,
            stream,
            config: Arc::new(config),
        })
    }

    fn subject(&self, kind: &str, owner: ActorKey<'_>, name: &str) -> Result<String> {
        let Some(actor_type) = owner.actor_type else {
            return Err(Error::invalid("timers belong to typed actors"));
        };
        Ok(format!(
            "{}.{kind}.{actor_type}.{}.{name}",
            self.config.prefix,
            encode_actor_id(owner.actor_id)
        ))
    }

    /// Runs a dispatcher until `shutdown`: takes fired timers from the shared durable consumer
    /// and delivers each timer's command to its actor through `targets`, with the timer's
    /// deterministic command id, acknowledging it once the actor answered (applied, a repeat,
    /// refused, or dropped because the timer is no longer pending). A failed delivery is
    /// given back to be delivered again after a pause. Run one on every node.
    ///
    /// # Errors
    /// The server's refusal to create the consumer.
    pub async fn run_dispatcher(
        &self,
        targets: Targets,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let consumer = self
            .stream
            .get_or_create_consumer(
                &self.config.consumer,
                pull::Config {
                    durable_name: Some(self.config.consumer.clone()),
                    description: Some("Aether timer dispatchers".into()),
                    filter_subject: format!("{}.due.>", self.config.prefix),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    deliver_policy: DeliverPolicy::All,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| classify("creating the timer dispatchers' consumer", e))?;
        let concurrency = self.config.concurrency.max(1);
        while !shutdown.is_cancelled() {
            let messages = match consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "timer dispatcher: reading fired timers failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let run = messages
                .take_until(shutdown.cancelled())
                .for_each_concurrent(concurrency, |message| {
                    let targets = &targets;
                    async move {
                        match message {
                            Ok(m) => dispatch(targets, m).await,
                            Err(e) => tracing::debug!(error = %e, "timer dispatcher: read error"),
                        }
                    }
                });
            run.await;
        }
        Ok(())
    }
}

impl JetStreamTimers {
    /// Sets (or replaces) `owner`'s timer `timer.name`: one schedule message. Idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an untyped owner; the server's failure otherwise (retryable
    /// when it is unavailable).
    pub async fn set(&self, owner: ActorKey<'_>, timer: &TimerRecord) -> Result<()> {
        let subject = self.subject("set", owner, &timer.name)?;
        let target = self.subject("due", owner, &timer.name)?;
        let fired = Fired {
            actor_type: owner.actor_type.unwrap_or_default().to_string(),
            actor_id: owner.actor_id.to_string(),
            timer: timer.clone(),
        };
        let payload = serde_json::to_vec(&fired).map_err(|e| Error::Encoding(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Schedule",
            format!(
                "@at {}",
                timer.due.to_rfc3339_opts(SecondsFormat::Millis, true)
            )
            .as_str(),
        );
        headers.insert("Nats-Schedule-Target", target.as_str());
        let context = || format!("setting timer {} of {owner}", timer.name);
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| classify(context(), e))?
            .await
            .map_err(|e| classify(context(), e))?;
        metrics::counter!("aether_timers_set_total").increment(1);
        Ok(())
    }

    /// Cancels `owner`'s timer `name` (purges its schedule). Cancelling a timer that is not
    /// pending does nothing.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn cancel(&self, owner: ActorKey<'_>, name: &str) -> Result<()> {
        let subject = self.subject("set", owner, name)?;
        self.stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| classify(format!("cancelling timer {name} of {owner}"), e))?;
        metrics::counter!("aether_timers_cancelled_total").increment(1);
        Ok(())
    }
}

/// How many times a fired timer of a type no dispatcher here delivers to is given back before
/// it is dropped (about a minute at one attempt every 5 s).
const MAX_UNROUTABLE_DELIVERIES: i64 = 12;

/// Delivers one fired timer and settles its message.
async fn dispatch(targets: &Targets, message: async_nats::jetstream::Message) {
    let fired: Fired = match serde_json::from_slice(&message.payload) {
        Ok(f) => f,
        Err(e) => {
            // Not written by a reactor (or corrupted): nothing can deliver it.
            tracing::warn!(subject = %message.subject, error = %e, "dropping an unreadable fired timer");
            metrics::counter!("aether_timers_failed_total").increment(1);
            settle(&message, AckKind::Term).await;
            return;
        }
    };
    let late = (Utc::now() - fired.timer.due)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let Some(target) = targets.get(&fired.actor_type) else {
        // Another dispatcher may deliver to this type: give it back, a bounded number of
        // times, so that a message no dispatcher can deliver (a type nobody hosts any more, or
        // one written by hand) does not come back forever.
        let delivered = message.info().map(|i| i.delivered).unwrap_or(i64::MAX);
        if delivered >= MAX_UNROUTABLE_DELIVERIES {
            tracing::warn!(actor_type = %fired.actor_type, actor_id = %fired.actor_id, timer = %fired.timer.name, delivered, "no dispatcher delivers to this actor type; dropping the fired timer");
            metrics::counter!("aether_timers_failed_total").increment(1);
            settle(&message, AckKind::Term).await;
        } else {
            tracing::debug!(actor_type = %fired.actor_type, "no target for a fired timer here");
            settle(&message, AckKind::Nak(Some(Duration::from_secs(5)))).await;
        }
        return;
    };
    let meta = CommandMeta {
        command_id: Some(fired.timer.command_id()),
        causation_id: Some(format!("timer:{}", fired.timer.name)),
        timer: Some(TimerFire {
            name: fired.timer.name.clone(),
            due: fired.timer.due,
        }),
        ..CommandMeta::default()
    };
    let span = tracing::debug_span!(
        "timer_fire",
        actor_type = %fired.actor_type,
        actor_id = %fired.actor_id,
        timer = %fired.timer.name,
    );
    match tracing::Instrument::instrument(
        target.deliver(&fired.actor_id, meta, fired.timer.command.clone()),
        span,
    )
    .await
    {
        Ok(outcome) => {
            let label = match &outcome {
                Delivered::Applied => "applied",
                Delivered::AlreadyApplied => "repeat",
                Delivered::Rejected(_) => "rejected",
                Delivered::Stale => "stale",
            };
            if let Delivered::Rejected(why) = &outcome {
                tracing::info!(actor_type = %fired.actor_type, actor_id = %fired.actor_id, timer = %fired.timer.name, reason = %why, "a timer's command was refused");
            }
            metrics::counter!("aether_timers_fired_total", "outcome" => label).increment(1);
            if outcome == Delivered::Applied {
                metrics::histogram!("aether_timers_late_seconds").record(late.as_secs_f64());
            }
            settle(&message, AckKind::Ack).await;
        }
        Err(e) if e.is_retryable() => {
            tracing::debug!(error = %e, "delivering a fired timer failed; it will be retried");
            settle(&message, AckKind::Nak(Some(Duration::from_millis(500)))).await;
        }
        Err(e) => {
            tracing::warn!(actor_type = %fired.actor_type, actor_id = %fired.actor_id, timer = %fired.timer.name, error = %e, "a fired timer cannot be delivered");
            metrics::counter!("aether_timers_failed_total").increment(1);
            settle(&message, AckKind::Term).await;
        }
    }
}

async fn settle(message: &async_nats::jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::debug!(error = %e, "settling a fired timer failed; the server redelivers it");
    }
}

#[cfg(test)]
mod tests {
    use super::older_than;

    #[test]
    fn versions_compare() {
        assert!(older_than("2.9.10", 2, 12));
        assert!(older_than("2.11.0", 2, 12));
        assert!(!older_than("2.12.0", 2, 12));
        assert!(!older_than("2.15.1", 2, 12));
        assert!(!older_than("3.0.0", 2, 12));
        assert!(!older_than("v2.12.1-beta", 2, 12));
    }
}
