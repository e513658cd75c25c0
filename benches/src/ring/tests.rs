use super::*;
use std::collections::HashMap;

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("actor-{i}")).collect()
}

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn counts(ring: &ConsistentHashRing, keys: &[String]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for k in keys {
        *c.entry(ring.get_node(k).unwrap().to_string()).or_default() += 1;
    }
    c
}

#[test]
fn digits() {
    let mut b = itoa_buf();
    assert_eq!(format_usize(0, &mut b), b"0");
    assert_eq!(format_usize(149, &mut b), b"149");
    assert_eq!(
        format_usize(usize::MAX, &mut b),
        usize::MAX.to_string().as_bytes()
    );
}

#[test]
fn empty_ring() {
    let ring = ConsistentHashRing::new();
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
    assert!(ring.get_node("x").is_none());
    assert!(ring.get_nodes("x", 3).is_empty());
    assert!(ring.nodes().is_empty());
    ring.remove_node("ghost");
    assert!(ring.is_empty());
}

#[test]
fn single_node_owns_everything() {
    let ring = ConsistentHashRing::new();
    ring.add_node("only");
    assert!(!ring.is_empty());
    for k in keys(1000) {
        assert_eq!(ring.get_node(&k).unwrap().as_ref(), "only");
    }
    assert_eq!(ring.get_nodes("k", 3).len(), 1);
}

#[test]
fn add_and_remove_are_idempotent() {
    let ring = ConsistentHashRing::with_config(HashRingConfig::default().virtual_nodes(10));
    ring.add_node("a");
    ring.add_node("a");
    ring.add_node("b");
    assert_eq!(ring.nodes(), ["a", "b"]);
    assert_eq!(ring.read().points.len(), 20);
    ring.remove_node("a");
    ring.remove_node("a");
    ring.remove_node("unknown");
    assert_eq!(ring.nodes(), ["b"]);
    assert_eq!(ring.read().points.len(), 10);
    assert!(ring.contains("b") && !ring.contains("a"));
}

#[test]
fn lookups_are_consistent_and_order_independent() {
    let a = ConsistentHashRing::with_nodes(HashRingConfig::default(), ["x", "y", "z"]);
    let b = ConsistentHashRing::with_nodes(HashRingConfig::default(), ["z", "x", "y"]);
    for k in keys(5000) {
        assert_eq!(a.get_node(&k), a.get_node(&k));
        assert_eq!(a.get_node(&k), b.get_node(&k));
    }
}

#[test]
fn zero_virtual_nodes_is_taken_as_one() {
    let ring = ConsistentHashRing::with_config(HashRingConfig { virtual_nodes: 0 });
    assert_eq!(ring.virtual_nodes(), 1);
    ring.add_node("a");
    assert_eq!(ring.get_node("k").as_deref(), Some("a"));
    assert_eq!(
        ConsistentHashRing::new().virtual_nodes(),
        DEFAULT_VIRTUAL_NODES
    );
}

#[test]
fn replicas_are_distinct_and_start_with_the_owner() {
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), node_names(5));
    for k in keys(200) {
        let r = ring.get_nodes(&k, 3);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], ring.get_node(&k).unwrap());
        assert!(r[0] != r[1] && r[1] != r[2] && r[0] != r[2]);
    }
    assert_eq!(ring.get_nodes("k", 10).len(), 5);
}

/// Max relative deviation of the per-node counts from the mean.
fn max_deviation(c: &HashMap<String, usize>, nodes: usize, total: usize) -> f64 {
    let mean = total as f64 / nodes as f64;
    assert_eq!(c.len(), nodes, "every node gets keys");
    c.values()
        .map(|&v| (v as f64 - mean).abs() / mean)
        .fold(0.0, f64::max)
}

#[test]
fn distribution_of_100k_keys_over_10_nodes_is_within_25_percent() {
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), node_names(10));
    let ks = keys(100_000);
    let c = counts(&ring, &ks);
    let dev = max_deviation(&c, 10, ks.len());
    let mean = ks.len() as f64 / 10.0;
    let cv = (c.values().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 10.0).sqrt() / mean;
    eprintln!(
        "distribution: 10 nodes x 100000 keys, max deviation {:.1}%, cv {:.1}%, counts {:?}",
        dev * 100.0,
        cv * 100.0,
        {
            let mut v: Vec<_> = c.values().copied().collect();
            v.sort();
            v
        }
    );
    assert!(dev < 0.25, "max deviation {dev}");
    assert!(cv < 0.15, "coefficient of variation {cv}");
}

#[test]
fn more_virtual_nodes_spread_keys_better() {
    let ks = keys(50_000);
    let few =
        ConsistentHashRing::with_nodes(HashRingConfig::default().virtual_nodes(2), node_names(10));
    let many = ConsistentHashRing::with_nodes(HashRingConfig::default(), node_names(10));
    let d_few = max_deviation(&counts(&few, &ks), 10, ks.len());
    let d_many = max_deviation(&counts(&many, &ks), 10, ks.len());
    assert!(d_many < d_few, "{d_many} vs {d_few}");
}

