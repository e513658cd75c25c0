//! Transactions across actor types on a node, and the refresh that tells owners to reload.

use std::fmt;
use std::sync::Arc;

use aether_actor::{
    Actor, CommandError, CommandMeta, Decide, Participant, Rejection, RetryPolicy, Transact,
    Transacted,
};
use aether_core::{ActorKey, Error, Result};

use super::{ClusterNode, Inner};

impl ClusterNode {
    /// Starts a decision over actors of several types hosted by this node (a `show` and a
    /// `customer`), committed atomically on this node wherever the actors are owned: see
    /// [`Transact`]. After a commit the owners of every participant are told to reload, so
    /// that their next command, read-only ones included, sees the committed events.
    ///
    /// ```
    /// # use aether_actor::{Actor, CommandError, CommandMeta, Transacted};
    /// # use aether_cluster::ClusterNode;
    /// # async fn demo<Shows: Actor, Customers: Actor>(node: &ClusterNode)
    /// #     -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = node.transaction(CommandMeta::new().command_id("order-7"));
    /// let show = tx.actor::<Shows>("s-1")?;
    /// let customer = tx.actor::<Customers>("c-1")?;
    /// match tx.run(|d| {
    ///     let (_show, _customer) = (d.state(&show), d.state(&customer));
    ///     // ... refuse with `show.reject(..)`, or record events with `d.emit(&show, ..)`.
    ///     Ok(())
    /// }).await {
    ///     Ok(Transacted::Committed(())) | Ok(Transacted::AlreadyApplied) => {}
    ///     Err(CommandError::Rejected(r)) => println!("{} refused: {:?}", r.key(), r.of(&show)),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn transaction(&self, meta: CommandMeta) -> ClusterTransact {
        ClusterTransact {
            inner: Arc::clone(&self.inner),
            tx: Transact::new(meta),
        }
    }

    /// Tells the owners of `actors` that their events changed outside their activations, so
    /// that each drops its activation and reloads from the store at its next command. For
    /// applications that commit with [`EventStore::commit`](aether_core::EventStore::commit)
    /// (or write events any other way) next to a running cluster: without it an owner keeps
    /// answering read-only commands from the state it had until its next write meets a
    /// version conflict. [`transact`](Self::transact) and [`transaction`](Self::transaction)
    /// do this themselves.
    ///
    /// Each actor names its type ([`ActorKey::new`]). This node's own activations of them
    /// are dropped at once; every other owner is asked through the cluster, following
    /// ownership as [`send`](Self::send) does, concurrently, until the send timeout. Once
    /// this returns `Ok`, every owner has dropped its activation: a command sent afterwards
    /// sees events committed before the call.
    ///
    /// ```
    /// # use aether_core::{ActorKey, EventStore, Transaction};
    /// # use aether_cluster::ClusterNode;
    /// # async fn demo(node: &ClusterNode, store: &dyn EventStore, txn: Transaction)
    /// #     -> aether_core::Result<()> {
    /// store.commit(&txn).await?;
    /// node.refresh(&[ActorKey::new("show", "s-1"), ActorKey::new("customer", "c-1")])
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::InvalidInput`] for an actor without a type or with a bad key; nothing is
    ///   sent.
    /// - [`Error::Unavailable`] when an owner did not answer within the send timeout (the
    ///   others were still told). Handling: call again; an owner not told reloads at its
    ///   next write anyway, and until then its read-only commands may answer from the state
    ///   before.
    /// - An error an owner reported ([`Error::Backend`], [`Error::Decoding`]): as the error
    ///   says.
    pub async fn refresh(&self, actors: &[ActorKey<'_>]) -> Result<()> {
        self.inner.refresh_actors(actors, true).await
    }
}

/// A transaction across actor types on a [`ClusterNode`] ([`ClusterNode::transaction`]): a
/// [`Transact`] over the node's hosts that tells every participant's owner to reload after
/// the commit.
pub struct ClusterTransact {
    inner: Arc<Inner>,
    tx: Transact,
}

impl fmt::Debug for ClusterTransact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTransact")
            .field("node_id", &self.inner.node_id)
            .field("tx", &self.tx)
            .finish()
    }
}

impl ClusterTransact {
    /// Adds the actor `actor_id` of type `A`; see [`Transact::actor`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when the node does not host `A`.
    pub fn actor<A: Actor>(&mut self, actor_id: impl Into<String>) -> Result<Participant<A>> {
        let Some(host) = self.inner.hosts.typed::<A>() else {
            return Err(Error::NotFound(format!(
                "node {} hosts no actor type {:?}",
                self.inner.node_id,
                A::TYPE
            )));
        };
        Ok(self.tx.actor(host, actor_id))
    }

    /// Retries conflicts under `policy`; see [`Transact::retry`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.tx = self.tx.retry(policy);
        self
    }

    /// The participants, in the order they were added.
    pub fn keys(&self) -> Vec<ActorKey<'_>> {
        self.tx.keys()
    }

    /// Decides and commits, as [`Transact::run`]; then tells the owners of every participant
    /// to reload ([`ClusterNode::refresh`]), also after [`Transacted::AlreadyApplied`] (the
    /// first attempt may not have told them). Telling them is best effort here: the commit
    /// stands, so a failure is logged, not returned; an owner not told reloads at its next
    /// write.
    ///
    /// # Errors
    /// As [`Transact::run`].
    pub async fn run<R, F>(
        self,
        decide: F,
    ) -> std::result::Result<Transacted<R>, CommandError<Rejection>>
    where
        F: FnMut(&mut Decide<'_>) -> std::result::Result<R, Rejection> + Send,
        R: Send,
    {
        let keys: Vec<(String, String)> = self
            .tx
            .keys()
            .iter()
            .map(|k| {
                (
                    k.actor_type.unwrap_or_default().to_string(),
                    k.actor_id.to_string(),
                )
            })
            .collect();
        let outcome = self.tx.run(decide).await?;
        let keys: Vec<ActorKey<'_>> = keys.iter().map(|(t, id)| ActorKey::new(t, id)).collect();
        // `run` passivated this node's activations already.
        if let Err(e) = self.inner.refresh_actors(&keys, false).await {
            tracing::warn!(error = %e, "owners not all told to reload after a transaction");
        }
        Ok(outcome)
    }
}
