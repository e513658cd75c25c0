//! Settings of the actor runtime: mailboxes, snapshots, passivation and conflict retries.

use std::time::Duration;

use crate::retry::RetryPolicy;

/// When the runtime snapshots an actor's state.
///
/// A snapshot only shortens rebuilding: the events stay the source of truth, and a snapshot
/// that cannot be used is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After every this many events of an actor (`None`: not while it is active).
    pub every: Option<u64>,
    /// When an actor with events since its last snapshot is passivated.
    pub on_passivation: bool,
}

impl Default for SnapshotPolicy {
    /// Every 100 events and on passivation.
    fn default() -> Self {
        Self {
            every: Some(100),
            on_passivation: true,
        }
    }
}

impl SnapshotPolicy {
    /// Never snapshot.
    pub fn never() -> Self {
        Self {
            every: None,
            on_passivation: false,
        }
    }

    /// Every `n` events (0 is taken as never), not on passivation.
    pub fn every(n: u64) -> Self {
        Self {
            every: (n > 0).then_some(n),
            on_passivation: false,
        }
    }

    /// Only on passivation.
    pub fn on_passivation() -> Self {
        Self {
            every: None,
            on_passivation: true,
        }
    }

    /// Also on passivation.
    pub fn and_on_passivation(mut self) -> Self {
        self.on_passivation = true;
        self
    }
}

/// When the runtime stops an active actor (its state is dropped; the next command rebuilds
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivationPolicy {
    /// An actor with no command for this long is passivated (`None`: never for idleness).
    pub idle_timeout: Option<Duration>,
    /// At most this many actors of the type are active at once; activating one more
    /// passivates the least recently used (`None`: no cap).
    pub max_active: Option<usize>,
}

impl Default for PassivationPolicy {
    /// Five idle minutes, no cap.
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(300)),
            max_active: None,
        }
    }
}

impl PassivationPolicy {
    /// Never passivate on its own (only on request, or when the node loses the actor).
    pub fn never() -> Self {
        Self {
            idle_timeout: None,
            max_active: None,
        }
    }

    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = d.into();
        self
    }

    /// Sets the cap on active actors (0 is taken as 1).
    pub fn max_active(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_active = n.into().map(|n| n.max(1));
        self
    }
}

/// Settings of the actor runtime for one actor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Commands queued per active actor before senders wait (0 is taken as 1).
    pub mailbox_capacity: usize,
    /// When to snapshot.
    pub snapshot: SnapshotPolicy,
    /// When to passivate.
    pub passivation: PassivationPolicy,
    /// How often, and how far apart, a command is decided again after a version conflict.
    pub retry: RetryPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 256,
            snapshot: SnapshotPolicy::default(),
            passivation: PassivationPolicy::default(),
            retry: RetryPolicy::default(),
        }
    }
}

impl RuntimeConfig {
    /// Sets the mailbox capacity.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n;
        self
    }
    /// Sets the snapshot policy.
    pub fn snapshot(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot = policy;
        self
    }
    /// Sets the passivation policy.
    pub fn passivation(mut self, policy: PassivationPolicy) -> Self {
        self.passivation = policy;
        self
    }
    /// Sets the conflict retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
}
