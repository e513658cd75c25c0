//! What the dashboard watches in the background: the cluster's heartbeats (for members'
//! status and last heartbeat) and the stream's size over time (for the event rate), also
//! handed to the metrics exporter as `aether_stream_messages`, `aether_stream_bytes` and
//! `aether_cluster_members_heard`.
//!
//! Heartbeats name their node, and anyone who may publish on the heartbeat subject names any
//! node: the table of nodes heard is bounded ([`HeardTable`]), forgetting nodes silent for long
//! and, when full, the one silent longest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aether_cluster::routing::{decode, Heartbeat, Subjects};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Sample, Shared, SAMPLES, SILENT_AFTER};

/// How often the stream's size is sampled (and silent nodes forgotten).
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// A member's last heartbeat, as heard by the dashboard.
#[derive(Debug, Clone)]
pub(super) struct Heard {
    pub(super) incarnation: String,
    pub(super) seq: u64,
    pub(super) at: Instant,
}

/// The nodes heard, at most `cap` of them, none silent for longer than `forget_after`.
#[derive(Debug)]
pub(super) struct HeardTable {
    nodes: BTreeMap<String, Heard>,
    cap: usize,
    forget_after: Duration,
}

impl HeardTable {
    pub(super) fn new(cap: usize, forget_after: Duration) -> Self {
        Self {
            nodes: BTreeMap::new(),
            cap: cap.max(1),
            forget_after,
        }
    }

    /// Records a heartbeat of `node` heard at `heard.at`.
    pub(super) fn record(&mut self, node: String, heard: Heard) {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= self.cap {
            self.forget_silent(heard.at);
            if self.nodes.len() >= self.cap {
                // Full of nodes heard recently: the one silent longest makes room (a real
                // member is heard again within a heartbeat and comes back).
                let oldest = self
                    .nodes
                    .iter()
                    .min_by_key(|(_, h)| h.at)
                    .map(|(n, _)| n.clone());
                if let Some(oldest) = oldest {
                    self.nodes.remove(&oldest);
                }
            }
        }
        self.nodes.insert(node, heard);
    }

    /// Forgets the nodes silent for longer than `forget_after` at `now`.
    pub(super) fn forget_silent(&mut self, now: Instant) {
        let forget_after = self.forget_after;
        self.nodes
            .retain(|_, h| now.saturating_duration_since(h.at) <= forget_after);
    }

    /// Nodes heard within [`SILENT_AFTER`] of `now`.
    pub(super) fn alive(&self, now: Instant) -> usize {
        self.nodes
            .values()
            .filter(|h| now.saturating_duration_since(h.at) < SILENT_AFTER)
            .count()
    }

    /// A copy of the table.
    pub(super) fn snapshot(&self) -> BTreeMap<String, Heard> {
        self.nodes.clone()
    }
}

/// Starts both watchers; they stop with `shutdown`.
pub(super) fn spawn(state: Arc<Shared>, shutdown: CancellationToken) {
    tokio::spawn(listen(state.clone(), shutdown.clone()));
    tokio::spawn(sample(state, shutdown));
}

/// Records every heartbeat of the cluster; resubscribes after a failure.
async fn listen(state: Arc<Shared>, shutdown: CancellationToken) {
    let subject = Subjects::new(&state.config.cluster).heartbeat();
    loop {
        let mut sub = match state.client.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "dashboard: subscribing to heartbeats failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(SAMPLE_EVERY) => continue,
                }
            }
        };
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => return,
                msg = sub.next() => msg,
            };
            let Some(msg) = msg else { break };
            let Ok(hb) = decode::<Heartbeat>(&msg.payload) else {
                continue;
            };
            // The nodes ignore ids and incarnations that break the naming rule; so does the
            // page.
            if aether_cluster::validate_name("node id", &hb.node_id).is_err()
                || aether_cluster::validate_name("incarnation", &hb.incarnation).is_err()
            {
                continue;
            }
            let now = Instant::now();
            let alive = {
                let mut heard = state.heard.lock().unwrap_or_else(|e| e.into_inner());
                heard.record(
                    hb.node_id,
                    Heard {
                        incarnation: hb.incarnation,
                        seq: hb.seq,
                        at: now,
                    },
                );
                heard.alive(now)
            };
            metrics::gauge!("aether_cluster_members_heard", "cluster" => state.config.cluster.clone())
                .set(alive as f64);
        }
    }
}

/// Samples the stream's last sequence and size, and forgets silent nodes.
async fn sample(state: Arc<Shared>, shutdown: CancellationToken) {
    let context = async_nats::jetstream::new(state.client.clone());
    let name = state.config.stream.stream_name();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        state
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_silent(Instant::now());
        let info = match context.get_stream(&name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.clone(),
                Err(_) => continue,
            },
            // No stream yet: nothing to sample.
            Err(_) => continue,
        };
        metrics::gauge!("aether_stream_messages", "stream" => name.clone())
            .set(info.state.messages as f64);
        metrics::gauge!("aether_stream_bytes", "stream" => name.clone())
            .set(info.state.bytes as f64);
        let mut samples = state.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at_ms: chrono::Utc::now().timestamp_millis(),
            last_seq: info.state.last_sequence,
            bytes: info.state.bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(at: Instant) -> Heard {
        Heard {
            incarnation: "i".into(),
            seq: 0,
            at,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_nodes_are_forgotten_and_the_table_stays_within_its_cap() {
        let mut table = HeardTable::new(3, Duration::from_secs(60));
        table.record("a".into(), heard(Instant::now()));
        tokio::time::advance(Duration::from_secs(30)).await;
        table.record("b".into(), heard(Instant::now()));
        tokio::time::advance(Duration::from_secs(31)).await;
        table.forget_silent(Instant::now());
        assert_eq!(table.snapshot().keys().collect::<Vec<_>>(), ["b"]);

        // A flood of names: never more than the cap, the newest kept.
        for i in 0..1000 {
            table.record(format!("ghost-{i}"), heard(Instant::now()));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let nodes = table.snapshot();
        assert_eq!(nodes.len(), 3);
        assert!(nodes.contains_key("ghost-999"));
        // A node heard again keeps its place without evicting anyone.
        table.record("ghost-999".into(), heard(Instant::now()));
        assert_eq!(table.snapshot().len(), 3);
        assert_eq!(table.alive(Instant::now()), 3);
        tokio::time::advance(SILENT_AFTER).await;
        assert_eq!(table.alive(Instant::now()), 0);
    }
}
