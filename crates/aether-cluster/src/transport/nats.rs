//! The cluster over NATS: core NATS subjects for membership and actor requests, a JetStream
//! key-value bucket ([`KvBucket`]) for the lease and the assignment table.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Error, Result};
use aether_nats::{
    BucketConfig, CasOutcome, Connection, KvBucket, PermissionWatch, Versioned as KvVersioned,
};
use async_nats::client::RequestErrorKind;
use async_nats::{Client, Request, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Incoming, MemberMessage, ReplyTo, RequestFailure, Responder, Transport, Versioned};
use crate::assignment::{AssignmentTable, ASSIGNMENT_KEY};
use crate::config::ClusterConfig;
use crate::core::Cas;
use crate::leader::{LeaderLease, LEADER_KEY};
use crate::routing::{bucket_name, decode, encode, Heartbeat, Leave, Subjects};

/// How long a round trip to the server may take before the transport gives up on it.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// One node's connection to its cluster over NATS.
#[derive(Debug, Clone)]
pub(crate) struct NatsTransport {
    client: Client,
    /// Refusals the server reported for this connection (none are seen when the connection
    /// was made without a monitor), so a refused operation fails with `PermissionDenied` at
    /// once instead of timing out. The bucket guards its own operations with it.
    permissions: PermissionWatch,
    kv: KvBucket,
    subjects: Subjects,
    /// `<prefix>.`: the cluster's own subjects, to tell which refusals concern it.
    prefix: String,
}

impl NatsTransport {
    /// Opens (creating if needed) the cluster's bucket.
    pub(crate) async fn open(connection: &Connection, config: &ClusterConfig) -> Result<Self> {
        let bucket = bucket_name(&config.cluster_name);
        let subjects = Subjects::new(&config.cluster_name);
        let description = format!("Aether cluster {}", config.cluster_name);
        let mut bucket_config = BucketConfig::new(description).storage(config.storage);
        bucket_config.replicas = config.bucket_replicas;
        let kv = KvBucket::open_with(connection, &bucket, &bucket_config).await?;
        Ok(Self {
            client: connection.client().clone(),
            permissions: connection.permissions().clone(),
            kv,
            prefix: format!("{}.", subjects.prefix()),
            subjects,
        })
    }

    /// Runs `op`, failing with `PermissionDenied` as soon as the server reports refusing one
    /// of this cluster's subjects during it.
    async fn guarded<T>(&self, what: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        self.guarded_lazy(|| what.to_string(), op).await
    }

    /// [`guarded`](Self::guarded) with the operation's description built only when it is
    /// needed (a refusal): for the per-request path, where it would be an allocation each.
    ///
    /// Not an `async fn` of its own: a layer that took `op` by value would hold another copy
    /// of its state.
    fn guarded_lazy<'a, T: 'a>(
        &'a self,
        what: impl Fn() -> String + 'a,
        op: impl Future<Output = Result<T>> + 'a,
    ) -> impl Future<Output = Result<T>> + 'a {
        self.permissions.guard(
            what,
            |_, subject| subject.starts_with(&self.prefix),
            None,
            op,
        )
    }

    async fn read<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<Versioned<T>> {
        let read = self.kv.read(key).await?;
        Ok((read.revision(), decode_value(read, what)))
    }

    async fn cas<T: Serialize>(&self, key: &str, value: &T, expected: u64) -> Result<Cas> {
        let bytes = Bytes::from(encode(value)?);
        Ok(match self.kv.compare_and_set(key, bytes, expected).await? {
            CasOutcome::Written(revision) => Cas::Written(revision),
            CasOutcome::Conflict { .. } => Cas::Stale,
        })
    }
}

/// The value of a key as read, decoded; `None` when absent, deleted or undecodable (an
/// undecodable value is logged, and reads as none so a leader can overwrite it).
fn decode_value<T: DeserializeOwned>(read: KvVersioned, what: &str) -> Option<T> {
    let bytes = read.into_value()?;
    match decode::<T>(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "undecodable {what}");
            None
        }
    }
}

