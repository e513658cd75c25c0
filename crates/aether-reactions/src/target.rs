//! Where reactions deliver commands: the actor types a reactor can reach, each through its
//! runtime (an embedded [`ActorHost`] or a cluster node), with the command in its serde form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use aether_actor::{Actor, ActorHost, CommandError, CommandMeta, Envelope, Handled};
use aether_cluster::ClusterNode;
use aether_core::{Error, ReactionError, Result};
use async_trait::async_trait;
use serde_json::Value;

/// What delivering a command came to, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The target decided it now.
    Applied,
    /// The target had applied this command id before: a repeat, absorbed.
    AlreadyApplied,
    /// The target refused it (its rejection, as text). Delivery is done: a refusal is an
    /// answer.
    Rejected(String),
    /// A timer's command whose timer is no longer pending: dropped by the actor, undecided.
    Stale,
}

/// One actor type a reactor delivers to. Object-safe, so a [`Targets`] holds any runtime.
#[async_trait]
pub trait Target: Send + Sync {
    /// The actor type.
    fn actor_type(&self) -> &'static str;

    /// Delivers `command` (in its serde form) to `actor_id` with `meta` (its command id is
    /// the reaction's deterministic id).
    ///
    /// # Errors
    /// [`Error::Decoding`] when the command does not fit the type (delivering it again fails
    /// the same way); a retryable [`Error`] when the runtime or store is unavailable.
    async fn deliver(&self, actor_id: &str, meta: CommandMeta, command: Value)
        -> Result<Delivered>;

    /// Tells the runtime behind this target what the reactor carries out.
    fn attach(&self, support: Arc<dyn aether_actor::ReactionSupport>);
}

/// The actor types a reactor can deliver to, by name.
///
/// ```
/// # use std::sync::Arc;
/// # use aether_reactions::Targets;
/// # fn demo<A: aether_actor::Actor>(host: aether_actor::ActorHost<A>) {
/// let targets = Targets::new().host(host);
/// assert_eq!(targets.types(), vec![A::TYPE]);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Targets {
    by_type: BTreeMap<&'static str, Arc<dyn Target>>,
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targets")
            .field("types", &self.types())
            .finish()
    }
}

impl Targets {
    /// No targets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers to the actors of `host`'s type through `host` (embedded).
    pub fn host<A: Actor>(self, host: ActorHost<A>) -> Self {
        self.with(Arc::new(HostTarget(host)))
    }

    /// Delivers to the actors of type `A` through `node`, wherever in its cluster they live.
    /// Timers set by actors this node hosts fire through whichever node takes them.
    pub fn cluster<A: Actor>(self, node: Arc<ClusterNode>) -> Self {
        self.with(Arc::new(ClusterTarget::<A> {
            node,
            _actor: std::marker::PhantomData,
        }))
    }

    /// Delivers through `target`; a later target of the same type replaces an earlier one.
    pub fn with(mut self, target: Arc<dyn Target>) -> Self {
        self.by_type.insert(target.actor_type(), target);
        self
    }

    /// The actor types reached.
    pub fn types(&self) -> Vec<&'static str> {
        self.by_type.keys().copied().collect()
    }

    /// The target of `actor_type`.
    pub fn get(&self, actor_type: &str) -> Option<&Arc<dyn Target>> {
        self.by_type.get(actor_type)
    }

    pub(crate) fn attach(&self, timers: std::result::Result<(), String>) {
        let support: Arc<dyn aether_actor::ReactionSupport> = Arc::new(Support {
            timers,
            known: self.by_type.keys().map(|t| (*t).to_string()).collect(),
        });
        for target in self.by_type.values() {
            target.attach(Arc::clone(&support));
        }
    }
}

/// What a reactor tells the runtimes it serves.
struct Support {
    timers: std::result::Result<(), String>,
    known: BTreeSet<String>,
}

impl aether_actor::ReactionSupport for Support {
    fn timers(&self) -> std::result::Result<(), ReactionError> {
        self.timers
            .clone()
            .map_err(|reason| ReactionError::TimersUnavailable { reason })
    }

    fn knows(&self, actor_type: &str) -> bool {
        self.known.contains(actor_type)
    }
}

/// Sorts a runtime's answer into what delivery came to.
fn delivered<R, E: fmt::Display>(
    actor_type: &str,
    outcome: std::result::Result<Handled<R>, CommandError<E>>,
) -> Result<Delivered> {
    match outcome {
        Ok(Handled::Reply { .. }) => Ok(Delivered::Applied),
        Ok(Handled::AlreadyApplied { .. }) => Ok(Delivered::AlreadyApplied),
        Ok(Handled::NotOwner) => Err(Error::unavailable(
            format!("delivering to actor type {actor_type}"),
            "this host does not own the actor now",
        )),
        Err(CommandError::Rejected(r)) => Ok(Delivered::Rejected(r.to_string())),
        Err(CommandError::Reaction(ReactionError::StaleTimer { .. })) => Ok(Delivered::Stale),
        // The command's own decision set reactions the rules refuse: it is refused like a
        // rejection, and sending it again is refused the same way.
        Err(CommandError::Reaction(r)) => Ok(Delivered::Rejected(r.to_string())),
        Err(e @ CommandError::Conflict { .. }) => Err(Error::unavailable(
            format!("delivering to actor type {actor_type}"),
            e.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

fn decode<C: serde::de::DeserializeOwned>(actor_type: &str, command: Value) -> Result<C> {
    serde_json::from_value(command).map_err(|e| {
        Error::Decoding(format!(
            "a reaction's command does not fit actor type {actor_type}: {e}"
        ))
    })
}

struct HostTarget<A: Actor>(ActorHost<A>);

#[async_trait]
impl<A: Actor> Target for HostTarget<A> {
    fn actor_type(&self) -> &'static str {
        A::TYPE
    }

    async fn deliver(
        &self,
        actor_id: &str,
        meta: CommandMeta,
        command: Value,
    ) -> Result<Delivered> {
        let command: A::Command = decode(A::TYPE, command)?;
        let outcome = self
            .0
            .dispatch(actor_id, Envelope::new(command).with_meta(meta))
            .await;
        delivered(A::TYPE, outcome)
    }

    fn attach(&self, support: Arc<dyn aether_actor::ReactionSupport>) {
        self.0.set_reactions(support);
    }
}

struct ClusterTarget<A> {
    node: Arc<ClusterNode>,
    _actor: std::marker::PhantomData<fn() -> A>,
}

#[async_trait]
impl<A: Actor> Target for ClusterTarget<A> {
    fn actor_type(&self) -> &'static str {
        A::TYPE
    }

    async fn deliver(
        &self,
        actor_id: &str,
        meta: CommandMeta,
        command: Value,
    ) -> Result<Delivered> {
        let command: A::Command = decode(A::TYPE, command)?;
        let outcome = self
            .node
            .dispatch::<A>(actor_id, Envelope::new(command).with_meta(meta))
            .await;
        delivered(A::TYPE, outcome)
    }

    fn attach(&self, support: Arc<dyn aether_actor::ReactionSupport>) {
        if let Some(host) = self.node.host::<A>() {
            host.set_reactions(support);
        }
    }
}
