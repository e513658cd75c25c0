//! What the dashboard watches in the background: the cluster's heartbeats (for members'
//! status and last heartbeat) and the stream's size over time (for the event rate), also
//! handed to the metrics exporter as `aether_stream_messages`, `aether_stream_bytes` and
//! `aether_cluster_members_heard`.

use std::sync::Arc;
use std::time::Duration;

use aether_cluster::routing::{decode, Heartbeat, Subjects};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Heard, Sample, Shared, SAMPLES, SILENT_AFTER};

/// How often the stream's size is sampled.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(2);

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
            let alive = {
                let mut heard = state.heard.lock().unwrap_or_else(|e| e.into_inner());
                heard.insert(
                    hb.node_id,
                    Heard {
                        incarnation: hb.incarnation,
                        seq: hb.seq,
                        at: Instant::now(),
                    },
                );
                heard
                    .values()
                    .filter(|h| h.at.elapsed() < SILENT_AFTER)
                    .count()
            };
            metrics::gauge!("aether_cluster_members_heard", "cluster" => state.config.cluster.clone())
                .set(alive as f64);
        }
    }
}

/// Samples the stream's last sequence and size.
async fn sample(state: Arc<Shared>, shutdown: CancellationToken) {
    let context = async_nats::jetstream::new(state.client.clone());
    let name = state.config.stream.stream_name();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
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
