//! Unit tests of the gap tracker, checked without a server.

use super::{GapTracker, MAX_TRACKED_SOURCES};

#[test]
fn gaps_are_counted_per_publisher_and_namespace() {
    let mut g = GapTracker::default();
    assert_eq!(g.observe("p", "a", 5), 0, "first sight is the baseline");
    assert_eq!(g.observe("p", "a", 6), 0);
    assert_eq!(g.observe("p", "a", 9), 2);
    assert_eq!(g.observe("p", "b", 1), 0);
    assert_eq!(g.observe("q", "a", 1), 0);
    assert_eq!(g.observe("p", "a", 10), 0);
    assert_eq!(g.observe("p", "a", 10), 0, "a repeat is not a gap");
    assert_eq!(g.observe("p", "a", 8), 0, "a late message is not a gap");
    assert_eq!(g.observe("p", "a", 11), 0);
    // Memory stays bounded however many publishers and namespaces show up.
    for i in 0..MAX_TRACKED_SOURCES + 10 {
        g.observe(&format!("p{}", i % 7), &i.to_string(), 1);
        assert!(g.pairs <= MAX_TRACKED_SOURCES);
    }
    assert_eq!(
        g.last.values().map(|m| m.len()).sum::<usize>(),
        g.pairs,
        "the pair count matches the map"
    );
}
