//! How actors are spread over the partitions of a partitioned log: a pure function of the
//! actor id, so every process (and the CLI) agrees without asking anyone.

use aether_core::{ActorKey, Error, Result};
use aether_placement::stable_hash64_parts;

/// Prefixed to the key before hashing, so that an actor's partition is independent of its
/// shard and bucket (`aether_placement::shard_for`, the plain hash of the id modulo a count):
/// with the same hash, partition `l` of 8 would hold only shard `l mod 4` of 4, leaving three
/// quarters of a partitioned projection's units with nothing to do, and a cluster node's
/// actors would crowd into a few partitions.
const PARTITION_SALT: &[u8] = b"aether-partition\0";

/// The most partitions a store may have. Each partition is a stream (a Raft group on a
/// cluster) with its own consumers for every projection: past a few dozen they cost the
/// servers more than they give.
pub const MAX_PARTITIONS: u32 = 256;

/// What decides an actor's partition in a partitioned store
/// ([`JetStreamConfig::partitions`](super::JetStreamConfig::partitions)). The actor type plays
/// no part: actors of every type with the same key share a partition.
///
/// Only actors of one partition can be in one transaction, so actors that must change together
/// (an account's orders and its balance, a tenant's data) need one key.
///
/// ```
/// use aether_store::PartitionKey;
///
/// let key = PartitionKey::IdPrefix('/');
/// assert_eq!(key.key_of("tenant-7/order-12"), "tenant-7");
/// assert_eq!(key.partition_of("tenant-7/order-12", 8), key.partition_of("tenant-7/cart", 8));
/// assert_eq!(PartitionKey::ActorId.key_of("order-12"), "order-12");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PartitionKey {
    /// The whole actor id: actors spread evenly, and a transaction can only hold actors that
    /// happen to share a partition.
    #[default]
    ActorId,
    /// The part of the id before the first occurrence of the character (the whole id when it
    /// has none): `IdPrefix('/')` puts `tenant-7/order-12` and `tenant-7/cart` in the
    /// partition of `tenant-7`, so one transaction can hold both.
    IdPrefix(char),
}

impl PartitionKey {
    /// The key of the actor `actor_id`: what its partition is a hash of.
    pub fn key_of<'a>(&self, actor_id: &'a str) -> &'a str {
        match self {
            Self::ActorId => actor_id,
            Self::IdPrefix(separator) => actor_id
                .split_once(*separator)
                .map_or(actor_id, |(prefix, _)| prefix),
        }
    }

    /// The partition (`0..partitions`) of the actor `actor_id`: Aether's stable hash
    /// ([`aether_placement::stable_hash64_parts`]) of a fixed prefix and its key, modulo
    /// `partitions`. The prefix keeps partitions independent of shards and buckets, which hash
    /// the id alone. Fixed for a store's life: changing the function or the count moves actors
    /// between streams.
    pub fn partition_of(&self, actor_id: &str, partitions: u32) -> u32 {
        if partitions <= 1 {
            return 0;
        }
        let key = self.key_of(actor_id).as_bytes();
        (stable_hash64_parts(&[PARTITION_SALT, key]) % u64::from(partitions)) as u32
    }
}

/// Checks a partition count: 1 to [`MAX_PARTITIONS`].
pub(crate) fn validate_partitions(partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(Error::invalid(format!(
            "a store has 1 to {MAX_PARTITIONS} partitions, not {partitions}"
        )));
    }
    Ok(())
}

/// The name of partition `index`'s stream of a store whose unpartitioned stream would be
/// `base` (`<base>_P<index>`): how tools find a partitioned store's streams.
///
/// ```
/// assert_eq!(aether_store::partition_stream_name("orders_AETHER_EVENTS", 3), "orders_AETHER_EVENTS_P3");
/// ```
pub fn partition_stream_name(base: &str, index: u32) -> String {
    format!("{base}_P{index}")
}

/// How an actor is shown in errors: `type/id`, or the id of an untyped actor.
pub(crate) fn describe(actor: ActorKey<'_>) -> String {
    match actor.actor_type {
        Some(t) => format!("{t}/{}", actor.actor_id),
        None => actor.actor_id.to_string(),
    }
}

/// The marker a partition's stream description carries, so a store opened later with another
/// count is refused instead of reading a different spread of actors.
pub(crate) fn description_marker(index: u32, partitions: u32) -> String {
    format!("partition {index} of {partitions}")
}

/// The `(index, count)` a partition stream's description names (it ends with
/// `partition <index> of <count>`), if it has one: how tools tell a partition's place and
/// its store's partition count without opening the store.
///
/// ```
/// let description = "Aether event store: append-only actor histories, partition 2 of 8";
/// assert_eq!(aether_store::partition_marker(description), Some((2, 8)));
/// assert_eq!(aether_store::partition_marker("Aether event store: append-only actor histories"), None);
/// ```
pub fn partition_marker(description: &str) -> Option<(u32, u32)> {
    let rest = &description[description.rfind("partition ")? + "partition ".len()..];
    let (index, rest) = rest.split_once(" of ")?;
    let count: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((index.parse().ok()?, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned: changing the function would move every actor of every partitioned store.
        let key = PartitionKey::ActorId;
        let pinned: Vec<u32> = ["a", "order-1", "order-2", "tenant-7/x"]
            .iter()
            .map(|id| key.partition_of(id, 8))
            .collect();
        assert_eq!(pinned, [4, 5, 0, 6]);
        assert_eq!(key.partition_of("anything", 1), 0);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[key.partition_of(&format!("actor-{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn partitions_are_independent_of_shards() {
        // Every (partition of 8, shard of 4) pair holds actors: with one hash for both,
        // partition l would hold shard l mod 4 only.
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let id = format!("actor-{i}");
            seen.insert((
                PartitionKey::ActorId.partition_of(&id, 8),
                aether_placement::shard_for(&id, 4),
            ));
        }
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn a_prefix_key_keeps_a_group_together() {
        let key = PartitionKey::IdPrefix('/');
        for n in [2, 4, 8, 64] {
            assert_eq!(key.partition_of("t-1/a", n), key.partition_of("t-1/b", n));
            assert_eq!(key.partition_of("t-1/a", n), key.partition_of("t-1", n));
        }
        assert_eq!(key.key_of("no-separator"), "no-separator");
        assert_eq!(key.key_of("/leading"), "");
    }

    #[test]
    fn markers_round_trip() {
        let d = format!("Aether event store: {}", description_marker(3, 8));
        assert_eq!(partition_marker(&d), Some((3, 8)));
        assert_eq!(
            partition_marker("Aether event store: append-only actor histories"),
            None
        );
        assert_eq!(partition_marker("partition x of 8"), None);
        assert!(validate_partitions(0).is_err());
        assert!(validate_partitions(MAX_PARTITIONS + 1).is_err());
        assert!(validate_partitions(1).is_ok());
        assert_eq!(partition_stream_name("NS_EVENTS", 2), "NS_EVENTS_P2");
    }
}