#[test]
fn adding_an_11th_node_moves_about_one_eleventh_of_keys() {
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), node_names(10));
    let ks = keys(100_000);
    let before: Vec<_> = ks.iter().map(|k| ring.get_node(k).unwrap()).collect();
    ring.add_node("node-10");
    let mut moved = 0;
    for (k, old) in ks.iter().zip(&before) {
        let new = ring.get_node(k).unwrap();
        if new != *old {
            // Keys only ever move to the new node.
            assert_eq!(new.as_ref(), "node-10");
            moved += 1;
        }
    }
    let frac = moved as f64 / ks.len() as f64;
    eprintln!(
        "movement: adding an 11th node moved {moved} of {} keys ({:.2}%, ideal {:.2}%)",
        ks.len(),
        frac * 100.0,
        100.0 / 11.0
    );
    assert!(frac <= 0.35, "moved {frac}");
    assert!((frac - 1.0 / 11.0).abs() < 0.04, "moved {frac}, ideal 1/11");
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), node_names(8));
    let ks = keys(20_000);
    let before: Vec<_> = ks.iter().map(|k| ring.get_node(k).unwrap()).collect();
    ring.remove_node("node-3");
    for (k, old) in ks.iter().zip(&before) {
        let new = ring.get_node(k).unwrap();
        if old.as_ref() == "node-3" {
            assert_ne!(new.as_ref(), "node-3");
        } else {
            assert_eq!(&new, old);
        }
    }
}

#[test]
fn more_than_100_nodes() {
    let names = node_names(150);
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), &names);
    assert_eq!(ring.len(), 150);
    let ks = keys(150_000);
    let c = counts(&ring, &ks);
    let dev = max_deviation(&c, 150, ks.len());
    eprintln!("150 nodes x 150000 keys: max deviation {:.1}%", dev * 100.0);
    assert!(dev < 0.40, "max deviation {dev}");
    for n in names.iter().take(50) {
        ring.remove_node(n);
    }
    assert_eq!(ring.len(), 100);
    for k in ks.iter().take(1000) {
        let node = ring.get_node(k).unwrap();
        assert!(names[50..].iter().any(|n| n.as_str() == node.as_ref()));
    }
}

#[test]
fn concurrent_readers_and_writers() {
    let ring = Arc::new(ConsistentHashRing::with_nodes(
        HashRingConfig::default(),
        ["stable-a", "stable-b"],
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..4 {
        let ring = Arc::clone(&ring);
        let stop = Arc::clone(&stop);
        readers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 1000 {
                let key = format!("k-{t}-{}", n % 997);
                let node = ring.get_node(&key).expect("never empty: stable nodes stay");
                assert!(!node.is_empty());
                let _ = ring.get_nodes(&key, 2);
                n += 1;
            }
            n
        }));
    }
    let writer = {
        let ring = Arc::clone(&ring);
        std::thread::spawn(move || {
            for round in 0..50 {
                let name = format!("flapping-{}", round % 5);
                ring.add_node(&name);
                ring.remove_node(&name);
                ring.add_node(&name);
            }
        })
    };
    writer.join().expect("writer");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") >= 1000);
    }
    assert_eq!(ring.len(), 7);
    // After the race the ring is the same as one built directly.
    let fresh = ConsistentHashRing::with_nodes(HashRingConfig::default(), ring.nodes());
    for k in keys(2000) {
        assert_eq!(ring.get_node(&k), fresh.get_node(&k));
    }
}

#[test]
fn bounded_load_caps_every_node() {
    let ring =
        ConsistentHashRing::with_nodes(HashRingConfig::default().virtual_nodes(20), node_names(10));
    for eps in [0.0, 0.05, 0.25, 1.0] {
        let mut placer = ring.bounded_placer(eps);
        let ks = keys(10_000);
        let mut agree = 0;
        for k in &ks {
            let n = placer.place(k).unwrap();
            if ring.get_node(k).unwrap() == n {
                agree += 1;
            }
        }
        let cap = placer.max_load();
        let loads = placer.loads();
        let max = *loads.values().max().unwrap();
        assert!(max <= cap, "eps {eps}: max load {max} above {cap}");
        assert!(cap as f64 <= ((1.0 + eps) * 1000.0f64).ceil() + 1.0);
        assert_eq!(loads.values().sum::<usize>(), ks.len());
        eprintln!(
            "bounded load eps {eps}: max {max} (cap {cap}), {agree} of {} keys on their ring node",
            ks.len()
        );
        if eps >= 0.25 {
            assert!(agree > ks.len() / 2);
        }
    }
    // Without the bound the same ring is far less even.
    let c = counts(&ring, &keys(10_000));
    assert!(*c.values().max().unwrap() > 1000);
}

#[test]
fn bounded_load_release_and_empty() {
    let empty = ConsistentHashRing::new();
    assert!(empty.bounded_placer(0.1).place("x").is_none());
    let ring = ConsistentHashRing::with_nodes(HashRingConfig::default(), ["a", "b"]);
    let mut p = ring.bounded_placer(0.0);
    let a = p.place("k1").unwrap();
    let b = p.place("k2").unwrap();
    assert_ne!(a, b, "eps 0 with two keys on two nodes puts one on each");
    p.release(&a);
    p.release("unknown");
    assert_eq!(p.loads().values().sum::<usize>(), 1);
}
