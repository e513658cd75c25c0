//! Leadership: terms, lease reads and writes, table writes one at a time.

use super::*;

#[test]
fn a_leader_that_sees_a_higher_term_in_the_table_steps_down() {
    let mut bucket = Bucket::default();
    let mut a = core("a");
    let now = Instant::now();
    drive(&mut a, &mut bucket, Input::ElectionTick, now);
    assert_eq!(a.term(), Some(1));
    // Another leader (after a partition healed, say) wrote the table with term 7.
    let (rev, mut table) = bucket.table.clone().unwrap();
    table.term = 7;
    table.leader = "z".into();
    bucket.table = Some((rev + 10, table.clone()));
    bucket.revision = rev + 10;
    drive(
        &mut a,
        &mut bucket,
        Input::TableRead {
            revision: rev + 10,
            table: Some(table),
        },
        now,
    );
    // Its own lease renewal succeeds, but its duty sees the newer term and stops.
    drive(&mut a, &mut bucket, Input::ElectionTick, now + HB);
    assert_eq!(a.term(), None);
    assert!(bucket.lease.is_none(), "handed back");
    assert_eq!(bucket.table.as_ref().unwrap().1.leader, "z");
}

#[test]
fn an_unreadable_lease_makes_the_leader_a_follower() {
    let mut bucket = Bucket::default();
    let mut a = core("a");
    let now = Instant::now();
    drive(&mut a, &mut bucket, Input::ElectionTick, now);
    assert_eq!(a.term(), Some(1));
    a.step(Input::LeaseReadFailed, now);
    assert_eq!(a.term(), None);
}

#[test]
fn the_leader_moves_a_failed_members_shards_when_it_declares_it_failed() {
    let mut bucket = Bucket::default();
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
        now += HB;
    }
    assert_eq!(a.term(), Some(1), "a leads");
    assert_eq!(a.view().table.members, ["a", "b", "c"]);
    // b crashes. a and c keep beating, and a renews its lease every beat as the node does;
    // the renewal comes first in each beat, so only the heartbeat sweep can write the table.
    let crashed = now;
    let mut written = None;
    while now < crashed + FAIL * 3 {
        now += HB;
        drive(&mut a, &mut bucket, Input::ElectionTick, now);
        assert_eq!(bucket.table.as_ref().map(|(_, t)| t.members.len()), Some(3));
        let hbs_c = drive(&mut c, &mut bucket, Input::Tick, now).0;
        deliver(&mut [&mut a], &mut bucket, &hbs_c, now);
        let (hbs_a, views, changes) = drive(&mut a, &mut bucket, Input::Tick, now);
        deliver(&mut [&mut c], &mut bucket, &hbs_a, now);
        if !changes.is_empty() {
            written = Some((now, views));
            break;
        }
    }
    let (at, views) = written.expect("b was declared failed");
    assert!(
        at - crashed <= FAIL + HB,
        "declared within the timeout and a beat"
    );
    // The table without b was written in that same step.
    let without_b = Some(vec!["a".to_string(), "c".to_string()]);
    assert_eq!(views.last().map(|v| v.table.members.clone()), without_b);
    assert_eq!(
        bucket.table.as_ref().map(|(_, t)| t.members.clone()),
        without_b
    );
}

#[test]
fn a_leader_whose_renewal_is_old_waits_for_the_next_one_to_rebalance() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let before = bucket.table.clone();
    // Long after the last renewal (another node may hold the lease by now), b goes silent:
    // a declares it failed but leaves the table alone until it renews its lease.
    now += FAIL * 3;
    let (_, views, changes) = drive(&mut a, &mut bucket, Input::Tick, now);
    assert!(!changes.is_empty());
    assert!(views.is_empty());
    assert_eq!(bucket.table, before);
    drive(&mut a, &mut bucket, Input::ElectionTick, now);
    assert_eq!(
        bucket.table.as_ref().map(|(_, t)| t.members.clone()),
        Some(vec!["a".to_string()])
    );
}

/// The driver carries writes out asynchronously, so inputs arrive between a write and its
/// outcome: a second membership change then asks for no second table write (it could only
/// lose the compare-and-set); the outcome, then the next renewal, bring the table up to date.
#[test]
fn a_leader_asks_for_one_table_write_at_a_time() {
    let mut bucket = Bucket::default();
    let mut a = core("a");
    let mut now = Instant::now();
    round(&mut [&mut a], &mut bucket, now);
    assert_eq!(a.term(), Some(1));
    let hb = |node: &str| {
        Input::Heartbeat(Heartbeat {
            node_id: node.into(),
            incarnation: format!("{node}-1"),
            seq: 0,
            wire: None,
        })
    };
    a.step(hb("b"), now);
    a.step(hb("c"), now);
    now += HB;
    let writes = |actions: &[Action]| -> Vec<(AssignmentTable, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::WriteTable {
                    table,
                    expected_revision,
                } => Some((table.clone(), *expected_revision)),
                _ => None,
            })
            .collect()
    };
    let first = a.step(hb("b"), now);
    assert!(first.contains(&Action::Membership(MembershipChange::Joined("b".into()))));
    let asked = writes(&first);
    let [(table, expected)] = &asked[..] else {
        panic!("{first:?}")
    };
    assert_eq!(table.members, ["a", "b"]);
    let second = a.step(hb("c"), now);
    assert!(second.contains(&Action::Membership(MembershipChange::Joined("c".into()))));
    assert!(writes(&second).is_empty(), "{second:?}");
    // The first write lands; the next renewal writes c's share.
    let outcome = bucket.cas_table(table.clone(), *expected);
    drive(
        &mut a,
        &mut bucket,
        Input::TableWritten {
            table: table.clone(),
            outcome,
        },
        now,
    );
    assert_eq!(a.view().table.members, ["a", "b"]);
    drive(&mut a, &mut bucket, Input::ElectionTick, now);
    assert_eq!(a.view().table.members, ["a", "b", "c"]);
}

/// A claim still under way when the node stops is handed back once it lands: the release
/// asked for at the stop could not have known its revision.
#[test]
fn a_lease_claim_that_lands_after_the_stop_is_released() {
    let mut bucket = Bucket::default();
    let mut a = core("a");
    let now = Instant::now();
    assert_eq!(a.step(Input::ElectionTick, now), [Action::ReadLease]);
    let claim = a.step(
        Input::LeaseRead {
            revision: 0,
            lease: None,
        },
        now,
    );
    let [Action::WriteLease {
        write,
        lease,
        expected_revision,
    }] = &claim[..]
    else {
        panic!("{claim:?}")
    };
    assert!(a.step(Input::Shutdown, now).is_empty(), "nothing held yet");
    let outcome = bucket.cas_lease(lease.clone(), *expected_revision);
    let Cas::Written(revision) = outcome else {
        panic!("{outcome:?}")
    };
    let after = a.step(
        Input::LeaseWritten {
            write: *write,
            term: lease.term,
            outcome,
        },
        now,
    );
    assert_eq!(after, [Action::ReleaseLease { revision }]);
    assert_eq!(a.term(), None, "a stopped node does not lead");
    assert!(a.step(Input::ElectionTick, now).is_empty());
}
