use super::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

#[test]
fn defaults() {
    let m = ShardManager::default();
    assert_eq!(m.shard_count(), 1024);
    assert_eq!(m.replication_factor(), 1);
    let z = ShardManager::new(ShardConfig {
        shard_count: 0,
        replication_factor: 0,
    });
    assert_eq!(z.shard_count(), 1, "a zero count is taken as one shard");
    assert_eq!(z.replication_factor(), 1);
}

#[test]
fn get_shard_is_stable_and_in_range() {
    let m = ShardManager::new(ShardConfig::default().shard_count(16));
    for i in 0..1000 {
        let id = format!("actor-{i}");
        let s = m.get_shard(&id);
        assert!(s < 16);
        assert_eq!(s, m.get_shard(&id));
        assert_eq!(s, shard_for(&id, 16));
    }
    // Pinned: the shard of an actor is part of the protocol between processes.
    assert_eq!(
        shard_for("actor-1", 1024),
        (0x23d5_c1ee_6139_0535u64 % 1024) as u32
    );
    assert_eq!(shard_for("x", 0), 0);
}

#[test]
fn shards_spread_evenly() {
    let mut counts = vec![0usize; 64];
    for i in 0..64_000 {
        counts[shard_for(&format!("a-{i}"), 64) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (800..1200).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn assign_and_read_back() {
    let m = ShardManager::new(ShardConfig::default().shard_count(8));
    assert!(m.get_shard_nodes(3).is_empty());
    assert!(m.get_shard_nodes(99).is_empty());
    m.assign_shard(3, vec!["a".into(), "b".into(), "a".into()])
        .unwrap();
    assert_eq!(m.get_shard_nodes(3), ["a", "b"]);
    assert_eq!(m.primary(3).as_deref(), Some("a"));
    assert_eq!(m.shards_of("b"), [3]);
    assert!(matches!(
        m.assign_shard(8, vec!["a".into()]),
        Err(Error::InvalidInput(_))
    ));
    m.assign_shard(3, vec!["c".into()]).unwrap();
    assert_eq!(m.get_shard_nodes(3), ["c"]);
    assert!(m.set_table(vec![Vec::new(); 3]).is_err());
}

#[test]
fn place_actor_prefers_the_shard_owner_and_falls_back_stably() {
    let m = ShardManager::new(ShardConfig::default().shard_count(32));
    let all = names(3);
    assert_eq!(m.place_actor("a", &[]), None);
    // Unassigned: a stable choice among the available nodes.
    let p = m.place_actor("a", &all).unwrap();
    assert_eq!(m.place_actor("a", &all), Some(p.clone()));
    m.rebalance(&all);
    let shard = m.get_shard("a");
    let owner = m.primary(shard).unwrap();
    assert_eq!(m.place_actor("a", &all).as_ref(), Some(&owner));
    // The owner failed: another available node, never the failed one.
    let rest: Vec<String> = all.iter().filter(|n| **n != owner).cloned().collect();
    let fallback = m.place_actor("a", &rest).unwrap();
    assert!(rest.contains(&fallback));
}

#[test]
fn rebalance_from_empty_is_balanced_and_deterministic() {
    let m = ShardManager::default();
    let moves = m.rebalance(&names(3));
    assert_eq!(moves.len(), 1024);
    assert!(moves.iter().all(|mv| mv.from.is_none()));
    let l = m.loads();
    assert!(l.values().all(|&c| c == 341 || c == 342), "{l:?}");
    let again = rebalance(&vec![Vec::new(); 1024], &names(3), 1);
    assert_eq!(again, m.table());
    // Input order does not matter.
    let mut rev = names(3);
    rev.reverse();
    assert_eq!(rebalance(&vec![Vec::new(); 1024], &rev, 1), m.table());
}

#[test]
fn rebalance_is_idempotent() {
    let m = ShardManager::default();
    m.rebalance(&names(5));
    assert!(m.rebalance(&names(5)).is_empty());
}

#[test]
fn joining_node_takes_only_its_share() {
    let m = ShardManager::default();
    m.rebalance(&names(10));
    let moves = m.rebalance(&names(11));
    let new_load = m.loads()["node-10"];
    // Every move goes to the new node, and only as many as it must hold.
    assert!(moves.iter().all(|mv| mv.to == "node-10"));
    assert_eq!(moves.len(), new_load);
    assert!((93..=94).contains(&new_load), "{new_load}");
    eprintln!(
        "shards: 10 -> 11 nodes moved {} of 1024 shards ({:.2}%, ideal {:.2}%)",
        moves.len(),
        moves.len() as f64 / 10.24,
        100.0 / 11.0
    );
    let l = m.loads();
    assert!(l.values().all(|&c| c == 93 || c == 94), "{l:?}");
}

#[test]
fn leaving_node_gives_up_exactly_its_shards() {
    let m = ShardManager::default();
    m.rebalance(&names(4));
    let gone = m.shards_of("node-2");
    let before = m.table();
    let live: Vec<String> = names(4).into_iter().filter(|n| n != "node-2").collect();
    let moves = m.rebalance(&live);
    assert_eq!(moves.len(), gone.len());
    assert!(moves.iter().all(|mv| gone.contains(&mv.shard)));
    for (s, row) in m.table().iter().enumerate() {
        if !gone.contains(&(s as u32)) {
            assert_eq!(row, &before[s]);
        }
    }
    let l = m.loads();
    assert!(l.values().all(|&c| c == 341 || c == 342), "{l:?}");
}

#[test]
fn replication_factor_is_tracked_and_capped_by_nodes() {
    let m = ShardManager::new(
        ShardConfig::default()
            .shard_count(100)
            .replication_factor(3),
    );
    assert_eq!(m.replication_factor(), 3);
    m.rebalance(&names(2));
    assert!(m.table().iter().all(|row| row.len() == 2));
    m.rebalance(&names(5));
    for row in m.table() {
        assert_eq!(row.len(), 3);
        let set: BTreeSet<_> = row.iter().collect();
        assert_eq!(set.len(), 3);
    }
    let l = m.loads();
    assert!(l.values().all(|&c| c == 60), "{l:?}");
    // Losing one node re-replicates its replicas, plus the few swaps the distinct-node rule
    // can need to even out the loads.
    let held = m.shards_of("node-4").len();
    let moves = m.rebalance(&names(4));
    assert!(
        moves.len() >= held && moves.len() <= held + held / 10,
        "{} moves",
        moves.len()
    );
    assert!(m.loads().values().all(|&c| c == 75));
    assert!(moves.iter().all(|mv| mv.to != "node-4"));
}

#[test]
fn node_failures_are_handled() {
    let m = ShardManager::new(ShardConfig::default().shard_count(64));
    m.rebalance(&names(3));
    m.rebalance(&["node-0".to_string()]);
    assert!(m.table().iter().all(|row| row == &["node-0"]));
    m.rebalance(&[]);
    assert!(m.table().iter().all(Vec::is_empty));
    assert_eq!(m.primary(0), None);
}

#[test]
fn more_than_100_nodes() {
    let m = ShardManager::default();
    m.rebalance(&names(120));
    let l = m.loads();
    assert_eq!(l.len(), 120);
    assert!(l.values().all(|&c| c == 8 || c == 9), "{l:?}");
    let held = m.shards_of("node-77").len();
    let live: Vec<String> = names(120).into_iter().filter(|n| n != "node-77").collect();
    assert_eq!(m.rebalance(&live).len(), held);
}

#[test]
fn concurrent_readers_and_writers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let m = Arc::new(ShardManager::new(ShardConfig::default().shard_count(256)));
    m.rebalance(&names(3));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let m = Arc::clone(&m);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 1000 {
                    let id = format!("a-{t}-{n}");
                    let shard = m.get_shard(&id);
                    // Every row is always whole: a reader never sees a half-written table.
                    assert!(!m.get_shard_nodes(shard).is_empty());
                    assert!(m.place_actor(&id, &names(5)).is_some());
                    n += 1;
                }
            })
        })
        .collect();
    for round in 0..40 {
        m.rebalance(&names(3 + round % 3));
        m.assign_shard(round as u32, vec!["node-0".into()]).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
    m.rebalance(&names(4));
    assert!(m.rebalance(&names(4)).is_empty());
}

