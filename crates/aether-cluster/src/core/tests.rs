//! The protocol on made-up instants: no server, no runtime, no waiting.
use super::*;

const HB: Duration = Duration::from_millis(100);
const FAIL: Duration = Duration::from_secs(1);

fn core(id: &str) -> NodeCore {
    NodeCore::new(CoreSettings {
        node_id: id.into(),
        incarnation: format!("{id}-1"),
        failure_timeout: FAIL,
        heartbeat_interval: HB,
        shard_count: 16,
        replication_factor: 1,
        admission: Admission(aether_placement::Admission {
            max_members: 64,
            joins_per_interval: 4,
            heartbeat_interval: HB,
        }),
    })
}

/// A lease and table store with compare-and-set, like the key-value bucket.
#[derive(Default)]
struct Bucket {
    revision: u64,
    lease: Option<(u64, LeaderLease)>,
    table: Option<(u64, AssignmentTable)>,
}

impl Bucket {
    fn cas_lease(&mut self, lease: LeaderLease, expected: u64) -> Cas {
        let current = self.lease.as_ref().map_or(0, |(r, _)| *r);
        if current != expected {
            return Cas::Stale;
        }
        self.revision += 1;
        self.lease = Some((self.revision, lease));
        Cas::Written(self.revision)
    }
    fn cas_table(&mut self, table: AssignmentTable, expected: u64) -> Cas {
        let current = self.table.as_ref().map_or(0, |(r, _)| *r);
        if current != expected {
            return Cas::Stale;
        }
        self.revision += 1;
        self.table = Some((self.revision, table));
        Cas::Written(self.revision)
    }
}

/// Runs `input` on `node` and carries out every action against `bucket`, feeding the
/// results back, until nothing is left; returns the heartbeats published and the views
/// applied.
fn drive(
    node: &mut NodeCore,
    bucket: &mut Bucket,
    input: Input,
    now: Instant,
) -> (Vec<Heartbeat>, Vec<Arc<Assignment>>, Vec<MembershipChange>) {
    let (hbs, views, changes, _) = drive_counting(node, bucket, input, now);
    (hbs, views, changes)
}

/// A refusal as the core reported it: reason, count, and the warning if one was asked for.
type Refused = (Refusal, u64, Option<RefusalLog>);

/// [`drive`], also returning the refusals.
fn drive_counting(
    node: &mut NodeCore,
    bucket: &mut Bucket,
    input: Input,
    now: Instant,
) -> (
    Vec<Heartbeat>,
    Vec<Arc<Assignment>>,
    Vec<MembershipChange>,
    Vec<Refused>,
) {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut queue = vec![input];
    while let Some(input) = queue.pop() {
        for action in node.step(input, now) {
            match action {
                Action::PublishHeartbeat(hb) => out.0.push(hb),
                Action::ViewChanged(v) => out.1.push(v),
                Action::Membership(c) => out.2.push(c),
                Action::HeartbeatsRefused { reason, count, log } => {
                    out.3.push((reason, count, log))
                }
                Action::ReadLease => queue.push(Input::LeaseRead {
                    revision: bucket.lease.as_ref().map_or(0, |(r, _)| *r),
                    lease: bucket.lease.as_ref().map(|(_, l)| l.clone()),
                }),
                Action::WriteLease {
                    write,
                    lease,
                    expected_revision,
                } => {
                    let term = lease.term;
                    let outcome = bucket.cas_lease(lease, expected_revision);
                    queue.push(Input::LeaseWritten {
                        write,
                        term,
                        outcome,
                    });
                }
                Action::ReleaseLease { revision } => {
                    if bucket.lease.as_ref().map(|(r, _)| *r) == Some(revision) {
                        bucket.lease = None;
                    }
                }
                Action::ReadTable => queue.push(Input::TableRead {
                    revision: bucket.table.as_ref().map_or(0, |(r, _)| *r),
                    table: bucket.table.as_ref().map(|(_, t)| t.clone()),
                }),
                Action::WriteTable {
                    table,
                    expected_revision,
                } => {
                    let outcome = bucket.cas_table(table.clone(), expected_revision);
                    queue.push(Input::TableWritten { table, outcome });
                }
            }
        }
    }
    out
}