/// A decoded membership message, or the error for the core to count.
fn member_message<T>(
    decoded: std::result::Result<T, crate::routing::WireError>,
    message: impl FnOnce(T) -> MemberMessage,
) -> MemberMessage {
    decoded.map_or_else(|e| MemberMessage::Undecodable(e.to_string()), message)
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(&self, message: MemberMessage) -> Result<()> {
        let (subject, bytes) = match &message {
            MemberMessage::Heartbeat(hb) => (self.subjects.heartbeat(), encode(hb)?),
            MemberMessage::Leave(l) => (self.subjects.leave(), encode(l)?),
            MemberMessage::Undecodable(_) => {
                return Err(Error::invalid(
                    "an undecodable membership message is not sent",
                ))
            }
        };
        // A refused publish is not answered; the refusal shows on the next guarded operation.
        self.client
            .publish(subject, Bytes::from(bytes))
            .await
            .map_err(|e| Error::unavailable("publishing a membership message", e))
    }

    async fn members(&self) -> Result<BoxStream<'static, MemberMessage>> {
        let sub = self.subscribed(self.subjects.members_all()).await?;
        let heartbeat = self.subjects.heartbeat();
        let leave = self.subjects.leave();
        Ok(sub
            .filter_map(move |msg| {
                // Whatever decodes goes to the core as it came: the core checks what a
                // message claims, counts what it refuses and rate-limits the warnings.
                let m = if msg.subject.as_str() == heartbeat {
                    Some(member_message(
                        decode::<Heartbeat>(&msg.payload),
                        MemberMessage::Heartbeat,
                    ))
                } else if msg.subject.as_str() == leave {
                    Some(member_message(
                        decode::<Leave>(&msg.payload),
                        MemberMessage::Leave,
                    ))
                } else {
                    // Nothing the cluster sends: ignored.
                    None
                };
                std::future::ready(m)
            })
            .boxed())
    }

    async fn read_lease(&self) -> Result<Versioned<LeaderLease>> {
        self.read(LEADER_KEY, "leader lease").await
    }

    async fn write_lease(&self, lease: &LeaderLease, expected: u64) -> Result<Cas> {
        self.cas(LEADER_KEY, lease, expected).await
    }

    async fn release_lease(&self, revision: u64) -> Result<()> {
        // A lease that moved on was taken by another node: nothing of ours to release.
        if let CasOutcome::Conflict { .. } = self.kv.delete(LEADER_KEY, Some(revision)).await? {
            tracing::debug!(revision, "leader lease not released: it moved on");
        }
        Ok(())
    }

    async fn read_table(&self) -> Result<Versioned<AssignmentTable>> {
        self.read(ASSIGNMENT_KEY, "assignment table").await
    }

    async fn write_table(&self, table: &AssignmentTable, expected: u64) -> Result<Cas> {
        self.cas(ASSIGNMENT_KEY, table, expected).await
    }

    async fn watch_table(&self) -> Result<BoxStream<'static, Result<Versioned<AssignmentTable>>>> {
        let watch = self.kv.watch(ASSIGNMENT_KEY).await?;
        Ok(watch
            .map(|item| {
                item.map(|read| {
                    let revision = read.revision();
                    (revision, decode_value(read, "assignment table"))
                })
            })
            .boxed())
    }

    async fn request(
        &self,
        node: &str,
        payload: Bytes,
        traceparent: Option<String>,
        timeout: Duration,
    ) -> std::result::Result<Bytes, RequestFailure> {
        let subject = self.subjects.node_requests(node);
        let context = || format!("request to node {node}");
        let sent = self
            .guarded_lazy(context, async move {
                let mut request = Request::new().payload(payload).timeout(Some(timeout));
                if let Some(tp) = traceparent {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(aether_core::TRACEPARENT_HEADER, tp.as_str());
                    request = request.headers(headers);
                }
                Ok(self.client.send_request(subject, request).await)
            })
            .await;
        match sent {
            // Refused by the server: retrying cannot help.
            Err(e) => Err(RequestFailure::Other(e)),
            Ok(Ok(msg)) => Ok(msg.payload),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                Err(RequestFailure::NoResponders)
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => Err(RequestFailure::TimedOut),
            Ok(Err(e)) => Err(RequestFailure::Other(Error::unavailable(context(), e))),
        }
    }

    async fn serve(&self, node: &str) -> Result<BoxStream<'static, Incoming>> {
        let sub = self.subscribed(self.subjects.node_requests(node)).await?;
        // One handle shared by every reply: cloning it is one reference count, not a clone
        // of the client's channels.
        let client = Arc::new(self.client.clone());
        Ok(sub
            .map(move |msg| Incoming {
                traceparent: msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(aether_core::TRACEPARENT_HEADER))
                    .map(|v| v.as_str().to_string()),
                payload: msg.payload,
                reply_to: msg.reply.map(|subject| {
                    ReplyTo::new(SubjectReply {
                        client: Arc::clone(&client),
                        subject,
                    })
                }),
            })
            .boxed())
    }

    async fn settle(&self) -> Result<()> {
        let context = "a round trip to the server";
        self.guarded(
            context,
            aether_nats::backend::round_trip(&self.client, ROUND_TRIP_TIMEOUT, context),
        )
        .await
    }
}

/// The answer to a request goes to its reply subject.
#[derive(Debug)]
struct SubjectReply {
    client: Arc<Client>,
    subject: Subject,
}

#[async_trait]
impl Responder for SubjectReply {
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<()> {
        self.client
            .publish(self.subject, payload)
            .await
            .map_err(|e| Error::unavailable("sending a reply", e))
    }
}

impl NatsTransport {
    /// Subscribes to `subject` and returns once the server has the subscription, or with
    /// `PermissionDenied` if the server refused it.
    async fn subscribed(&self, subject: String) -> Result<async_nats::Subscriber> {
        let (sub, _) = aether_nats::backend::subscribe_confirmed(
            &self.client,
            &self.permissions,
            &subject,
            ROUND_TRIP_TIMEOUT,
        )
        .await?;
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn transport(server: &aether_testkit::NatsServer, cluster: &str) -> NatsTransport {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let config = ClusterConfig::default()
            .cluster_name(cluster)
            .storage(aether_core::StorageKind::Memory);
        NatsTransport::open(&client.into(), &config)
            .await
            .expect("bucket")
    }

    #[tokio::test]
    async fn nats_keeps_the_transport_contract() {
        let server = aether_testkit::NatsServer::start().expect("nats-server");
        let (a, b) = (
            transport(&server, "cas").await,
            transport(&server, "cas").await,
        );
        crate::transport::contract::compare_and_set(&a, &b).await;
        let (a, b) = (
            transport(&server, "msg").await,
            transport(&server, "msg").await,
        );
        crate::transport::contract::messaging(&a, &b).await;
    }
}
