//! What the dashboard watches in the background: the cluster, through its observer (opened as
//! soon as the cluster exists, so that the page knows the members heard since then), and the
//! stream's size over time (for the event rate), also handed to the metrics exporter as
//! `aether_stream_messages`, `aether_stream_bytes` and `aether_cluster_members_heard`. A
//! partitioned store's figures are added up over its partitions' streams (labelled with the
//! base name), and given per partition too (labelled with each partition's stream).
//!
//! The observer keeps the nodes heard within the dashboard's bounds
//! ([`DashboardConfig::max_heard_nodes`](super::DashboardConfig::max_heard_nodes) and
//! [`forget_silent_after`](super::DashboardConfig::forget_silent_after)), refusing names that
//! break the naming rule, as the nodes do.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::api::{Sample, Shared, SAMPLES};

/// How often the stream's size is sampled (and the cluster looked for, until it exists).
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Starts both watchers; they stop with `shutdown`.
pub(super) fn spawn(state: Arc<Shared>, shutdown: CancellationToken) {
    tokio::spawn(observe(state.clone(), shutdown.clone()));
    tokio::spawn(sample(state, shutdown));
}

/// Opens the cluster's observer, trying again while the cluster does not exist (or NATS does
/// not answer). Once open, it follows the cluster until the dashboard stops.
async fn observe(state: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        match state.observer().await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = ?e, "dashboard: the cluster is not observed yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// Samples the stream's last sequence and size (summed over a partitioned store's streams),
/// and the number of live members.
async fn sample(state: Arc<Shared>, shutdown: CancellationToken) {
    let context = async_nats::jetstream::new(state.client.clone());
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(observer) = state.observed() {
            metrics::gauge!("aether_cluster_members_heard", "cluster" => state.config.cluster.clone())
                .set(observer.snapshot().alive() as f64);
        }
        // Looked up again each time (the info is read with the lookup); no store yet:
        // nothing to sample.
        let Ok(streams) = state.config.stream.find(&context).await else {
            continue;
        };
        let (mut messages, mut bytes, mut last_seq) = (0u64, 0u64, 0u64);
        for stream in &streams.streams {
            let info = stream.cached_info();
            messages += info.state.messages;
            bytes += info.state.bytes;
            last_seq += info.state.last_sequence;
            if streams.partitions() > 1 {
                let name = info.config.name.clone();
                metrics::gauge!("aether_stream_messages", "stream" => name.clone())
                    .set(info.state.messages as f64);
                metrics::gauge!("aether_stream_bytes", "stream" => name)
                    .set(info.state.bytes as f64);
            }
        }
        metrics::gauge!("aether_stream_messages", "stream" => streams.base.clone())
            .set(messages as f64);
        metrics::gauge!("aether_stream_bytes", "stream" => streams.base.clone()).set(bytes as f64);
        let mut samples = state.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at_ms: chrono::Utc::now().timestamp_millis(),
            last_seq,
            bytes,
        });
    }
}
