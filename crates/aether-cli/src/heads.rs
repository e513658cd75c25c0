//! The heads of the event log, one per partition, and which head a projection's checkpoint
//! is measured against: what `projections`, `timers` and the dashboard compute lag from.
//!
//! On a partitioned store each partition's stream is a log of its own, with its own
//! positions, and a projection keeps one checkpoint per log partition: `<name>.l<k>` (and
//! `<name>.l<k>.p<j>` for a worker's partition `j` of it). Such a checkpoint compares with
//! partition `k`'s head only; comparing it with another partition's would be meaningless.
//! On an unpartitioned store every checkpoint compares with the one head.

use std::sync::Arc;

use aether_core::{log_partitions, EventLog, LogPosition};
use aether_store::JetStreamEventStore;
use serde::Serialize;

/// The heads of the event log, partition by partition (`None` in a slot: that partition is
/// empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogHeads {
    /// One head per partition in partition order; one for an unpartitioned log, none when
    /// the log could not be read.
    pub partitions: Vec<Option<LogPosition>>,
}

impl LogHeads {
    /// Heads not known (no event stream, or it could not be read): every lag is unknown.
    pub fn unknown() -> Self {
        Self::default()
    }

    /// The heads of one unpartitioned log.
    pub fn whole(head: Option<LogPosition>) -> Self {
        Self {
            partitions: vec![head],
        }
    }

    /// Reads the head of every partition of `store` ([`log_partitions`]), concurrently.
    ///
    /// # Errors
    /// The first partition whose head could not be read.
    pub async fn read(store: Arc<JetStreamEventStore>) -> aether_core::Result<Self> {
        let log: Arc<dyn EventLog> = store;
        let parts = log_partitions(&log);
        let partitions =
            futures::future::try_join_all(parts.iter().map(|part| part.head())).await?;
        Ok(Self { partitions })
    }

    /// Whether the heads are known.
    pub fn known(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// Whether the log is partitioned (more than one head).
    pub fn partitioned(&self) -> bool {
        self.partitions.len() > 1
    }

    /// The one head of an unpartitioned log (`None` also when partitioned or unknown).
    pub fn single(&self) -> Option<LogPosition> {
        match self.partitions.as_slice() {
            [one] => *one,
            _ => None,
        }
    }

    /// The head the checkpoint named `name` is measured against: the one head of an
    /// unpartitioned log; on a partitioned log, partition `k`'s for a name with a `.l<k>`
    /// part ([`log_partition_of`]). `None` when no head applies: the heads are unknown, the
    /// name names no log partition of a partitioned log, or one it does not have.
    ///
    /// The outer `Option` says whether a head applies, the inner one whether that partition
    /// holds anything yet.
    pub fn head_for(&self, name: &str) -> Option<Option<LogPosition>> {
        match self.partitions.as_slice() {
            [] => None,
            [one] => Some(*one),
            many => many.get(log_partition_of(name)? as usize).copied(),
        }
    }

    /// The lag of a checkpoint named `name` at `position`, when a head applies
    /// ([`head_for`](Self::head_for)): stored messages between them
    /// ([`aether_projection::lag`]).
    pub fn lag_of(&self, name: &str, position: Option<LogPosition>) -> Option<u64> {
        self.head_for(name)
            .map(|head| aether_projection::lag(position, head))
    }
}

/// The log partition a checkpoint's name is of: `k` for `<name>.l<k>` and
/// `<name>.l<k>.p<j>`, `None` for a name without such a part. Only the exact digits the
/// projection crate writes count (no sign, no leading zero).
pub fn log_partition_of(name: &str) -> Option<u32> {
    aether_projection::CheckpointName::parse(name)?.log_partition
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_their_log_partition() {
        assert_eq!(log_partition_of("orders.l3"), Some(3));
        assert_eq!(log_partition_of("orders.l12.p0"), Some(12));
        assert_eq!(log_partition_of("orders"), None);
        assert_eq!(log_partition_of("orders.p2"), None);
        assert_eq!(log_partition_of("l3"), None);
        for hostile in ["o.l", "o.l03", "o.l-1", "o.lx", "o.l99999999999", "o.l1x"] {
            assert_eq!(log_partition_of(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn a_checkpoint_compares_with_its_partitions_head() {
        let p = |s| Some(LogPosition::new(s, 0));
        let heads = LogHeads {
            partitions: vec![p(10), None, p(30)],
        };
        assert_eq!(heads.head_for("x.l0"), Some(p(10)));
        assert_eq!(heads.head_for("x.l1.p4"), Some(None));
        assert_eq!(heads.head_for("x.l2"), Some(p(30)));
        assert_eq!(heads.head_for("x.l3"), None);
        assert_eq!(heads.head_for("x"), None);
        assert_eq!(heads.lag_of("x.l2", p(25)), Some(5));
        assert_eq!(heads.lag_of("x.l0", None), Some(10));
        assert_eq!(heads.lag_of("x.p0", p(1)), None);
        let one = LogHeads::whole(p(7));
        assert_eq!(one.lag_of("x.p3", p(5)), Some(2));
        assert_eq!(one.lag_of("x", None), Some(7));
        assert_eq!(LogHeads::unknown().lag_of("x", None), None);
    }
}