/// Every node hears every heartbeat in `hbs`.
fn deliver(nodes: &mut [&mut NodeCore], bucket: &mut Bucket, hbs: &[Heartbeat], now: Instant) {
    for n in nodes.iter_mut() {
        for hb in hbs {
            drive(n, bucket, Input::Heartbeat(hb.clone()), now);
        }
    }
}

/// One heartbeat round of every live node, then every node sees the newest table.
fn round(nodes: &mut [&mut NodeCore], bucket: &mut Bucket, now: Instant) {
    let mut hbs = Vec::new();
    for n in nodes.iter_mut() {
        hbs.extend(drive(n, bucket, Input::Tick, now).0);
    }
    deliver(nodes, bucket, &hbs, now);
    for n in nodes.iter_mut() {
        drive(n, bucket, Input::ElectionTick, now);
        drive(n, bucket, Input::ElectionTick, now);
    }
    if let Some((rev, table)) = bucket.table.clone() {
        for n in nodes.iter_mut() {
            drive(
                n,
                bucket,
                Input::TableRead {
                    revision: rev,
                    table: Some(table.clone()),
                },
                now,
            );
        }
    }
}

#[test]
fn a_lone_node_claims_the_lease_and_assigns_every_shard_to_itself() {
    let mut bucket = Bucket::default();
    let mut a = core("a");
    let now = Instant::now();
    let (hbs, views, _) = drive(&mut a, &mut bucket, Input::Tick, now);
    assert_eq!(hbs.len(), 1);
    assert_eq!(hbs[0].seq, 0);
    assert!(views.is_empty());
    let (hbs, views, _) = drive(&mut a, &mut bucket, Input::ElectionTick, now);
    assert!(hbs.is_empty());
    assert_eq!(a.term(), Some(1));
    assert_eq!(a.leader(), Some("a"));
    let view = views.last().expect("a table");
    assert!(view.is_complete());
    assert_eq!(view.table.members, ["a"]);
    assert_eq!(a.view().epoch, view.epoch);
    // The next ticks renew the lease and change nothing else.
    let (hbs, _, _) = drive(&mut a, &mut bucket, Input::Tick, now + HB);
    assert_eq!(hbs[0].seq, 1);
    let (_, views, _) = drive(&mut a, &mut bucket, Input::ElectionTick, now + HB);
    assert!(views.is_empty());
    assert_eq!(a.term(), Some(1));
}

#[test]
fn three_nodes_agree_then_a_dead_leader_is_replaced_after_the_failure_timeout() {
    let mut bucket = Bucket::default();
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
        now += HB;
    }
    let table = a.view();
    assert_eq!(table.table.members, ["a", "b", "c"]);
    assert_eq!(b.view(), table);
    assert_eq!(c.view(), table);
    let leader = table.table.leader.clone();
    assert_eq!(leader, "a", "the first to tick claims the lease");
    assert_eq!(b.leader(), Some("a"));

    // `a` dies. Just before the failure timeout nothing moves.
    let died = now;
    while now < died + FAIL - HB {
        round(&mut [&mut b, &mut c], &mut bucket, now);
        now += HB;
    }
    assert_eq!(b.view(), table, "nothing moves within the failure timeout");
    assert_eq!(b.term(), None);
    // After it, a survivor takes the lease with a higher term and moves a's shards.
    while now <= died + FAIL + HB * 4 {
        round(&mut [&mut b, &mut c], &mut bucket, now);
        now += HB;
    }
    let after = b.view();
    assert_eq!(after.table.members, ["b", "c"]);
    assert!(after.table.term >= 2);
    assert!(after.is_complete());
    assert_eq!(c.view(), after);
    // Only a's shards moved.
    for s in 0..16u32 {
        let before = table.primary(s).unwrap();
        if before != "a" {
            assert_eq!(after.primary(s), Some(before));
        }
    }
    assert_eq!([b.term(), c.term()].iter().flatten().count(), 1);
}

