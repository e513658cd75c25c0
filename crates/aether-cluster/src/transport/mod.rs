//! How a node reaches the rest of its cluster: the one seam between the node's logic and the
//! network.
//!
//! A [`Transport`] publishes and receives membership messages, reads and compare-and-sets the
//! leader lease and the assignment table, and carries actor requests and their replies. The
//! node (`node/`) does nothing else with the outside world, so the same node runs over NATS
//! (`nats.rs`, feature `nats`) and over an in-process [`LocalNetwork`] (`local.rs`), which the
//! embedded demo and the paused-time tests use. Nothing of a particular transport shows here:
//! each carries its own way of answering a request behind [`ReplyTo`].

use std::fmt;
use std::time::Duration;

use aether_core::Result;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::assignment::AssignmentTable;
use crate::core::Cas;
use crate::leader::LeaderLease;
use crate::routing::{Heartbeat, Leave};

mod local;
#[cfg(feature = "nats")]
pub(crate) mod nats;

pub use local::LocalNetwork;

/// A membership message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MemberMessage {
    Heartbeat(Heartbeat),
    Leave(Leave),
    /// Bytes on a membership subject that decode as neither (the decoding error). Passed on
    /// rather than dropped, so the core counts them and rate-limits the warnings about them
    /// with every other refused message.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Undecodable(String),
}

/// A key of the cluster's bucket as read: its revision (0: never written) and decoded value
/// (`None`: absent, deleted or undecodable).
pub(crate) type Versioned<T> = (u64, Option<T>);

/// Why a request got no reply.
#[derive(Debug)]
pub(crate) enum RequestFailure {
    /// Nobody serves the node's requests: it is gone (or never was).
    NoResponders,
    /// No reply within the timeout: the node may be dead, hung or slow, and may have handled
    /// the request.
    TimedOut,
    /// Anything else (a lost connection, say).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Other(aether_core::Error),
}

/// How a transport answers one request it delivered: a NATS reply subject, a waiting
/// sender in this process. Used once.
#[async_trait]
pub(crate) trait Responder: Send + fmt::Debug + 'static {
    /// Sends the answer.
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<()>;
}

/// Where the answer to an incoming request goes: the transport that delivered the request
/// made it, and knows how to answer.
#[derive(Debug)]
pub(crate) struct ReplyTo(Box<dyn Responder>);

impl ReplyTo {
    pub(crate) fn new(responder: impl Responder) -> Self {
        Self(Box::new(responder))
    }

    /// Answers the request. A sender that gave up (timed out) is not an error: nobody
    /// reads the answer then.
    pub(crate) async fn send(self, payload: Bytes) -> Result<()> {
        self.0.respond(payload).await
    }
}

/// A request for one of this node's actors.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) payload: Bytes,
    pub(crate) reply_to: Option<ReplyTo>,
    /// The sender's W3C `traceparent` header, if it sent one.
    pub(crate) traceparent: Option<String>,
}

/// See the module docs. Every method's errors are [`aether_core::Error::Unavailable`] unless
/// it says otherwise.
#[async_trait]
pub(crate) trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends a heartbeat or a leave notice to every member.
    async fn publish(&self, message: MemberMessage) -> Result<()>;
    /// The membership messages of every member (this node's own included), from now on, as
    /// received: what they claim is checked by the node's core, not here.
    async fn members(&self) -> Result<BoxStream<'static, MemberMessage>>;

    /// Reads the leader lease.
    async fn read_lease(&self) -> Result<Versioned<LeaderLease>>;
    /// Writes the lease if its key is still at `expected` (0: absent).
    async fn write_lease(&self, lease: &LeaderLease, expected: u64) -> Result<Cas>;
    /// Deletes the lease if its key is still at `revision`.
    async fn release_lease(&self, revision: u64) -> Result<()>;

    /// Reads the assignment table.
    async fn read_table(&self) -> Result<Versioned<AssignmentTable>>;
    /// Writes the table if its key is still at `expected` (0: absent).
    async fn write_table(&self, table: &AssignmentTable, expected: u64) -> Result<Cas>;
    /// The table as it is now, then every later change. The stream ends (or yields an
    /// error) when the watch breaks; the driver then reads the table and watches again.
    async fn watch_table(&self) -> Result<BoxStream<'static, Result<Versioned<AssignmentTable>>>>;

    /// Sends an actor request to `node` (with a W3C `traceparent` header when the command
    /// belongs to a trace) and waits up to `timeout` for its reply.
    async fn request(
        &self,
        node: &str,
        payload: Bytes,
        traceparent: Option<String>,
        timeout: Duration,
    ) -> std::result::Result<Bytes, RequestFailure>;
    /// The requests for `node`'s actors. Once this returns, senders reach the stream (the
    /// server has registered it); dropping the stream stops serving, and senders then see
    /// [`RequestFailure::NoResponders`]. Each request carries its [`ReplyTo`].
    async fn serve(&self, node: &str) -> Result<BoxStream<'static, Incoming>>;
    /// Returns once everything published before has reached the server (or the network).
    async fn settle(&self) -> Result<()>;
}

