//! A partitioned projection's units of work: (log partition, partition) pairs, and the one
//! number every worker of the projection stores and compares
//! ([`ProjectionStore::partition_count`](crate::ProjectionStore::partition_count)).

use aether_core::{Error, Result};

/// The most log partitions, and partitions, of a projection over a partitioned log: each is
/// kept in 16 bits of the stored count.
const MAX_ON_PARTITIONED_LOG: u32 = 0xFFFF;

/// How a projection's work is split: `log_partitions` independent logs, each split into
/// `partitions` shards of actors. Unit `l × partitions + k` is shard `k` of log partition `l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnitLayout {
    log_partitions: u32,
    partitions: u32,
}

impl UnitLayout {
    /// The layout of `partitions` partitions over a log of `log_partitions` partitions.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] on a partitioned log with more than 65 535 log partitions or
    /// partitions (they could not be told apart in the stored count).
    pub(super) fn of(log_partitions: usize, partitions: u32) -> Result<Self> {
        let log_partitions = u32::try_from(log_partitions.max(1)).unwrap_or(u32::MAX);
        if log_partitions > 1
            && (log_partitions > MAX_ON_PARTITIONED_LOG || partitions > MAX_ON_PARTITIONED_LOG)
        {
            return Err(Error::invalid(format!(
                "a partitioned projection over a partitioned log has at most \
                 {MAX_ON_PARTITIONED_LOG} log partitions and {MAX_ON_PARTITIONED_LOG} \
                 partitions (here {log_partitions} and {partitions})"
            )));
        }
        Ok(Self {
            log_partitions,
            partitions,
        })
    }

    /// The units of work: log partitions × partitions.
    pub(super) fn units(self) -> u32 {
        // At most 65 535 × 65 535 on a partitioned log, below `u32::MAX`.
        self.log_partitions.saturating_mul(self.partitions)
    }

    /// The number stored as the projection's partition count, the same for every worker
    /// of the same layout and different for any other: the partition count itself on a log
    /// that is one order (as before logs had partitions), `log_partitions << 16 | partitions`
    /// on a partitioned log (at least 131 072, so never a count a one-order worker would
    /// plausibly store, and never equal across two different partitioned layouts).
    pub(super) fn stored(self) -> u32 {
        if self.log_partitions == 1 {
            self.partitions
        } else {
            (self.log_partitions << 16) | self.partitions
        }
    }

    /// Says what a stored count means, for an error message.
    pub(super) fn describe_stored(stored: u32) -> String {
        let (log_partitions, partitions) = (stored >> 16, stored & MAX_ON_PARTITIONED_LOG);
        if log_partitions > 1 {
            Self {
                log_partitions,
                partitions,
            }
            .to_string()
        } else {
            Self {
                log_partitions: 1,
                partitions: stored,
            }
            .to_string()
        }
    }
}

impl std::fmt::Display for UnitLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.log_partitions == 1 {
            write!(
                f,
                "{} partitions of a log that is one order",
                self.partitions
            )
        } else {
            write!(
                f,
                "{} partitions of each of {} log partitions ({} units)",
                self.partitions,
                self.log_partitions,
                self.units()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_order_log_stores_the_partition_count_as_before() {
        let layout = UnitLayout::of(1, 16).unwrap();
        assert_eq!((layout.stored(), layout.units()), (16, 16));
        assert_eq!(
            UnitLayout::describe_stored(16),
            "16 partitions of a log that is one order"
        );
    }

    #[test]
    fn different_layouts_store_different_counts() {
        let layouts = [
            (1, 8),
            (2, 4),
            (4, 2),
            (8, 1),
            (2, 8),
            (3, 4),
            (4, 3),
            (1, 12),
        ];
        let stored: std::collections::BTreeSet<u32> = layouts
            .iter()
            .map(|&(n, p)| UnitLayout::of(n, p).unwrap().stored())
            .collect();
        assert_eq!(stored.len(), layouts.len());
        let two_by_four = UnitLayout::of(2, 4).unwrap();
        assert_eq!(two_by_four.units(), 8);
        assert_eq!(
            UnitLayout::describe_stored(two_by_four.stored()),
            "4 partitions of each of 2 log partitions (8 units)"
        );
    }

    #[test]
    fn too_many_partitions_on_a_partitioned_log_are_refused() {
        assert!(UnitLayout::of(2, 70_000).is_err());
        assert!(UnitLayout::of(70_000, 2).is_err());
        assert!(UnitLayout::of(1, 70_000).is_ok());
    }
}
