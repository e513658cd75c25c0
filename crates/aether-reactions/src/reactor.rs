//! The reactor: a partitioned projection over the log that carries out what events record
//! (timer changes, effects), after the commit, idempotently.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{CommandMeta, DomainEvent, EventCodec};
use aether_core::{
    effect_id, validate_effect_subject, ActorKey, BoxError, EffectRecord, Error, EventLog,
    Reactions, Result, TimerOp, METADATA_CORRELATION_ID,
};
use aether_nats::backend::classify;
use aether_projection::{
    ActorEvents, Handler, Park, Projected, ProjectionConfig, ProjectionStore, ProjectionWorker,
    WorkerConfig,
};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::target::{Delivered, Targets};
use crate::timers::JetStreamTimers;

/// An event as the reactor reads it: its payload is not decoded (the reactions are in its
/// metadata), so the reactor reads every actor type's events, of any schema version, without
/// their Rust types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded;

impl Serialize for Recorded {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Recorded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Recorded)
    }
}

impl DomainEvent for Recorded {
    fn event_type(&self) -> &'static str {
        "Recorded"
    }
}

/// Settings of a reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// The name of its projection (its checkpoints and leases are kept under it). Every node
    /// of one application uses the same.
    pub name: String,
    /// This node's worker name, unique among the running reactors.
    pub worker: String,
    /// The projection's settings; the reactor handles one event at a time per partition, so
    /// each actor's reactions are carried out in order.
    pub projection: ProjectionConfig,
    /// How the log is split among the nodes' reactors.
    pub worker_config: WorkerConfig,
}

impl ReactorConfig {
    /// The reactor of worker `worker`, with the defaults: projection `aether-reactor`, 8
    /// partitions, the log polled every 20 ms when caught up.
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            name: "aether-reactor".into(),
            worker: worker.into(),
            projection: ProjectionConfig {
                poll_interval: Duration::from_millis(20),
                // A reaction that keeps failing (its server down) is retried for a while
                // before its event is parked, where operators see it and replay it.
                retry: aether_actor::RetryPolicy::default().max_retries(20),
                ..ProjectionConfig::default()
            },
            worker_config: WorkerConfig {
                partitions: 8,
                ..WorkerConfig::default()
            },
        }
    }
}

/// Carries out the reactions recorded on events: sets and cancels timers (through a
/// [`JetStreamTimers`]), delivers effects to actors (through [`Targets`], the effect id as
/// the command id) and to NATS subjects (a JetStream publish with the effect id as
/// `Nats-Msg-Id`). Everything it does is idempotent, so an event handled twice (after a crash
/// before its checkpoint) changes nothing more.
///
/// Run one per node with [`run`](Self::run); the log is split among them by partition, each
/// partition held by one reactor at a time, so each actor's reactions happen in order.
pub struct Reactor {
    targets: Targets,
    timers: std::result::Result<JetStreamTimers, String>,
    publisher: Option<Context>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("targets", &self.targets)
            .field("timers", &self.timers.is_ok())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// A reactor delivering to `targets`, without timers (a decision that sets one is
    /// refused) and without publishes (an effect to a subject is parked).
    pub fn new(targets: Targets) -> Self {
        Self {
            targets,
            timers: Err("the reactor was started without timers".into()),
            publisher: None,
        }
    }

    /// With timers kept in `timers`.
    pub fn with_timers(mut self, timers: JetStreamTimers) -> Self {
        self.timers = Ok(timers);
        self
    }

    /// Opens the timers stream on `js` and uses it; on a server without message schedules
    /// (before 2.12) the reactor runs without timers and decisions that set one are refused
    /// with `TimersUnavailable`, saying why.
    ///
    /// # Errors
    /// Any failure to open the stream other than an old server.
    pub async fn with_timers_on(
        mut self,
        js: Context,
        config: crate::TimersConfig,
    ) -> Result<Self> {
        match JetStreamTimers::open(js, config).await {
            Ok(t) => self.timers = Ok(t),
            Err(Error::Unsupported { reason, .. }) => self.timers = Err(reason),
            Err(e) => return Err(e),
        }
        Ok(self)
    }

    /// Publishes effects to NATS subjects through `js`.
    pub fn with_publisher(mut self, js: Context) -> Self {
        self.publisher = Some(js);
        self
    }

    /// Whether timers are available, and why not.
    ///
    /// # Errors
    /// The reason timers are not available.
    pub fn timers(&self) -> std::result::Result<&JetStreamTimers, &str> {
        self.timers.as_ref().map_err(String::as_str)
    }

    /// Tells every target's runtime what this reactor carries out (timers or not, which
    /// types effects may go to). [`run`](Self::run) does it first; call it yourself when
    /// commands may arrive before the reactor runs.
    pub fn attach(&self) {
        self.targets
            .attach(self.timers.as_ref().map(|_| ()).map_err(Clone::clone));
    }

