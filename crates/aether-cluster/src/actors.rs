//! The actor types a node hosts, behind one object-safe face so that one node hosts several.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aether_actor::{
    Actor, ActorHost, CommandError, CommandMeta, Envelope, Fence, Handled, HostStats, RuntimeConfig,
};
use aether_core::{Error, Result, SnapshotStore};
use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::config::validate_name;
use crate::routing::{encode, ActorResponse, ActorResponseOut, RemoteError};

/// The actor types a node hosts, each with its runtime settings, over one store (which every
/// node of the cluster must share: the JetStream store in production).
///
/// ```
/// # use std::sync::Arc;
/// # use aether_cluster::Actors;
/// # use aether_actor::RuntimeConfig;
/// # use aether_store::InMemoryEventStore;
/// # fn demo<A: aether_actor::Actor, B: aether_actor::Actor>(accounts: A, orders: B) {
/// let actors = Actors::new(Arc::new(InMemoryEventStore::new()))
///     .with(accounts)
///     .with_config(orders, RuntimeConfig::default());
/// # }
/// ```
pub struct Actors {
    store: Arc<dyn SnapshotStore>,
    hosts: BTreeMap<&'static str, Arc<dyn Hosted>>,
    /// Registration problems, reported when the node starts.
    problems: Vec<String>,
}

impl fmt::Debug for Actors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actors")
            .field("types", &self.hosts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Actors {
    /// No actor types yet, over `store`.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self {
            store,
            hosts: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Hosts `actor` with the default [`RuntimeConfig`].
    pub fn with<A: Actor>(self, actor: A) -> Self {
        self.with_config(actor, RuntimeConfig::default())
    }

    /// Hosts `actor` with `config`. Registering a second actor type of the same
    /// [`Actor::TYPE`], or a type name that is not letters, digits, `-` and `_`, makes the
    /// node refuse to start with [`Error::InvalidInput`].
    pub fn with_config<A: Actor>(mut self, actor: A, config: RuntimeConfig) -> Self {
        if let Err(e) = validate_name("actor type", A::TYPE) {
            self.problems.push(e.to_string());
        }
        let host = ActorHost::new(actor, Arc::clone(&self.store), config);
        if self.hosts.insert(A::TYPE, Arc::new(host)).is_some() {
            self.problems
                .push(format!("actor type {:?} is registered twice", A::TYPE));
        }
        self
    }

    /// The registered type names.
    pub fn types(&self) -> Vec<&'static str> {
        self.hosts.keys().copied().collect()
    }

    pub(crate) fn into_hosts(self) -> Result<Hosts> {
        if !self.problems.is_empty() {
            return Err(Error::invalid(self.problems.join("; ")));
        }
        Ok(Hosts {
            by_type: self.hosts,
        })
    }
}

/// The hosts of a started node, by actor type.
pub(crate) struct Hosts {
    by_type: BTreeMap<&'static str, Arc<dyn Hosted>>,
}

impl Hosts {
    pub(crate) fn get(&self, actor_type: &str) -> Option<&Arc<dyn Hosted>> {
        self.by_type.get(actor_type)
    }

    pub(crate) fn typed<A: Actor>(&self) -> Option<&ActorHost<A>> {
        self.get(A::TYPE)?.as_any().downcast_ref::<ActorHost<A>>()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<dyn Hosted>> {
        self.by_type.values()
    }
}

/// One actor type's host, with its types erased: what serving a request from another node
/// needs.
/// What serving a command gave: the response's bytes, encoded straight from the actor type's
/// reply or rejection, or a response the router completes or encodes itself.
#[derive(Debug)]
pub(crate) enum Served {
    /// A reply or rejection, already encoded.
    Encoded(Vec<u8>),
    /// Anything else (not the owner, an error).
    Response(ActorResponse),
}

#[async_trait]
pub(crate) trait Hosted: Send + Sync {
    fn actor_type(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    /// Handles a command that arrived as JSON, decoding it straight into the type's command.
    async fn serve(&self, actor_id: &str, meta: CommandMeta, command: &RawValue) -> Served;
    fn set_fence(&self, fence: Fence);
    /// Drops the actor's activation, if any, so that its next command reloads it.
    fn refresh(&self, actor_id: &str);
    fn passivate_where(&self, pred: &(dyn Fn(&str) -> bool + Sync)) -> Vec<String>;
    fn stats(&self) -> HostStats;
}

#[async_trait]
impl<A: Actor> Hosted for ActorHost<A> {
    fn actor_type(&self) -> &'static str {
        A::TYPE
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn serve(&self, actor_id: &str, meta: CommandMeta, command: &RawValue) -> Served {
        let command: A::Command = match serde_json::from_str(command.get()) {
            Ok(c) => c,
            Err(e) => {
                return Served::Response(ActorResponse::Error {
                    error: RemoteError::Invalid {
                        message: format!("not a command of actor type {}: {e}", A::TYPE),
                    },
                })
            }
        };
        // The request's own task runs the command when the actor is idle: the serve loop
        // gives every request a task of its own, and only killing the node drops one before
        // it has answered.
        let outcome = self
            .dispatch_inline(actor_id, Envelope::new(command).with_meta(meta))
            .await;
        response::<A>(outcome)
    }

    fn set_fence(&self, fence: Fence) {
        ActorHost::set_fence(self, fence);
    }

    fn refresh(&self, actor_id: &str) {
        ActorHost::passivate(self, actor_id);
    }

    fn passivate_where(&self, pred: &(dyn Fn(&str) -> bool + Sync)) -> Vec<String> {
        ActorHost::passivate_where(self, pred)
    }

    fn stats(&self) -> HostStats {
        ActorHost::stats(self)
    }
}

fn response<A: Actor>(
    outcome: std::result::Result<Handled<A::Reply>, CommandError<A::Error>>,
) -> Served {
    let encoded = |what: &str, bytes: Result<Vec<u8>>| match bytes {
        Ok(bytes) => Served::Encoded(bytes),
        Err(e) => Served::Response(ActorResponse::Error {
            error: RemoteError::Other {
                message: format!(
                    "the {what} of actor type {} cannot be encoded: {e}",
                    A::TYPE
                ),
            },
        }),
    };
    let reply = |reply: &A::Reply, version, already_applied| {
        let out: ActorResponseOut<'_, A::Reply, A::Error> = ActorResponseOut::Reply {
            reply,
            version,
            already_applied,
        };
        encode(&out)
    };
    match outcome {
        Ok(Handled::Reply { reply: r, version }) => encoded("reply", reply(&r, version, false)),
        Ok(Handled::AlreadyApplied { reply: r, version }) => {
            encoded("reply", reply(&r, version, true))
        }
        // The caller fills in its view of the owner.
        Ok(Handled::NotOwner) => Served::Response(ActorResponse::NotOwner {
            epoch: 0,
            owner: None,
        }),
        Err(CommandError::Rejected(rejection)) => {
            let out: ActorResponseOut<'_, A::Reply, A::Error> =
                ActorResponseOut::Rejected { error: &rejection };
            encoded("rejection", encode(&out))
        }
        Err(e) => Served::Response(ActorResponse::Error {
            error: RemoteError::from_command_error(&e),
        }),
    }
}
