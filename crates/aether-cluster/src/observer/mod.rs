//! Looking at a running cluster from outside, read-only (feature `nats`): its members, its
//! leader and the assignment table, now and as they change.
//!
//! A [`ClusterObserver`] never joins the cluster and writes nothing: it listens to the
//! members' heartbeats and leave notices, and reads and watches the leader lease and the
//! assignment table in the cluster's key-value bucket. What it returns is domain data
//! ([`ClusterSnapshot`], [`ClusterChange`]), never the wire format, so tools such as
//! `aether cluster` and the dashboard read a cluster through the library instead of decoding
//! its messages and keys themselves.
//!
//! Heartbeats can be sent by anyone allowed to publish on the cluster's subjects, so the
//! observer checks them as a node does (node ids and incarnations follow the naming rule, or
//! are refused and counted) and keeps a bounded table of the nodes it heard
//! ([`ObserverConfig::max_members`]). Values in the bucket it cannot decode are reported
//! ([`ClusterSnapshot::unreadable`]), not fatal.
//!
//! # Layout
//! - this file: [`ClusterObserver`] (opening, snapshots, changes);
//! - `config`: [`ObserverConfig`];
//! - `types`: what it returns ([`ClusterSnapshot`], [`ObservedMember`], [`ClusterChange`]...);
//! - `members`: the bounded table of nodes heard;
//! - `state`: the observed state as an I/O-free state machine, and the members view;
//! - `driver`: the task that feeds the state from NATS and the bucket.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::{Error, Result};
use aether_nats::{Connection, KvBucket};
use futures::stream::{self, BoxStream, StreamExt};
use futures::FutureExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::assignment::ASSIGNMENT_KEY;
use crate::leader::LEADER_KEY;
use crate::routing::Subjects;

mod config;
mod driver;
mod members;
mod state;
mod types;

pub use config::{ObserverConfig, DEFAULT_FORGET_AFTER};
pub use types::{
    ClusterChange, ClusterRecord, ClusterSnapshot, GoneReason, ObservedLeader, ObservedMember,
    ObserverCounts, Presence, Unreadable,
};

use state::{Input, ObservedState};

/// Changes a subscriber of [`ClusterObserver::changes`] may fall behind by before it is told
/// it missed some ([`ClusterChange::Lagged`]).
const CHANGES_BUFFER: usize = 1024;

/// How often a waiter of [`ClusterObserver::wait_for`] looks again when nothing changed
/// (a condition on how long ago something was heard changes with time alone).
const RECHECK: Duration = Duration::from_millis(100);

/// Looks at a running cluster from outside, read-only: its members, its leader and its
/// assignment table, now and as they change, as typed data. It never joins the cluster and
/// writes nothing (`docs/cluster.md`, "Observing a cluster", lists the NATS permissions it
/// needs, all of them reads).
///
/// Opening one subscribes to the cluster's membership subjects and reads the leader lease
/// and the assignment table; a task then follows them until the last clone of the observer is
/// dropped. [`snapshot`](Self::snapshot) says what is known now, [`changes`](Self::changes)
/// what changes from now on, [`wait_for`](Self::wait_for) waits for a condition.
///
/// The table of nodes heard holds at most [`ObserverConfig::max_members`] nodes. When it is
/// full, a new node makes room: nodes silent for longer than
/// [`forget_after`](ObserverConfig::forget_after) are forgotten first, then the eighth heard
/// longest ago; members of the assignment table are never pushed out. (A node's own table
/// refuses new ids instead, since it decides who gets shards; an observer shows what it
/// hears.) A node id or incarnation that breaks the naming rule is refused and counted
/// ([`ObserverCounts`]), like undecodable bytes.
///
/// ```no_run
/// use aether_cluster::{ClusterChange, ClusterObserver, ObserverConfig, Presence};
/// use futures::StreamExt;
///
/// # async fn run() -> aether_core::Result<()> {
/// let conn = aether_nats::Connection::connect(
///     "nats://127.0.0.1:4222",
///     async_nats::ConnectOptions::new(),
/// )
/// .await?;
/// // Fails with `Error::NotFound` if no node of the cluster ever started on this server.
/// let observer = ClusterObserver::open(conn, ObserverConfig::default().cluster_name("orders")).await?;
/// let mut changes = observer.changes();
///
/// let now = observer.snapshot();
/// if let Some(leader) = &now.leader {
///     println!("leader {} (term {})", leader.node_id, leader.term);
/// }
/// for m in now.members.iter().filter(|m| m.presence == Presence::Alive) {
///     println!("{}: primary of {} shards", m.node_id, m.primaries);
/// }
/// while let Some(change) = changes.next().await {
///     match change {
///         ClusterChange::TableChanged { assignment: Some(a) } => println!("epoch {}", a.epoch),
///         ClusterChange::MemberGone { node_id, reason } => println!("{node_id} gone: {reason:?}"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClusterObserver {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    bucket: String,
    state: Arc<Mutex<ObservedState>>,
    changes: broadcast::Sender<ClusterChange>,
    /// Stops the task when the last observer goes.
    _stop: DropGuard,
}

impl std::fmt::Debug for ClusterObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterObserver")
            .field("cluster", &self.inner.cluster)
            .field("bucket", &self.inner.bucket)
            .finish_non_exhaustive()
    }
}