#[test]
fn a_node_that_rejoins_with_a_new_incarnation_gets_shards_again() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    assert_eq!(a.view().table.members, ["a", "b"]);
    // b crashes and is declared failed.
    for _ in 0..15 {
        round(&mut [&mut a], &mut bucket, now);
        now += HB;
    }
    assert_eq!(a.view().table.members, ["a"]);
    // b restarts: a new incarnation, seeded with the current table.
    let mut b = NodeCore::new(CoreSettings {
        incarnation: "b-2".into(),
        ..core("b").settings
    });
    let (rev, table) = bucket.table.clone().unwrap();
    b.start(rev, Some(table), now);
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let view = a.view();
    assert_eq!(view.table.members, ["a", "b"]);
    assert!(!view.primaries_of("b").is_empty());
    assert_eq!(b.view(), view);
}

#[test]
fn a_clean_leave_releases_the_lease_and_moves_shards_at_once() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    assert_eq!(a.term(), Some(1));
    drive(&mut a, &mut bucket, Input::Shutdown, now);
    assert!(bucket.lease.is_none(), "released");
    assert!(
        a.step(Input::Tick, now).is_empty(),
        "a stopped core does nothing"
    );
    assert!(a.step(Input::ElectionTick, now).is_empty());
    let changes = drive(
        &mut b,
        &mut bucket,
        Input::Leave(Leave {
            node_id: "a".into(),
            incarnation: "a-1".into(),
        }),
        now,
    )
    .2;
    assert_eq!(changes, [MembershipChange::Left("a".into())]);
    // One tick later, well within the failure timeout, b leads alone.
    round(&mut [&mut b], &mut bucket, now + HB);
    assert_eq!(b.term(), Some(2));
    assert_eq!(b.view().table.members, ["b"]);
    assert!(b.view().is_complete());
}

#[test]
fn a_view_only_moves_forward_and_ignores_a_table_of_another_shard_count() {
    let mut a = core("a");
    let now = Instant::now();
    let table = AssignmentTable {
        members: vec!["a".into()],
        shards: vec![vec!["a".into()]; 16],
        ..AssignmentTable::empty(16, 1)
    };
    let acts = a.step(
        Input::TableRead {
            revision: 5,
            table: Some(table.clone()),
        },
        now,
    );
    assert!(matches!(&acts[..], [Action::ViewChanged(v)] if v.epoch == 5));
    // An older table, the same one again, and one with another shard count: ignored.
    for (rev, t) in [
        (4, table.clone()),
        (5, table.clone()),
        (9, AssignmentTable::empty(8, 1)),
    ] {
        assert!(a
            .step(
                Input::TableRead {
                    revision: rev,
                    table: Some(t)
                },
                now
            )
            .is_empty());
    }
    assert_eq!(a.view().epoch, 5);
    assert!(a.view().serves("a", "anything"));
}

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

#[test]
fn a_sweep_between_heartbeats_declares_a_silent_member_failed_and_rebalances() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let last_seen = now - HB;
    // Nothing is declared before the timeout runs out...
    let (_, views, changes) = drive(&mut a, &mut bucket, Input::Sweep, last_seen + FAIL);
    assert!(changes.is_empty() && views.is_empty());
    // ...and right after it, by a sweep alone (no heartbeat, no election step), with the
    // table rewritten at once: the lease was renewed less than half a timeout ago.
    drive(&mut a, &mut bucket, Input::ElectionTick, last_seen + FAIL);
    let (hbs, views, changes) = drive(&mut a, &mut bucket, Input::Sweep, last_seen + FAIL + HB / 4);
    assert!(hbs.is_empty(), "a sweep publishes no heartbeat");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        views.last().map(|v| v.table.members.clone()),
        Some(vec!["a".to_string()])
    );
}

