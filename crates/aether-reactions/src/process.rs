//! Process managers (sagas): long-running processes that react to the events of several actor
//! types, keyed by a correlation id.
//!
//! A process is an actor ([`Process`] extends [`Actor`]): each instance keeps its own
//! event-sourced state, decides its steps as events, sends commands through effects (each with
//! an id derived from its step, so a target applies it once) and waits with timers (timeouts,
//! after which it compensates). What makes it a process is its input: a [`ProcessRouter`]
//! follows the log for the source types and turns each event it routes into a command to the
//! instance it names, with a command id derived from the source event, so a redelivered event
//! is absorbed by the instance and never doubles a step.
//!
//! Every piece is at least once and idempotent, which is what makes the whole exactly once as
//! far as each actor can tell: an event routed twice is one command id; a step recorded and then
//! a crash before its command was sent is sent by the reactor on recovery, with the same id.

use std::sync::Arc;

use aether_actor::{Actor, CommandMeta, DomainEvent, EventCodec};
use aether_core::{ActorKey, BoxError, Error, EventLog, Result};
use aether_projection::{ActorEvents, Handler, Park, Projected, ProjectionStore, ProjectionWorker};
use async_trait::async_trait;

use crate::reactor::ReactorConfig;
use crate::target::{Delivered, Target, Targets};

/// A process manager: an actor whose commands come from other actors' events.
///
/// ```
/// use aether_actor::{Actor, DomainEvent, Effect, Timer};
/// use aether_projection::{ActorEvents, Projected};
/// use aether_reactions::Process;
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # enum OrderEvent { Placed { at: DateTime<Utc> } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # enum PaymentEvent { Paid { order: String } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// # #[error("no")] struct No;
/// # struct Orders; struct Payments;
/// # impl Actor for Orders {
/// #     type State = (); type Command = (); type Event = OrderEvent; type Reply = (); type Error = No;
/// #     const TYPE: &'static str = "order";
/// #     async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<OrderEvent>, No> { Ok(vec![]) }
/// #     fn apply(_: &mut (), _: &OrderEvent) {}
/// #     fn reply(_: &(), _: &(), _: &[OrderEvent]) {}
/// # }
/// # impl Actor for Payments {
/// #     type State = (); type Command = (); type Event = PaymentEvent; type Reply = (); type Error = No;
/// #     const TYPE: &'static str = "payment";
/// #     async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<PaymentEvent>, No> { Ok(vec![]) }
/// #     fn apply(_: &mut (), _: &PaymentEvent) {}
/// #     fn reply(_: &(), _: &(), _: &[PaymentEvent]) {}
/// # }
///
/// /// What the checkout process hears.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum Heard { Order(OrderEvent), Payment(PaymentEvent) }
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Checkout { deadline: Option<DateTime<Utc>>, done: bool }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum Step { Start { at: DateTime<Utc> }, Paid, TimedOut }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum CheckoutEvent { Started { deadline: DateTime<Utc> }, Completed, Cancelled }
///
/// struct Checkouts;
///
/// impl Actor for Checkouts {
///     type State = Checkout;
///     type Command = Step;
///     type Event = CheckoutEvent;
///     type Reply = ();
///     type Error = No;
///     const TYPE: &'static str = "checkout";
///
///     async fn decide(&self, _: &str, s: &Checkout, step: &Step) -> Result<Vec<CheckoutEvent>, No> {
///         Ok(match step {
///             Step::Start { at } if s.deadline.is_none() && !s.done => {
///                 vec![CheckoutEvent::Started { deadline: *at + chrono::Duration::minutes(15) }]
///             }
///             Step::Paid if !s.done => vec![CheckoutEvent::Completed],
///             Step::TimedOut if !s.done => vec![CheckoutEvent::Cancelled],
///             _ => vec![],
///         })
///     }
///     fn apply(s: &mut Checkout, e: &CheckoutEvent) {
///         match e {
///             CheckoutEvent::Started { deadline } => s.deadline = Some(*deadline),
///             CheckoutEvent::Completed | CheckoutEvent::Cancelled => s.done = true,
///         }
///     }
///     fn reply(_: &Checkout, _: &Step, _: &[CheckoutEvent]) {}
///     /// The payment timeout: pending until the checkout is done.
///     fn timers(_: &str, s: &Checkout) -> Vec<Timer<Step>> {
///         match (s.deadline, s.done) {
///             (Some(at), false) => vec![Timer::at("payment-timeout", at, Step::TimedOut)],
///             _ => vec![],
///         }
///     }
///     /// The compensation: cancelling the order, sent once the cancellation is recorded.
///     fn effects(id: &str, e: &CheckoutEvent) -> Vec<Effect> {
///         match e {
///             CheckoutEvent::Cancelled => vec![Effect::send::<Orders>(id, &())],
///             _ => vec![],
///         }
///     }
/// }
///
/// impl Process for Checkouts {
///     type Input = Heard;
///     fn sources() -> ActorEvents<Heard> {
///         ActorEvents::new().actor::<Orders>(Heard::Order).actor::<Payments>(Heard::Payment)
///     }
///     fn route(e: &Projected<Heard>) -> Option<(String, Step)> {
///         match &e.event {
///             Heard::Order(OrderEvent::Placed { at }) => Some((e.actor_id.clone(), Step::Start { at: *at })),
///             Heard::Payment(PaymentEvent::Paid { order }) => Some((order.clone(), Step::Paid)),
///         }
///     }
/// }
/// assert_eq!(Checkouts::sources().types(), ["order", "payment"]);
/// ```
pub trait Process: Actor {
    /// The events the process hears, decoded by the type that wrote them into one enum.
    type Input: DomainEvent;

