//! Routing: `send` to wherever an actor lives, and serving the requests for this node's
//! actors.

use std::time::Duration;

use aether_core::{Error, Result};
use bytes::Bytes;
use tokio::time::Instant;

use super::Inner;
use crate::assignment::Assignment;
use crate::host::Handled;
use crate::routing::{decode, encode, ActorRequest, ActorResponse, RemoteError};
use crate::transport::{Incoming, RequestFailure};
use crate::vm::RuntimeModel;

enum Attempt<R> {
    Done(Result<R>),
    Retry(String),
}

impl<M: RuntimeModel> Inner<M> {
    pub(super) async fn send(&self, actor_id: &str, message: M::Message) -> Result<M::Reply> {
        if actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty"));
        }
        let send_timeout = self.config.send_timeout;
        let deadline = Instant::now() + send_timeout;
        let max_backoff = self.config.heartbeat_interval;
        let mut backoff = Duration::from_millis(10).min(max_backoff);
        let message_id = uuid::Uuid::new_v4().simple().to_string();
        let mut table_changed = self.epoch_tx.subscribe();
        loop {
            let view = self.view();
            let attempt = match view.owner_of(actor_id) {
                None => Attempt::Retry("no node owns the actor's shard yet".into()),
                Some(owner) if owner == self.node_id => {
                    match self
                        .host
                        .dispatch_with_id(actor_id, Some(&message_id), message.clone())
                        .await
                    {
                        Ok(Handled::Reply { reply, .. }) => Attempt::Done(Ok(reply)),
                        Ok(Handled::NotOwner) => Attempt::Retry("ownership moved".into()),
                        Err(e) => Attempt::Done(Err(e)),
                    }
                }
                Some(owner) => {
                    self.send_remote(owner, actor_id, &view, &message_id, &message, deadline)
                        .await
                }
            };
            match attempt {
                Attempt::Done(r) => return r,
                Attempt::Retry(reason) => {
                    if Instant::now() >= deadline {
                        return Err(Error::unavailable(
                            format!("sending to actor {actor_id}"),
                            format!("no owner answered within {send_timeout:?}: {reason}"),
                        ));
                    }
                    tracing::debug!(actor_id, reason = %reason, "retrying send");
                    // Wait for the table to change (the failover we are waiting for), but
                    // no longer than the backoff: the owner may just have been slow.
                    table_changed.mark_unchanged();
                    let wake = (Instant::now() + backoff).min(deadline);
                    let _ = tokio::time::timeout_at(wake, table_changed.changed()).await;
                    backoff = (backoff * 2).min(max_backoff);
                    self.refresh_view().await;
                }
            }
        }
    }

    async fn send_remote(
        &self,
        owner: &str,
        actor_id: &str,
        view: &Assignment,
        message_id: &str,
        message: &M::Message,
        deadline: Instant,
    ) -> Attempt<M::Reply> {
        let request = ActorRequest {
            actor_id: actor_id.to_string(),
            shard: view.shard_of(actor_id),
            epoch: view.epoch,
            message_id: Some(message_id.to_string()),
            message,
        };
        let payload = match encode(&request) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Attempt::Done(Err(e)),
        };
        // Never wait past the send's own deadline; a request needs some time to be answered.
        let timeout = self
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(50));
        match self.transport.request(owner, payload, timeout).await {
            Ok(payload) => match decode::<ActorResponse<M::Reply>>(&payload) {
                Ok(ActorResponse::Reply { reply, .. }) => Attempt::Done(Ok(reply)),
                Ok(ActorResponse::NotOwner {
                    epoch,
                    owner: theirs,
                }) => Attempt::Retry(format!(
                    "{owner} does not own the actor at epoch {epoch} (owner there: {theirs:?})"
                )),
                Ok(ActorResponse::Error { error }) => Attempt::Done(Err(error.into_error(owner))),
                Err(e) => Attempt::Done(Err(e.into())),
            },
            Err(RequestFailure::NoResponders) => {
                Attempt::Retry(format!("{owner} is not serving requests"))
            }
            // The owner may be dead (its failover not yet decided) or just slow. The message
            // may have been applied; the retry carries the same id, so it is not applied
            // twice.
            Err(RequestFailure::TimedOut) => {
                Attempt::Retry(format!("{owner} did not answer within {timeout:?}"))
            }
            Err(RequestFailure::Other(e)) => Attempt::Done(Err(Error::unavailable(
                format!("request to actor {actor_id} on node {owner}"),
                e,
            ))),
        }
    }

    pub(super) async fn serve(&self, msg: Incoming) {
        let Some(reply_to) = msg.reply_to else {
            return;
        };
        let response: ActorResponse<M::Reply> =
            match decode::<ActorRequest<M::Message>>(&msg.payload) {
                Err(e) => ActorResponse::Error {
                    error: RemoteError::from_error(&e.into()),
                },
                Ok(req) => self.serve_request(req).await,
            };
        let bytes = match encode(&response) {
            Ok(b) => b,
            Err(e) => match encode(&ActorResponse::<()>::Error {
                error: RemoteError::from_error(&e),
            }) {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        if let Err(e) = self.transport.reply(reply_to, Bytes::from(bytes)).await {
            tracing::warn!(error = %e, "could not send a reply");
        }
    }

    async fn serve_request(&self, req: ActorRequest<M::Message>) -> ActorResponse<M::Reply> {
        if self.view().epoch < req.epoch {
            // The sender knows a newer table: catch up before deciding ownership.
            self.refresh_view().await;
        }
        let ActorRequest {
            actor_id,
            message_id,
            message,
            ..
        } = req;
        let not_owner = |view: &Assignment| ActorResponse::NotOwner {
            epoch: view.epoch,
            owner: view.owner_of(&actor_id).map(str::to_string),
        };
        let view = self.view();
        if !view.serves(&self.node_id, &actor_id) {
            return not_owner(&view);
        }
        match self
            .host
            .dispatch_with_id(&actor_id, message_id.as_deref(), message)
            .await
        {
            Ok(Handled::Reply { reply, version }) => ActorResponse::Reply { reply, version },
            Ok(Handled::NotOwner) => not_owner(&self.view()),
            Err(e) => ActorResponse::Error {
                error: RemoteError::from_error(&e),
            },
        }
    }
}