#[test]
fn a_node_cut_off_stops_serving_before_its_shards_move_and_serves_again_after_a_fresh_table() {
    let mut bucket = Bucket::default();
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    let mut now = Instant::now();
    for n in [&mut a, &mut b, &mut c] {
        n.start(0, None, now);
    }
    for _ in 0..3 {
        round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
        now += HB;
    }
    let table = a.view();
    assert!(!table.primaries_of("c").is_empty());
    // While its heartbeats come back, c may serve past the next heartbeat.
    assert!(c.serving_until().is_some_and(|u| u > now + HB));

    // c is cut off: its heartbeats reach nobody, itself included. Its ticks go on.
    let cut = now - HB;
    let mut stopped_at = None;
    let mut moved_at = None;
    while now <= cut + FAIL + HB * 4 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        drive(&mut c, &mut bucket, Input::Tick, now);
        if stopped_at.is_none() && c.serving_until().is_none_or(|u| u <= now) {
            stopped_at = Some(now);
        }
        if moved_at.is_none() && a.view().primaries_of("c").is_empty() {
            moved_at = Some(now);
        }
        now += HB;
    }
    let (stopped_at, moved_at) = (stopped_at.unwrap(), moved_at.unwrap());
    assert!(
        stopped_at < moved_at,
        "c stopped serving at +{:?}, its shards moved at +{:?}",
        stopped_at - cut,
        moved_at - cut
    );
    // c still holds the old table: only the fence keeps it from serving.
    assert_eq!(c.view(), table);

    // Healed: c hears itself again, but serves only once it has read the table.
    let hb = drive(&mut c, &mut bucket, Input::Tick, now).0;
    let actions = c.step(Input::Heartbeat(hb[0].clone()), now);
    assert!(actions.contains(&Action::ReadTable), "{actions:?}");
    assert_eq!(c.serving_until(), None);
    // A failed read is asked again on the next heartbeat.
    now += HB;
    let hb = drive(&mut c, &mut bucket, Input::Tick, now).0;
    let actions = c.step(Input::Heartbeat(hb[0].clone()), now);
    assert!(actions.contains(&Action::ReadTable), "{actions:?}");
    let (rev, newer) = bucket.table.clone().unwrap();
    c.step(
        Input::TableRead {
            revision: rev,
            table: Some(newer),
        },
        now,
    );
    assert!(c.serving_until().is_some_and(|u| u > now));
    assert!(
        c.view().primaries_of("c").is_empty(),
        "c learned it lost its shards"
    );
}

/// Thousands of made-up heartbeats, valid-looking and not, each sent once or a few times in a
/// moment, for every node of `nodes`; returns the refusals each reported.
fn flood(nodes: &mut [&mut NodeCore], bucket: &mut Bucket, now: Instant) -> Vec<Vec<Refused>> {
    let mut refused = vec![Vec::new(); nodes.len()];
    for i in 0..2000u32 {
        let at = now + Duration::from_micros(u64::from(i) * 10);
        let mut fakes = vec![Heartbeat {
            node_id: format!("node-{i:05}"),
            incarnation: format!("{i}"),
            seq: 0,
        }];
        if i % 4 == 0 {
            fakes.push(Heartbeat {
                node_id: format!("<img src=x onerror=alert({i})>"),
                incarnation: "x".into(),
                seq: 0,
            });
        }
        if i % 10 == 0 {
            // The same id again at once: a duplicate within the burst.
            fakes.push(fakes[0].clone());
        }
        for (n, out) in nodes.iter_mut().zip(refused.iter_mut()) {
            for hb in &fakes {
                let (_, views, changes, r) =
                    drive_counting(n, bucket, Input::Heartbeat(hb.clone()), at);
                assert!(changes.is_empty() && views.is_empty(), "{changes:?}");
                out.extend(r);
            }
        }
    }
    // The counts kept back are reported by the next sweep.
    let end = now + Duration::from_millis(25);
    for (n, out) in nodes.iter_mut().zip(refused.iter_mut()) {
        out.extend(drive_counting(n, bucket, Input::Sweep, end).3);
    }
    refused
}

