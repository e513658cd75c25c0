//! The wire versions members announce: recorded for live members only, read as version 2 when
//! a heartbeat announces none, and forgotten when a member fails or leaves.

use super::*;
use crate::routing::{Leave, WireRange};

fn hb(node: &str, wire: Option<WireRange>) -> Input {
    Input::Heartbeat(Heartbeat {
        node_id: node.into(),
        incarnation: format!("{node}-1"),
        seq: 0,
        wire,
    })
}

#[test]
fn announced_versions_are_kept_for_live_members_only() {
    let mut a = core("a");
    let mut now = Instant::now();
    let new = WireRange { min: 2, max: 3 };
    // Heard once, not yet a member: nothing recorded (a flood of made-up ids grows nothing).
    a.step(hb("b", Some(new)), now);
    a.step(hb("c", None), now);
    assert!(a.peer_wire().is_empty());
    now += HB;
    a.step(hb("b", Some(new)), now);
    a.step(hb("c", None), now);
    let wire = a.peer_wire();
    assert_eq!(wire.get("b"), Some(&new));
    // A node of the previous release announces nothing: it speaks version 2 only.
    assert_eq!(wire.get("c"), Some(&WireRange::UNANNOUNCED));
    // Unchanged announcements keep the same map (the view is not republished).
    a.step(hb("b", Some(new)), now);
    assert!(Arc::ptr_eq(&wire, &a.peer_wire()));
    // c is upgraded and restarted with the same incarnation name in this test: the new
    // range replaces the old.
    a.step(hb("c", Some(new)), now);
    assert_eq!(a.peer_wire().get("c"), Some(&new));

    // b leaves, c falls silent: both are forgotten.
    a.step(
        Input::Leave(Leave {
            node_id: "b".into(),
            incarnation: "b-1".into(),
        }),
        now,
    );
    assert!(!a.peer_wire().contains_key("b"));
    now += FAIL * 2;
    a.step(Input::Sweep, now);
    assert!(a.peer_wire().is_empty(), "{:?}", a.peer_wire());
}

#[test]
fn heartbeats_announce_the_versions_this_node_speaks() {
    let mut held = NodeCore::new(CoreSettings {
        wire_max: 2,
        ..settings("h")
    });
    let actions = held.step(Input::Tick, Instant::now());
    let announced = actions.iter().find_map(|a| match a {
        Action::PublishHeartbeat(hb) => hb.wire,
        _ => None,
    });
    assert_eq!(announced, Some(WireRange { min: 2, max: 2 }));
    let actions = core("n").step(Input::Tick, Instant::now());
    let announced = actions.iter().find_map(|a| match a {
        Action::PublishHeartbeat(hb) => hb.wire,
        _ => None,
    });
    assert_eq!(
        announced,
        Some(WireRange {
            min: crate::routing::MIN_WIRE_VERSION,
            max: crate::routing::WIRE_VERSION
        })
    );
}
