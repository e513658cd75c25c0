//! Properties of placement: rings and shard tables depend only on their inputs, and membership
//! changes move only what they must.

use std::collections::BTreeSet;

use aether_cluster::HashRingConfig;
use aether_cluster::{rebalance, shard_for, ConsistentHashRing};
use proptest::prelude::*;

fn node_set() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::collection::btree_set("[a-z]{1,6}-[0-9]{1,3}", 1..12)
}

fn config() -> HashRingConfig {
    // Fewer virtual nodes keep the properties fast; they hold for any count.
    HashRingConfig::default().virtual_nodes(32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_key_maps_to_the_same_node_on_every_ring_built_from_the_same_nodes(
        nodes in node_set(),
        seed in any::<u64>(),
        keys in proptest::collection::vec(".{0,24}", 1..64),
    ) {
        let mut shuffled: Vec<String> = nodes.iter().cloned().collect();
        // A deterministic shuffle from the seed: insertion order must not matter.
        let len = shuffled.len();
        for i in 0..len {
            let j = (seed.wrapping_mul(i as u64 + 1) % len as u64) as usize;
            shuffled.swap(i, j);
        }
        let a = ConsistentHashRing::with_nodes(config(), &nodes);
        let b = ConsistentHashRing::with_nodes(config(), &shuffled);
        for k in &keys {
            let owner = a.get_node(k);
            prop_assert!(owner.is_some());
            prop_assert_eq!(&owner, &b.get_node(k));
            prop_assert_eq!(&owner, &a.get_node(k));
        }
    }

    #[test]
    fn removing_a_node_moves_only_that_nodes_keys(
        nodes in node_set(),
        pick in any::<prop::sample::Index>(),
        keys in proptest::collection::vec("[a-z0-9-]{1,16}", 1..128),
    ) {
        let ring = ConsistentHashRing::with_nodes(config(), &nodes);
        let victim = pick.get(&nodes.iter().cloned().collect::<Vec<_>>()).clone();
        let before: Vec<_> = keys.iter().map(|k| ring.get_node(k)).collect();
        ring.remove_node(&victim);
        for (k, old) in keys.iter().zip(before) {
            let old = old.expect("non-empty ring");
            let new = ring.get_node(k);
            if old.as_ref() == victim {
                prop_assert!(new.as_deref() != Some(victim.as_str()));
            } else {
                prop_assert_eq!(new, Some(old));
            }
        }
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it(
        nodes in node_set(),
        keys in proptest::collection::vec("[a-z0-9-]{1,16}", 1..128),
    ) {
        let ring = ConsistentHashRing::with_nodes(config(), &nodes);
        let before: Vec<_> = keys.iter().map(|k| ring.get_node(k)).collect();
        ring.add_node("newcomer");
        for (k, old) in keys.iter().zip(before) {
            let new = ring.get_node(k).expect("non-empty ring");
            prop_assert!(Some(&new) == old.as_ref() || new.as_ref() == "newcomer");
        }
    }

    #[test]
    fn shard_of_an_actor_is_a_pure_function(id in ".{0,40}", count in 1u32..5000) {
        let s = shard_for(&id, count);
        prop_assert!(s < count);
        prop_assert_eq!(s, shard_for(&id, count));
    }

    #[test]
    fn rebalance_is_balanced_stable_and_minimal(
        first in node_set(),
        second in node_set(),
        shards in 1usize..200,
        rf in 1u32..3,
    ) {
        let empty = vec![Vec::new(); shards];
        let live1: Vec<String> = first.iter().cloned().collect();
        let t1 = rebalance(&empty, &live1, rf);
        // Idempotent.
        prop_assert_eq!(&rebalance(&t1, &live1, rf), &t1);
        let live2: Vec<String> = second.iter().cloned().collect();
        let t2 = rebalance(&t1, &live2, rf);
        let r = (rf as usize).min(live2.len());
        let mut loads = std::collections::HashMap::<&str, usize>::new();
        for (s, row) in t2.iter().enumerate() {
            prop_assert_eq!(row.len(), r);
            let set: BTreeSet<_> = row.iter().collect();
            prop_assert_eq!(set.len(), r, "distinct replicas");
            for n in row {
                prop_assert!(second.contains(n));
                *loads.entry(n).or_default() += 1;
            }
            // A replica on a surviving node stays unless its node was over its share.
            for n in &t1[s] {
                if second.contains(n) && !row.contains(n) {
                    let avg = (shards * r) as f64 / live2.len() as f64;
                    let had = t1.iter().filter(|row| row.contains(n)).count();
                    prop_assert!(had as f64 > avg.floor(), "{n} lost shard {s} while not above its share");
                }
            }
        }
        let avg = (shards * r) as f64 / live2.len() as f64;
        for (n, l) in loads {
            prop_assert!((l as f64) <= avg.ceil() && (l as f64) >= avg.floor(),
                "{n}: {l} replicas, average {avg}");
        }
    }
}
