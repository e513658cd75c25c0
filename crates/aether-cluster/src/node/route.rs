//! Routing: `send` to wherever an actor lives, and serving the requests for this node's
//! actors. Both read the view the node's loop publishes and never wait for the loop, except
//! to have the table refreshed when ownership looks stale.

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{Actor, CommandError, Envelope, Handled};
use aether_core::{Backoff, Error, TraceContext};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use crate::actors::Served;
use crate::assignment::Assignment;
use crate::routing::{
    decode, decode_request, encode, encode_at, ActorRequestIn, ActorRequestOut, ActorResponse,
    ActorResponseIn, RemoteError, MIN_WIRE_VERSION,
};
use crate::transport::{Incoming, RequestFailure};

type Outcome<A> = Result<Handled<<A as Actor>::Reply>, CommandError<<A as Actor>::Error>>;

enum Attempt<A: Actor> {
    Done(Outcome<A>),
    Retry(String),
}

impl Inner {
    /// Routes a command (see `ClusterNode::send_envelope`), recording its latency and outcome
    /// for the metrics exporter: `aether_cluster_send_seconds{actor_type, outcome}`, `outcome`
    /// one of `ok`, `rejected`, `conflict`, `decode` or the error's kind.
    pub(super) async fn send<A: Actor>(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> Outcome<A> {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "cluster_send",
            node = %self.node_id,
            actor_type = A::TYPE,
            actor_id,
            trace_id = envelope.meta.trace.as_ref().map(|t| t.trace_id().to_string()),
        );
        // Everything a send does, local writes included, ends by its deadline: a store that
        // hangs (its server gone) must not hold the caller past the send timeout. Cutting a
        // local write short leaves it to finish or fail in the actor's own task; the command
        // may or may not be applied, which `Unavailable` says, and a retry with the same
        // command id is safe.
        let send_timeout = self.config.send_timeout;
        let deadline = started + send_timeout;
        let outcome = match tokio::time::timeout_at(
            deadline,
            self.route::<A>(actor_id, envelope, deadline)
                .instrument(span),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::unavailable(
                format!("sending to actor {actor_id}"),
                format!(
                    "no answer within the send timeout of {send_timeout:?} (the command may or may not have been applied)"
                ),
            )
            .into()),
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict { .. }) => "conflict",
            Err(CommandError::Decode(_)) => "decode",
            Err(CommandError::WrongType(_)) => "wrong_type",
            Err(CommandError::Reaction(_)) => "reaction",
            Err(CommandError::Retired(_)) => "retired",
            Err(CommandError::Infrastructure(e)) => e.kind(),
        };
        metrics::histogram!("aether_cluster_send_seconds", "actor_type" => A::TYPE, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn route<A: Actor>(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
        deadline: Instant,
    ) -> Outcome<A> {
        if actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty").into());
        }
        let Some(host) = self.hosts.typed::<A>() else {
            return Err(Error::NotFound(format!(
                "node {} hosts no actor type {:?}",
                self.node_id,
                A::TYPE
            ))
            .into());
        };
        let mut envelope = envelope;
        // Without a trace of its own, a command joins the current span's.
        #[cfg(feature = "opentelemetry")]
        if envelope.meta.trace.is_none() {
            envelope.meta.trace = aether_actor::otel::current();
        }
        // Every attempt carries the same id, so that the owner applies the command once.
        if envelope.meta.command_id.is_none() {
            envelope.meta.command_id = Some(uuid::Uuid::new_v4().simple().to_string());
        }
        let send_timeout = self.config.send_timeout;
        // From 10 ms, doubling up to a heartbeat interval (by then the failover being waited
        // for shows in the table, which wakes the wait anyway); each wait ends by the deadline.
        let mut backoff = Backoff::new(Duration::from_millis(10), self.config.heartbeat_interval);
        // Made on the first retry: most sends never wait for the table.
        let mut table_changed = None;
        loop {
            let view = self.assignment();
            let attempt = match view.owner_of(actor_id) {
                None => Attempt::Retry("no node owns the actor's shard yet".into()),
                Some(owner) if owner == self.node_id => {
                    match host.dispatch(actor_id, envelope.clone()).await {
                        Ok(Handled::NotOwner) => Attempt::Retry("ownership moved".into()),
                        other => Attempt::Done(other),
                    }
                }
                Some(owner) => {
                    self.send_remote::<A>(owner, actor_id, &view, &envelope, deadline)
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
                        )
                        .into());
                    }
                    tracing::debug!(actor_id, reason = %reason, "retrying send");
                    // Wait for the table to change (the failover we are waiting for), but
                    // no longer than the backoff: the owner may just have been slow.
                    let table_changed = table_changed.get_or_insert_with(|| self.view.clone());
                    table_changed.mark_unchanged();
                    let wake = (Instant::now() + backoff.next_delay()).min(deadline);
                    let changed = async {
                        if table_changed.changed().await.is_err() {
                            // The node's loop has stopped: nothing will change; wait it out.
                            std::future::pending::<()>().await;
                        }
                    };
                    let _ = tokio::time::timeout_at(wake, changed).await;
                    self.refresh_table().await;
                }
            }
        }
    }

    async fn send_remote<A: Actor>(
        &self,
        owner: &str,
        actor_id: &str,
        view: &Assignment,
        envelope: &Envelope<A::Command>,
        deadline: Instant,
    ) -> Attempt<A> {
        // One serde pass, straight from the command: the bytes are an `ActorRequest`'s, in
        // the newest version both nodes speak.
        let wire = self
            .view
            .borrow()
            .wire_version_for(owner, self.config.wire_max());
        let request = ActorRequestOut {
            actor_type: A::TYPE,
            actor_id,
            // Required by version-2 receivers only.
            shard: (wire == 2).then(|| view.shard_of(actor_id)),
            epoch: view.epoch,
            meta: &envelope.meta,
            command: &envelope.command,
            speaks: (wire < self.config.wire_max()).then(|| self.config.wire_max()),
        };
        let payload = match encode_at(wire, &request) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Attempt::Done(Err(e.into())),
        };
        // Never wait past the send's own deadline; a request needs some time to be answered.
        let timeout = self
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(50));
        let undecodable = |what: &str, e: serde_json::Error| {
            Attempt::Done(Err(Error::Decoding(format!(
                "the {what} of actor type {} from node {owner}: {e}",
                A::TYPE
            ))
            .into()))
        };
        let traceparent = envelope.meta.trace.as_ref().map(ToString::to_string);
        match self
            .transport
            .request(owner, payload, traceparent, timeout)
            .await
        {
            // The reply and rejection are decoded once, from their JSON in the message.
            Ok(payload) => match decode::<ActorResponseIn<'_>>(&payload) {
                Ok(ActorResponseIn::Reply {
                    reply,
                    version,
                    already_applied,
                }) => match serde_json::from_str(reply.get()) {
                    Ok(reply) if already_applied => {
                        Attempt::Done(Ok(Handled::AlreadyApplied { reply, version }))
                    }
                    Ok(reply) => Attempt::Done(Ok(Handled::Reply { reply, version })),
                    Err(e) => undecodable("reply", e),
                },
                Ok(ActorResponseIn::Rejected { error }) => {
                    match serde_json::from_str(error.get()) {
                        Ok(rejection) => Attempt::Done(Err(CommandError::Rejected(rejection))),
                        Err(e) => undecodable("rejection", e),
                    }
                }
                Ok(ActorResponseIn::NotOwner {
                    epoch,
                    owner: theirs,
                }) => Attempt::Retry(format!(
                    "{owner} does not own the actor at epoch {epoch} (owner there: {theirs:?})"
                )),
                Ok(ActorResponseIn::Error { error }) => {
                    Attempt::Done(Err(error.into_command_error(owner)))
                }
                Err(e) => Attempt::Done(Err(Error::from(e).into())),
            },
            Err(RequestFailure::NoResponders) => {
                Attempt::Retry(format!("{owner} is not serving requests"))
            }
            // The owner may be dead (its failover not yet decided) or just slow. The command
            // may have been applied; the retry carries the same id, so it is not applied
            // twice.
            Err(RequestFailure::TimedOut) => {
                Attempt::Retry(format!("{owner} did not answer within {timeout:?}"))
            }
            Err(RequestFailure::Other(e)) => Attempt::Done(Err(Error::unavailable(
                format!("request to actor {actor_id} on node {owner}"),
                e,
            )
            .into())),
        }
    }

    pub(super) async fn serve(&self, msg: Incoming) {
        let Some(reply_to) = msg.reply_to else {
            return;
        };
        // The command stays as its JSON in the message until the actor type decodes it.
        let (version, served) = match decode_request(&msg.payload, self.config.wire_max()) {
            Err(e) => (
                MIN_WIRE_VERSION,
                Served::Response(ActorResponse::Error {
                    error: RemoteError::from_error(&e.into()),
                }),
            ),
            Ok((version, mut req)) => {
                let version = req.answer_version(version);
                // The header stands for the trace when the body carries none (a sender that
                // only speaks the header); a malformed header is ignored.
                if req.meta.trace.is_none() {
                    req.meta.trace = msg.traceparent.as_deref().and_then(TraceContext::parse);
                }
                let span = tracing::info_span!(
                    "actor_request",
                    node = %self.node_id,
                    actor_type = %req.actor_type,
                    actor_id = %req.actor_id,
                    trace_id = tracing::field::Empty,
                    parent_span_id = tracing::field::Empty,
                );
                if let Some(t) = &req.meta.trace {
                    span.record("trace_id", t.trace_id());
                    span.record("parent_span_id", t.span_id());
                    #[cfg(feature = "opentelemetry")]
                    aether_actor::otel::set_parent(&span, t);
                }
                (version, self.serve_request(req).instrument(span).await)
            }
        };
        let bytes = match served {
            Served::Encoded(b) => b,
            Served::Response(response) => match encode(&response.for_version(version)) {
                Ok(b) => b,
                Err(e) => match encode(&ActorResponse::Error {
                    error: RemoteError::from_error(&e),
                }) {
                    Ok(b) => b,
                    Err(_) => return,
                },
            },
        };
        if let Err(e) = reply_to.send(Bytes::from(bytes)).await {
            tracing::warn!(error = %e, "could not send a reply");
        }
    }

    async fn serve_request(&self, req: ActorRequestIn<'_>) -> Served {
        if self.assignment().epoch < req.epoch {
            // The sender knows a newer table: catch up before deciding ownership.
            self.refresh_table().await;
        }
        let ActorRequestIn {
            actor_type,
            actor_id,
            meta,
            command,
            refresh,
            ..
        } = req;
        let not_owner = |view: &Assignment| ActorResponse::NotOwner {
            epoch: view.epoch,
            owner: view.owner_of(&actor_id).map(str::to_string),
        };
        let Some(host) = self.hosts.get(&actor_type) else {
            return Served::Response(ActorResponse::Error {
                error: RemoteError::UnknownActorType { actor_type },
            });
        };
        let view = self.assignment();
        if actor_id.is_empty() || !view.serves(&self.node_id, &actor_id) {
            if actor_id.is_empty() {
                return Served::Response(ActorResponse::Error {
                    error: RemoteError::Invalid {
                        message: "actor id must not be empty".into(),
                    },
                });
            }
            return Served::Response(not_owner(&view));
        }
        if refresh {
            host.refresh(&actor_id);
            return Served::Response(ActorResponse::Reply {
                reply: serde_json::Value::Null,
                version: 0,
                already_applied: false,
            });
        }
        match host.serve(&actor_id, meta, command).await {
            Served::Response(ActorResponse::NotOwner { .. }) => {
                Served::Response(not_owner(&self.assignment()))
            }
            other => other,
        }
    }
}