impl ClusterObserver {
    /// Opens an observer of the cluster `config` names over `connection`: subscribes to its
    /// membership subjects, reads the leader lease and the assignment table, and follows them
    /// from then on. Never creates the cluster's bucket, never publishes to the cluster.
    ///
    /// A connection made with a [`ConnectionMonitor`](aether_nats::ConnectionMonitor) (an
    /// [`aether_nats::Connection`]) fails at once when the server refuses something; a plain
    /// client times out instead.
    ///
    /// # Errors
    /// - [`Error::InvalidInput`]: settings that fail [`ObserverConfig::validate`].
    /// - [`Error::NotFound`]: the cluster has no bucket: no node of it ever started on this
    ///   NATS system (or its bucket was removed). Handling: check the name and the server.
    /// - [`Error::PermissionDenied`]: the server refused the subscription or a read
    ///   (`docs/cluster.md`, "Observing a cluster", lists what an observer needs).
    /// - [`Error::Unavailable`]: the server did not answer in time. Handling: retry.
    pub async fn open(connection: impl Into<Connection>, config: ObserverConfig) -> Result<Self> {
        config.validate()?;
        let connection = connection.into();
        let bucket = config.bucket_name();
        let subjects = Subjects::new(&config.cluster_name);
        let Some(kv) = KvBucket::open_existing(&connection, &bucket).await? else {
            return Err(Error::NotFound(format!(
                "cluster {} not found (no bucket {bucket}; has a node of it ever started?)",
                config.cluster_name
            )));
        };
        let kv = kv.with_timeout(Some(config.request_timeout));
        // Subscribed first, so that nothing said while the keys are read is missed.
        let (members, _) = aether_nats::backend::subscribe_confirmed(
            connection.client(),
            connection.permissions(),
            &subjects.members_all(),
            config.request_timeout,
        )
        .await?;
        let mut state = ObservedState::new(&config);
        let now = Instant::now();
        state.apply(Input::Lease(kv.read(LEADER_KEY).await?), now);
        state.apply(Input::Table(kv.read(ASSIGNMENT_KEY).await?), now);
        // Each watch starts with the key as it is then: a write between the read and the
        // watch is not missed.
        let lease = kv.watch(LEADER_KEY).await?;
        let table = kv.watch(ASSIGNMENT_KEY).await?;

        let state = Arc::new(Mutex::new(state));
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        let stop = CancellationToken::new();
        let sources = driver::Sources {
            client: connection.client().clone(),
            subjects,
            members,
            kv,
            lease,
            table,
        };
        // Members go silent within a quarter of the timeout of its running out.
        let sweep_every = (config.failure_timeout / 4).max(Duration::from_millis(10));
        tokio::spawn(driver::run(
            sources,
            Arc::clone(&state),
            changes.clone(),
            sweep_every,
            stop.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                cluster: config.cluster_name,
                bucket,
                state,
                changes,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.inner.cluster
    }

    /// The name of the cluster's key-value bucket ([`ObserverConfig::bucket_name`]).
    pub fn bucket_name(&self) -> &str {
        &self.inner.bucket
    }

    /// What is known now.
    pub fn snapshot(&self) -> ClusterSnapshot {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(Instant::now())
    }

    /// The changes seen from now on, in order. A subscriber that falls more than 1024 changes
    /// behind gets [`ClusterChange::Lagged`] and goes on from the oldest change kept. The
    /// stream ends when the last clone of the observer is dropped.
    pub fn changes(&self) -> BoxStream<'static, ClusterChange> {
        let rx = self.inner.changes.subscribe();
        stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(change) => Some((change, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((ClusterChange::Lagged { missed }, rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    /// Waits until `condition` holds for a snapshot, up to `timeout`; returns that snapshot.
    ///
    /// # Errors
    /// [`Error::Unavailable`] on timeout, with what was known last.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&ClusterSnapshot) -> bool,
    ) -> Result<ClusterSnapshot> {
        let mut changes = self.changes();
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot();
            if condition(&snapshot) {
                return Ok(snapshot);
            }
            if Instant::now() >= deadline {
                let alive: Vec<&str> = snapshot
                    .members
                    .iter()
                    .filter(|m| m.presence == Presence::Alive)
                    .map(|m| m.node_id.as_str())
                    .collect();
                return Err(Error::unavailable(
                    format!("observing cluster {}", self.inner.cluster),
                    format!(
                        "condition not met within {timeout:?} (leader {:?}, epoch {:?}, alive {alive:?})",
                        snapshot.leader.as_ref().map(|l| &l.node_id),
                        snapshot.assignment.as_ref().map(|a| a.epoch),
                    ),
                ));
            }
            let wake = deadline.min(Instant::now() + RECHECK);
            match tokio::time::timeout_at(wake, changes.next()).await {
                // Whatever else is queued too (a flood of heartbeats is many changes), so
                // that the next snapshot is built once for all of them.
                Ok(Some(_)) => while let Some(Some(_)) = changes.next().now_or_never() {},
                // No more changes will come; time still passes.
                Ok(None) => tokio::time::sleep_until(wake).await,
                Err(_) => {}
            }
        }
    }
}
