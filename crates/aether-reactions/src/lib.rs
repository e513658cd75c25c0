//! Reactions for Aether: durable timers and effects from decisions, carried out after the
//! commit, exactly once as far as their receivers can tell.
//!
//! An actor declares the timers it wants pending ([`aether_actor::Actor::timers`]) and the
//! messages its events send ([`aether_actor::Actor::effects`]); the runtime records both on the
//! events of each decision, so they are stored with the events, all or nothing. This crate
//! carries them out:
//!
//! - the [`Reactor`] follows the log (a partitioned projection, one worker per node, each
//!   actor's events in order) and, for each event's recorded reactions, sets or cancels the
//!   timers' schedules and delivers the effects;
//! - [`JetStreamTimers`] keeps each timer as a NATS message schedule (nats-server 2.12+) in a
//!   stream of its own, and its dispatchers deliver a due timer's command to its actor with a
//!   command id derived from the timer (a repeat is absorbed) and the timer's identity (a
//!   timer replaced or cancelled since is dropped by the actor);
//! - a [`ProcessRouter`] feeds a [`Process`] (a saga: an actor keyed by a correlation id) the
//!   events of the types it hears, each as a command with an id derived from the event;
//! - [`Targets`] are the actor types commands are delivered to, through an embedded
//!   [`ActorHost`](aether_actor::ActorHost) or a cluster node.
//!
//! On a server older than 2.12 there are no timers: the reactor tells the runtimes, and a
//! decision that sets a timer is refused with `ReactionError::TimersUnavailable` (nothing is
//! written). Effects work on every server. `docs/reactions.md` states each guarantee and the
//! test behind it.
//!
//! # Layout
//! - [`Reactor`], [`ReactorConfig`], [`Recorded`]: following the log.
//! - [`JetStreamTimers`], [`TimersConfig`]: the timers stream and its dispatchers.
//! - [`Targets`], [`Target`], [`Delivered`]: where commands go.
//! - [`TimersView`], [`PendingFilter`], [`PendingTimers`], [`ReactorBacklog`]: a read-only
//!   view of the pending timers and the reactor's backlog, for operators' tools.
//! - [`Process`], [`ProcessRouter`]: process managers (sagas), actors whose commands come from
//!   other actors' events, routed with ids derived from those events.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use aether_reactions::{Reactor, ReactorConfig, Targets, TimersConfig};
//! # async fn run<A: aether_actor::Actor>(
//! #     host: aether_actor::ActorHost<A>,
//! #     js: async_nats::jetstream::Context,
//! #     log: Arc<dyn aether_core::EventLog>,
//! #     checkpoints: Arc<dyn aether_projection::ProjectionStore>,
//! # ) -> aether_core::Result<()> {
//! let reactor = Reactor::new(Targets::new().host(host))
//!     .with_timers_on(js.clone(), TimersConfig::default())
//!     .await?
//!     .with_publisher(js);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! Arc::new(reactor)
//!     .run(log, checkpoints, ReactorConfig::new("node-1"), shutdown)
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod inspect;
mod process;
mod reactor;
mod target;
mod timers;

pub use inspect::{
    PendingFilter, PendingTimer, PendingTimers, ReactorBacklog, ReactorPartition, TimersView,
    DEFAULT_PENDING_LIMIT, MAX_PENDING_LIMIT,
};
pub use process::{routed_command_id, Process, ProcessRouter};
pub use reactor::{Reactor, ReactorConfig, Recorded};
pub use target::{Delivered, Target, Targets};
pub use timers::{JetStreamTimers, TimersConfig};
