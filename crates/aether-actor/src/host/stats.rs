//! Counters of one actor host.
//!
//! Each is also exported through the `metrics` facade as `aether_actor_<name>_total` with an
//! `actor_type` label (`aether_actor_activations_total{actor_type="account"}`,
//! `aether_actor_passivated_idle_total`, `aether_actor_commands_total`, ...), and the gauge
//! `aether_actor_active{actor_type}`, for the exporter the application installs before it
//! creates its hosts.

use std::sync::atomic::{AtomicU64, Ordering};

/// What an [`ActorHost`](crate::ActorHost) has done since it started, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Actors active now.
    pub active: usize,
    /// Activations (an actor rebuilt from its store).
    pub activations: u64,
    /// Passivations after the idle timeout.
    pub passivated_idle: u64,
    /// Passivations to stay under the cap on active actors (least recently used first).
    pub passivated_evicted: u64,
    /// Passivations asked for (by the application, or by the cluster when a shard moves).
    pub passivated_requested: u64,
    /// Commands handled (every outcome).
    pub commands: u64,
    /// Commands rejected by the actor.
    pub rejections: u64,
    /// Rejections decided on a stale state and decided again on the current one.
    pub stale_rejections: u64,
    /// Version conflicts met while saving (each one means a reload and a new decision).
    pub conflicts: u64,
    /// Commands that failed because conflicts outlasted the retry policy.
    pub conflicts_exhausted: u64,
    /// Commands answered from their first outcome because their id was seen before.
    pub deduplicated: u64,
    /// Snapshots saved.
    pub snapshots_saved: u64,
    /// Snapshots not used (another state schema version, or undecodable).
    pub snapshots_ignored: u64,
    /// Commands or rebuilds that failed because a stored event did not decode.
    pub decode_errors: u64,
    /// Commands of timers no longer pending, dropped undecided.
    pub stale_timers: u64,
    /// Decisions refused for their timers or effects.
    pub reactions_refused: u64,
    /// Actors retired through this host.
    pub retired: u64,
    /// Commands and transactions refused because their actor is retired.
    pub retired_refusals: u64,
}

/// One counter, kept here and handed to the metrics exporter.
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    exported: metrics::Counter,
}

impl Count {
    fn new(name: &'static str, actor_type: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            exported: metrics::counter!(name, "actor_type" => actor_type),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) activations: Count,
    pub(crate) passivated_idle: Count,
    pub(crate) passivated_evicted: Count,
    pub(crate) passivated_requested: Count,
    pub(crate) commands: Count,
    pub(crate) rejections: Count,
    pub(crate) stale_rejections: Count,
    pub(crate) conflicts: Count,
    pub(crate) conflicts_exhausted: Count,
    pub(crate) deduplicated: Count,
    pub(crate) snapshots_saved: Count,
    pub(crate) snapshots_ignored: Count,
    pub(crate) decode_errors: Count,
    pub(crate) stale_timers: Count,
    pub(crate) reactions_refused: Count,
    pub(crate) retired: Count,
    pub(crate) retired_refusals: Count,
    /// Actors active now, for the exporter.
    pub(crate) active: metrics::Gauge,
}

pub(crate) fn bump(counter: &Count) {
    counter.value.fetch_add(1, Ordering::Relaxed);
    counter.exported.increment(1);
}

impl Counters {
    pub(crate) fn new(actor_type: &'static str) -> Self {
        let c = |name| Count::new(name, actor_type);
        Self {
            activations: c("aether_actor_activations_total"),
            passivated_idle: c("aether_actor_passivated_idle_total"),
            passivated_evicted: c("aether_actor_passivated_evicted_total"),
            passivated_requested: c("aether_actor_passivated_requested_total"),
            commands: c("aether_actor_commands_total"),
            rejections: c("aether_actor_rejections_total"),
            stale_rejections: c("aether_actor_stale_rejections_total"),
            conflicts: c("aether_actor_conflicts_total"),
            conflicts_exhausted: c("aether_actor_conflicts_exhausted_total"),
            deduplicated: c("aether_actor_deduplicated_total"),
            snapshots_saved: c("aether_actor_snapshots_saved_total"),
            snapshots_ignored: c("aether_actor_snapshots_ignored_total"),
            decode_errors: c("aether_actor_decode_errors_total"),
            stale_timers: c("aether_actor_stale_timers_total"),
            reactions_refused: c("aether_actor_reactions_refused_total"),
            retired: c("aether_actor_retired_total"),
            retired_refusals: c("aether_actor_retired_refusals_total"),
            active: metrics::gauge!("aether_actor_active", "actor_type" => actor_type),
        }
    }

    pub(crate) fn read(&self, active: usize) -> HostStats {
        let get = |c: &Count| c.value.load(Ordering::Relaxed);
        HostStats {
            active,
            activations: get(&self.activations),
            passivated_idle: get(&self.passivated_idle),
            passivated_evicted: get(&self.passivated_evicted),
            passivated_requested: get(&self.passivated_requested),
            commands: get(&self.commands),
            rejections: get(&self.rejections),
            stale_rejections: get(&self.stale_rejections),
            conflicts: get(&self.conflicts),
            conflicts_exhausted: get(&self.conflicts_exhausted),
            deduplicated: get(&self.deduplicated),
            snapshots_saved: get(&self.snapshots_saved),
            snapshots_ignored: get(&self.snapshots_ignored),
            decode_errors: get(&self.decode_errors),
            stale_timers: get(&self.stale_timers),
            reactions_refused: get(&self.reactions_refused),
            retired: get(&self.retired),
            retired_refusals: get(&self.retired_refusals),
        }
    }
}