    /// Runs this node's share of the reactor until `shutdown`: the partitions of the log it
    /// holds (reading the events of the target types only) and, with timers, a dispatcher of
    /// fired timers.
    ///
    /// # Errors
    /// Invalid settings; the projection store's or the server's failures that stop the
    /// worker.
    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        config: ReactorConfig,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.attach();
        // Every event of the target types, whatever its payload or schema version: the
        // reactions are in its metadata.
        let events = self
            .targets
            .types()
            .into_iter()
            .fold(ActorEvents::new(), |events, t| {
                events.stored(t, |_| Ok(Recorded))
            });
        let worker = ProjectionWorker::new(
            config.name,
            config.worker,
            log,
            store,
            Arc::clone(&self) as Arc<dyn Handler<Recorded>>,
            EventCodec::<Recorded>::default(),
            config.projection,
            config.worker_config,
        )?
        .decode_by_type(events)?;
        let dispatcher = async {
            match &self.timers {
                Ok(t) => {
                    t.run_dispatcher(self.targets.clone(), shutdown.clone())
                        .await
                }
                Err(_) => Ok(()),
            }
        };
        let (worked, dispatched) = tokio::join!(worker.run(shutdown.clone()), dispatcher);
        worked.and(dispatched)
    }

    async fn effect(
        &self,
        e: &Projected<Recorded>,
        index: usize,
        effect: &EffectRecord,
    ) -> Result<()> {
        let owner = ActorKey {
            actor_type: e.actor_type.as_deref(),
            actor_id: &e.actor_id,
        };
        let id = effect_id(owner, e.version, index);
        match effect {
            EffectRecord::Command {
                actor_type,
                actor_id,
                command,
            } => {
                let Some(target) = self.targets.get(actor_type) else {
                    return Err(Error::NotFound(format!(
                        "no target for actor type {actor_type:?} (effect {id})"
                    )));
                };
                let meta = CommandMeta {
                    command_id: Some(id.clone()),
                    causation_id: Some(e.event_id.clone()),
                    correlation_id: e.metadata.get(METADATA_CORRELATION_ID).cloned(),
                    ..CommandMeta::default()
                };
                let outcome = target.deliver(actor_id, meta, command.clone()).await?;
                let label = match &outcome {
                    Delivered::Applied => "applied",
                    Delivered::AlreadyApplied => "repeat",
                    Delivered::Rejected(_) | Delivered::Stale => "rejected",
                };
                if let Delivered::Rejected(why) = &outcome {
                    tracing::info!(effect = %id, reason = %why, "an effect's command was refused");
                }
                metrics::counter!("aether_effects_delivered_total", "kind" => "command", "outcome" => label)
                    .increment(1);
                Ok(())
            }
            EffectRecord::Publish { subject, payload } => {
                // Checked when decided; checked again here because the record comes from the
                // store, where anyone who may write could have put any subject.
                validate_effect_subject(subject)
                    .map_err(|e| Error::invalid(format!("effect {id}: {e}")))?;
                let Some(js) = &self.publisher else {
                    return Err(Error::NotFound(format!(
                        "effect {id} publishes to {subject}, and the reactor has no publisher"
                    )));
                };
                let body =
                    serde_json::to_vec(payload).map_err(|e| Error::Encoding(e.to_string()))?;
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let context = || format!("publishing effect {id} to {subject}");
                js.publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .map_err(|err| classify(context(), err))?
                    .await
                    .map_err(|err| classify(context(), err))?;
                metrics::counter!("aether_effects_delivered_total", "kind" => "publish", "outcome" => "applied")
                    .increment(1);
                Ok(())
            }
        }
    }
}

/// A failure to carry out a reaction: retried while it may pass, parked at once otherwise.
fn failure(e: Error) -> BoxError {
    if e.is_retryable() {
        Box::new(e)
    } else {
        metrics::counter!("aether_reactions_parked_total").increment(1);
        Box::new(Park::new(e.to_string()))
    }
}

#[async_trait]
impl Handler<Recorded> for Reactor {
    async fn handle(&self, e: &Projected<Recorded>) -> std::result::Result<(), BoxError> {
        let reactions = match Reactions::from_metadata(&e.metadata) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(err) => {
                return Err(Box::new(Park::new(format!(
                    "the reactions recorded on event {} are unreadable: {err}",
                    e.event_id
                ))))
            }
        };
        let owner = ActorKey {
            actor_type: e.actor_type.as_deref(),
            actor_id: &e.actor_id,
        };
        if !reactions.timers.is_empty() {
            let timers = match &self.timers {
                Ok(t) => t,
                // Recorded while another reactor had timers; this one cannot carry them out.
                Err(reason) => {
                    return Err(failure(Error::Unsupported {
                        operation: format!("the timers of {owner}"),
                        reason: reason.clone(),
                    }))
                }
            };
            for op in &reactions.timers {
                match op {
                    TimerOp::Set(t) => timers.set(owner, t).await,
                    TimerOp::Cancel { name } => timers.cancel(owner, name).await,
                }
                .map_err(failure)?;
            }
        }
        for (i, effect) in reactions.effects.iter().enumerate() {
            self.effect(e, i, effect).await.map_err(failure)?;
        }
        Ok(())
    }
}
