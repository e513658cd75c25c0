//! One way to send commands, whichever runtime hosts the actors.

use async_trait::async_trait;

use crate::actor::{Actor, Envelope};
use crate::error::CommandError;
use crate::host::{ActorHost, Handled};
use aether_core::Error;

/// Sends commands to actors of type `A` and returns their replies: the embedded
/// [`ActorHost`] implements it, and so does an `aether-cluster` node's client, so application
/// code written against `Arc<dyn ActorClient<A>>` runs either way.
#[async_trait]
pub trait ActorClient<A: Actor>: Send + Sync {
    /// Sends `envelope` (a command with its metadata) to `actor_id`.
    ///
    /// # Errors
    /// See [`CommandError`]: the actor's typed rejection, exhausted conflicts, an event that
    /// does not decode, or an infrastructure failure.
    async fn send_envelope(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> Result<A::Reply, CommandError<A::Error>>;

    /// Sends `command` to `actor_id`, with no metadata.
    ///
    /// # Errors
    /// As [`send_envelope`](Self::send_envelope).
    async fn send(
        &self,
        actor_id: &str,
        command: A::Command,
    ) -> Result<A::Reply, CommandError<A::Error>> {
        self.send_envelope(actor_id, Envelope::new(command)).await
    }
}

#[async_trait]
impl<A: Actor> ActorClient<A> for ActorHost<A> {
    async fn send_envelope(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> Result<A::Reply, CommandError<A::Error>> {
        match self.dispatch(actor_id, envelope).await? {
            Handled::Reply { reply, .. } | Handled::AlreadyApplied { reply, .. } => Ok(reply),
            Handled::NotOwner => Err(CommandError::Infrastructure(Error::unavailable(
                format!("sending to actor {actor_id}"),
                "this host's fence refuses the actor (another owner serves it)",
            ))),
        }
    }
}
