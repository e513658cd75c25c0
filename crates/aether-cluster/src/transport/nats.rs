//! The cluster over NATS: core NATS subjects for membership and actor requests, a JetStream
//! key-value bucket for the lease and the assignment table.

use std::time::Duration;

use aether_core::{Error, Result};
use async_nats::client::RequestErrorKind;
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::{Client, Request};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Incoming, MemberMessage, ReplyTo, RequestFailure, Transport, Versioned};
use crate::assignment::{AssignmentTable, ASSIGNMENT_KEY};
use crate::config::ClusterConfig;
use crate::core::Cas;
use crate::leader::{LeaderLease, LEADER_KEY};
use crate::routing::{bucket_name, decode, encode, Heartbeat, Leave, Subjects};

/// One node's connection to its cluster over NATS.
#[derive(Debug, Clone)]
pub(crate) struct NatsTransport {
    client: Client,
    kv: kv::Store,
    subjects: Subjects,
}

impl NatsTransport {
    /// Opens (creating if needed) the cluster's bucket.
    pub(crate) async fn open(client: Client, config: &ClusterConfig) -> Result<Self> {
        let kv = open_bucket(&client, config).await?;
        Ok(Self {
            client,
            kv,
            subjects: Subjects::new(&config.cluster_name),
        })
    }

    async fn read<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<Versioned<T>> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| Error::unavailable(format!("reading the {what}"), e))?;
        Ok(match entry {
            None => (0, None),
            Some(e) if e.operation != Operation::Put => (e.revision, None),
            Some(e) => (e.revision, decode_or_warn(&e.value, what)),
        })
    }

    async fn cas<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: u64,
        what: &str,
    ) -> Result<Cas> {
        let bytes = Bytes::from(encode(value)?);
        match self.kv.update(key, bytes, expected).await {
            Ok(revision) => Ok(Cas::Written(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Cas::Stale),
            Err(e) => Err(Error::unavailable(format!("writing the {what}"), e)),
        }
    }
}