#[test]
fn a_burst_of_made_up_heartbeats_moves_no_shard_and_writes_no_table() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let before = a.view();
    assert_eq!(before.table.members, ["a", "b"]);
    assert_eq!(a.term(), Some(1), "a leads");
    let refused = flood(&mut [&mut a, &mut b], &mut bucket, now);
    // The cluster goes on beating; the made-up ids are never heard again.
    for _ in 0..30 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        for n in [&mut a, &mut b] {
            drive(n, &mut bucket, Input::Sweep, now + HB / 2);
        }
        assert_eq!(a.view(), before, "the table never changed");
        assert!(a.tracked() <= 64 && b.tracked() <= 64);
        now += HB;
    }
    assert_eq!(b.view(), before);
    assert_eq!(bucket.table.as_ref().map(|(r, _)| *r), Some(before.epoch));
    assert_eq!(
        (a.tracked(), b.tracked()),
        (1, 1),
        "only the real peer is left"
    );
    for r in &refused {
        let count = |reason| {
            r.iter()
                .filter(|(x, _, _)| *x == reason)
                .map(|(_, n, _)| n)
                .sum::<u64>()
        };
        assert_eq!(count(Refusal::Invalid), 500);
        // 63 fakes fit beside the real peer; the rest of the 2000 (and of the duplicates)
        // find the table full.
        assert!(
            count(Refusal::MemberLimit) >= 2000 - 63,
            "{}",
            count(Refusal::MemberLimit)
        );
        // One warning for the whole flood: the first refusal.
        let logs: Vec<&RefusalLog> = r.iter().filter_map(|(_, _, l)| l.as_ref()).collect();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].sample, "<img src=x onerror=alert(0)>");
    }
}

#[test]
fn a_real_newcomer_joins_on_its_second_heartbeat_even_after_a_flood() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    flood(&mut [&mut a, &mut b], &mut bucket, now);
    // The table is full of ids heard once: they are dropped two intervals later.
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let mut c = core("c");
    let (rev, table) = bucket.table.clone().unwrap();
    c.start(rev, Some(table), now);
    round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
    assert_eq!(
        a.view().table.members,
        ["a", "b"],
        "not on its first heartbeat"
    );
    now += HB;
    round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
    let view = a.view();
    assert_eq!(view.table.members, ["a", "b", "c"]);
    assert!(!view.primaries_of("c").is_empty());
}

#[test]
fn refusals_are_counted_every_time_and_warned_about_once_per_ten_seconds() {
    let mut a = core("a");
    let t0 = Instant::now();
    let bad = Heartbeat {
        node_id: "x".repeat(10_000),
        incarnation: "1".into(),
        seq: 0,
    };
    let refusals =
        |a: &mut NodeCore, input: Input, at| -> Vec<(Refusal, u64, Option<RefusalLog>)> {
            a.step(input, at)
                .into_iter()
                .filter_map(|action| match action {
                    Action::HeartbeatsRefused { reason, count, log } => Some((reason, count, log)),
                    _ => None,
                })
                .collect()
        };
    let first = refusals(&mut a, Input::Heartbeat(bad.clone()), t0);
    let [(Refusal::Invalid, 1, Some(log))] = &first[..] else {
        panic!("{first:?}")
    };
    assert_eq!(log.unlogged, 0);
    assert_eq!(log.sample.chars().count(), 65, "64 characters and a mark");
    for k in 1..=5 {
        let at = t0 + Duration::from_secs(k);
        let later = refusals(&mut a, Input::Heartbeat(bad.clone()), at);
        assert!(later.is_empty(), "kept for the sweep: {later:?}");
    }
    let swept = refusals(&mut a, Input::Sweep, t0 + Duration::from_secs(6));
    assert_eq!(swept, [(Refusal::Invalid, 5, None)]);
    assert!(refusals(&mut a, Input::Sweep, t0 + Duration::from_secs(7)).is_empty());
    let garbled = refusals(
        &mut a,
        Input::Undecodable("malformed cluster message".into()),
        t0 + Duration::from_secs(10),
    );
    let [(Refusal::Undecodable, 1, Some(log))] = &garbled[..] else {
        panic!("{garbled:?}")
    };
    assert_eq!(log.unlogged, 5);
    assert_eq!(log.sample, "malformed cluster message");
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
