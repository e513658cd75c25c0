//! Telling the owners of actors that their events changed outside their activations (a
//! transaction committed elsewhere), so that they reload before their next command.

use std::time::Duration;

use aether_core::{ActorKey, Backoff, Error, Result};
use bytes::Bytes;
use tokio::time::Instant;

use super::Inner;
use crate::routing::{decode, encode_at, ActorRequest, ActorResponse, RemoteError};
use crate::transport::RequestFailure;

/// What one attempt to tell an owner came to.
enum Told {
    Done(Result<()>),
    Retry(String),
}

impl Inner {
    /// Tells the owner of every actor in `actors` to drop its activation so that it reloads
    /// at its next command; this node's own activations (of any of them, owned here or not)
    /// are dropped at once when `here` is set. Follows ownership as sends do, until the send
    /// timeout. All owners are told concurrently; every one is tried even when another
    /// fails.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an untyped actor or a bad key (nothing is sent then);
    /// otherwise the first owner that could not be told: [`Error::Unavailable`] when none
    /// answered in time, or the error it reported.
    pub(super) async fn refresh_actors(&self, actors: &[ActorKey<'_>], here: bool) -> Result<()> {
        let mut typed = Vec::with_capacity(actors.len());
        for key in actors {
            key.validate()?;
            let Some(actor_type) = key.actor_type else {
                return Err(Error::invalid(format!(
                    "actor {key} has no type: a cluster hosts actors by type, so a refresh \
                     names it"
                )));
            };
            typed.push((actor_type, key.actor_id));
        }
        if here {
            for (actor_type, actor_id) in &typed {
                if let Some(host) = self.hosts.get(actor_type) {
                    host.refresh(actor_id);
                }
            }
        }
        let deadline = Instant::now() + self.config.send_timeout;
        let told = futures::future::join_all(
            typed
                .iter()
                .map(|(actor_type, actor_id)| self.refresh_one(actor_type, actor_id, deadline)),
        )
        .await;
        told.into_iter().collect()
    }

    async fn refresh_one(&self, actor_type: &str, actor_id: &str, deadline: Instant) -> Result<()> {
        let key = ActorKey::new(actor_type, actor_id);
        let mut backoff = Backoff::new(Duration::from_millis(10), self.config.heartbeat_interval);
        loop {
            let view = self.assignment();
            let told = match view.owner_of(actor_id) {
                // Nobody serves the shard, so nobody holds an activation to drop: whoever
                // takes the shard loads it from the store.
                None => Told::Done(Ok(())),
                Some(owner) if owner == self.node_id => {
                    if let Some(host) = self.hosts.get(actor_type) {
                        host.refresh(actor_id);
                    }
                    Told::Done(Ok(()))
                }
                Some(owner) => {
                    let request = ActorRequest {
                        actor_type: actor_type.to_string(),
                        actor_id: actor_id.to_string(),
                        // Kept in every version: version-2 receivers require it.
                        shard: Some(view.shard_of(actor_id)),
                        epoch: view.epoch,
                        meta: aether_actor::CommandMeta::default(),
                        command: serde_json::Value::Null,
                        refresh: true,
                    };
                    self.tell(owner, &key, &request, deadline).await
                }
            };
            match told {
                Told::Done(result) => return result,
                Told::Retry(reason) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::unavailable(
                            format!("telling the owner of actor {key} to reload"),
                            format!(
                                "no owner answered within {:?}: {reason}",
                                self.config.send_timeout
                            ),
                        ));
                    }
                    tracing::debug!(actor = %key, reason = %reason, "retrying a refresh");
                    tokio::time::sleep_until((now + backoff.next_delay()).min(deadline)).await;
                    self.refresh_table().await;
                }
            }
        }
    }

    async fn tell(
        &self,
        owner: &str,
        key: &ActorKey<'_>,
        request: &ActorRequest,
        deadline: Instant,
    ) -> Told {
        let wire = self
            .view
            .borrow()
            .wire_version_for(owner, self.config.wire_max());
        let payload = match encode_at(wire, request) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Told::Done(Err(e)),
        };
        let timeout = self
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(50));
        match self.transport.request(owner, payload, None, timeout).await {
            Ok(payload) => match decode::<ActorResponse>(&payload) {
                Ok(ActorResponse::Reply { .. }) => Told::Done(Ok(())),
                Ok(ActorResponse::NotOwner { epoch, .. }) => {
                    Told::Retry(format!("{owner} does not own the actor at epoch {epoch}"))
                }
                // The owner hosts no such type, so it holds no activation of it.
                Ok(ActorResponse::Error {
                    error: RemoteError::UnknownActorType { .. },
                }) => Told::Done(Ok(())),
                Ok(ActorResponse::Error { error }) => Told::Done(Err(Error::from(
                    error.into_command_error::<std::convert::Infallible>(owner),
                ))),
                Ok(ActorResponse::Rejected { .. }) => Told::Done(Err(Error::Decoding(format!(
                    "node {owner} answered a refresh of actor {key} with a rejection"
                )))),
                Err(e) => Told::Done(Err(e.into())),
            },
            Err(RequestFailure::NoResponders) => {
                Told::Retry(format!("{owner} is not serving requests"))
            }
            Err(RequestFailure::TimedOut) => {
                Told::Retry(format!("{owner} did not answer within {timeout:?}"))
            }
            Err(RequestFailure::Other(e)) => Told::Done(Err(Error::unavailable(
                format!("telling node {owner} to reload actor {key}"),
                e,
            ))),
        }
    }
}
