//! Retiring an actor for good: its final event, after which nothing loads it for writing.

use aether_core::{Error, Event};

use super::activation::{count_load_error, load};
use super::stats::bump;
use super::ActorHost;
use crate::actor::{Actor, CommandMeta};
use crate::error::CommandError;

impl<A: Actor> ActorHost<A> {
    /// Retires `actor_id` for good: appends its final event
    /// ([`aether_core::EVENT_TYPE_RETIRED`], stamped with `meta` as a command's events are)
    /// after its last one, and passivates it on this host. Returns the final event's version.
    ///
    /// From then on every command and transaction of the actor fails with
    /// [`CommandError::Retired`], on this host and on any other: each loads the actor from the
    /// store, and loading stops at the final event. Its history stays readable. The append
    /// checks the actor's version as a command's save does, so a command decided at the same
    /// time either lands before the final event or is refused after it: nothing is ever
    /// appended after it by an actor. (Another host's activation notices at its next write;
    /// a cluster node's `retire` tells the owner at once.)
    ///
    /// # Errors
    /// [`CommandError::Retired`] when the actor is retired already; [`CommandError::Conflict`]
    /// when other writers kept changing it beyond the retry policy; loading and store errors as
    /// a command's ([`Error::InvalidInput`] for a malformed actor id).
    pub async fn retire(
        &self,
        actor_id: &str,
        meta: CommandMeta,
    ) -> Result<u64, CommandError<A::Error>> {
        let shared = &self.shared;
        let policy = shared.config.retry;
        let mut attempts = 0u32;
        loop {
            let loaded = load(shared, actor_id).await.map_err(|e| {
                count_load_error(&shared.counters, &e);
                CommandError::from(e)
            })?;
            attempts += 1;
            let mut last = Event::retirement(A::TYPE, actor_id, loaded.version + 1);
            meta.stamp(&mut last);
            match shared.store.save_event(&last).await {
                Ok(()) => {
                    // A live activation here holds the state before the final event.
                    self.passivate(actor_id);
                    bump(&shared.counters.retired);
                    tracing::info!(
                        actor_type = A::TYPE,
                        actor_id,
                        version = last.version,
                        "actor retired"
                    );
                    return Ok(last.version);
                }
                Err(Error::VersionConflict(conflict)) => {
                    bump(&shared.counters.conflicts);
                    if attempts > policy.max_retries {
                        bump(&shared.counters.conflicts_exhausted);
                        return Err(CommandError::Conflict {
                            actor_id: actor_id.to_string(),
                            attempts,
                            last: conflict,
                        });
                    }
                    tokio::time::sleep(policy.backoff(attempts)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