#[test]
fn diff_lists_new_replicas() {
    let prev = vec![vec!["a".to_string()], vec!["b".to_string()]];
    let next = vec![vec!["a".to_string()], vec!["c".to_string()]];
    assert_eq!(
        diff(&prev, &next),
        [ShardMove {
            shard: 1,
            from: Some("b".into()),
            to: "c".into()
        }]
    );
}

#[test]
fn a_shards_buckets_hold_every_actor_of_the_shard() {
    for n in [1u32, 2, 3, 5, 8, 12, 64, 100, 128] {
        for k in 0..n {
            let buckets = buckets_of_shard(k, n);
            let exact = ACTOR_BUCKETS % n == 0;
            for i in 0..2_000 {
                let id = format!("actor-{i}");
                let in_shard = shard_for(&id, n) == k;
                let in_buckets = buckets.contains(&bucket_for(&id));
                if in_shard {
                    assert!(in_buckets, "{id} of shard {k}/{n} outside its buckets");
                }
                if exact {
                    assert_eq!(in_shard, in_buckets, "{id}: {k}/{n} should be exact");
                }
            }
        }
    }
    assert!(buckets_of_shard(8, 8).is_empty());
    // The union over the shards of a split covers every bucket.
    let all: std::collections::BTreeSet<u32> =
        (0..8).flat_map(|k| buckets_of_shard(k, 8)).collect();
    assert_eq!(all.len(), ACTOR_BUCKETS as usize);
}