    /// How to decode the source types' events ([`ActorEvents`]); the router reads only these
    /// types.
    fn sources() -> ActorEvents<Self::Input>;

    /// The instance (correlation id) an event is for, and the command it becomes; `None` for
    /// an event the process ignores. Must be a pure function of the event.
    fn route(event: &Projected<Self::Input>) -> Option<(String, Self::Command)>;
}

/// The command id of the command a router makes of the event at `version` of `source`: the
/// same for every delivery of that event.
pub fn routed_command_id(source: ActorKey<'_>, version: u64) -> String {
    format!("routed:{source}@{version}")
}

/// Follows the log for a [`Process`]'s source types and delivers each routed event to its
/// instance as a command (see the module docs). A handler of a partitioned projection: run
/// it on every node with [`ProcessRouter::run`].
pub struct ProcessRouter<P: Process> {
    target: Arc<dyn Target>,
    _process: std::marker::PhantomData<fn() -> P>,
}

impl<P: Process> std::fmt::Debug for ProcessRouter<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRouter")
            .field("process", &P::TYPE)
            .finish_non_exhaustive()
    }
}

impl<P: Process> ProcessRouter<P> {
    /// A router delivering to the process's instances through `targets`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `targets` does not reach the process's type.
    pub fn new(targets: &Targets) -> Result<Self> {
        let target = targets.get(P::TYPE).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "the targets do not reach process type {:?}; register it",
                P::TYPE
            ))
        })?;
        Ok(Self {
            target,
            _process: std::marker::PhantomData,
        })
    }

    /// Runs this node's share of the router until `shutdown`: a partitioned projection named
    /// `process-<type>` over the source types (`config.name` is not used; `config.worker`
    /// names this node).
    ///
    /// # Errors
    /// Invalid settings; the projection store's failures that stop the worker.
    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        config: ReactorConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let worker = ProjectionWorker::new(
            format!("process-{}", P::TYPE),
            config.worker,
            log,
            store,
            self as Arc<dyn Handler<P::Input>>,
            EventCodec::<P::Input>::default(),
            config.projection,
            config.worker_config,
        )?
        .decode_by_type(P::sources())?;
        worker.run(shutdown).await
    }
}

#[async_trait]
impl<P: Process> Handler<P::Input> for ProcessRouter<P> {
    async fn handle(&self, e: &Projected<P::Input>) -> std::result::Result<(), BoxError> {
        let Some((instance, command)) = P::route(e) else {
            return Ok(());
        };
        if instance.is_empty() {
            return Err(Box::new(Park::new(format!(
                "process {} routed event {} to an empty instance id",
                P::TYPE,
                e.event_id
            ))));
        }
        let source = ActorKey {
            actor_type: e.actor_type.as_deref(),
            actor_id: &e.actor_id,
        };
        let command = serde_json::to_value(&command)
            .map_err(|err| Box::new(Error::Encoding(err.to_string())) as BoxError)?;
        let meta = CommandMeta {
            command_id: Some(routed_command_id(source, e.version)),
            causation_id: Some(e.event_id.clone()),
            correlation_id: Some(instance.clone()),
            ..CommandMeta::default()
        };
        match self.target.deliver(&instance, meta, command).await {
            Ok(outcome) => {
                let label = match outcome {
                    Delivered::Applied => "applied",
                    Delivered::AlreadyApplied => "repeat",
                    Delivered::Rejected(_) | Delivered::Stale => "rejected",
                };
                metrics::counter!("aether_process_steps_total", "process" => P::TYPE, "outcome" => label)
                    .increment(1);
                Ok(())
            }
            Err(err) if err.is_retryable() => Err(Box::new(err)),
            Err(err) => Err(Box::new(Park::new(err.to_string()))),
        }
    }
}
