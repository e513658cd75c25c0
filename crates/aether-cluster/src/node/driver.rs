//! The driver: one loop that owns the node's core, steps it with every input and carries out
//! what it decides.
//!
//! Inputs come from a few bounded sources, polled together by one `tokio::select!`: the
//! loop's own timer (heartbeats, sweeps, election steps), the membership messages and the
//! table watch from the transport, the outcomes of the transport work under way, the
//! requests of other tasks that need the core (a table refresh), and the cancellation token.
//! Nothing else touches the core: after every step the loop publishes the core's view
//! ([`NodeView`]) through a `watch` channel, and routing reads that.
//!
//! The loop never awaits the transport inline. Work that goes over the network (publish a
//! heartbeat, read or compare-and-set the lease or the table) is pushed into a set of futures
//! that the same `select!` polls, and its outcome comes back as an input when it lands, so a
//! slow bucket never delays a heartbeat, a sweep or the handling of membership messages. The
//! core remembers what it asked for and has not heard back about (see its in-flight flags);
//! the loop keeps the transport's own load bounded: one heartbeat publish and one table read
//! under way at a time (further reads asked for meanwhile share the next one).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::view::NodeView;
use super::Inner;
use crate::assignment::AssignmentTable;
use crate::core::{Action, Cas, Input, NodeCore};
use crate::membership::MembershipChange;
use crate::transport::{MemberMessage, Versioned};

/// How many requests from other tasks may wait for the loop: a table refresh is a cheap
/// message (it joins the next read), so a small queue is drained at once; callers beyond it
/// wait for room.
pub(super) const REQUESTS_QUEUED: usize = 64;

/// Sweeps for silent members per heartbeat interval (one of them with the heartbeat).
const SWEEPS_PER_HEARTBEAT: u32 = 4;

/// What other tasks ask of the loop.
#[derive(Debug)]
pub(super) enum Request {
    /// Read the table and apply it if newer; answered once a read that started after the
    /// request has been stepped (or has failed), so the caller then sees its outcome.
    RefreshTable(oneshot::Sender<()>),
}

type TableWatch = BoxStream<'static, aether_core::Result<Versioned<AssignmentTable>>>;

/// The outcome of transport work other than the lease's.
enum Done {
    /// A heartbeat publish finished (failures are logged where they happen).
    Published,
    /// A table read finished (`None`: it failed).
    TableRead(Option<Versioned<AssignmentTable>>),
    /// A table write finished.
    TableWritten(Input),
    /// The table watch was opened, or not.
    WatchOpened(aether_core::Result<TableWatch>),
    /// Time to open the table watch again after it broke.
    WatchRetry,
}

/// The table reads: one under way at most; a read asked for meanwhile (by the core or by a
/// waiting request) is made once that one is done, and serves everyone who asked meanwhile.
#[derive(Default)]
struct TableReads {
    reading: bool,
    /// A read was asked for while one was under way.
    again: bool,
    /// Answered when the read under way has been stepped.
    current: Vec<oneshot::Sender<()>>,
    /// Answered when the read after it has been stepped.
    next: Vec<oneshot::Sender<()>>,
}

impl TableReads {
    /// Asks for a read; true when one must start now.
    fn ask(&mut self, waiter: Option<oneshot::Sender<()>>) -> bool {
        if self.reading {
            self.again = true;
            self.next.extend(waiter);
            false
        } else {
            self.reading = true;
            self.current.extend(waiter);
            true
        }
    }

    /// The read under way is done: whom to answer, and whether another read must start.
    fn finished(&mut self) -> (Vec<oneshot::Sender<()>>, bool) {
        let answered = std::mem::take(&mut self.current);
        let again = std::mem::take(&mut self.again);
        self.current = std::mem::take(&mut self.next);
        self.reading = again;
        (answered, again)
    }
}

/// The loop's state: the core, and the transport work under way. See the module docs.
pub(super) struct Driver {
    inner: Arc<Inner>,
    core: NodeCore,
    view: watch::Sender<NodeView>,
    /// Transport work under way, except the lease's.
    io: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Lease work under way: apart, because once the node stops it is the only work still
    /// waited for (a claim or renewal that lands after the stop must be handed back).
    lease_io: FuturesUnordered<BoxFuture<'static, Option<Input>>>,
    /// A heartbeat publish is under way.
    publishing: bool,
    reads: TableReads,
    table_watch: Option<TableWatch>,
}