/// An undecodable value reads as none (with its revision), so a leader can overwrite it.
fn decode_or_warn<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Option<T> {
    match decode::<T>(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "undecodable {what}");
            None
        }
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(&self, message: MemberMessage) -> Result<()> {
        let (subject, bytes) = match &message {
            MemberMessage::Heartbeat(hb) => (self.subjects.heartbeat(), encode(hb)?),
            MemberMessage::Leave(l) => (self.subjects.leave(), encode(l)?),
        };
        self.client
            .publish(subject, Bytes::from(bytes))
            .await
            .map_err(|e| Error::unavailable("publishing a membership message", e))
    }

    async fn members(&self) -> Result<BoxStream<'static, MemberMessage>> {
        let sub = self
            .client
            .subscribe(self.subjects.members_all())
            .await
            .map_err(|e| Error::unavailable("subscribing to membership", e))?;
        let heartbeat = self.subjects.heartbeat();
        let leave = self.subjects.leave();
        Ok(sub
            .filter_map(move |msg| {
                let m = if msg.subject.as_str() == heartbeat {
                    decode_or_warn::<Heartbeat>(&msg.payload, "heartbeat")
                        .map(MemberMessage::Heartbeat)
                } else if msg.subject.as_str() == leave {
                    decode_or_warn::<Leave>(&msg.payload, "leave notice").map(MemberMessage::Leave)
                } else {
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
        self.cas(LEADER_KEY, lease, expected, "leader lease").await
    }

    async fn release_lease(&self, revision: u64) -> Result<()> {
        self.kv
            .delete_expect_revision(LEADER_KEY, Some(revision))
            .await
            .map_err(|e| Error::unavailable("releasing the leader lease", e))
    }

    async fn read_table(&self) -> Result<Versioned<AssignmentTable>> {
        self.read(ASSIGNMENT_KEY, "assignment table").await
    }

    async fn write_table(&self, table: &AssignmentTable, expected: u64) -> Result<Cas> {
        self.cas(ASSIGNMENT_KEY, table, expected, "assignment table")
            .await
    }

    async fn watch_table(&self) -> Result<BoxStream<'static, Result<Versioned<AssignmentTable>>>> {
        let watch = self
            .kv
            .watch_with_history(ASSIGNMENT_KEY)
            .await
            .map_err(|e| Error::unavailable("watching the assignment table", e))?;
        Ok(watch
            .map(|item| match item {
                Ok(e) if e.operation == Operation::Put => Ok((
                    e.revision,
                    decode_or_warn::<AssignmentTable>(&e.value, "assignment table"),
                )),
                Ok(e) => Ok((e.revision, None)),
                Err(e) => Err(Error::unavailable("watching the assignment table", e)),
            })
            .boxed())
    }

    async fn request(
        &self,
        node: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> std::result::Result<Bytes, RequestFailure> {
        let response = self
            .client
            .send_request(
                self.subjects.node_requests(node),
                Request::new().payload(payload).timeout(Some(timeout)),
            )
            .await;
        match response {
            Ok(msg) => Ok(msg.payload),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                Err(RequestFailure::NoResponders)
            }
            Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(RequestFailure::TimedOut),
            Err(e) => Err(RequestFailure::Other(Error::unavailable(
                format!("request to node {node}"),
                e,
            ))),
        }
    }

    async fn serve(&self, node: &str) -> Result<BoxStream<'static, Incoming>> {
        let sub = self
            .client
            .subscribe(self.subjects.node_requests(node))
            .await
            .map_err(|e| Error::unavailable("subscribing to actor requests", e))?;
        // Senders must reach us once this returns: wait until the server has the
        // subscription.
        self.settle().await?;
        Ok(sub
            .map(|msg| Incoming {
                payload: msg.payload,
                reply_to: msg.reply.map(ReplyTo::Subject),
            })
            .boxed())
    }

    async fn reply(&self, to: ReplyTo, payload: Bytes) -> Result<()> {
        match to {
            ReplyTo::Subject(s) => self
                .client
                .publish(s, payload)
                .await
                .map_err(|e| Error::unavailable("sending a reply", e)),
            ReplyTo::Local(_) => Err(Error::invalid("a local reply channel on a NATS transport")),
        }
    }

    async fn settle(&self) -> Result<()> {
        round_trip(&self.client).await
    }
}

/// A PING round trip through the server: when it returns, the server has processed every
/// command this connection sent before (`flush` only empties the socket buffer).
async fn round_trip(client: &Client) -> Result<()> {
    let inbox = client.new_inbox();
    let probe = async {
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Error::unavailable("round trip to the server", e))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| Error::unavailable("round trip to the server", e))?;
        match sub.next().await {
            Some(_) => {
                let _ = sub.unsubscribe().await;
                Ok(())
            }
            None => Err(Error::Closed("NATS connection".into())),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .unwrap_or_else(|_| {
            Err(Error::unavailable(
                "round trip to the server",
                "no answer within 10s",
            ))
        })
}

async fn open_bucket(client: &Client, config: &ClusterConfig) -> Result<kv::Store> {
    use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};

    let js = async_nats::jetstream::new(client.clone());
    let bucket = bucket_name(&config.cluster_name);
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    // The stream a key-value bucket is made of, created directly: the client's own
    // `create_key_value` first reads account information in a form servers before 2.10 do not
    // send. One value per key is enough (compare-and-set needs only the latest revision).
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(format!("Aether cluster {}", config.cluster_name)),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: if config.memory_storage {
                StorageType::Memory
            } else {
                StorageType::File
            },
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    let created_err = created.err();
    // Whether we or another node created it, it is now there (or the error says why not).
    js.get_key_value(&bucket)
        .await
        .map_err(|get_err| match created_err {
            Some(e) => Error::unavailable(format!("creating the cluster bucket {bucket}"), e),
            None => Error::unavailable(format!("opening the cluster bucket {bucket}"), get_err),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn transport(server: &aether_testkit::NatsServer, cluster: &str) -> NatsTransport {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let config = ClusterConfig::default()
            .cluster_name(cluster)
            .memory_storage(true);
        NatsTransport::open(client, &config).await.expect("bucket")
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
