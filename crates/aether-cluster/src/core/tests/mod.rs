//! The protocol on made-up instants: no server, no runtime, no waiting.
use super::*;

mod hostile;
mod leadership;
mod wire;

const HB: Duration = Duration::from_millis(100);
const FAIL: Duration = Duration::from_secs(1);

fn settings(id: &str) -> CoreSettings {
    CoreSettings {
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
        wire_max: crate::routing::WIRE_VERSION,
    }
}

fn core(id: &str) -> NodeCore {
    NodeCore::new(settings(id))
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
