//! Properties of the hash ring: it depends only on its nodes, and membership changes move only
//! the keys they must. (The shard table's properties are `aether-placement`'s, in its
//! `tests/shard_props.rs`.)

use std::collections::BTreeSet;

use aether_benches::ring::ConsistentHashRing;
use aether_benches::ring::HashRingConfig;
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
}