/// What every transport must do, checked against each of them (the local network here, NATS
/// against a real server): two handles `a` and `b` onto one cluster.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use futures::StreamExt;

    fn table(leader: &str, term: u64) -> AssignmentTable {
        AssignmentTable {
            term,
            leader: leader.into(),
            ..AssignmentTable::empty(4, 1)
        }
    }

    fn lease(node: &str, term: u64) -> LeaderLease {
        LeaderLease {
            node_id: node.into(),
            incarnation: format!("{node}-1"),
            term,
        }
    }

    /// Lease and table writes are compare-and-set: of two writers from the same revision
    /// exactly one wins, revisions only grow, a release at a stale revision does nothing.
    pub(crate) async fn compare_and_set(a: &dyn Transport, b: &dyn Transport) {
        assert_eq!(a.read_lease().await.unwrap(), (0, None));
        assert_eq!(a.read_table().await.unwrap(), (0, None));
        let (la, lb) = (lease("a", 1), lease("b", 1));
        let (wa, wb) = tokio::join!(a.write_lease(&la, 0), b.write_lease(&lb, 0));
        let outcomes = [wa.unwrap(), wb.unwrap()];
        let won: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Cas::Written(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(won.len(), 1, "{outcomes:?}");
        let (rev, held) = b.read_lease().await.unwrap();
        assert_eq!(rev, won[0]);
        let holder = held.unwrap().node_id;
        // Renewal at the current revision works; at an old one it is stale.
        let renewed = a.write_lease(&lease(&holder, 1), rev).await.unwrap();
        let Cas::Written(rev2) = renewed else {
            panic!("{renewed:?}")
        };
        assert!(rev2 > rev);
        assert_eq!(
            b.write_lease(&lease("b", 2), rev).await.unwrap(),
            Cas::Stale
        );
        a.release_lease(rev).await.ok();
        assert!(
            b.read_lease().await.unwrap().1.is_some(),
            "a stale release does nothing"
        );
        a.release_lease(rev2).await.unwrap();
        let (rev3, none) = b.read_lease().await.unwrap();
        assert!(none.is_none() && rev3 > rev2);
        assert!(matches!(
            b.write_lease(&lease("b", 2), rev3).await.unwrap(),
            Cas::Written(_)
        ));

        let mut watch = b.watch_table().await.unwrap();
        let (ta, tb) = (table("a", 1), table("b", 2));
        let (wa, wb) = tokio::join!(a.write_table(&ta, 0), b.write_table(&tb, 0));
        let outcomes = [wa.unwrap(), wb.unwrap()];
        let written: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Cas::Written(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(written.len(), 1, "{outcomes:?}");
        let (rev, current) = a.read_table().await.unwrap();
        assert_eq!(rev, written[0]);
        let current = current.unwrap();
        // The watch shows the table, and then the next one.
        loop {
            let (r, t) = watch.next().await.unwrap().unwrap();
            if r == rev {
                assert_eq!(t.as_ref(), Some(&current));
                break;
            }
        }
        let next = table("a", 5);
        assert!(matches!(
            a.write_table(&next, rev).await.unwrap(),
            Cas::Written(_)
        ));
        assert_eq!(b.write_table(&next, rev).await.unwrap(), Cas::Stale);
        let (r, t) = watch.next().await.unwrap().unwrap();
        assert!(r > rev);
        assert_eq!(t, Some(next));
    }

    /// Membership messages reach every member; requests reach the node that serves them, get
    /// its reply, and fail as "no responders" once it stops serving.
    pub(crate) async fn messaging(a: &dyn Transport, b: &dyn Transport) {
        let mut members = b.members().await.unwrap();
        b.settle().await.unwrap();
        let hb = Heartbeat {
            node_id: "a".into(),
            incarnation: "a-1".into(),
            seq: 7,
            wire: None,
        };
        a.publish(MemberMessage::Heartbeat(hb.clone()))
            .await
            .unwrap();
        let leave = Leave {
            node_id: "a".into(),
            incarnation: "a-1".into(),
        };
        a.publish(MemberMessage::Leave(leave.clone()))
            .await
            .unwrap();
        assert_eq!(members.next().await, Some(MemberMessage::Heartbeat(hb)));
        assert_eq!(members.next().await, Some(MemberMessage::Leave(leave)));

        let t = Duration::from_secs(5);
        assert!(matches!(
            a.request("b", Bytes::from_static(b"x"), None, t).await,
            Err(RequestFailure::NoResponders)
        ));
        let mut served = b.serve("b").await.unwrap();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sent = a.request(
            "b",
            Bytes::from_static(b"ping"),
            Some(traceparent.to_string()),
            t,
        );
        let (reply, ()) = tokio::join!(sent, async {
            let req = served.next().await.unwrap();
            assert_eq!(req.payload, Bytes::from_static(b"ping"));
            assert_eq!(req.traceparent.as_deref(), Some(traceparent));
            req.reply_to
                .unwrap()
                .send(Bytes::from_static(b"pong"))
                .await
                .unwrap();
        });
        assert_eq!(reply.unwrap(), Bytes::from_static(b"pong"));
        drop(served);
        b.settle().await.unwrap();
        assert!(matches!(
            a.request("b", Bytes::from_static(b"x"), None, t).await,
            Err(RequestFailure::NoResponders)
        ));
    }
}