impl Driver {
    /// A driver for `core`, which has taken in the table found at start (`started`: what it
    /// decided then), publishing the node's view on `view`.
    pub(super) fn new(
        inner: Arc<Inner>,
        core: NodeCore,
        view: watch::Sender<NodeView>,
        started: Vec<Action>,
    ) -> Self {
        let mut driver = Self {
            inner,
            core,
            view,
            io: FuturesUnordered::new(),
            lease_io: FuturesUnordered::new(),
            publishing: false,
            reads: TableReads::default(),
            table_watch: None,
        };
        driver.carry_out(started, true);
        driver
    }

    /// The view of `core` as the loop publishes it.
    pub(super) fn view_of(core: &NodeCore) -> NodeView {
        NodeView {
            assignment: core.view(),
            term: core.term(),
            leader: core.leader().map(str::to_string),
            members: core.alive().into(),
            serving_until: core.serving_until(),
            peer_wire: core.peer_wire(),
        }
    }

    /// Runs the loop until `cancel` fires, then stops the core (handing the lease back) and
    /// waits for the lease work under way.
    pub(super) async fn run(
        mut self,
        members: BoxStream<'static, MemberMessage>,
        mut requests: mpsc::Receiver<Request>,
        cancel: CancellationToken,
    ) {
        let mut members = Some(members);
        // At least a microsecond: a zero period is no period (configs are checked, but keep
        // it safe whatever the interval).
        let period = (self.inner.config.heartbeat_interval / SWEEPS_PER_HEARTBEAT)
            .max(Duration::from_micros(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u32;
        self.open_watch();
        loop {
            // Every branch only steps the core and queues work, never waits on the network;
            // `select!` picks among the ready branches at random, so a flood on one source
            // (made-up heartbeats, say) delays a tick by a few steps at most.
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {
                    if n % SWEEPS_PER_HEARTBEAT == 0 {
                        self.step(Input::Tick);
                        self.step(Input::ElectionTick);
                    } else {
                        self.step(Input::Sweep);
                    }
                    n = n.wrapping_add(1);
                }
                Some(done) = self.io.next(), if !self.io.is_empty() => self.done(done),
                Some(input) = self.lease_io.next(), if !self.lease_io.is_empty() => {
                    if let Some(input) = input {
                        self.step(input);
                    }
                }
                Some(request) = requests.recv() => match request {
                    Request::RefreshTable(waiter) => self.read_table(Some(waiter)),
                },
                item = next_of(&mut self.table_watch) => match item {
                    Some(Ok((revision, table))) => self.step(Input::TableRead { revision, table }),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "assignment watch failed; restarting it");
                        self.watch_broke();
                    }
                    None => self.watch_broke(),
                },
                msg = next_of(&mut members) => match msg {
                    Some(MemberMessage::Heartbeat(hb)) => self.step(Input::Heartbeat(hb)),
                    Some(MemberMessage::Leave(l)) => self.step(Input::Leave(l)),
                    Some(MemberMessage::Undecodable(e)) => self.step(Input::Undecodable(e)),
                    None => {
                        tracing::warn!("membership messages ended (connection closed?)");
                        members = None;
                    }
                },
            }
        }
        // Stop listening; whoever waits for a refresh goes on with the view it has.
        drop((members, requests));
        self.table_watch = None;
        self.stop().await;
    }

    /// Stops the core and waits for the lease work under way, so that a lease written after
    /// the stop is handed back too; the rest of the work under way is dropped unfinished.
    /// Stopping also closes the fence (the published view serves nothing any more).
    async fn stop(mut self) {
        self.step(Input::Shutdown);
        self.io.clear();
        while let Some(input) = self.lease_io.next().await {
            if let Some(input) = input {
                self.step(input);
            }
        }
    }

    /// Feeds `input` to the core and carries out what it decides.
    fn step(&mut self, input: Input) {
        let actions = self.core.step(input, Instant::now());
        self.carry_out(actions, false);
    }

    fn carry_out(&mut self, actions: Vec<Action>, always_publish_members: bool) {
        let acted = !actions.is_empty();
        let mut members_changed = always_publish_members;
        for action in actions {
            members_changed |= matches!(action, Action::Membership(_));
            self.execute(action);
        }
        self.publish(members_changed);
        if acted {
            self.export_gauges();
        }
    }

    /// Publishes the core's view if it changed; wakes the receivers only when the
    /// assignment did. The live set changes only with a membership action, so it is
    /// recomputed only then.
    fn publish(&mut self, members_changed: bool) {
        let core = &self.core;
        let assignment = core.view();
        let (term, serving_until) = (core.term(), core.serving_until());
        let peer_wire = core.peer_wire();
        let unchanged = {
            let v = self.view.borrow();
            !members_changed
                && Arc::ptr_eq(&v.assignment, &assignment)
                && Arc::ptr_eq(&v.peer_wire, &peer_wire)
                && v.term == term
                && v.leader.as_deref() == core.leader()
                && v.serving_until == serving_until
        };
        if unchanged {
            return;
        }
        let members: Option<Arc<[String]>> = members_changed.then(|| core.alive().into());
        self.view.send_if_modified(|v| {
            let table_changed = !Arc::ptr_eq(&v.assignment, &assignment);
            v.assignment = assignment;
            v.term = term;
            if v.leader.as_deref() != core.leader() {
                v.leader = core.leader().map(str::to_string);
            }
            v.serving_until = serving_until;
            v.peer_wire = peer_wire;
            if let Some(members) = members {
                v.members = members;
            }
            table_changed
        });
    }

    /// This node's view, for the metrics exporter: `aether_cluster_members`,
    /// `aether_cluster_leader` (1 on the leader), `aether_cluster_shards_owned` (primaries
    /// here), `aether_cluster_assignment_epoch` and `aether_cluster_member_table` (the other
    /// nodes the membership view holds, bounded by `max_members`), labelled by cluster and
    /// node.
    fn export_gauges(&self) {
        let inner = &self.inner;
        let members = self.view.borrow().members.len();
        let view = self.core.view();
        let labels = [
            ("cluster", inner.config.cluster_name.clone()),
            ("node", inner.node_id.clone()),
        ];
        let leader = if self.core.term().is_some() { 1.0 } else { 0.0 };
        metrics::gauge!("aether_cluster_members", &labels).set(members as f64);
        metrics::gauge!("aether_cluster_leader", &labels).set(leader);
        metrics::gauge!("aether_cluster_shards_owned", &labels)
            .set(view.primaries_of(&inner.node_id).len() as f64);
        metrics::gauge!("aether_cluster_assignment_epoch", &labels).set(view.epoch as f64);
        metrics::gauge!("aether_cluster_member_table", &labels).set(self.core.tracked() as f64);
    }

    /// Carries out one action: at once when it stays in this process, else by queueing the
    /// transport work, whose outcome comes back as an input.
    fn execute(&mut self, action: Action) {
        let t = Arc::clone(&self.inner.transport);
        match action {
            Action::PublishHeartbeat(hb) => {
                if self.publishing {
                    // The previous one has not gone out within a sweep or more: the transport
                    // is stuck, and a queue of stale heartbeats would help nobody.
                    tracing::warn!("heartbeat not sent: the previous one is still being sent");
                    return;
                }
                self.publishing = true;
                self.io.push(
                    async move {
                        if let Err(e) = t.publish(MemberMessage::Heartbeat(hb)).await {
                            tracing::warn!(error = %e, "heartbeat not sent");
                        }
                        Done::Published
                    }
                    .boxed(),
                );
            }
            Action::ReadLease => self.lease_io.push(
                async move {
                    Some(match t.read_lease().await {
                        Ok((revision, lease)) => Input::LeaseRead { revision, lease },
                        Err(e) => {
                            tracing::warn!(error = %e, "leader election step failed");
                            Input::LeaseReadFailed
                        }
                    })
                }
                .boxed(),
            ),
            Action::WriteLease {
                write,
                lease,
                expected_revision,
            } => self.lease_io.push(
                async move {
                    let outcome = t
                        .write_lease(&lease, expected_revision)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "leader lease not written");
                            Cas::Failed
                        });
                    Some(Input::LeaseWritten {
                        write,
                        term: lease.term,
                        outcome,
                    })
                }
                .boxed(),
            ),
            Action::ReleaseLease { revision } => self.lease_io.push(
                async move {
                    if let Err(e) = t.release_lease(revision).await {
                        tracing::debug!(error = %e, "lease not released (already taken?)");
                    }
                    None
                }
                .boxed(),
            ),
            Action::ReadTable => self.read_table(None),
            Action::WriteTable {
                table,
                expected_revision,
            } => self.io.push(
                async move {
                    let outcome = t
                        .write_table(&table, expected_revision)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "assignment table not written");
                            Cas::Failed
                        });
                    Done::TableWritten(Input::TableWritten { table, outcome })
                }
                .boxed(),
            ),
            Action::ViewChanged(view) => {
                let node = &self.inner.node_id;
                let keep = |actor: &str| !view.serves(node, actor);
                let lost: usize = self
                    .inner
                    .hosts
                    .all()
                    .map(|h| h.passivate_where(&keep).len())
                    .sum();
                if lost > 0 {
                    tracing::debug!(epoch = view.epoch, given_up = lost, "actors given up");
                }
            }
            Action::Membership(change) => match change {
                MembershipChange::Joined(n) => tracing::info!(member = %n, "member joined"),
                MembershipChange::Left(n) => tracing::info!(member = %n, "member left"),
                MembershipChange::Failed(n) => tracing::warn!(member = %n, "member failed"),
            },
            Action::HeartbeatsRefused { reason, count, log } => {
                // The reason is one of a few fixed labels; the refused id never becomes one.
                metrics::counter!(
                    "aether_cluster_heartbeats_refused_total",
                    "cluster" => self.inner.config.cluster_name.clone(),
                    "node" => self.inner.node_id.clone(),
                    "reason" => reason.label(),
                )
                .increment(count);
                if let Some(log) = log {
                    // `{:?}` escapes whatever the sender put in the id (markup, control
                    // characters); the core has cut it short.
                    tracing::warn!(
                        reason = reason.label(),
                        count,
                        unlogged_since_last_warning = log.unlogged,
                        sample = ?log.sample,
                        "membership message refused (anyone who may publish on the \
                         cluster's subjects can send these: see the NATS permissions in \
                         docs/operations.md)"
                    );
                }
            }
        }
    }

    /// Handles the outcome of transport work.
    fn done(&mut self, done: Done) {
        match done {
            Done::Published => self.publishing = false,
            Done::TableRead(read) => {
                if let Some((revision, table)) = read {
                    self.step(Input::TableRead { revision, table });
                }
                let (answered, again) = self.reads.finished();
                for waiter in answered {
                    let _ = waiter.send(());
                }
                if again {
                    self.start_read();
                }
            }
            Done::TableWritten(input) => self.step(input),
            Done::WatchOpened(Ok(watch)) => self.table_watch = Some(watch),
            Done::WatchOpened(Err(e)) => {
                tracing::warn!(error = %e, "could not watch the assignment table");
                self.watch_broke();
            }
            Done::WatchRetry => {
                // Catch up on whatever happened while the watch was down.
                self.read_table(None);
                self.open_watch();
            }
        }
    }

    /// Reads the table, now or right after the read under way; `waiter` is answered once
    /// that read has been stepped.
    fn read_table(&mut self, waiter: Option<oneshot::Sender<()>>) {
        if self.reads.ask(waiter) {
            self.start_read();
        }
    }

    fn start_read(&mut self) {
        let t = Arc::clone(&self.inner.transport);
        self.io.push(
            async move {
                match t.read_table().await {
                    Ok(read) => Done::TableRead(Some(read)),
                    Err(e) => {
                        tracing::debug!(error = %e, "assignment refresh failed");
                        Done::TableRead(None)
                    }
                }
            }
            .boxed(),
        );
    }

    fn open_watch(&mut self) {
        let t = Arc::clone(&self.inner.transport);
        self.io
            .push(async move { Done::WatchOpened(t.watch_table().await) }.boxed());
    }

    /// The watch broke (or could not be opened): try again a heartbeat interval later.
    fn watch_broke(&mut self) {
        self.table_watch = None;
        let retry = self.inner.config.heartbeat_interval;
        self.io.push(
            async move {
                tokio::time::sleep(retry).await;
                Done::WatchRetry
            }
            .boxed(),
        );
    }
}

/// The next item of `stream`, or never while there is none.
async fn next_of<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One read under way at most: whoever asks meanwhile shares the next one, which starts
    /// when the first is done, and is answered only after it (never by a read that started
    /// before they asked).
    #[test]
    fn table_reads_share_the_next_read_and_never_pile_up() {
        let mut reads = TableReads::default();
        let (first, mut first_done) = oneshot::channel();
        assert!(reads.ask(Some(first)), "nothing under way: read now");
        let (second, mut second_done) = oneshot::channel();
        let (third, mut third_done) = oneshot::channel();
        assert!(!reads.ask(Some(second)));
        assert!(!reads.ask(None));
        assert!(!reads.ask(Some(third)));
        let (answered, again) = reads.finished();
        assert!(again, "one more read, for everyone who asked meanwhile");
        for waiter in answered {
            waiter.send(()).unwrap();
        }
        assert!(first_done.try_recv().is_ok());
        assert!(second_done.try_recv().is_err() && third_done.try_recv().is_err());
        let (answered, again) = reads.finished();
        assert!(!again);
        assert_eq!(answered.len(), 2);
        assert!(reads.ask(None), "idle again");
    }
}
