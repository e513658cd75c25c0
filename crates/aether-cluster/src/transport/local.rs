//! An in-process network for nodes in one process: no server, same protocol.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aether_core::Result;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{Incoming, MemberMessage, ReplyTo, RequestFailure, Responder, Transport, Versioned};
use crate::assignment::AssignmentTable;
use crate::core::Cas;
use crate::leader::LeaderLease;

/// An in-process stand-in for NATS that lets [`ClusterNode`](crate::ClusterNode)s in one
/// process form a cluster without a server: the embedded mode, demos, and tests that run the
/// whole protocol (heartbeats, failure detection, leader change, failover, fencing) on paused
/// time.
///
/// It keeps the lease and the assignment table with compare-and-set revisions, like the
/// cluster's key-value bucket, fans membership messages out to every node, and carries actor
/// requests over channels: a node that stopped serving answers "no responders", one that
/// stopped reading lets requests time out. Every node of one cluster shares one network;
/// cloning it is cheap and clones are the same network.
///
/// ```
/// # async fn run() -> aether_core::Result<()> {
/// use aether_cluster::LocalNetwork;
/// let network = LocalNetwork::new();
/// // ClusterNode::start_local(&network, config, model, store).await? for each node.
/// # drop(network);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LocalNetwork {
    shared: Arc<Shared>,
}

struct Shared {
    members: broadcast::Sender<MemberMessage>,
    kv: Mutex<Kv>,
    table: watch::Sender<Versioned<AssignmentTable>>,
    servers: Mutex<HashMap<String, mpsc::Sender<Incoming>>>,
}

#[derive(Default)]
struct Kv {
    /// The bucket's revision counter: every write of any key takes the next one.
    revision: u64,
    lease: Versioned<LeaderLease>,
    table: Versioned<AssignmentTable>,
}

impl Default for LocalNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kv = self.kv();
        f.debug_struct("LocalNetwork")
            .field("revision", &kv.revision)
            .field("table_epoch", &kv.table.0)
            .finish_non_exhaustive()
    }
}

