//! Properties of shard placement: an actor's shard depends only on its id, and rebalancing
//! the table over a new live set is balanced, stable and moves only what it must.

use std::collections::BTreeSet;

use aether_placement::{rebalance, shard_for};
use proptest::prelude::*;

fn node_set() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::collection::btree_set("[a-z]{1,6}-[0-9]{1,3}", 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

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
