//! The driver: carries out what the core decides over the transport, and the loops that feed
//! the core its inputs (ticks, membership messages, the table watch, actor requests).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use crate::core::{Action, Cas, Input};
use crate::membership::MembershipChange;
use crate::transport::{Incoming, MemberMessage};

impl Inner {
    /// Feeds `input` to the core and carries out what it decides, feeding the results back,
    /// until nothing is left to do.
    pub(super) async fn run(&self, input: Input) {
        let actions = self.core().step(input, Instant::now());
        self.carry_out(actions).await;
    }

    pub(super) async fn carry_out(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if let Some(input) = self.execute(action).await {
                let more = self.core().step(input, Instant::now());
                queue.extend(more);
            }
        }
        self.export_gauges();
    }

    /// This node's view, for the metrics exporter: `aether_cluster_members`,
    /// `aether_cluster_leader` (1 on the leader), `aether_cluster_shards_owned` (primaries
    /// here), `aether_cluster_assignment_epoch` and `aether_cluster_member_table` (the other
    /// nodes the membership view holds, bounded by `max_members`), labelled by cluster and
    /// node.
    fn export_gauges(&self) {
        let (members, leader, tracked) = {
            let core = self.core();
            (core.alive().len(), core.term().is_some(), core.tracked())
        };
        let view = self.view();
        let labels = [
            ("cluster", self.config.cluster_name.clone()),
            ("node", self.node_id.clone()),
        ];
        metrics::gauge!("aether_cluster_members", &labels).set(members as f64);
        metrics::gauge!("aether_cluster_leader", &labels).set(if leader { 1.0 } else { 0.0 });
        metrics::gauge!("aether_cluster_shards_owned", &labels)
            .set(view.primaries_of(&self.node_id).len() as f64);
        metrics::gauge!("aether_cluster_assignment_epoch", &labels).set(view.epoch as f64);
        metrics::gauge!("aether_cluster_member_table", &labels).set(tracked as f64);
    }

    /// Carries out one action; returns what came of it, for the core.
    async fn execute(&self, action: Action) -> Option<Input> {
        let t = &self.transport;
        match action {
            Action::PublishHeartbeat(hb) => {
                if let Err(e) = t.publish(MemberMessage::Heartbeat(hb)).await {
                    tracing::warn!(error = %e, "heartbeat not sent");
                }
                None
            }
            Action::ReadLease => Some(match t.read_lease().await {
                Ok((revision, lease)) => Input::LeaseRead { revision, lease },
                Err(e) => {
                    tracing::warn!(error = %e, "leader election step failed");
                    Input::LeaseReadFailed
                }
            }),
            Action::WriteLease {
                write,
                lease,
                expected_revision,
            } => {
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
            Action::ReleaseLease { revision } => {
                if let Err(e) = t.release_lease(revision).await {
                    tracing::debug!(error = %e, "lease not released (already taken?)");
                }
                None
            }
            Action::ReadTable => match t.read_table().await {
                Ok((revision, table)) => Some(Input::TableRead { revision, table }),
                Err(e) => {
                    tracing::debug!(error = %e, "assignment refresh failed");
                    None
                }
            },
            Action::WriteTable {
                table,
                expected_revision,
            } => {
                let outcome = t
                    .write_table(&table, expected_revision)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "assignment table not written");
                        Cas::Failed
                    });
                Some(Input::TableWritten { table, outcome })
            }
            Action::ViewChanged(view) => {
                let keep = |actor: &str| !view.serves(&self.node_id, actor);
                let lost: usize = self
                    .hosts
                    .all()
                    .map(|h| h.passivate_where(&keep).len())
                    .sum();
                if lost > 0 {
                    tracing::debug!(epoch = view.epoch, given_up = lost, "actors given up");
                }
                self.epoch_tx.send_if_modified(|e| {
                    let newer = view.epoch > *e;
                    *e = (*e).max(view.epoch);
                    newer
                });
                None
            }
            Action::Membership(change) => {
                match change {
                    MembershipChange::Joined(n) => tracing::info!(member = %n, "member joined"),
                    MembershipChange::Left(n) => tracing::info!(member = %n, "member left"),
                    MembershipChange::Failed(n) => tracing::warn!(member = %n, "member failed"),
                }
                None
            }
            Action::HeartbeatsRefused { reason, count, log } => {
                // The reason is one of a few fixed labels; the refused id never becomes one.
                metrics::counter!(
                    "aether_cluster_heartbeats_refused_total",
                    "cluster" => self.config.cluster_name.clone(),
                    "node" => self.node_id.clone(),
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
                None
            }
        }
    }

    /// Reads the table and applies it if newer.
    pub(super) async fn refresh_view(&self) {
        self.carry_out(vec![Action::ReadTable]).await;
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Sweeps for silent members per heartbeat interval (one of them with the heartbeat).
const SWEEPS_PER_HEARTBEAT: u32 = 4;

pub(super) async fn heartbeat_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    // At least a microsecond: a zero period is no period (configs are checked, but keep it
    // safe whatever the interval).
    let period =
        (inner.config.heartbeat_interval / SWEEPS_PER_HEARTBEAT).max(Duration::from_micros(1));
    let mut tick = ticker(period);
    let mut n = 0u32;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                let input = if n % SWEEPS_PER_HEARTBEAT == 0 { Input::Tick } else { Input::Sweep };
                n = n.wrapping_add(1);
                inner.run(input).await;
            }
        }
    }
}

pub(super) async fn member_loop(
    inner: Arc<Inner>,
    mut members: BoxStream<'static, MemberMessage>,
    cancel: CancellationToken,
) {
    loop {
        let input = tokio::select! {
            () = cancel.cancelled() => break,
            msg = members.next() => match msg {
                Some(MemberMessage::Heartbeat(hb)) => Input::Heartbeat(hb),
                Some(MemberMessage::Leave(l)) => Input::Leave(l),
                Some(MemberMessage::Undecodable(e)) => Input::Undecodable(e),
                None => break,
            },
        };
        inner.run(input).await;
    }
}

pub(super) async fn election_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut tick = ticker(inner.config.heartbeat_interval);
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                // Hand the lease over at once instead of making a successor wait.
                inner.run(Input::Shutdown).await;
                break;
            }
            _ = tick.tick() => inner.run(Input::ElectionTick).await,
        }
    }
}

pub(super) async fn watch_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    let retry = inner.config.heartbeat_interval;
    loop {
        let watch = tokio::select! {
            () = cancel.cancelled() => return,
            w = inner.transport.watch_table() => w,
        };
        match watch {
            Ok(mut watch) => loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    item = watch.next() => match item {
                        Some(Ok((revision, table))) => {
                            inner.run(Input::TableRead { revision, table }).await;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "assignment watch failed; restarting it");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "could not watch the assignment table"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        // Catch up on whatever happened while the watch was down.
        inner.refresh_view().await;
    }
}

pub(super) async fn request_loop(
    inner: Arc<Inner>,
    mut requests: BoxStream<'static, Incoming>,
    cancel: CancellationToken,
) {
    // In-flight requests live in this set, so stopping the loop (or killing the node) stops
    // them too.
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            msg = requests.next() => {
                let Some(msg) = msg else { break };
                let inner = Arc::clone(&inner);
                in_flight.spawn(async move { inner.serve(msg).await }.in_current_span());
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    // Stop listening first so senders see "no responders" and go elsewhere, then let the
    // requests already taken finish.
    drop(requests);
    while in_flight.join_next().await.is_some() {}
}