impl LocalNetwork {
    /// An empty network: no lease, no table, nobody serving.
    pub fn new() -> Self {
        let (members, _) = broadcast::channel(4096);
        let (table, _) = watch::channel((0, None));
        Self {
            shared: Arc::new(Shared {
                members,
                kv: Mutex::new(Kv::default()),
                table,
                servers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn kv(&self) -> MutexGuard<'_, Kv> {
        self.shared.kv.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn servers(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Incoming>>> {
        self.shared
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn cas<T: Clone>(
    kv: &mut Kv,
    key: impl Fn(&mut Kv) -> &mut Versioned<T>,
    value: Option<T>,
    expected: u64,
) -> Cas {
    if key(kv).0 != expected {
        return Cas::Stale;
    }
    kv.revision += 1;
    let revision = kv.revision;
    *key(kv) = (revision, value);
    Cas::Written(revision)
}

#[async_trait]
impl Transport for LocalNetwork {
    async fn publish(&self, message: MemberMessage) -> Result<()> {
        // Nobody listening is not an error, as on NATS.
        let _ = self.shared.members.send(message);
        Ok(())
    }

    async fn members(&self) -> Result<BoxStream<'static, MemberMessage>> {
        let rx = self.shared.members.subscribe();
        Ok(stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(m) => return Some((m, rx)),
                    // A member that fell behind misses heartbeats, as a slow consumer would.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }

    async fn read_lease(&self) -> Result<Versioned<LeaderLease>> {
        Ok(self.kv().lease.clone())
    }

    async fn write_lease(&self, lease: &LeaderLease, expected: u64) -> Result<Cas> {
        Ok(cas(
            &mut self.kv(),
            |kv| &mut kv.lease,
            Some(lease.clone()),
            expected,
        ))
    }

    async fn release_lease(&self, revision: u64) -> Result<()> {
        let _ = cas(&mut self.kv(), |kv| &mut kv.lease, None, revision);
        Ok(())
    }

    async fn read_table(&self) -> Result<Versioned<AssignmentTable>> {
        Ok(self.kv().table.clone())
    }

    async fn write_table(&self, table: &AssignmentTable, expected: u64) -> Result<Cas> {
        let (outcome, now) = {
            let mut kv = self.kv();
            let outcome = cas(&mut kv, |kv| &mut kv.table, Some(table.clone()), expected);
            (outcome, kv.table.clone())
        };
        if let Cas::Written(_) = outcome {
            self.shared.table.send_replace(now);
        }
        Ok(outcome)
    }

    async fn watch_table(&self) -> Result<BoxStream<'static, Result<Versioned<AssignmentTable>>>> {
        let mut rx = self.shared.table.subscribe();
        let first = rx.borrow_and_update().clone();
        let later = stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let v = rx.borrow_and_update().clone();
            Some((Ok(v), rx))
        });
        Ok(stream::once(async move { Ok(first) }).chain(later).boxed())
    }

    async fn request(
        &self,
        node: &str,
        payload: Bytes,
        traceparent: Option<String>,
        timeout: Duration,
    ) -> std::result::Result<Bytes, RequestFailure> {
        let server = self.servers().get(node).cloned();
        let Some(server) = server.filter(|s| !s.is_closed()) else {
            return Err(RequestFailure::NoResponders);
        };
        let (tx, rx) = oneshot::channel();
        let incoming = Incoming {
            payload,
            reply_to: Some(ReplyTo::new(LocalReply(tx))),
            traceparent,
        };
        let exchange = async {
            server
                .send(incoming)
                .await
                .map_err(|_| RequestFailure::NoResponders)?;
            // The server dropped the request unanswered (it was stopped mid-request): as on
            // NATS, the sender only sees that no reply came.
            rx.await.map_err(|_| RequestFailure::TimedOut)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Err(RequestFailure::TimedOut)) => {
                tokio::time::sleep_until(deadline).await;
                Err(RequestFailure::TimedOut)
            }
            Ok(r) => r,
            Err(_) => Err(RequestFailure::TimedOut),
        }
    }

    async fn serve(&self, node: &str) -> Result<BoxStream<'static, Incoming>> {
        let (tx, rx) = mpsc::channel(1024);
        self.servers().insert(node.to_string(), tx);
        Ok(stream::unfold(rx, |mut rx| async move {
            let m = rx.recv().await?;
            Some((m, rx))
        })
        .boxed())
    }

    async fn settle(&self) -> Result<()> {
        Ok(())
    }
}

/// The answer to a request goes to the sender waiting in this process.
#[derive(Debug)]
struct LocalReply(oneshot::Sender<Bytes>);

#[async_trait]
impl Responder for LocalReply {
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<()> {
        // The sender may have given up (timed out): nothing to do then.
        let _ = self.0.send(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(term: u64) -> AssignmentTable {
        AssignmentTable {
            term,
            ..AssignmentTable::empty(4, 1)
        }
    }

    #[tokio::test]
    async fn the_local_network_keeps_the_transport_contract() {
        let net = LocalNetwork::new();
        super::super::contract::compare_and_set(&net, &net.clone()).await;
        let net = LocalNetwork::new();
        super::super::contract::messaging(&net, &net.clone()).await;
    }

    #[tokio::test]
    async fn the_bucket_compares_and_sets_like_jetstream_key_value() {
        let net = LocalNetwork::new();
        let lease = LeaderLease {
            node_id: "a".into(),
            incarnation: "i".into(),
            term: 1,
        };
        assert_eq!(net.read_lease().await.unwrap(), (0, None));
        assert_eq!(net.write_lease(&lease, 0).await.unwrap(), Cas::Written(1));
        assert_eq!(net.write_lease(&lease, 0).await.unwrap(), Cas::Stale);
        assert_eq!(
            net.write_table(&table(1), 0).await.unwrap(),
            Cas::Written(2)
        );
        assert_eq!(net.write_lease(&lease, 1).await.unwrap(), Cas::Written(3));
        // A release at an old revision does nothing; at the current one it deletes.
        net.release_lease(1).await.unwrap();
        assert_eq!(net.read_lease().await.unwrap().0, 3);
        net.release_lease(3).await.unwrap();
        assert_eq!(net.read_lease().await.unwrap(), (4, None));
        let mut watch = net.watch_table().await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap(), (2, Some(table(1))));
        assert_eq!(
            net.write_table(&table(2), 2).await.unwrap(),
            Cas::Written(5)
        );
        assert_eq!(watch.next().await.unwrap().unwrap(), (5, Some(table(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_reach_a_server_or_say_why_not() {
        let net = LocalNetwork::new();
        let t = Duration::from_secs(1);
        assert!(matches!(
            net.request("a", Bytes::new(), None, t).await,
            Err(RequestFailure::NoResponders)
        ));
        let mut served = net.serve("a").await.unwrap();
        let answer = tokio::spawn(async move {
            let req = served.next().await.unwrap();
            req.reply_to.unwrap().send(req.payload).await.unwrap();
            served
        });
        let r = net.request("a", Bytes::from_static(b"hi"), None, t).await;
        assert_eq!(r.unwrap(), Bytes::from_static(b"hi"));
        // Served but not read (a hung node): the request times out.
        let served = answer.await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(matches!(
            net.request("a", Bytes::new(), None, t).await,
            Err(RequestFailure::TimedOut)
        ));
        assert!(started.elapsed() >= t);
        // Dropped (a stopped node): no responders.
        drop(served);
        assert!(matches!(
            net.request("a", Bytes::new(), None, t).await,
            Err(RequestFailure::NoResponders)
        ));
    }
}
