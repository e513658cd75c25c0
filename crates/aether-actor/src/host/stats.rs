//! Counters of one actor host.

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
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) activations: AtomicU64,
    pub(crate) passivated_idle: AtomicU64,
    pub(crate) passivated_evicted: AtomicU64,
    pub(crate) passivated_requested: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) stale_rejections: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) conflicts_exhausted: AtomicU64,
    pub(crate) deduplicated: AtomicU64,
    pub(crate) snapshots_saved: AtomicU64,
    pub(crate) snapshots_ignored: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn read(&self, active: usize) -> HostStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
        }
    }
}