/// The most requests a node serves at once. Past it the loop stops taking requests off the
/// subscription until one finishes: a flood of requests (many senders, or one hostile client
/// on the cluster's subjects) then waits in the subscription's bounded buffer, where the
/// client library drops what does not fit (senders time out and retry), instead of growing a
/// task per request without limit. Commands to one actor run one at a time anyway, so this
/// bounds only how many actors are busy at once.
pub(super) const MAX_IN_FLIGHT_REQUESTS: usize = 1024;

/// Serves the requests for this node's actors until `cancel` fires.
pub(super) async fn serve_loop(
    inner: Arc<Inner>,
    requests: BoxStream<'static, Incoming>,
    cancel: CancellationToken,
) {
    serve_bounded(requests, MAX_IN_FLIGHT_REQUESTS, cancel, move |msg| {
        let inner = Arc::clone(&inner);
        async move { inner.serve(msg).await }
    })
    .await;
}

/// Takes requests off `requests` and serves each on a task of its own, at most
/// `max_in_flight` at once, until `cancel` fires or the stream ends; then stops listening and
/// lets the requests already taken finish.
async fn serve_bounded<T, F, Fut>(
    mut requests: BoxStream<'static, T>,
    max_in_flight: usize,
    cancel: CancellationToken,
    serve: F,
) where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // In-flight requests live in this set, so stopping the loop (or killing the node) stops
    // them too.
    let mut in_flight = JoinSet::new();
    let max_in_flight = max_in_flight.max(1);
    loop {
        // Finished requests are reaped without waiting: a loop that also waited for them would
        // be woken once more for every request it serves.
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= max_in_flight {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = in_flight.join_next() => continue,
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            msg = requests.next() => {
                let Some(msg) = msg else { break };
                in_flight.spawn(serve(msg).in_current_span());
            }
        }
    }
    // Stop listening first so senders see "no responders" and go elsewhere, then let the
    // requests already taken finish.
    drop(requests);
    while in_flight.join_next().await.is_some() {}
}

#[cfg(test)]
mod bounded_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Requests that wait until released: never more than the bound run at once, and every
    /// request is served once the waiting ones finish.
    #[tokio::test]
    async fn no_more_than_the_bound_are_served_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let requests = futures::stream::iter(0..20u32).boxed();
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (running, most, served, release) = (
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&served),
                Arc::clone(&release),
            );
            serve_bounded(requests, 3, cancel.clone(), move |_| {
                let (running, most, served, release) = (
                    Arc::clone(&running),
                    Arc::clone(&most),
                    Arc::clone(&served),
                    Arc::clone(&release),
                );
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if let Ok(permit) = release.acquire().await {
                        permit.forget();
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        });
        // Let the loop take all it may.
        while running.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(running.load(Ordering::SeqCst), 3, "the bound holds");
        release.add_permits(20);
        task.await.expect("the loop ends with its stream");
        assert_eq!(served.load(Ordering::SeqCst), 20);
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }
}
