//! Unit tests of the header length and the gap tracker: both are checked without a server.

use async_nats::HeaderMap;

use super::super::{HEADER_PUBLISHER, HEADER_SEQUENCE};
use super::{header_wire_len, GapTracker, MAX_TRACKED_SOURCES};

#[test]
fn header_length_matches_the_client() {
    for seq in [1u64, 9, 10, 99, 100, 12345, u64::MAX] {
        let mut h = HeaderMap::new();
        h.insert(HEADER_PUBLISHER, "0123456789abcdef");
        h.insert(HEADER_SEQUENCE, seq.to_string().as_str());
        let mut expected = b"NATS/1.0\r\n".len() + 2;
        for (k, v) in h.iter() {
            for v in v {
                expected += k.to_string().len() + 2 + v.as_str().len() + 2;
            }
        }
        assert_eq!(header_wire_len("0123456789abcdef", seq), expected, "{seq}");
    }
}

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
